"""SimPy processes, one class per hardware unit, executing a tile program at instruction level.

Every unit executes its own instructions strictly in program order. Before starting one it waits
until the other units have completed the counts in the instruction's ``wait`` field
(``dataflows.isa``); it then holds the unit for ``dataflows.cost.latency`` cycles (``cycles``,
computed once per instruction shape: ``cost.latencies``). Time is in integer cycles. No unit
prints; timing statistics go into the :class:`~archsim.stats.SegmentStats` passed in, and
``archsim.model`` books what the instructions did once they have run
(``archsim.accounting.account_program``).
"""

from __future__ import annotations

import simpy

from archsim.stats import SegmentStats
from dataflows.isa import Unit
from dataflows.program import Program

__all__ = ["Controller", "DMAEngine", "PEArray", "VectorUnit"]


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


class _Unit:
    """Common in-order execution loop; subclasses account for what an instruction does."""

    unit: Unit

    def __init__(self, env: simpy.Environment, ctrl: Controller, program: Program,
                 cycles: list[int], queue: list[int], stats: SegmentStats) -> None:
        self.env, self.ctrl, self.program, self.cycles = env, ctrl, program, cycles
        self.queue, self.stats = queue, stats
        self.process = env.process(self.run())

    def run(self):
        instrs, tags, ctrl, stats = self.program.instrs, self.program.tags, self.ctrl, self.stats
        unit, latencies = self.unit, self.cycles
        for index in self.queue:
            instr = instrs[index]
            ready = self.env.now
            for other, need in enumerate(instr.wait):
                if other != unit and ctrl.completed[other] < need:
                    yield ctrl.reached(Unit(other), need)
            start = self.env.now
            cycles = latencies[index]
            yield self.env.timeout(cycles)
            stats.record(unit, index, tags[index], ready, start, cycles)
            ctrl.complete(unit)


class DMAEngine(_Unit):
    """Loads and stores through the single DRAM port (latency, then one beat per cycle)."""

    unit = Unit.DMA


class PEArray(_Unit):
    """The weight-stationary systolic array; dense and N:M modes share the datapath."""

    unit = Unit.PE


class VectorUnit(_Unit):
    """Compresses dense weight tiles into N:M form (top-N of M by magnitude) in place, and runs
    the online softmax of attention on score tiles in the accumulator (docs/attention.md)."""

    unit = Unit.VEC
