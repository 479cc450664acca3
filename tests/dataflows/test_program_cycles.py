"""cost.program_cycles (the scheduler's exact evaluator) agrees with the SimPy model."""

from __future__ import annotations

import pytest
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


# -- what programs and their timing depend on (dataflows.scheduler.timing_hardware) ----------

BUFFER_SIZES = [  # (weight, input, accumulator) bytes: the tiny preset's, and two others
    None, (2048, 8192, 4096), (8192, 2048, 16384)]


def _with_buffers(workload, sizes):
    if sizes is None:
        return workload
    w, i, a = sizes
    buffers = workload.hardware.buffers.model_copy(
        update={"weight_bytes": w, "input_bytes": i, "accumulator_bytes": a})
    return workload.model_copy(update={"hardware": workload.hardware.model_copy(
        update={"buffers": buffers})})


@pytest.mark.parametrize("example, overrides", [
    ("tiny_cnn_bdwp.yaml", []),
    ("tiny_cnn_bdwp.yaml", ["hardware.array.dataflow=output_stationary"]),
    ("tiny_gemm.yaml", []),
])
def test_programs_and_their_timing_ignore_the_buffer_sizes_given_their_tilings(example, overrides):
    from archsim.fast import run_program_fast
    from dataflows.scheduler import gemm_program, pregen_program, tiling_for, timing_hardware
    from workloads.layers import expand
    from workloads.load import load_workload
    from workloads.lowering import lower

    base = load_workload(f"workloads/examples/{example}", overrides=overrides)
    shared = 0
    for sizes in BUFFER_SIZES[1:]:
        other = _with_buffers(base, sizes)
        hw1, hw2 = base.hardware, other.hardware
        assert timing_hardware(hw1) == timing_hardware(hw2) and hw1 != hw2
        for task in (t for g in lower(expand(base), base.mode) for t in g):
            tiling = tiling_for(task, hw1, base.schedule, True)
            if tiling != tiling_for(task, hw2, other.schedule, True):
                continue
            shared += 1
            p1, p2 = gemm_program((task,), (tiling,), hw1), gemm_program((task,), (tiling,), hw2)
            assert (p1.instrs, p1.tags, p1.tensors) == (p2.instrs, p2.tags, p2.tensors)
            s1, s2 = run_program_fast(p1, hw1), run_program_fast(p1, hw2)
            assert (s1.cycles, s1.busy, dict(s1.sram_read_bytes)) == \
                   (s2.cycles, s2.busy, dict(s2.sram_read_bytes))
            if task.weight and tiling.sparse:
                assert pregen_program((task,), (tiling,), hw1).instrs == \
                       pregen_program((task,), (tiling,), hw2).instrs
    assert shared  # the property was exercised


def test_a_point_after_one_with_other_buffers_is_what_it_is_alone():
    """The caches shared across design points (programs, cycles, segment statistics) give a
    point the same result whatever point came before with other buffer sizes."""
    from archsim import simulate
    from dataflows import scheduler, tiling
    from workloads.load import load_workload

    def fresh_caches() -> None:
        scheduler._PROGRAMS = scheduler._ProgramCache(scheduler.MAX_CACHED_INSTRUCTIONS)
        scheduler._TIMED.clear()
        tiling._LEAST_READ.clear()

    base = load_workload("workloads/examples/tiny_cnn_bdwp.yaml")
    for sizes in BUFFER_SIZES[1:]:
        other = _with_buffers(base, sizes)
        fresh_caches()
        alone = simulate(other, engine="fast")
        fresh_caches()
        memo: dict = {}
        simulate(base, engine="fast", memo=memo)
        assert simulate(other, engine="fast", memo=memo) == alone


def test_equal_hardware_is_one_object_in_the_memos():
    """Each design point loads its own hardware: the scheduler's memos must see one object per
    value (a hit is then an identity check, not a field-by-field comparison), and two values
    that differ stay apart."""
    from dataflows.scheduler import canonical_hardware, program_hardware, timing_hardware

    first, again = load_hardware("sat_vcu1525"), load_hardware("sat_vcu1525")
    assert first is not again and first == again
    assert canonical_hardware(again) is canonical_hardware(first)
    faster = first.model_copy(update={"dram": first.dram.model_copy(
        update={"bandwidth_bytes_per_cycle": 2 * first.dram.bandwidth_bytes_per_cycle})})
    assert canonical_hardware(faster) == faster != first
    assert timing_hardware(faster) is not timing_hardware(first)
    # Programs do not depend on DRAM: the same program hardware, as one object.
    assert program_hardware(faster) is program_hardware(again)
