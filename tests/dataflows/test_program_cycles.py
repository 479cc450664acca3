"""cost.program_cycles (the scheduler's exact evaluator) agrees with the SimPy model."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from archsim.model import run_program
from dataflows.cost import program_cycles
from dataflows.scheduler import build_segment
from workloads.load import load_hardware
from workloads.lowering import GemmTask
from workloads.spec import SchedulePasses

HW = load_hardware("tiny")


@st.composite
def task_pairs(draw):
    def one(name):
        nm = draw(st.sampled_from([None, (2, 4), (1, 2)]))
        step = nm[1] if nm else 1
        return GemmTask(name, "l", "bp", draw(st.integers(1, 30)), step * draw(st.integers(1, 12)),
                        draw(st.integers(1, 9)), nm, f"{name}.W" if nm else None)
    return (one("a"), one("b")) if draw(st.booleans()) else (one("a"),)


@settings(max_examples=60, deadline=None)
@given(task_pairs(), st.booleans(), st.booleans(), st.booleans())
def test_evaluator_equals_simpy(tasks, double, offline, compressed):
    passes = SchedulePasses(double_buffering=double or len(tasks) > 1, offline_tiling=offline)
    program = build_segment(tasks, HW, passes, compressed_in_dram=compressed).program
    assert program_cycles(program, HW) == run_program(program, HW).cycles


def test_interleaving_is_kept_only_where_it_wins():
    from archsim import simulate
    from workloads.load import load_workload

    base = load_workload("workloads/examples/resnet18_bdwp.yaml", overrides=["operations.0.batch=2"])
    on = simulate(base)
    off = simulate(base.model_copy(update={"schedule": base.schedule.model_copy(update={"interleave": False})}))
    assert on.total_cycles <= off.total_cycles
    assert off.interleaved_segments == 0
