"""Real scheduler programs on ``AccelTop``: values against numpy, cycles against archsim.

Every program comes from ``dataflows.scheduler`` unchanged. For each, the RTL must produce the
numpy result bit for bit, touch no DRAM byte outside the output tensors, take exactly
``archsim.model.run_program(...).cycles`` cycles (the ``cycles`` output and the cycles ``busy``
stays high), and start and end every instruction in the very cycle the model's trace says.
"""

from __future__ import annotations

import numpy as np
import pytest
from rtl_harness import build_image, check_outputs, run_on_rtl

from archsim.model import run_program
from dataflows.isa import Op
from dataflows.lowering import GemmTask
from dataflows.scheduler import build_segment, compressed_tile_geometry, pregen_program
from dataflows.tiling import search_tiling
from workloads.arith import index_bits
from workloads.generators.nm import compress_nm, random_weights
from workloads.load import load_hardware
from workloads.spec import HardwareSpec, SchedulePasses

TINY = load_hardware("tiny")
PLAIN = SchedulePasses(offline_tiling=False)


def _variant(hw: HardwareSpec, name: str, **changes) -> HardwareSpec:
    doc = hw.model_dump()
    for key, value in changes.items():
        if isinstance(value, dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return HardwareSpec.model_validate({**doc, "name": name})


#: A 6-byte memory beat (not a power of two: the DMA's beat count uses a reciprocal), 3 cycles
#: of latency, 3 vector lanes over 4 columns (a partial last chunk) and a 1-cycle pipeline.
ODD = _variant(TINY, "tiny_odd", dram={"bandwidth_bytes_per_cycle": 6, "latency_cycles": 3},
               vector_unit={"lanes": 3, "pipeline_cycles": 1})
#: sat_vcu1525's widths and patterns (16-bit operands, 48-bit = 6-byte accumulators) on 4x4.
SATLIKE = _variant(
    load_hardware("sat_vcu1525"), "sat_4x4", array={"rows": 4, "cols": 4},
    dram={"bandwidth_bytes_per_cycle": 16, "latency_cycles": 6},
    buffers={"weight_bytes": 4096, "input_bytes": 8192, "accumulator_bytes": 8192},
    vector_unit={"lanes": 4, "pipeline_cycles": 3},
)


def _task(name, m, k, n, nm=None, phase="ff", copies=1):
    return GemmTask(name, name, phase, m, k, n, nm, f"{name}.W" if nm else None, copies)


CASES = {
    # name: (hardware, tasks, passes, compressed_in_dram)
    "dense_two_k_tiles": (TINY, (_task("g", 8, 12, 8),), PLAIN, True),
    "dense_ragged_edges": (TINY, (_task("g", 6, 10, 7),), PLAIN, True),
    "nm_2_4": (TINY, (_task("g", 8, 16, 4, (2, 4)),), PLAIN, True),
    "nm_1_2": (TINY, (_task("g", 5, 8, 6, (1, 2)),), PLAIN, True),
    "nm_2_8": (TINY, (_task("g", 4, 32, 4, (2, 8)),), PLAIN, True),
    "nm_2_4_ragged": (TINY, (_task("g", 5, 12, 6, (2, 4)),), PLAIN, True),
    "compress_on_chip_2_4": (TINY, (_task("g", 6, 16, 8, (2, 4)),), PLAIN, False),
    "compress_on_chip_1_4": (TINY, (_task("g", 3, 24, 5, (1, 4)),), PLAIN, False),
    "interleaved_bp_wg": (TINY, (_task("l.bp", 12, 8, 8, (2, 4), "bp"), _task("l.wg", 8, 12, 8,
                                                                             phase="wg")),
                          PLAIN, True),
    "copies_single_buffer": (TINY, (_task("g", 5, 8, 5, copies=2),),
                             SchedulePasses(offline_tiling=False, double_buffering=False), True),
    "odd_beat_and_lanes": (ODD, (_task("g", 5, 16, 6, (2, 4)),), PLAIN, False),
    "odd_beat_dense_search": (ODD, (_task("g", 7, 9, 6),), SchedulePasses(), True),
    "sat_widths_4_8": (SATLIKE, (_task("g", 6, 16, 4, (4, 8)),), PLAIN, False),
    "sat_widths_1_8": (SATLIKE, (_task("g", 3, 64, 6, (1, 8)),), PLAIN, True),
}


def _describe_trace(program, model, rtl) -> str:
    bad = [i for i, (a, b) in enumerate(zip(model, rtl)) if a != b]
    first = bad[0]
    return (f"{len(bad)} instructions start or end off the model, first #{first} "
            f"{program.instrs[first].op.name}: RTL {rtl[first]}, archsim {model[first]}")


@pytest.mark.parametrize("name", list(CASES))
def test_program_matches_numpy_and_archsim(name):
    hw, tasks, passes, compressed = CASES[name]
    segment = build_segment(tasks, hw, passes, compressed_in_dram=compressed)
    program = segment.program
    if name.startswith("compress_on_chip") or name == "odd_beat_and_lanes":
        assert any(i.op == Op.COMPRESS for i in program.instrs)
    if name == "interleaved_bp_wg":
        assert set(program.tags) == {0, 1}
    model = run_program(program, hw, trace=True)
    image, ops = build_image(segment, hw, np.random.default_rng(len(name)))
    result = run_on_rtl(hw, program, image)
    check_outputs(segment, hw, result.image, ops, image, result.written)
    assert result.cycles == model.cycles, (
        f"RTL took {result.cycles} cycles; archsim predicts {model.cycles} (tolerance 0)")
    assert result.busy_cycles == model.cycles, (
        f"busy was high for {result.busy_cycles} cycles; archsim predicts {model.cycles}")
    assert result.trace == model.trace, _describe_trace(program, model.trace, result.trace)


def test_pregeneration_stores_compress_nm_tiles():
    """LOAD_B dense → COMPRESS → STORE_B writes exactly ``compress_nm`` of every tile."""
    hw = TINY
    task = _task("fc", 4, 16, 6, (2, 4))
    tiling = search_tiling(task, hw, True)
    program = pregen_program((task,), (tiling,), hw)
    dense, comp = program.tensors["fc.W.dense"], program.tensors["fc.W.nm"]
    rng = np.random.default_rng(7)
    w = random_weights((task.k, task.n), hw.data_bits, rng)
    image = rng.integers(0, 256, size=comp.addr + comp.nbytes + 64, dtype=np.uint8)
    for r in range(task.k):
        row = w[r].astype(np.int64).astype(np.uint8)  # data_bytes == 1 on tiny
        image[dense.addr + r * dense.stride: dense.addr + r * dense.stride + task.n] = row
    model = run_program(program, hw, trace=True)
    result = run_on_rtl(hw, program, image)
    assert result.cycles == model.cycles and result.trace == model.trace
    kc, rb = compressed_tile_geometry(tiling, task.nm, hw)
    ib = index_bits(task.nm[1])
    nn = -(-task.n // tiling.tn)
    for ki in range(-(-task.k // tiling.tk)):
        for ni in range(nn):
            tile = w[ki * tiling.tk:(ki + 1) * tiling.tk, ni * tiling.tn:(ni + 1) * tiling.tn]
            values, idx = compress_nm(tile, *task.nm)
            base = comp.addr + (ki * nn + ni) * kc * rb
            for r in range(kc):
                raw = result.image[base + r * rb: base + (r + 1) * rb]
                cols = tile.shape[1]  # padding columns beyond the tile are unspecified
                got_values = raw[:cols].view(np.int8).astype(np.int64)
                bits = np.unpackbits(raw[hw.array.cols:], bitorder="little")
                got_idx = [int(sum(bits[j * ib + b] << b for b in range(ib))) for j in range(cols)]
                assert list(got_values) == list(values[r]), f"tile ({ki}, {ni}) row {r} values"
                assert got_idx == list(idx[r]), f"tile ({ki}, {ni}) row {r} indices"
