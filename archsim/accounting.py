"""What one executed instruction adds to the statistics: MACs, DRAM and SRAM bytes, vector
groups. Pure bookkeeping, shared by both timing engines (the SimPy model and ``archsim.fast``)
so they cannot count differently.
"""

from __future__ import annotations

from archsim.stats import SegmentStats
from dataflows.cost import transfer_bytes
from dataflows.isa import UNIT_OF, Instr, Op, Unit
from workloads.spec import HardwareSpec

__all__ = ["account"]

#: The on-chip buffer each DMA instruction fills or drains.
_DMA_TARGET = {Op.LOAD_A: "input", Op.LOAD_B: "weight", Op.STORE_C: "accumulator",
               Op.STORE_B: "weight"}


def _dma(stats: SegmentStats, instr: Instr, tag: int, hw: HardwareSpec) -> None:
    nbytes = transfer_bytes(instr, hw)
    if instr.op == Op.LOAD_MASK:  # into the vector unit's small mask store, not a buffer
        stats.add_dram(tag, read=nbytes)
        return
    buffer = _DMA_TARGET[instr.op]
    if instr.op in (Op.LOAD_A, Op.LOAD_B):
        stats.add_dram(tag, read=nbytes)
        stats.sram_write_bytes[buffer] += nbytes
    else:
        stats.add_dram(tag, written=nbytes)
        stats.sram_read_bytes[buffer] += nbytes


def _pe(stats: SegmentStats, instr: Instr, tag: int, hw: HardwareSpec) -> None:
    """A COMPUTE: MACs, the weight tile and streamed activations read, accumulators updated."""
    stats.add_macs(tag, instr.m * instr.k * instr.cols)
    span = instr.k // instr.nm_n * instr.nm_m if instr.nm_n else instr.k
    stats.sram_read_bytes["weight"] += instr.k * instr.cols * hw.data_bytes
    stats.sram_read_bytes["input"] += instr.m * span * hw.data_bytes
    acc_bytes = instr.m * instr.cols * hw.acc_bytes
    if instr.accumulate:
        stats.sram_read_bytes["accumulator"] += acc_bytes
    stats.sram_write_bytes["accumulator"] += acc_bytes


def _vector(stats: SegmentStats, instr: Instr, tag: int, hw: HardwareSpec) -> None:
    if instr.op == Op.COMPRESS:  # dense weight tile → N:M in place
        groups = instr.rows // instr.nm_m * instr.cols
        stats.vector_groups += groups
        stats.sram_read_bytes["weight"] += instr.rows * instr.cols * hw.data_bytes
        stats.sram_write_bytes["weight"] += groups * instr.nm_n * hw.data_bytes
        return
    # The online softmax on a score or output tile in the accumulator.
    tile = instr.rows * instr.cols * hw.acc_bytes
    stats.sram_read_bytes["accumulator"] += tile
    if instr.op in (Op.RESCALE, Op.NORMALIZE):
        stats.sram_write_bytes["accumulator"] += tile
    elif instr.op == Op.EXP:
        kept = instr.rows // instr.nm_m * instr.nm_n if instr.nm_n else instr.rows
        stats.sram_write_bytes["weight"] += kept * instr.cols * hw.data_bytes


_BY_UNIT = {Unit.DMA: _dma, Unit.PE: _pe, Unit.VEC: _vector}


def account(stats: SegmentStats, instr: Instr, tag: int, hw: HardwareSpec) -> None:
    """Add what ``instr`` (serving ``tag``) did to ``stats``."""
    _BY_UNIT[UNIT_OF[instr.op]](stats, instr, tag, hw)
