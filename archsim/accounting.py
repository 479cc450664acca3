"""What one executed instruction adds to the statistics: MACs, DRAM and SRAM bytes, vector
groups. Pure bookkeeping, shared by both timing engines (the SimPy model and ``archsim.fast``)
so they cannot count differently.

:func:`charges` depends only on an instruction's shape (not its addresses or waits), which is
what lets both engines compute it once per distinct shape (:func:`account_program`; a test
holds every instruction of the shipped examples to the charges of its shape's first one).
"""

from __future__ import annotations

from dataclasses import dataclass

from archsim.stats import SegmentStats
from dataflows.cost import shape_counts, shape_index, shape_of, transfer_bytes
from dataflows.isa import SPGEMM_ENGINE_OPS, UNIT_OF, Instr, Op, Unit
from workloads.arith import ceil_div
from workloads.spec import HardwareSpec

__all__ = ["Charges", "charges", "book", "account_program", "shape_of"]

#: The on-chip buffer each DMA instruction fills or drains.
_DMA_TARGET = {Op.LOAD_A: "input", Op.LOAD_B: "weight", Op.STORE_C: "accumulator",
               Op.STORE_B: "weight"}


@dataclass(frozen=True, slots=True)
class Charges:
    """What one instruction adds: to its tag (MACs, DRAM bytes) and to the buffers' SRAM bytes."""

    macs: int = 0
    dram_read: int = 0
    dram_write: int = 0
    sram_read: tuple[tuple[str, int], ...] = ()
    sram_write: tuple[tuple[str, int], ...] = ()
    groups: int = 0


def _dma(instr: Instr, hw: HardwareSpec) -> Charges:
    nbytes = transfer_bytes(instr, hw)
    if instr.op == Op.LOAD_MASK:  # into the vector unit's small mask store, not a buffer
        return Charges(dram_read=nbytes)
    if instr.op == Op.STATS:  # the vector unit's per-query registers, not a buffer
        return Charges(dram_write=nbytes) if instr.accumulate else Charges(dram_read=nbytes)
    if instr.op == Op.STORE_ADD:  # read-modify-write: half the bytes each way
        tile = instr.rows * instr.cols * hw.acc_bytes
        return Charges(dram_read=nbytes // 2, dram_write=nbytes // 2,
                       sram_read=(("accumulator", tile),))
    buffer = _DMA_TARGET[instr.op]
    if instr.op in (Op.LOAD_A, Op.LOAD_B):
        return Charges(dram_read=nbytes, sram_write=((buffer, nbytes),))
    if instr.op == Op.STORE_C:  # reads whole accumulators, even when it writes them requantized
        return Charges(dram_write=nbytes,
                       sram_read=((buffer, instr.rows * instr.cols * hw.acc_bytes),))
    return Charges(dram_write=nbytes, sram_read=((buffer, nbytes),))


def _pe(instr: Instr, hw: HardwareSpec) -> Charges:
    """A COMPUTE: MACs, the weight tile and streamed activations read, accumulators updated."""
    steps = sum(instr.chunk_steps)
    span = steps // instr.nm_n * instr.nm_m if instr.nm_n else steps
    acc_bytes = instr.m * instr.cols * hw.acc_bytes
    # The output-stationary array streams the weight rows again for every block of PE rows.
    passes = ceil_div(instr.m, hw.array.rows) if hw.array.output_stationary else 1
    reads = [("weight", passes * steps * instr.cols * hw.data_bytes),
             ("input", instr.m * span * hw.data_bytes)]
    if instr.accumulate:
        reads.append(("accumulator", acc_bytes))
    return Charges(macs=instr.m * steps * instr.cols, sram_read=tuple(reads),
                   sram_write=(("accumulator", acc_bytes),))


def _vector(instr: Instr, hw: HardwareSpec) -> Charges:
    if instr.op == Op.COMPRESS:  # dense weight tile → N:M in place
        groups = instr.rows // instr.nm_m * instr.cols
        return Charges(sram_read=(("weight", instr.rows * instr.cols * hw.data_bytes),),
                       sram_write=(("weight", groups * instr.nm_n * hw.data_bytes),), groups=groups)
    # The online softmax on a score or output tile in the accumulator.
    tile = instr.rows * instr.cols * hw.acc_bytes
    if instr.op in (Op.RESCALE, Op.NORMALIZE):
        return Charges(sram_read=(("accumulator", tile),), sram_write=(("accumulator", tile),))
    if instr.op == Op.PEXP:  # scores → probabilities in a weight slot
        return Charges(sram_read=(("accumulator", tile),),
                       sram_write=(("weight", instr.rows * instr.cols * hw.data_bytes),))
    if instr.op == Op.DSCORE:
        return _dscore(instr, hw)
    if instr.op == Op.EXP:
        kept = instr.rows // instr.nm_m * instr.nm_n if instr.nm_n else instr.rows
        return Charges(sram_read=(("accumulator", tile),),
                       sram_write=(("weight", kept * instr.cols * hw.data_bytes),))
    return Charges(sram_read=(("accumulator", tile),))


def _dscore(instr: Instr, hw: HardwareSpec) -> Charges:
    """dS = P ∘ (dP − D): P from the weight slot, dP from the accumulator, dS written to the
    weight slot and the input slot. Its D form reads dO (input slot) and O (weight slot)."""
    operand = instr.rows * instr.cols * hw.data_bytes
    if instr.accumulate:
        return Charges(sram_read=(("input", operand), ("weight", operand)))
    return Charges(sram_read=(("weight", operand),
                              ("accumulator", instr.rows * instr.cols * hw.acc_bytes)),
                   sram_write=(("weight", operand), ("input", operand)))


def _spgemm(instr: Instr, hw: HardwareSpec) -> Charges:
    """SpGEMM ops: DRAM bytes only. The engine's multiplies are counted by the SpGEMM result
    (``archsim.spgemm``), not as the array's MACs; its scratchpad is not one of the buffers."""
    if instr.op == Op.SP_LOAD:
        return Charges(dram_read=instr.nbytes)
    if instr.op == Op.SP_STORE:  # spilled products go out with the output and come back
        return Charges(dram_read=instr.spill_bytes, dram_write=instr.nbytes)
    return Charges()


_BY_UNIT = {Unit.DMA: _dma, Unit.PE: _pe, Unit.VEC: _vector}
_SPGEMM_OPS = SPGEMM_ENGINE_OPS | {Op.SP_LOAD, Op.SP_STORE}


def charges(instr: Instr, hw: HardwareSpec) -> Charges:
    """What ``instr`` adds to the statistics."""
    if instr.op in _SPGEMM_OPS:
        return _spgemm(instr, hw)
    return _BY_UNIT[UNIT_OF[instr.op]](instr, hw)


def book(stats: SegmentStats, tag: int, c: Charges, count: int = 1) -> None:
    """Add charges ``c`` of ``count`` instructions serving ``tag`` to ``stats``."""
    task = stats.tasks[tag]
    task.macs += c.macs * count
    task.dram_read_bytes += c.dram_read * count
    task.dram_write_bytes += c.dram_write * count
    for buffer, nbytes in c.sram_read:
        stats.sram_read_bytes[buffer] += nbytes * count
    for buffer, nbytes in c.sram_write:
        stats.sram_write_bytes[buffer] += nbytes * count
    stats.vector_groups += c.groups * count


def account_program(stats: SegmentStats, program, hw: HardwareSpec) -> None:
    """Add what every instruction of ``program`` did to ``stats``. Charges are sums, so each
    (tag, shape) is booked once, times its count (``cost.shape_index``: a program's shapes
    are remembered, and a ResNet-50 iteration has a few hundred among 400 k instructions)."""
    _, examples = shape_index(program)
    for (tag, i), count in shape_counts(program).items():
        book(stats, tag, charges(examples[i], hw), count)
