"""The top-level SimPy model: wires the units of one accelerator and runs one tile program."""

from __future__ import annotations

import simpy

from archsim.accounting import account_program
from archsim.stats import SegmentStats
from archsim.units import Controller, DMAEngine, PEArray, VectorUnit
from dataflows.cost import latencies
from dataflows.isa import Unit
from dataflows.program import Program
from workloads.errors import SimulationError
from workloads.spec import HardwareSpec

__all__ = ["run_program"]


def run_program(program: Program, hw: HardwareSpec, trace: bool = False) -> SegmentStats:
    """Execute ``program`` from an idle accelerator until every unit has drained.

    Raises
    ------
    SimulationError
        If the program deadlocks (an instruction waits for a count that is never reached).
    """
    env = simpy.Environment()
    stats = SegmentStats(len(program.instrs), trace)
    ctrl = Controller(env)
    queues, cycles = program.per_unit(), latencies(program, hw)
    units = [
        cls(env, ctrl, program, cycles, queues[unit], stats)
        for cls, unit in ((DMAEngine, Unit.DMA), (PEArray, Unit.PE), (VectorUnit, Unit.VEC))
    ]
    env.run()
    for unit in units:
        if unit.process.is_alive:
            done = ctrl.completed
            raise SimulationError(
                f"program deadlocked: {unit.unit.name} waits with {len(unit.queue) - done[unit.unit]} "
                f"instructions left; completed counts dma={done[0]} pe={done[1]} vec={done[2]}"
            )
    account_program(stats, program, hw)  # what the instructions did: sums, by shape
    return stats
