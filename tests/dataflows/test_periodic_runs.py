"""A GEMM's long runs of tile steps appended by arithmetic (``Emitter.repeat``, from
``_GemmWriter.write_alone``) are exactly the instructions a step-by-step build emits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflows import scheduler
from dataflows.cost import shape_index, shape_of
from dataflows.isa import Op
from dataflows.program import Emitter
from dataflows.scheduler import gemm_program
from dataflows.tiling import Tiling
from workloads.load import load_hardware
from workloads.lowering import GemmTask

TINY = load_hardware("tiny")
TINY_OS = load_hardware("tiny", overrides=["array.dataflow=output_stationary"])


@st.composite
def runs(draw):
    """A GEMM with many k-steps, or many output tiles of a few k-steps, and a tiling of it
    (valid for the writer, not sized to any buffer: the emission is what is compared)."""
    hw = draw(st.sampled_from([TINY, TINY_OS]))
    nm = draw(st.sampled_from([None, (1, 2), (2, 4), (1, 4)]))
    step = nm[1] if nm else 1
    long_k = draw(st.booleans())
    k = step * draw(st.integers(1, 90 if long_k else 12))
    m, n = (draw(st.integers(1, 9 if long_k else 40)) for _ in "mn")
    task = GemmTask("g", "g", "wg", m, k, n, nm, "g.W" if nm else None, draw(st.integers(1, 2)))
    sparse = nm is not None
    tk = step * draw(st.integers(1, hw.array.rows // step))
    tiling = Tiling(draw(st.integers(1, 9)), tk, draw(st.integers(1, hw.array.cols)),
                    draw(st.sampled_from(["mnk", "nmk"])), not sparse and draw(st.booleans()),
                    sparse, sparse and draw(st.booleans()), draw(st.integers(1, 3)),
                    draw(st.integers(1, 2)))
    return task, tiling, hw


def _built(monkeypatch, args) -> tuple[list[bool], object, object]:
    """``gemm_program(*args)`` with each ``Emitter.repeat`` outcome, and its step-by-step
    program."""
    appended = []
    with monkeypatch.context() as patched:
        patched.setattr(Emitter, "repeat", _spy(Emitter.repeat, appended))
        program = gemm_program(*args)
    return appended, program, _step_by_step(*args)


def _step_by_step(*args):
    with pytest.MonkeyPatch.context() as m:
        m.setattr(scheduler._GemmWriter, "_run", lambda self: None)
        return gemm_program(*args)


@settings(max_examples=150, deadline=None)
@given(runs(), st.booleans())
def test_a_run_appended_by_arithmetic_is_the_step_by_step_program(run, double):
    task, tiling, hw = run
    program = gemm_program((task,), (tiling,), hw, double)
    assert program.instrs == _step_by_step((task,), (tiling,), hw, double).instrs
    assert program.tags == [0] * len(program.instrs)
    _assert_shapes_read_from_copies(program)


def _assert_shapes_read_from_copies(program) -> None:
    """``cost.shape_index`` gives the copies of a run (``Program.copies``) their period's
    shapes instead of reading them: each instruction's shape is its own."""
    ids, examples = shape_index(program)
    assert [shape_of(examples[i]) for i in ids] == [shape_of(i) for i in program.instrs]


def test_a_long_run_is_appended_and_its_state_carries_on(monkeypatch):
    """Each copy's 40-step run is appended once the emitter's state has settled (its slots
    held the previous tiles' hazards), not stepped; the steps after it (the last, partial
    k-step and its stores) see the state a step-by-step build leaves."""
    task = GemmTask("g", "g", "wg", 3, 4 * 40 + 2, 3, None, None, 2)
    args = ((task,), (Tiling(3, 4, 3),), TINY, True)
    appended, program, stepped = _built(monkeypatch, args)
    assert appended.count(True) == 2
    assert program.instrs == stepped.instrs
    assert len(program.copies) == 2 and not stepped.copies
    _assert_shapes_read_from_copies(program)
    assert sum(i.op == Op.STORE_C for i in program.instrs) == 2  # one output tile per copy
    # Equal waits are stored once, as a step-by-step build does (a VGG-16 iteration's memory).
    assert len({id(i.wait) for i in program.instrs}) == len({id(i.wait) for i in stepped.instrs})


@pytest.mark.parametrize("order", ["mnk", "nmk"])
def test_a_long_run_of_output_tiles_is_appended(monkeypatch, order):
    """Output tiles of two k-steps each along the inner of m and n: appended once settled,
    stores and all, equal to the step-by-step program."""
    task = GemmTask("g", "g", "wg", 3 * 30 + 1, 8, 3 * 30 + 2, None, None)
    args = ((task,), (Tiling(3, 4, 3, order),), TINY, True)
    appended, program, stepped = _built(monkeypatch, args)
    assert appended.count(True) == 31  # one run along the inner dimension per outer tile
    assert program.instrs == stepped.instrs


@pytest.mark.parametrize("order, m, n", [("mnk", 3 * 30 + 1, 6), ("nmk", 6, 3 * 30 + 2)])
def test_a_long_run_along_the_outer_dimension_with_its_stores_held_back(monkeypatch, order,
                                                                         m, n):
    """Two output tiles along the inner dimension, thirty along the outer, one k-step each:
    every period starts with the last tile's stores held back, and they move on with it."""
    task = GemmTask("g", "g", "wg", m, 4, n, None, None, 2)
    args = ((task,), (Tiling(3, 4, 3, order),), TINY, True)
    appended, program, stepped = _built(monkeypatch, args)
    assert appended.count(True) == 2  # one run per copy
    assert program.instrs == stepped.instrs


@pytest.mark.parametrize("field, value", [("rows", 1), ("cols", -1), ("wait", (0, 0, 0))])
def test_a_run_whose_periods_differ_is_stepped(monkeypatch, field, value):
    """If the last period built is not the one before moved on (here, its last instruction
    altered beyond its address and waits moving on), nothing is appended. (Addresses two
    periods apart always fit a stride: that they keep to it is the writer's to vouch for.)"""
    task = GemmTask("g", "g", "wg", 3, 4 * 40, 3, None, None)
    args = ((task,), (Tiling(3, 4, 3),), TINY, True)
    real_repeat, outcomes = Emitter.repeat, []

    def altered(em, first, middle, times, moved):
        instrs, size = em.program.instrs, len(em.program.instrs)
        instr = instrs[-1]
        changed = value if field == "wait" else getattr(instr, field) + value
        instrs[-1] = type(instr)(**{**_fields(instr), field: changed})
        outcomes.append(real_repeat(em, first, middle, times, moved))
        assert len(instrs) == size
        instrs[-1] = instr
        return outcomes[-1]

    with monkeypatch.context() as m:
        m.setattr(Emitter, "repeat", altered)
        program = gemm_program(*args)
    assert outcomes and not any(outcomes)
    assert program.instrs == _step_by_step(*args).instrs


def _fields(instr) -> dict:
    return {name: getattr(instr, name) for name in type(instr).__dataclass_fields__}


def _spy(method, outcomes: list):
    def spied(*args, **kwargs):
        outcomes.append(method(*args, **kwargs))
        return outcomes[-1]
    return spied


@st.composite
def conv_layers(draw):
    """A convolution layer in training (its FF, BP and WG GEMMs: every writer) and a tiny
    array with buffers from cramped to ample, so the search picks varied tilings."""
    from workloads.layers import expand
    from workloads.spec import WorkloadSpec

    rows = draw(st.sampled_from([4, 8]))
    hw = load_hardware("tiny", overrides=[
        f"array.rows={rows}", f"array.cols={draw(st.sampled_from([4, 8]))}",
        f"buffers.input_bytes={draw(st.sampled_from([512, 4096, 1 << 16]))}",
        f"buffers.weight_bytes={draw(st.sampled_from([256, 1024, 1 << 16]))}",
        f"buffers.accumulator_bytes={draw(st.sampled_from([1024, 4096, 1 << 16]))}",
        f"array.dataflow={draw(st.sampled_from(['weight_stationary', 'output_stationary']))}"])
    kernel = draw(st.sampled_from([1, 3]))
    conv = {"op": "conv2d", "name": "cv", "in_channels": draw(st.sampled_from([rows, 2 * rows])),
            "out_channels": draw(st.integers(4, 40)), "kernel": kernel,
            "stride": draw(st.sampled_from([1, 2])), "padding": kernel // 2,
            "input_size": draw(st.integers(4, 12)), "batch": draw(st.integers(1, 2))}
    spec = WorkloadSpec.model_validate({"version": 1, "name": "t", "hardware": hw,
                                        "mode": "training", "operations": [conv]})
    (layer,) = expand(spec)
    return layer, hw, draw(st.booleans())


@settings(max_examples=40, deadline=None)
@given(conv_layers())
def test_a_convolutions_runs_appended_are_the_step_by_step_programs(layer_hw):
    """The convolution writers append runs only along the dimensions where their tiles repeat
    (their ``_repeats_along``); each of a training layer's GEMMs, on the tiling
    the search picks (and in the other loop order), is its step-by-step program."""
    from dataclasses import replace

    from dataflows.scheduler import tiling_for
    from workloads.lowering import lower_layer
    from workloads.spec import SchedulePasses

    layer, hw, double = layer_hw
    for task in lower_layer(layer, "training"):
        tiling = tiling_for(task, hw, SchedulePasses(), False)
        for order in ("mnk", "nmk"):
            args = ((task,), (replace(tiling, order=order),), hw, double)
            program = gemm_program(*args)
            assert program.instrs == _step_by_step(*args).instrs
            _assert_shapes_read_from_copies(program)


def _conv_gemms(batch: int, channels: int):
    """The FF and WG GEMMs of a 3×3 convolution of ``channels`` channels over 6×6 images, and
    a 4×4 array (the writers' emission is compared, not the tilings' fit)."""
    from workloads.layers import expand
    from workloads.lowering import lower_layer
    from workloads.spec import WorkloadSpec

    hw = load_hardware("tiny", overrides=["array.rows=4", "array.cols=4"])
    conv = {"op": "conv2d", "name": "cv", "in_channels": channels, "out_channels": 8,
            "kernel": 3, "stride": 1, "padding": 1, "input_size": 6, "batch": batch}
    spec = WorkloadSpec.model_validate({"version": 1, "name": "t", "hardware": hw,
                                        "mode": "training", "operations": [conv]})
    (layer,) = expand(spec)
    ff, _, wg = lower_layer(layer, "training")
    return ff, wg, hw


@pytest.mark.parametrize("order", ["mnk", "nmk"])
@pytest.mark.parametrize("tm", [12, 18, 72])
def test_a_convolutions_m_tiles_repeat_image_after_image(monkeypatch, order, tm):
    """Along m, a convolution writer's bands of output lines (3 or 2 an image here) are the
    same in every image, and a tile of whole images is the last one a feature map on: a run
    of them is appended once settled."""
    ff, _, hw = _conv_gemms(24, 8)
    tiling = Tiling(tm, 4, 4, order, kb=18, nb=2, conv=True)
    appended, program, stepped = _built(monkeypatch, ((ff,), (tiling,), hw, True))
    assert True in appended
    assert program.instrs == stepped.instrs


@pytest.mark.parametrize("nb", [1, 3])
def test_a_weight_gradients_kernel_offsets_repeat_chunk_after_chunk(monkeypatch, nb):
    """Along n, the weight-gradient writer walks each channel chunk's nine kernel offsets,
    ``nb`` a tile: the tiles repeat chunk after chunk, the resident patch a chunk on."""
    _, wg, hw = _conv_gemms(12, 64)
    tiling = Tiling(8, 4, 4, "mnk", kb=108, nb=nb, conv_b=True)
    appended, program, stepped = _built(monkeypatch, ((wg,), (tiling,), hw, True))
    assert True in appended
    assert program.instrs == stepped.instrs


@settings(max_examples=60, deadline=None)
@given(st.one_of(runs().map(lambda r: ([r[0]], r[1], r[2], None)),
                 conv_layers().map(lambda c: (None, c[0], c[1], c[2]))))
def test_tilings_that_write_the_same_steps_write_the_same_program(case):
    """``scheduler._same_steps``: two tilings that differ only in loop order, for a GEMM with a
    single buffer tile along m or n, write one program (so the search's exact timing need
    not build the second); every writer, searched or drawn tilings."""
    from dataclasses import replace

    from dataflows.scheduler import _buffer_counts, _same_steps, tiling_for
    from workloads.lowering import lower_layer
    from workloads.spec import SchedulePasses

    tasks, tiling_or_layer, hw, double = case
    if tasks is None:
        tasks = lower_layer(tiling_or_layer, "training")
        tilings = [tiling_for(t, hw, SchedulePasses(), False) for t in tasks]
    else:
        tilings = [tiling_or_layer]
    for task, tiling in zip(tasks, tilings):
        for order in ("mnk", "nmk"):
            a, b = tiling, replace(tiling, order=order)
            nmt, _, nnb = _buffer_counts(task, a)
            assert _same_steps(task, a, b) == (a == b or nmt == 1 or nnb == 1)
            if _same_steps(task, a, b):
                one, other = (gemm_program((task,), (t,), hw, bool(double)) for t in (a, b))
                assert one.instrs == other.instrs


def test_the_search_does_not_build_a_runner_up_that_writes_the_same_program(monkeypatch):
    """A runner-up that differs only in loop order, along a single m-tile, ties with the first
    by construction: the first wins without either being built."""
    from dataclasses import replace

    task = GemmTask("g", "g", "wg", 4, 64, 40)
    first = Tiling(4, 8, 8, "mnk", False, False, False, 1, 1)
    assert scheduler._buffer_counts(task, first)[::2] == (1, 5)
    runner_up = replace(first, order="nmk")
    monkeypatch.setattr(scheduler, "search_tilings", lambda *a: [first, runner_up])
    monkeypatch.setattr(scheduler, "_gemm_program_cached", lambda *a: pytest.fail("built"))
    assert scheduler._fastest(task, TINY, False, 2, True) is first
    monkeypatch.setattr(scheduler, "search_tilings", lambda *a: [runner_up, first])
    assert scheduler._fastest(task, TINY, False, 2, True) is runner_up
