"""DRAM layouts (docs/isa.md) and the random cases they are built for."""

from __future__ import annotations

import numpy as np
import pytest

from dataflows.isa import Instr, Op, encode, row_bytes
from verification.configs import CONFIGS, load_config
from verification.dram import (
    build_image,
    compressed_rows,
    from_bytes,
    nm_tiles,
    pack_indices,
    to_bytes,
    unpack_indices,
)
from verification.programs import random_case
from workloads.arith import index_bits
from workloads.generators.nm import decompress_nm, nm_mask
from workloads.load import load_hardware


@pytest.fixture(scope="module")
def tiny():
    return load_hardware("tiny")


def test_elements_are_little_endian_sign_extended():
    assert to_bytes(np.array([-2, 300]), 2).tolist() == [[0xFE, 0xFF], [0x2C, 0x01]]
    raw = to_bytes(np.array([-2048, 2047, -1]), 2)
    assert from_bytes(raw, 12).tolist() == [-2048, 2047, -1]
    # Only the low `bits` bits count: 0x0FFF read as 12 bits is -1.
    assert from_bytes(np.array([[0xFF, 0x0F]], np.uint8), 12).tolist() == [-1]


def test_index_j_sits_at_bits_j_times_ib():
    idx = np.array([[1, 2, 3, 0, 7]])
    packed = pack_indices(idx, 3)
    assert packed.shape == (1, 2)  # ceil(5 * 3 / 8) bytes
    word = int.from_bytes(bytes(packed[0]), "little")
    assert [(word >> (3 * j)) & 7 for j in range(5)] == [1, 2, 3, 0, 7]
    assert word >> 15 == 0  # spare bit is zero
    assert unpack_indices(packed, 5, 3).tolist() == idx.tolist()


def test_compressed_row_length_matches_the_isa(tiny):
    for m in (2, 4, 8, 16):
        for cols in (1, 3, 4):
            raw, care = compressed_rows(np.zeros((2, cols)), np.zeros((2, cols)), tiny, m)
            instr = Instr(Op.LOAD_B, rows=2, cols=cols, nm_n=1, nm_m=m)
            assert raw.shape == care.shape == (2, row_bytes(instr, tiny))
            # Care covers the defined index bits and nothing beyond them.
            ib = index_bits(m)
            region = care[0, cols:]
            assert int.from_bytes(bytes(region), "little") == (1 << cols * ib) - 1


def test_nm_tiles_decompress_to_the_pruned_weights(tiny):
    case = random_case(tiny, 8, ("nm_ff",))
    while not case.tilings[0].compressed_in_dram or not case.tilings[0].sparse:
        case = random_case(tiny, case.seed + 100, ("nm_ff",))
    task, t = case.tasks[0], case.tilings[0]
    n, m = task.nm
    b = np.random.default_rng(0).integers(-128, 128, (task.copies, task.k, task.n))
    ib, width = index_bits(m), tiny.array.cols
    for offset, raw in nm_tiles(b, case, 0):
        assert raw.shape[1] == width * tiny.data_bytes + -(-width * ib // 8)
        assert offset % raw.shape[1] == 0
    # The first tile, decoded, is the pruned dense tile padded to the array width.
    raw = nm_tiles(b, case, 0)[0][1]
    values = from_bytes(raw[:, :width, None], 8)
    idx = unpack_indices(raw[:, width:], width, ib)
    dense = decompress_nm(values, idx, n, m)
    tile = b[0, :t.tk, :t.tn]
    want = np.where(nm_mask(tile, n, m, axis=0), tile, 0)
    assert dense[:tile.shape[0], :tile.shape[1]].tolist() == want.tolist()


def test_image_places_operands_and_randomises_the_rest(tiny):
    case = random_case(tiny, 4, ("dense",))
    image, ops = build_image(case, np.random.default_rng(4))
    a = case.program.tensors["gemm.A"]
    got = from_bytes(image.read(a.addr, a.nbytes).reshape(a.rows, a.cols, 1), 8)
    assert got.tolist() == ops.a[0].reshape(a.rows, a.cols).tolist()
    lo, hi = -(1 << 7), (1 << 7) - 1
    assert ops.a[0].min() >= lo and ops.a[0].max() <= hi
    # The output tensor starts as random bytes, not zeros: a missing store cannot pass.
    c = case.program.tensors["gemm.C"]
    assert image.read(c.addr, c.nbytes).any()


def test_same_seed_same_program(tiny):
    for seed in (0, 17, 123):
        a, b = random_case(tiny, seed), random_case(tiny, seed)
        assert [encode(i) for i in a.program.instrs] == [encode(i) for i in b.program.instrs]
        assert a.description == b.description


def test_random_cases_cover_ragged_tiles_and_both_bufferings():
    ragged_m = ragged_k = ragged_n = single = sparse_on_chip = sparse_in_dram = 0
    cases = [random_case(load_config(name), seed) for name in CONFIGS for seed in range(100)]
    for case in cases:
        for task, t in zip(case.tasks, case.tilings):
            m, k, n = t.dims(task)
            ragged_m += m % t.tm != 0
            ragged_k += k % t.tk != 0
            ragged_n += n % t.tn != 0
            sparse_on_chip += t.sparse and not t.compressed_in_dram
            sparse_in_dram += t.sparse and t.compressed_in_dram
        single += not case.passes.double_buffering
    assert min(ragged_m, ragged_k, ragged_n, single, sparse_on_chip, sparse_in_dram) >= 10
