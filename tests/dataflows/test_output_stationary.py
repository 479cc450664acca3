"""The output-stationary COMPUTE in the model: its latency rule, derived by hand from the
timeline of docs/isa.md ("Output-stationary COMPUTE"), and the scheduler's chunked COMPUTEs."""

from __future__ import annotations

import dataclasses

import pytest

from archsim.model import run_program
from dataflows.cost import latency, program_cycles
from dataflows.isa import Instr, Op
from dataflows.program import Program
from dataflows.scheduler import gemm_program
from dataflows.tiling import Tiling, estimate, m_tiles, search_tiling
from workloads.arith import ceil_div
from workloads.load import load_hardware
from workloads.lowering import GemmTask

TINY_OS = load_hardware("tiny", overrides=["array.dataflow=output_stationary"])
WIDE_OS = load_hardware("tiny", overrides=["array.dataflow=output_stationary", "array.rows=8",
                                            "array.cols=4"])


def test_latency_by_hand_square():
    # tiny: R = C = 4. m = 10 rows → T = 3 m-tiles (4, 4, 2 rows), chunks kc = 3 → 9 blocks of
    # R = 4 cycles each. Block 8 (the last) fills in cycles s+32..s+35; the flush step after it
    # reaches PE(0,0) at τ(9, 0) = s + (9+1)·4 + 2 = s+42. Row 0 of the last tile leaves the
    # bottom of column C−1 = 3 at φ + 2R − 0 + 3 = s+53 and is added in that cycle: 54 cycles.
    compute = Instr(Op.COMPUTE, m=10, k=4, cols=4, chunks=3, k_last=2)
    assert latency(compute, TINY_OS) == 54


def test_latency_by_hand_tall():
    # R = 8, C = 4: m = 8 → one tile; one chunk. The block fills in s..s+7, its steps reach
    # PE(0,0) from τ(0, 0) = s + 8 + 2; the flush at τ(1, 0) = s + 2·8 + 2 = s+18; row 0,
    # column 3 at the bottom in s + 18 + 16 + 3 = s+37: 38 cycles, the same for m = 1 (a block
    # takes R cycles however few rows it holds).
    for m in (1, 8):
        assert latency(Instr(Op.COMPUTE, m=m, k=8, cols=4), WIDE_OS) == 38
    # Nine rows: two tiles, 8 more cycles.
    assert latency(Instr(Op.COMPUTE, m=9, k=8, cols=4), WIDE_OS) == 46


def test_program_by_hand():
    # A = 8×8, B = 8×4 on tiny (8-byte beats, 10 cycles DRAM latency): two k-chunks of 4.
    # DMA in program order: LOAD_A chunk 0 (8 rows of 4 B: 10 + 8 = 18 cycles) 0–18,
    # LOAD_B chunk 0 (4 rows: 14) 18–32, LOAD_A chunk 1 32–50, LOAD_B chunk 1 50–64.
    # COMPUTE waits for the 4 loads: m = 8 → 2 tiles × 2 chunks × 4 + 3·4 + 4 + 2 = 34: 64–98.
    # STORE_C (8 rows of 4 operands: 18) waits for it: 98–116.
    instrs = [
        Instr(Op.LOAD_A, rows=8, cols=4, stride=8),
        Instr(Op.LOAD_B, rows=4, cols=4, stride=4),
        Instr(Op.LOAD_A, rows=8, cols=4, stride=8, addr=4, a_row=8),
        Instr(Op.LOAD_B, rows=4, cols=4, stride=4, addr=16, b_row=4),
        Instr(Op.COMPUTE, wait=(4, 0, 0), m=8, k=4, cols=4, rows=8, chunks=2, a_chunk_rows=8,
              b_chunk_rows=4),
        Instr(Op.STORE_C, wait=(0, 1, 0), rows=8, cols=4, stride=4, requant=True),
    ]
    program = Program(instrs, [0] * len(instrs))
    assert program_cycles(program, TINY_OS) == 116
    assert run_program(program, TINY_OS).cycles == 116


def _task(m, k, n, nm=None):
    return GemmTask("g", "g", "inference", m, k, n, nm, "g.W" if nm else None, 1)


@pytest.mark.parametrize("shape", [(37, 64, 19, None), (64, 40, 16, (2, 4)), (9, 3, 5, None),
                                   (20, 14, 6, None), (30, 44, 9, (2, 4)),
                                   (50, 72, 8, (1, 4))])
def test_chunked_computes_cover_the_reduction(shape):
    """One COMPUTE per buffer tile and n-chunk, its chunks summing to the buffer tile's
    reduction; the program's MACs are the GEMM's; SimPy, the exact formula and the
    analytic PE estimate agree on the COMPUTE cycles."""
    m, k, n, nm = shape
    task = _task(m, k, n, nm)
    for kb in (1, 2, 3):
        tiling = Tiling(8, 8 if nm else 4, 4, kb=kb, sparse=nm is not None)
        program = gemm_program((task,), (tiling,), TINY_OS)
        computes = [i for i in program.instrs if i.op == Op.COMPUTE]
        steps = sum(i.m * sum(i.chunk_steps) * i.cols for i in computes)
        n_m, n_n = nm if nm else (1, 1)
        assert steps == m * (k // n_n * n_m if nm else k) * n
        assert len(computes) == ceil_div(m, 8) * ceil_div(n, 4) * ceil_div(ceil_div(k, tiling.tk), kb)
        assert sum(latency(i, TINY_OS) for i in computes) == estimate(task, tiling, TINY_OS).pe
        assert run_program(program, TINY_OS).cycles == program_cycles(program, TINY_OS)


def test_searched_tilings_run_on_both_arrays():
    """The search maps a GEMM for the array in use; an N:M GEMM's MACs are the same on both."""
    ws = load_hardware("tiny")
    task = _task(64, 64, 16, (2, 4))
    macs = {}
    for hw in (ws, TINY_OS):
        tiling = search_tiling(task, hw, False)
        stats = run_program(gemm_program((task,), (tiling,), hw), hw)
        macs[hw.array.dataflow] = stats.tasks[0].macs
    assert macs["weight_stationary"] == macs["output_stationary"] == 64 * 32 * 16


def _conv_layer(batch, size, c_in, c_out, kernel, stride, padding):
    from workloads.layers import expand
    from workloads.spec import WorkloadSpec
    conv = {"op": "conv2d", "name": "cv", "in_channels": c_in, "out_channels": c_out,
            "kernel": kernel, "stride": stride, "padding": padding, "input_size": size,
            "batch": batch}
    spec = WorkloadSpec.model_validate({"version": 1, "name": "t", "hardware": TINY_OS,
                                        "mode": "training", "operations": [conv]})
    (layer,) = expand(spec)
    return layer


def test_a_short_weight_gradient_chunks_through_the_weight_side_mode():
    """On the output-stationary array a weight gradient with a short C_out (which the
    weight-stationary array runs swapped through the transposing read) reads X through the
    weight-side address mode, reducing over a buffer tile's pixels in one COMPUTE."""
    from dataflows.scheduler import build_segment
    from workloads.lowering import lower_layer
    from workloads.spec import SchedulePasses
    wg = [t for t in lower_layer(_conv_layer(2, 9, 8, 8, 3, 1, 1), "training")
          if t.phase == "wg"][0]
    segment = build_segment((wg,), TINY_OS, SchedulePasses())
    tiling = segment.work.tilings[0]
    assert tiling.conv_b and not tiling.conv_t
    computes = [i for i in segment.program.instrs if i.op == Op.COMPUTE]
    assert max(i.chunks for i in computes) > 1
    assert all(i.conv is not None and i.conv.b and i.b_chunk_rows == 0 for i in computes)
    assert sum(i.m * sum(i.chunk_steps) * i.cols for i in computes) == wg.m * wg.k * wg.n
    assert sum(latency(i, TINY_OS) for i in computes) == estimate(wg, tiling, TINY_OS).pe


def test_a_convolution_walks_its_kernel_offsets_in_one_compute():
    """A convolution whose A comes through the address mode: one COMPUTE per buffer tile and
    n-chunk walks the tile's kernel offsets and channel chunks (``isa.os_conv_chunks``);
    every (m-tile, kernel offset, channel chunk) is covered exactly once."""
    from dataflows.isa import conv_part_rows, os_conv_chunks
    from dataflows.scheduler import build_segment
    from workloads.lowering import lower_layer
    from workloads.spec import SchedulePasses
    ff = [t for t in lower_layer(_conv_layer(2, 8, 8, 8, 3, 1, 1), "training")
          if t.phase == "ff"][0]
    segment = build_segment((ff,), TINY_OS, SchedulePasses())
    tiling = segment.work.tilings[0]
    assert tiling.conv
    computes = [i for i in segment.program.instrs if i.op == Op.COMPUTE]
    assert max(i.chunks for i in computes) > 1
    assert sum(i.m * sum(i.chunk_steps) * i.cols for i in computes) == ff.m * ff.k * ff.n
    assert sum(latency(i, TINY_OS) for i in computes) == estimate(ff, tiling, TINY_OS).pe
    walked = 0
    for i in computes:
        chunks = os_conv_chunks(i.conv, i.a_row, max(1, i.chunks))
        assert len(chunks) == max(1, i.chunks)
        assert all(len(conv_part_rows(a, row, i.m)[0]) == i.m for row, a in chunks)
        walked += max(1, i.chunks)
    # every (m-tile, n-tile) walks all kh·kw offsets of every channel chunk
    assert walked == len(m_tiles(ff, tiling)) * ceil_div(ff.n, tiling.tn) * ceil_div(ff.k, tiling.tk)


@pytest.mark.parametrize("layer, nm", [((2, 8, 8, 8, 3, 1, 1), None), ((2, 9, 4, 8, 3, 2, 1), (2, 4)),
                                       ((2, 8, 4, 8, 3, 1, 1), (2, 4))])
def test_the_walk_reads_what_one_compute_per_chunk_reads(layer, nm):
    """Under one tiling, an output-stationary COMPUTE's chunks (``isa.os_conv_chunks``) read
    exactly the rows the weight-stationary array's one COMPUTE per chunk reads, in order —
    grouped kernel offsets (channels fewer than the reduction tile) included."""
    from dataflows.isa import os_conv_chunks
    from dataflows.scheduler import build_segment
    from workloads.lowering import lower_layer
    from workloads.spec import SchedulePasses
    ws = load_hardware("tiny")
    ff = [t for t in lower_layer(_conv_layer(*layer), "training") if t.phase == "ff"][0]
    if nm:
        ff = dataclasses.replace(ff, phase="inference", nm=nm, weight="w")
    tiling = build_segment((ff,), TINY_OS, SchedulePasses()).work.tilings[0]
    assert tiling.conv

    def reads(addr):
        return (addr.dh, addr.dw, max(1, addr.group), addr.oh0, addr.ow0, addr.lo)

    per_chunk = [(i.a_row, reads(i.conv), i.c_row, i.b_row)
                 for i in gemm_program((ff,), (tiling,), ws).instrs if i.op == Op.COMPUTE]
    walked = []
    for i in gemm_program((ff,), (tiling,), TINY_OS).instrs:
        if i.op == Op.COMPUTE:
            chunks = os_conv_chunks(i.conv, i.a_row, max(1, i.chunks))
            walked.append([(row, reads(a), i.c_row) for row, a in chunks])
    # Per n-chunk (c_row), in program order: the weight-stationary array's chunks one
    # COMPUTE each, the output-stationary array's walked by one COMPUTE per buffer tile.
    ws_by_tile = {}
    for a_row, addr, c_row, _ in per_chunk:
        ws_by_tile.setdefault(c_row, []).append((a_row, addr, c_row))
    os_by_tile = {}
    for chunk_list in walked:
        os_by_tile.setdefault(chunk_list[0][2], []).extend(chunk_list)
    assert os_by_tile == ws_by_tile
