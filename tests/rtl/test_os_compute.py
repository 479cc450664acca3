"""The output-stationary array on ``AccelTop``: hand-built programs, values against the golden
interpreter, every instruction's start and end against archsim, every COMPUTE exactly
``dataflows.cost.os_compute_cycles`` long (docs/isa.md, "Output-stationary COMPUTE").

Each program loads random operands (the whole DRAM image is random bytes), runs one or more
COMPUTEs back to back and stores the accumulators unrequantized (every bit of the sums).
"""

from __future__ import annotations

import numpy as np
import pytest
from rtl_harness import check_values, prepare_case, run_on_rtl

from archsim.model import run_program
from dataflows.cost import latency, os_compute_cycles
from dataflows.isa import ConvAddress, Instr, Op
from dataflows.program import Program
from dataflows.scheduler import build_segment
from verification.dram import DramImage
from verification.golden import Prepared, run_golden
from verification.programs import Case
from workloads.load import load_hardware
from workloads.lowering import GemmTask
from workloads.spec import SchedulePasses

TINY_OS = load_hardware("tiny", overrides=["array.dataflow=output_stationary"])
IMAGE_BYTES = 4096
OUT = 3072  # where the STORE_Cs write (the operands lie below)


def _run(instrs: list[Instr], seed: int, hw=TINY_OS) -> tuple[Program, Prepared, object]:
    """Run ``instrs`` on the golden interpreter, archsim and the RTL from one random image;
    assert the RTL's image and per-instruction trace equal theirs."""
    program = Program(instrs, [0] * len(instrs))
    image = DramImage(IMAGE_BYTES)
    image.data[:] = np.random.default_rng(seed).integers(0, 256, IMAGE_BYTES, dtype=np.uint8)
    expected = run_golden(program, hw, image)
    stats = run_program(program, hw, trace=True)
    case = Case(seed, "os", hw, program, (), (), "gemm", SchedulePasses())
    prepared = Prepared(case, image, expected, list(stats.trace), stats.cycles)
    result = run_on_rtl(prepared)
    bad = expected.differing(result.image)
    assert len(bad) == 0, f"{len(bad)} bytes differ from the golden image, first at {bad[0]:#x}"
    assert result.trace == prepared.trace, (result.trace, prepared.trace)
    assert result.cycles == result.busy_cycles == prepared.cycles
    for instr, (start, end) in zip(instrs, result.trace):
        if instr.op == Op.COMPUTE:
            assert end - start == latency(instr, hw) == os_compute_cycles(instr.m, instr.chunks, hw)
    return program, prepared, result


def _store(rows: int, cols: int, c_row: int = 0, wait_pe: int = 1) -> Instr:
    """The accumulators as 32-bit sums, one DRAM row of ``cols`` per accumulator row."""
    return Instr(Op.STORE_C, wait=(0, wait_pe, 0), addr=OUT + c_row * 16, stride=16, rows=rows,
                 cols=cols, c_row=c_row)


def test_dense_chunks_ragged_m_narrow_cols_and_accumulate():
    # m = 10 (tiles of 4, 4, 2 rows), three chunks of k = 4, 4, 2 steps: chunk c's A rows at
    # slot row 2 + 12c, its weight rows at 1 + 5c; 3 of the 4 columns. A second COMPUTE
    # (other slots, one chunk, k = 3) adds onto the same accumulators right after the first.
    loads = [Instr(Op.LOAD_A, addr=64 * c, stride=4, rows=10, cols=4, a_row=2 + 12 * c)
             for c in range(3)]
    loads += [Instr(Op.LOAD_B, addr=256 + 16 * c, stride=3, rows=4, cols=3, b_row=1 + 5 * c)
              for c in range(3)]
    loads += [Instr(Op.LOAD_A, slot=1, addr=512, stride=3, rows=10, cols=3),
              Instr(Op.LOAD_B, slot=1, addr=600, stride=3, rows=3, cols=3, b_row=2)]
    computes = [
        Instr(Op.COMPUTE, wait=(6, 0, 0), m=10, k=4, cols=3, rows=10, a_row=2, b_row=1,
              chunks=3, a_chunk_rows=12, b_chunk_rows=5, k_last=2),
        Instr(Op.COMPUTE, wait=(8, 0, 0), slot=1, b_slot=1, m=10, k=3, cols=3, rows=10,
              b_row=2, accumulate=True),
    ]
    _run(loads + computes + [_store(10, 3, wait_pe=2)], seed=1)


@pytest.mark.parametrize("n, m, chunks", [(2, 4, 2), (1, 4, 1)])
def test_nm_patterns(n, m, chunks):
    # 2:4: k = 4 steps (two groups: 8 operands per A row), then a last chunk of 2 steps; 1:4:
    # 4 steps of one kept weight per group of 4 (16 operands per A row). m = 7, c_row 3.
    width = 4 // n * m
    loads = [Instr(Op.LOAD_A, addr=128 * c, stride=width, rows=7, cols=width, a_row=8 * c)
             for c in range(chunks)]
    loads += [Instr(Op.LOAD_B, addr=512 + 32 * c, stride=5, rows=4, cols=4, b_row=4 * c,
                    nm_n=n, nm_m=m) for c in range(chunks)]
    compute = Instr(Op.COMPUTE, wait=(2 * chunks, 0, 0), m=7, k=4, cols=4, rows=7, c_row=3,
                    nm_n=n, nm_m=m, chunks=chunks, a_chunk_rows=8, b_chunk_rows=4,
                    k_last=2 if chunks > 1 else 0)
    _run(loads + [compute, _store(7, 4, c_row=3)], seed=2 + n)


def test_conv_address_mode_stride_2_padded():
    # One 3x3-kernel offset (kh, kw) = (0, 2) of a stride-2, padding-1 convolution over two
    # 5x6 images of 4 channels: (dh, dw) = (-1, 1); output 3x3 per image; 11 output pixels
    # from pixel (0, 1) of image 0 on, so some rows are padding (zero) and the walk crosses
    # into image 1. One slot row per input pixel, from slot row 3.
    conv = ConvAddress(stride=2, in_h=5, in_w=6, out_h=3, out_w=3, oh0=0, lo=0, dh=-1, dw=1,
                       ow0=1, kh=3, kw=3, kw0=2)
    instrs = [
        Instr(Op.LOAD_A, addr=0, stride=4, rows=60, cols=4, a_row=3),
        Instr(Op.LOAD_B, addr=512, stride=4, rows=4, cols=4),
        Instr(Op.COMPUTE, wait=(2, 0, 0), m=11, k=4, cols=4, rows=11, a_row=3, conv=conv),
        _store(11, 4),
    ]
    _run(instrs, seed=5)


def test_conv_weight_rows_restart_every_block():
    # The weight-side mode (conv_b): weight row r of every m-tile is pixel r of the mode from
    # (oh0, ow0) = (1, 2) of a padded stride-1 3x3 walk (dh = dw = -1) over a 4x4 image, one
    # weight row per pixel, 3 columns; k = 4 pixels, m = 9 (three tiles), dense.
    conv = ConvAddress(stride=1, in_h=4, in_w=4, out_h=4, out_w=4, oh0=1, lo=0, dh=-1, dw=-1,
                       ow0=2, b=True)
    instrs = [
        Instr(Op.LOAD_A, addr=0, stride=4, rows=9, cols=4),
        Instr(Op.LOAD_B, addr=256, stride=3, rows=16, cols=3, b_row=2),
        Instr(Op.COMPUTE, wait=(2, 0, 0), m=9, k=4, cols=3, rows=9, b_row=2, conv=conv),
        _store(9, 3),
    ]
    _run(instrs, seed=6)


def test_conv_chunks_walk_kernel_offsets_and_channel_chunks():
    # A 3x3 stride-2 padding-1 convolution over two 5x6 images, 4 channels per chunk: one
    # COMPUTE walks 5 chunks from kernel offset 6 = (2, 0) (so dh = 1, dw = -1): offsets
    # 6, 7, 8 of channel chunk 0, then 0, 1 of channel chunk 1 (its patch 60 slot rows on),
    # the last chunk 2 steps; m = 10 output pixels from (0, 2) of image 0 (three m-tiles,
    # into image 1): the counters restart at every block, at the m-tile's first pixel.
    conv = ConvAddress(stride=2, in_h=5, in_w=6, out_h=3, out_w=3, oh0=0, lo=0, dh=1, dw=-1,
                       ow0=2, kh=3, kw=3, kh0=2, kw0=0, chunk_rows=60)
    instrs = [
        Instr(Op.LOAD_A, addr=0, stride=4, rows=60, cols=4, a_row=1),
        Instr(Op.LOAD_A, addr=240, stride=4, rows=60, cols=4, a_row=61),
        Instr(Op.LOAD_B, addr=512, stride=4, rows=20, cols=4, b_row=1),
        Instr(Op.COMPUTE, wait=(3, 0, 0), m=10, k=4, cols=4, rows=10, a_row=1, b_row=1,
              conv=conv, chunks=5, b_chunk_rows=4, k_last=2),
        _store(10, 4),
    ]
    _run(instrs, seed=8)


def test_conv_chunks_of_several_offsets_per_row():
    # 2:4 over 4 channels: a chunk of k = 4 compressed steps covers 8 operands, two kernel
    # offsets side by side (conv_group = 2, two parts of one slot row each). A 2x2 kernel,
    # padding 1, stride 1 over one 4x5 image: 3 chunks from offset 2 = (1, 0) — offsets
    # {2, 3} of channel chunk 0, {0, 1} and {2, 3} of channel chunk 1 (20 slot rows on);
    # m = 9 pixels from (1, 3).
    conv = ConvAddress(stride=1, in_h=4, in_w=5, out_h=5, out_w=6, oh0=1, lo=0, dh=0, dw=-1,
                       ow0=3, group=2, kh=2, kw=2, kh0=1, kw0=0, chunk_rows=20)
    instrs = [
        Instr(Op.LOAD_A, addr=0, stride=4, rows=40, cols=4, a_row=2),
        Instr(Op.LOAD_B, addr=512, stride=5, rows=12, cols=4, nm_n=2, nm_m=4),
        Instr(Op.COMPUTE, wait=(2, 0, 0), m=9, k=4, cols=4, rows=9, a_row=2, conv=conv,
              nm_n=2, nm_m=4, chunks=3, b_chunk_rows=4),
        _store(9, 4),
    ]
    _run(instrs, seed=9)


def test_conv_weight_rows_go_on_across_chunks():
    # conv_b with 3 chunks (k = 4, 4, 3): weight row (c, r) is the mode's pixel c·4 + r from
    # (oh0, ow0) = (0, 1) of a stride-2 padded walk over two 5x5 images (out 3x3), restarting
    # at every m-tile (m = 6: two); b_chunk_rows is unused (0).
    conv = ConvAddress(stride=2, in_h=5, in_w=5, out_h=3, out_w=3, oh0=0, lo=0, dh=-1, dw=0,
                       ow0=1, b=True)
    instrs = [
        Instr(Op.LOAD_A, addr=0, stride=4, rows=6, cols=4),
        Instr(Op.LOAD_A, addr=64, stride=4, rows=6, cols=4, a_row=8),
        Instr(Op.LOAD_A, addr=128, stride=4, rows=6, cols=4, a_row=16),
        Instr(Op.LOAD_B, addr=256, stride=4, rows=50, cols=4),
        Instr(Op.COMPUTE, wait=(4, 0, 0), m=6, k=4, cols=4, rows=6, conv=conv, chunks=3,
              a_chunk_rows=8, k_last=3),
        _store(6, 4),
    ]
    _run(instrs, seed=10)


def test_cycles_by_hand():
    # tiny: R = C = 4, 8-byte beats, DRAM latency 10. LOAD_A of 5 rows of 3 B (one beat
    # each): 10 + 5 = 15 cycles, 0–15; LOAD_B of 3 rows: 13, 15–28. The COMPUTE (m = 5: two
    # tiles, one chunk) issues in s = 28: block 0 fills in s..s+3, block 1 in s+4..s+7
    # (one row); the flush step reaches PE(0,0) at τ(2, 0) = s + 3·4 + 2 = s+14, so row 0 of
    # tile 1 leaves the bottom of column 3 at s + 14 + 2·4 + 3 = s+25 and is added in that
    # cycle: 26 cycles (2·4 + 3·4 + 4 + 2), 28–54. STORE_C of 5 rows of 2 sums (8 B, one
    # beat): 10 + 5 = 15, 54–69.
    instrs = [
        Instr(Op.LOAD_A, addr=0, stride=3, rows=5, cols=3),
        Instr(Op.LOAD_B, addr=64, stride=2, rows=3, cols=2),
        Instr(Op.COMPUTE, wait=(2, 0, 0), m=5, k=3, cols=2, rows=5),
        _store(5, 2),
    ]
    _, prepared, result = _run(instrs, seed=7)
    assert result.trace == [(0, 15), (15, 28), (28, 54), (54, 69)]
    assert result.cycles == 69


def _task(m, k, n, nm=None):
    return GemmTask("g", "g", "inference", m, k, n, nm, "g.W" if nm else None, 1)


@pytest.mark.parametrize("shape, passes", [
    ((6, 10, 7, None), SchedulePasses(offline_tiling=False)),
    ((13, 22, 7, None), SchedulePasses()),  # chunked COMPUTEs with a narrower k_last
    ((9, 24, 6, (2, 4)), SchedulePasses()),
    ((5, 24, 5, (1, 4)), SchedulePasses()),
])
def test_scheduler_programs(shape, passes):
    """Real ``build_segment`` programs for the output-stationary array, as
    tests/rtl/test_program.py runs the weight-stationary ones."""
    task = _task(*shape)
    segment = build_segment((task,), TINY_OS, passes, compressed_in_dram=True)
    prepared = prepare_case(TINY_OS, segment.program, segment.work.tasks, segment.work.tilings,
                            passes, seed=sum(shape[:3]))
    result = run_on_rtl(prepared)
    check_values(prepared, result)
    assert result.cycles == result.busy_cycles == prepared.cycles
    assert result.trace == prepared.trace
    if shape[0] == 13:
        assert any(i.chunks > 1 and i.k_last for i in segment.program.instrs)
