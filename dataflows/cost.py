"""Cycle and traffic formulas: small pure functions shared by the scheduler, the SimPy model and
the RTL (which is built to take exactly these many cycles; verification checks that it does).

All results are integer cycles, bytes or elements.
"""

from __future__ import annotations

from dataclasses import dataclass

from dataflows.isa import Instr, Op, row_bytes
from workloads.spec import HardwareSpec

__all__ = [
    "COMPUTE_PIPELINE_CYCLES",
    "ceil_div",
    "dma_cycles",
    "compute_cycles",
    "compress_cycles",
    "latency",
    "transfer_bytes",
    "GemmEstimate",
    "program_cycles",
]

#: Extra cycles of a COMPUTE beyond weight preload, streaming and the systolic skew: one to read
#: the input buffer into the array edge and one to add the column result into the accumulator.
COMPUTE_PIPELINE_CYCLES = 2


def ceil_div(a: int, b: int) -> int:
    """⌈a / b⌉ for non-negative integers."""
    return -(-a // b)


def dma_cycles(rows: int, bytes_per_row: int, hw: HardwareSpec) -> int:
    """Cycles of one DMA transfer: the DRAM latency once, then one beat per bus width of each row.

    Rows start on a beat boundary (a 2-D transfer issues one burst per row), so a row of
    ``bytes_per_row`` costs ⌈bytes_per_row / bandwidth⌉ beats.
    """
    beats = rows * ceil_div(bytes_per_row, hw.dram.bandwidth_bytes_per_cycle)
    return hw.dram.latency_cycles + beats


def compute_cycles(m_rows: int, hw: HardwareSpec) -> int:
    """Cycles of one weight-stationary COMPUTE on the full array (same for dense and N:M).

    ``rows`` cycles shift the weights in; ``m_rows`` activation rows then stream through; the
    last result leaves the skewed array ``rows + cols - 2`` cycles after the last row enters; plus
    :data:`COMPUTE_PIPELINE_CYCLES`. N:M mode costs the same cycles per tile, but each tile covers
    M/N times more of the reduction dimension, which is where its speedup comes from.
    """
    r, c = hw.array.rows, hw.array.cols
    return r + m_rows + r + c - 2 + COMPUTE_PIPELINE_CYCLES


def compress_cycles(dense_rows: int, cols: int, m: int, hw: HardwareSpec) -> int:
    """Cycles for the vector unit to compress ``dense_rows × cols`` weights into N:M form.

    Each lane selects the top-N of one group of M per cycle; a fixed pipeline follows.
    """
    groups = dense_rows // m * cols
    return ceil_div(groups, hw.vector_unit.lanes) + hw.vector_unit.pipeline_cycles


def transfer_bytes(instr: Instr, hw: HardwareSpec) -> int:
    """Bytes a DMA instruction moves across the DRAM interface (0 for other units)."""
    if instr.op in (Op.LOAD_A, Op.LOAD_B, Op.STORE_C, Op.STORE_B):
        return instr.rows * row_bytes(instr, hw)
    return 0


def latency(instr: Instr, hw: HardwareSpec) -> int:
    """Busy cycles of one instruction on its unit. The RTL must take exactly this long."""
    op = instr.op
    if op == Op.COMPUTE:
        return compute_cycles(instr.m, hw)
    if op == Op.COMPRESS:
        return compress_cycles(instr.rows, instr.cols, instr.nm_m, hw)
    return dma_cycles(instr.rows, row_bytes(instr, hw), hw)


@dataclass(frozen=True, slots=True)
class GemmEstimate:
    """Analytic per-unit busy cycles of one GEMM mapping (used by the offline tiling search)."""

    dma: int
    pe: int
    vec: int

    @property
    def cycles(self) -> int:
        # Double buffering overlaps the units; the busiest one bounds the GEMM.
        return max(self.dma, self.pe, self.vec)


def program_cycles(program, hw: HardwareSpec) -> int:
    """Cycles of a whole program under the timing rule of docs/isa.md, without simulating.

    Units run in order; an instruction starts when its unit is free and every other unit has
    completed ``wait[u]`` instructions. Because waits only point backwards in program order, one
    pass in program order computes every start time. The scheduler uses this exact figure to make
    decisions (``archsim`` cannot be imported from ``dataflows``); tests check it equals the SimPy
    model's cycle count.
    """
    ends: list[list[int]] = [[], [], []]  # per unit, end time of its i-th instruction
    free = [0, 0, 0]
    for instr in program.instrs:
        unit = instr.unit
        start = free[unit]
        for other, need in enumerate(instr.wait):
            if need and other != unit:
                start = max(start, ends[other][need - 1])
        free[unit] = start + latency(instr, hw)
        ends[unit].append(free[unit])
    return max(free)
