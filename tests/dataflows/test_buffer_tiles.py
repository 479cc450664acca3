"""Buffer-level tiles and the mapping search (issue 13, parts 1 and 3): DRAM reads, reuse, and
how close a GEMM comes to its PE busy cycles when memory allows."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dataflows import tiling
from dataflows.cost import latency, program_cycles, transfer_bytes
from dataflows.isa import Op
from dataflows.scheduler import build_segment
from dataflows.tiling import dram_read_bytes
from workloads.errors import MappingError
from workloads.layer import ConvShape
from workloads.load import load_hardware
from workloads.lowering import GemmTask
from workloads.spec import SchedulePasses

BIG = 1 << 30


def _hw(rows: int, cols: int, *extra: str):
    return load_hardware("tiny", overrides=[
        f"array.rows={rows}", f"array.cols={cols}", f"buffers.input_bytes={BIG}",
        f"buffers.weight_bytes={BIG}", f"buffers.accumulator_bytes={BIG}",
        "dram.bandwidth_bytes_per_cycle=1048576", *extra])


def _reads(program, hw) -> int:
    return sum(transfer_bytes(i, hw) for i in program.instrs if i.op in (Op.LOAD_A, Op.LOAD_B))


def _task(m, k, n, nm=None, copies=1) -> GemmTask:
    return GemmTask("g", "g", "ff", m, k, n, nm, "g.W.ff" if nm else None, copies)


@pytest.mark.parametrize("shape", [
    (256, 64, 128, None), (64, 128, 64, None), (100, 64, 48, None), (32, 256, 256, None),
    (128, 128, 128, (2, 8)), (200, 96, 64, (2, 4)), (40, 64, 96, (1, 4)), (30, 40, 20, None, 2),
])
@pytest.mark.parametrize("array", [(16, 16), (4, 4)])
def test_a_gemm_whose_working_set_fits_reads_each_operand_once(shape, array):
    hw = _hw(*array)
    task = _task(*shape)
    segment = build_segment((task,), hw, SchedulePasses())
    tensors = segment.program.tensors
    assert _reads(segment.program, hw) == tensors["g.A"].nbytes + tensors["g.B"].nbytes


def test_the_256x64x128_gemm_reads_24_kib_and_is_not_dma_bound():
    hw = _hw(16, 16)
    program = build_segment((_task(256, 64, 128),), hw, SchedulePasses()).program
    assert _reads(program, hw) == 256 * 64 + 64 * 128
    pe = sum(latency(i, hw) for i in program.instrs if i.op == Op.COMPUTE)
    dma = sum(latency(i, hw) for i in program.instrs if i.unit == 0)
    assert dma < pe


@pytest.mark.parametrize("shape, array", [
    ((512, 256, 256, None), (16, 16)), ((256, 256, 256, None), (16, 16)),
    ((128, 64, 64, None), (4, 4)), ((128, 64, 96, (2, 4)), (4, 4)),
])
def test_with_enough_memory_a_large_gemm_runs_within_2_percent_of_pe_busy(shape, array):
    """GEMMs of at least 16 × 16 array tiles (k × n). What remains is the first A chunk and the
    last output chunk crossing the memory port (one beat per row at least): about
    2·(tm + latency) cycles, so about 2 / (k-tiles × n-tiles) of PE busy (docs/scheduler.md)."""
    hw = _hw(*array)
    program = build_segment((_task(*shape),), hw, SchedulePasses()).program
    pe = sum(latency(i, hw) for i in program.instrs if i.op == Op.COMPUTE)
    cycles = program_cycles(program, hw)
    assert cycles <= 1.02 * pe, f"{cycles} cycles for {pe} PE busy cycles"


@st.composite
def convs(draw):
    """The forward GEMM of a small convolution (the search may generate its A rows from the
    feature map: tests/dataflows/test_conv_addressing.py)."""
    nm = draw(st.sampled_from([None, None, (2, 4), (1, 4)]))
    tk = 4 if nm is None else 4 // nm[0] * nm[1]
    kernel = draw(st.sampled_from([2, 3, 3, 5]))
    stride = draw(st.sampled_from([1, 2]))
    padding = draw(st.integers(0, kernel // 2))
    low = max(1, kernel - 2 * padding, stride)
    conv = ConvShape(draw(st.integers(1, 2)), draw(st.integers(low, 10)),
                     draw(st.integers(low, 10)), tk * draw(st.integers(1, 2)), kernel, kernel,
                     stride, padding)
    n = draw(st.integers(1, 12)) * (nm[1] if nm else 1)
    rows, k = conv.batch * conv.out_h * conv.out_w, kernel * kernel * conv.channels
    if nm is None and draw(st.booleans()):  # its weight gradient (B = X's im2col matrix)
        # C_out ≥ 3·(4 + 4 + 1) on tiny: the weight-side mode; shorter: swapped, through the
        # transposing read (where a chunk's rows fit the accumulator).
        c_out = n if draw(st.booleans()) else 27 + n
        return GemmTask("c.wg", "c", "wg", c_out, rows, k,
                        im2col_elems=conv.batch * conv.in_h * conv.in_w * conv.channels, conv=conv)
    return GemmTask("c", "c", "ff" if nm else "inference", rows, k, n, nm,
                    "c.W.ff" if nm else None, conv=conv)


@st.composite
def gemms(draw):
    if draw(st.integers(0, 3)) == 0:
        return draw(convs())
    nm = draw(st.sampled_from([None, None, (2, 4), (1, 4), (2, 8)]))
    step = nm[1] if nm else 1
    m = draw(st.integers(1, 48))
    k = step * draw(st.integers(1, 64 // step))
    n = draw(st.integers(1, 24))
    return _task(m, k, n, nm, draw(st.integers(1, 2)))


_SIZES = st.sampled_from([256, 512, 1024, 2048, 4096, 8192])


@settings(max_examples=60, deadline=None)
@given(gemms(), _SIZES, _SIZES, _SIZES, st.sampled_from(["input", "weight", "accumulator"]),
       st.booleans(), st.booleans())
def test_growing_a_buffer_never_raises_dram_reads(task, inp, wgt, acc, grown, double, compressed):
    """The search ranks by DRAM reads first over a candidate set that only grows with the
    buffers (convolution tilings among them); the program reads exactly what the estimate
    counts."""
    passes = SchedulePasses(double_buffering=double)
    reads = []
    for scale in (1, 2):
        sizes = {"input": inp, "weight": wgt, "accumulator": acc}
        sizes[grown] *= scale
        hw = load_hardware("tiny", overrides=[f"buffers.{b}_bytes={v}" for b, v in sizes.items()])
        try:
            segment = build_segment((task,), hw, passes, compressed)
        except MappingError:
            assume(False)
        program, tiling = segment.program, segment.work.tilings[0]
        slots = 2 if double else 1
        assert _reads(program, hw) == dram_read_bytes(task, tiling, hw, slots)
        reads.append(_reads(program, hw))
    assert reads[1] <= reads[0]


@settings(max_examples=40, deadline=None)
@given(gemms(), _SIZES, st.sampled_from([1, 2, 8, 64]), st.sampled_from([1, 2, 8, 64]),
       st.sampled_from([0, 40]), st.booleans(), st.booleans())
def test_the_search_remembered_for_another_dram_ranks_as_a_fresh_one(task, size, bw_a, bw_b,
                                                                      latency, double,
                                                                      compressed):
    """The search remembers its least-read candidates per hardware less DRAM: which tilings fit
    and what they read must not depend on DRAM, and re-ranking them under another DRAM must
    give what a fresh search gives."""
    def hw(bw):
        return load_hardware("tiny", overrides=[
            f"buffers.input_bytes={size}", f"dram.bandwidth_bytes_per_cycle={bw}",
            f"dram.latency_cycles={latency}"])
    slots = 2 if double else 1
    least = [[(key[0], t, loads) for key, t, loads in tiling._least_read(task, hw(bw), compressed,
                                                                       slots)]
             for bw in (bw_a, bw_b)]
    assert least[0] == least[1]
    tiling._LEAST_READ.clear()
    fresh = tiling.search_tilings(task, hw(bw_b), compressed, slots, top=4)
    tiling._LEAST_READ.clear()
    tiling.search_tilings(task, hw(bw_a), compressed, slots)
    assert tiling.search_tilings(task, hw(bw_b), compressed, slots, top=4) == fresh


@settings(max_examples=40, deadline=None)
@given(gemms(), _SIZES, st.sampled_from([1, 8, 64]), st.booleans(), st.booleans())
def test_the_search_estimates_only_the_least_read_yet_ranks_as_estimating_all(task, size, bw,
                                                                              double, compressed):
    """The search rates every candidate's loads and estimates cycles only for those reading
    the least: the same candidates, keys and order as estimating every one of them."""
    hw = load_hardware("tiny", overrides=[f"buffers.input_bytes={size}",
                                          f"dram.bandwidth_bytes_per_cycle={bw}"])
    slots = 2 if double else 1
    every = [(tiling._key_of(t, tiling.estimate(task, t, hw, slots)), t)
             for t in tiling._candidates(task, hw, compressed)]
    least = min((key[0] for key, _ in every), default=None)
    assert [(key, t) for key, t, _ in tiling._least_read(task, hw, compressed, slots)] == [
        (key, t) for key, t in every if key[0] == least]
