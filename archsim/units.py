"""SimPy processes, one class per hardware unit, executing a tile program at instruction level.

Every unit executes its own instructions strictly in program order. Before starting one it waits
until the other units have completed the counts in the instruction's ``wait`` field
(``dataflows.isa``); it then holds the unit for ``dataflows.cost.latency`` cycles. Time is in
integer cycles. No unit prints; statistics go into the :class:`~archsim.stats.SegmentStats`
passed in.
"""

from __future__ import annotations

import simpy

from archsim.stats import SegmentStats
from dataflows.cost import latency, transfer_bytes
from dataflows.isa import Instr, Op, Unit
from dataflows.program import Program
from workloads.spec import HardwareSpec

__all__ = ["Controller", "Buffer", "DMAEngine", "PEArray", "VectorUnit"]


class Controller:
    """Holds each unit's completion count and wakes instructions waiting for a count."""

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.completed = [0, 0, 0]
        self._waiters: list[dict[int, simpy.Event]] = [{}, {}, {}]

    def reached(self, unit: Unit, count: int) -> simpy.Event:
        """An event that fires once ``unit`` has completed ``count`` instructions."""
        waiters = self._waiters[unit]
        if count not in waiters:
            waiters[count] = self.env.event()
        return waiters[count]

    def complete(self, unit: Unit) -> None:
        self.completed[unit] += 1
        event = self._waiters[unit].pop(self.completed[unit], None)
        if event is not None:
            event.succeed()


class Buffer:
    """An on-chip SRAM with ping-pong slots; counts bytes read and written (for energy)."""

    def __init__(self, name: str, size_bytes: int, stats: SegmentStats) -> None:
        self.name, self.size_bytes, self.stats = name, size_bytes, stats

    def read(self, nbytes: int) -> None:
        self.stats.sram_read_bytes[self.name] += nbytes

    def write(self, nbytes: int) -> None:
        self.stats.sram_write_bytes[self.name] += nbytes


class _Unit:
    """Common in-order execution loop; subclasses account for what an instruction does."""

    unit: Unit

    def __init__(self, env: simpy.Environment, hw: HardwareSpec, ctrl: Controller,
                 program: Program, queue: list[int], stats: SegmentStats,
                 buffers: dict[str, Buffer]) -> None:
        self.env, self.hw, self.ctrl, self.program = env, hw, ctrl, program
        self.queue, self.stats, self.buffers = queue, stats, buffers
        self.process = env.process(self.run())

    def run(self):
        instrs, tags, ctrl, stats = self.program.instrs, self.program.tags, self.ctrl, self.stats
        unit = self.unit
        for index in self.queue:
            instr = instrs[index]
            ready = self.env.now
            for other, need in enumerate(instr.wait):
                if other != unit and ctrl.completed[other] < need:
                    yield ctrl.reached(Unit(other), need)
            start = self.env.now
            cycles = latency(instr, self.hw)
            yield self.env.timeout(cycles)
            stats.record(unit, index, tags[index], ready, start, cycles)
            self.account(instr, tags[index])
            ctrl.complete(unit)

    def account(self, instr: Instr, tag: int) -> None:
        raise NotImplementedError


class DMAEngine(_Unit):
    """Loads and stores through the single DRAM port (latency, then one beat per cycle)."""

    unit = Unit.DMA
    _TARGET = {Op.LOAD_A: "input", Op.LOAD_B: "weight", Op.STORE_C: "accumulator", Op.STORE_B: "weight"}

    def account(self, instr: Instr, tag: int) -> None:
        nbytes = transfer_bytes(instr, self.hw)
        if instr.op == Op.LOAD_MASK:  # into the vector unit's small mask store, not a buffer
            self.stats.add_dram(tag, read=nbytes)
            return
        buffer = self.buffers[self._TARGET[instr.op]]
        if instr.op in (Op.LOAD_A, Op.LOAD_B):
            self.stats.add_dram(tag, read=nbytes)
            buffer.write(nbytes)
        else:
            self.stats.add_dram(tag, written=nbytes)
            buffer.read(nbytes)


class PEArray(_Unit):
    """The weight-stationary systolic array; dense and N:M modes share the datapath."""

    unit = Unit.PE

    def account(self, instr: Instr, tag: int) -> None:
        hw = self.hw
        self.stats.add_macs(tag, instr.m * instr.k * instr.cols)
        span = instr.k // instr.nm_n * instr.nm_m if instr.nm_n else instr.k
        self.buffers["weight"].read(instr.k * instr.cols * hw.data_bytes)
        self.buffers["input"].read(instr.m * span * hw.data_bytes)
        acc_bytes = instr.m * instr.cols * hw.acc_bytes
        if instr.accumulate:
            self.buffers["accumulator"].read(acc_bytes)
        self.buffers["accumulator"].write(acc_bytes)


class VectorUnit(_Unit):
    """Compresses dense weight tiles into N:M form (top-N of M by magnitude) in place, and runs
    the online softmax of attention on score tiles in the accumulator (docs/attention.md)."""

    unit = Unit.VEC

    def account(self, instr: Instr, tag: int) -> None:
        if instr.op != Op.COMPRESS:
            self._account_softmax(instr)
            return
        groups = instr.rows // instr.nm_m * instr.cols
        self.stats.vector_groups += groups
        self.buffers["weight"].read(instr.rows * instr.cols * self.hw.data_bytes)
        self.buffers["weight"].write(groups * instr.nm_n * self.hw.data_bytes)

    def _account_softmax(self, instr: Instr) -> None:
        hw, acc = self.hw, self.buffers["accumulator"]
        tile = instr.rows * instr.cols * hw.acc_bytes
        acc.read(tile)
        if instr.op in (Op.RESCALE, Op.NORMALIZE):
            acc.write(tile)
        elif instr.op == Op.EXP:
            kept = instr.rows // instr.nm_m * instr.nm_n if instr.nm_n else instr.rows
            self.buffers["weight"].write(kept * instr.cols * hw.data_bytes)
