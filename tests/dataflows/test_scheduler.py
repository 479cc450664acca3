"""Structural properties of scheduled tile programs."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflows.isa import Op, Unit, encode
from dataflows.scheduler import build_segment
from workloads.load import load_hardware
from workloads.lowering import GemmTask
from workloads.spec import SchedulePasses

HW = load_hardware("tiny")


@st.composite
def tasks(draw):
    nm = draw(st.sampled_from([None, (1, 2), (2, 4), (1, 4), (2, 8), (3, 4)]))
    step = nm[1] if nm else 1
    m = draw(st.integers(1, 40))
    k = step * draw(st.integers(1, 40 // step + 2))
    n = draw(st.integers(1, 11))
    copies = draw(st.integers(1, 2))
    return GemmTask("g", "g", "ff", m, k, n, nm, "g.W.ff" if nm else None, copies)


def passes_strategy():
    return st.builds(SchedulePasses, interleave=st.booleans(), pregenerate_sparse_weights=st.booleans(),
                     offline_tiling=st.booleans(), double_buffering=st.booleans())


@settings(max_examples=80, deadline=None)
@given(tasks(), passes_strategy(), st.booleans())
def test_programs_are_well_formed(task, passes, compressed):
    program = build_segment((task,), HW, passes, compressed_in_dram=compressed).program
    seen = [0, 0, 0]
    for instr in program.instrs:
        # Every wait refers to an instruction earlier in program order: no deadlock is possible.
        for unit in Unit:
            if unit != instr.unit:
                assert instr.wait[unit] <= seen[unit]
        assert instr.wait[instr.unit] == 0
        seen[instr.unit] += 1
        encode(instr)  # every field fits its bits
    computes = [i for i in program.instrs if i.op == Op.COMPUTE]
    # MAC conservation at instruction level: N/M of dense when the array skips pruned weights.
    assert sum(i.m * i.k * i.cols for i in computes) == task.macs_executed(HW) * task.copies
    assert all(i.k <= HW.array.rows and i.cols <= HW.array.cols for i in computes)


@settings(max_examples=40, deadline=None)
@given(tasks(), passes_strategy())
def test_every_output_is_stored_exactly_once(task, passes):
    seg = build_segment((task,), HW, passes)
    program, tiling = seg.program, seg.work.tilings[0]
    c = program.tensors["g.C"]
    hits = np.zeros(c.rows * c.cols, dtype=int)
    for instr in program.instrs:
        if instr.op == Op.STORE_C:
            # Final outputs leave requantized, at operand width (docs/isa.md).
            assert (instr.requant, instr.shift) == (True, HW.requant_shift)
            first = (instr.addr - c.addr) // HW.data_bytes
            for r in range(instr.rows):
                start = first + r * instr.stride // HW.data_bytes
                hits[start:start + instr.cols] += 1
    assert (hits == 1).all() and c.elem_bytes == HW.data_bytes
    m, _, n = tiling.dims(task)
    assert (c.rows, c.cols) == (m * task.copies, n)


def test_interleaving_spreads_the_shorter_gemm_over_the_longer():
    bp = GemmTask("l.bp", "l", "bp", 4, 12, 4)  # 3 k-steps
    wg = GemmTask("l.wg", "l", "wg", 4, 12, 12)  # 3 k-steps x 3 n-tiles = 9 steps
    seg = build_segment((bp, wg), HW, SchedulePasses(offline_tiling=False))
    tags = [t for t, i in zip(seg.program.tags, seg.program.instrs) if i.op == Op.COMPUTE]
    assert tags == [1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 0, 1]
    # After every step, the progress fractions differ by at most one step of the shorter GEMM.
    done = [0, 0]
    for tag in tags:
        done[tag] += 1
        assert abs(done[0] / 3 - done[1] / 9) <= 1 / 3


def test_an_interleaving_is_abandoned_only_when_it_cannot_win(monkeypatch):
    """The timed emitter's figures are exact: the PE cycles it expects are the program's, its
    cycle count is ``program_cycles``; it gives up under a bound no finished program meets,
    never under one the program beats (ResNet-18's backward GEMM pairs, batch 1)."""
    from pathlib import Path

    import dataflows.scheduler as sched
    from dataflows.cost import latencies, program_cycles
    from workloads.layers import expand
    from workloads.load import load_workload
    from workloads.lowering import lower

    example = Path(__file__).resolve().parents[2] / "workloads" / "examples" / "resnet18_bdwp.yaml"
    workload = load_workload(example, overrides=["operations.0.batch=1"])
    hw, passes = workload.hardware, workload.schedule
    pairs = [tuple(g) for g in lower(expand(workload), workload.mode) if len(g) == 2][:4]
    assert pairs
    for tasks in pairs:
        tilings = tuple(sched.tiling_for(t, hw, passes, True) for t in tasks)
        program = sched.gemm_program(tasks, tilings, hw)
        cycles = latencies(program, hw)
        pe = sum(c for c, i in zip(cycles, program.instrs) if i.unit == Unit.PE)
        assert sched._pe_cycles(tasks, tilings, hw) == pe
        exact = program_cycles(program, hw)
        monkeypatch.setattr(sched, "_PROGRAMS", sched._ProgramCache(10**6))  # nothing built yet
        assert sched._gemm_program_cached(tasks, tilings, hw, True, bound=pe) is None
        built = sched._gemm_program_cached(tasks, tilings, hw, True, bound=exact + 1)
        assert built is not None and built.instrs == program.instrs
        assert sched.program_cycles_cached(built, hw) == exact


def test_a_stopped_interleaving_resumes_exactly_on_another_dram(monkeypatch):
    """A build stopped part way is kept and resumed by design points with another DRAM
    (``scheduler._Build``): whatever the order of DRAMs and bounds, the answer is the whole
    program, with its exact cycles on that DRAM, whenever it beats the bound there."""
    from pathlib import Path

    import dataflows.scheduler as sched
    from dataflows.cost import program_cycles
    from workloads.layers import expand
    from workloads.load import load_workload
    from workloads.lowering import lower

    example = Path(__file__).resolve().parents[2] / "workloads" / "examples" / "resnet18_bdwp.yaml"
    workload = load_workload(example, overrides=["operations.0.batch=1"])
    base, passes = workload.hardware, workload.schedule
    speeds = ((base.dram.bandwidth_bytes_per_cycle, base.dram.latency_cycles), (8, 300), (512, 0))
    drams = [base.model_copy(update={"dram": base.dram.model_copy(
        update={"bandwidth_bytes_per_cycle": bw, "latency_cycles": lat})}) for bw, lat in speeds]
    pairs = [tuple(g) for g in lower(expand(workload), workload.mode) if len(g) == 2][:3]
    monkeypatch.setattr(sched, "_PROGRAMS", sched._ProgramCache(10**6))
    for tasks in pairs:
        tilings = tuple(sched.tiling_for(t, base, passes, True) for t in tasks)
        program = sched.gemm_program(tasks, tilings, base)
        pe = sched._pe_cycles(tasks, tilings, base)
        exact = {id(hw): program_cycles(program, hw) for hw in drams}
        for fraction in (0.3, 0.6, 0.9, 1.0, 1.1):
            for hw in drams + drams[::-1]:
                bound = pe + int(fraction * (exact[id(hw)] - pe)) + (fraction > 1)
                built = sched._gemm_program_cached(tasks, tilings, hw, True, bound=bound)
                # None only where the program cannot beat the bound (a program finished
                # before may come back either way: its caller compares its cycles).
                assert built is not None or exact[id(hw)] >= bound
                if built is not None:
                    assert built.instrs == program.instrs
                    assert sched.program_cycles_cached(built, hw) == exact[id(hw)]


def test_identical_layers_prove_a_losing_interleaving_once(monkeypatch):
    """Within a schedule, a layer whose interleaving was proven to take at least a bound is not
    built again for an identical layer under that bound or a lower one (same shapes and
    tilings, other names: ResNet's repeated blocks); under a higher bound it is built."""
    from dataclasses import replace
    from pathlib import Path

    import dataflows.scheduler as sched
    from dataflows.cost import program_cycles
    from workloads.layers import expand
    from workloads.load import load_workload
    from workloads.lowering import lower

    example = Path(__file__).resolve().parents[2] / "workloads" / "examples" / "resnet18_bdwp.yaml"
    workload = load_workload(example, overrides=["operations.0.batch=1"])
    hw, passes = workload.hardware, workload.schedule
    tasks = next(tuple(g) for g in lower(expand(workload), workload.mode) if len(g) == 2)
    twin = tuple(replace(t, name=f"{t.name}.twin", layer=f"{t.layer}.twin") for t in tasks)
    tilings = tuple(sched.tiling_for(t, hw, passes, True) for t in tasks)
    pe = sched._pe_cycles(tasks, tilings, hw)
    exact = program_cycles(sched.gemm_program(tasks, tilings, hw), hw)
    monkeypatch.setattr(sched, "_PROGRAMS", sched._ProgramCache(10**6))
    built = []
    run = sched._Build.run
    monkeypatch.setattr(sched._Build, "run", lambda self, *a: built.append(1) or run(self, *a))
    cache = sched._SegmentCache(hw, passes)
    assert cache.segment(sched.GemmWork(tasks, tilings), 1, bound=pe + 1) is None
    assert len(built) == 1
    for bound in (pe + 1, pe):
        assert cache.segment(sched.GemmWork(twin, tilings), 1, bound=bound) is None
    assert len(built) == 1  # proven by the first layer's build
    segment = cache.segment(sched.GemmWork(twin, tilings), 1, bound=exact + 1)
    assert len(built) == 2 and cache.cycles(segment) == exact


def test_a_schedule_leaves_the_collector_on_with_nothing_young_to_walk():
    """``schedule`` pauses the cycle collector while it builds and, resuming it, moves what it
    built into the oldest generation (``scheduler._age_survivors``) instead of leaving
    hundreds of thousands of young objects for the next collection to walk; what someone else
    froze stays frozen (a sweep worker's, ``reports.evaluate._settle``)."""
    import gc
    from pathlib import Path

    from dataflows.scheduler import schedule
    from workloads.load import load_workload

    example = Path(__file__).resolve().parents[2] / "workloads" / "examples" / "resnet18_bdwp.yaml"
    workload = load_workload(example, overrides=["operations.0.batch=1"])
    gc.unfreeze()  # an earlier test's sweep worker may have frozen its points' objects
    assert gc.isenabled()
    collections = []
    gc.collect()  # nothing young before the call: its own few allocations trigger none
    gc.callbacks.append(lambda phase, info: collections.append(info["generation"]))
    try:
        schedule(workload)
    finally:
        gc.callbacks.pop()
    assert collections == []  # none when the collector resumes, either
    assert gc.isenabled() and gc.get_freeze_count() == 0
    gc.freeze()
    try:
        schedule(load_workload(example, overrides=["operations.0.batch=2"]))
        # Still frozen (some frozen objects may have been freed: programs the cache let go).
        assert gc.get_freeze_count() > 0 and gc.isenabled()
    finally:
        gc.unfreeze()
