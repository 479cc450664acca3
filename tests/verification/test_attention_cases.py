"""Attention verification cases: drawn only when named, replayable, prepared with every check.

``random_case(hw, seed, ("attention",))`` builds one work item of a small random attention op;
``prepare`` runs the golden interpreter on its DRAM image, holds the output against float
attention and checks the
program's hazards and tile sizes. The default mixed draw must not change: CI replays seeds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest

from archsim.cli import main
from archsim.model import run_program
from dataflows.isa import Op
from verification.common.scoreboard import compare_values
from verification.configs import load_config
from verification.dram import build_attention_image, from_bytes, to_bytes
from verification.errors import VerificationError
from verification.golden import (
    check_attention,
    check_hazards,
    describe_address,
    prepare,
    run_golden,
)
from verification.programs import (
    ATTENTION,
    ATTENTION_PATTERNS,
    KINDS,
    case_from_spec,
    random_case,
)
from verification.session import VerifyReport, program_plan

#: Seeds per configuration that together cover every pattern, element masks, N:M scores,
#: decode and GQA (and on ``wide`` an output that wraps its 16-bit accumulator): a short list
#: for RTL bring-up.
SAMPLE = {"tiny": [0, 1, 5, 8, 10, 14, 23, 43], "wide": [0, 1, 3, 5, 8, 10, 15, 23]}


@pytest.fixture(scope="module", params=["tiny", "wide"])
def hw(request):
    return load_config(request.param)


def _cases(hw, seeds):
    return [random_case(hw, seed, (ATTENTION,)) for seed in seeds]


def test_attention_is_not_in_the_default_draw():
    assert ATTENTION not in KINDS
    assert KINDS == {"dense": 0.2, "nm_ff": 0.25, "bdwp_bp": 0.2, "wg": 0.1, "bp_wg": 0.1,
                     "pregen": 0.15}


@pytest.mark.parametrize("name, digest", [("tiny", "9c86b7336969fc88"),
                                          ("wide", "0f7239dc9baeb921")])
def test_default_draws_are_unchanged(name, digest):
    """Kinds and shapes of seeds 0..30 as drawn before attention cases existed."""
    hw = load_config(name)
    cases = [random_case(hw, seed) for seed in range(31)]
    assert [c.kind for c in cases[:8]] == ["bdwp_bp", "bdwp_bp", "nm_ff", "dense", "pregen",
                                           "bp_wg", "bdwp_bp", "bdwp_bp"]
    shapes = [(c.kind, [(t.phase, t.m, t.k, t.n, t.nm, t.copies) for t in c.tasks])
              for c in cases]
    assert hashlib.sha256(repr(shapes).encode()).hexdigest()[:16] == digest
    for seed, case in enumerate(cases):
        assert case.attention is None
        assert case.program.instrs == random_case(hw, seed, tuple(KINDS)).program.instrs


def test_attention_cases_prepare_and_cover_every_pattern(hw):
    patterns, features = set(), set()
    for case in _cases(hw, range(60)):
        att = case.attention
        assert case.kind == ATTENTION and case.segment == "attention"
        prepared = prepare(case)
        assert prepared.cycles == max(end for _, end in prepared.trace)
        ops = {instr.op for instr in case.program.instrs}
        assert {Op.ROWMAX, Op.EXP, Op.NORMALIZE, Op.STORE_C} <= ops
        patterns.add(att.op.pattern.kind)
        features |= {name for name, present in [
            ("mask", Op.LOAD_MASK in ops), ("nm", att.plan.score_nm is not None),
            ("rescale", Op.RESCALE in ops), ("decode", att.op.phase == "decode"),
            ("gqa", att.op.groups != att.op.heads), ("causal", att.op.causal),
            ("nm+mask", att.plan.score_nm is not None and Op.LOAD_MASK in ops)] if present}
    assert patterns == set(ATTENTION_PATTERNS)
    assert features == {"mask", "nm", "rescale", "decode", "gqa", "causal", "nm+mask"}


@pytest.mark.parametrize("name", ["tiny", "wide"])
def test_sample_seeds_cover_patterns_masks_and_nm(name):
    cases = _cases(load_config(name), SAMPLE[name])
    assert {c.attention.op.pattern.kind for c in cases} == set(ATTENTION_PATTERNS)
    assert any(c.attention.plan.score_nm and any(i.op == Op.LOAD_MASK for i in c.program.instrs)
               for c in cases)
    assert any(c.attention.op.phase == "decode" for c in cases)


@pytest.mark.parametrize("name", ["tiny", "wide"])
def test_only_the_work_items_output_changes(name):
    for case in _cases(load_config(name), SAMPLE[name]):
        prepared = prepare(case)
        assert (prepared.expected.care == 0xFF).all()  # STORE_C defines every bit it writes
        changed = np.flatnonzero(prepared.expected.data != prepared.image.data)
        assert changed.size
        assert {describe_address(case, int(a)).split("[")[0] for a in changed} == {"attn.OT"}
        op, item = case.attention.op, case.attention.work
        ot = case.program.tensors["attn.OT"]
        row, col = np.divmod(changed - ot.addr, ot.stride)
        base = (item.batch * op.groups + item.group) * op.head_dim
        assert base <= row.min() and row.max() < base + op.head_dim
        assert item.col0 <= col.min() // ot.elem_bytes
        assert col.max() // ot.elem_bytes < item.col0 + item.cols


def test_seeds_replay(hw):
    for seed in (3, 8, 21):
        a, b = random_case(hw, seed, (ATTENTION,)), random_case(hw, seed, (ATTENTION,))
        assert a.program.instrs == b.program.instrs and a.description == b.description
        pa, pb = prepare(a), prepare(b)
        assert np.array_equal(pa.image.data, pb.image.data)
        assert np.array_equal(pa.expected.data, pb.expected.data)
        assert pa.trace == pb.trace


def test_plans_name_attention_cases(hw):
    seeds = SAMPLE["tiny"]
    plan = json.loads(json.dumps(program_plan(hw, seeds, [[ATTENTION]] * len(seeds))))
    for seed, entry in zip(seeds, plan["programs"]):
        case = case_from_spec(hw, entry)
        assert case.kind == ATTENTION
        assert case.program.instrs == random_case(hw, seed, (ATTENTION,)).program.instrs
    mixed = {random_case(hw, seed, ("dense", ATTENTION)).kind for seed in range(20)}
    assert mixed == {"dense", ATTENTION}


def test_description_names_pattern_shape_and_item():
    case = random_case(load_config("tiny"), 1, (ATTENTION,))
    assert case.description == (
        "seed 1 attention: 2:4 scores causal, prefill 4 heads/2 kv q_len=28 kv_len=28 d=2 "
        "block=16; item 25/28 (kv head 1, cols 44..47), 2 steps (1 masked); 24 instructions")


def test_a_wrong_output_is_caught_by_the_float_check():
    case = random_case(load_config("tiny"), 8, (ATTENTION,))
    image, tensors = build_attention_image(case, np.random.default_rng(8))
    expected = run_golden(case.program, case.hw, image)
    check_attention(case, tensors, expected)
    op, item = case.attention.op, case.attention.work
    ot, d = case.program.tensors["attn.OT"], op.head_dim
    base = (item.batch * op.groups + item.group) * d
    for row in range(base, base + d):
        addr = ot.addr + row * ot.stride + item.col0 * ot.elem_bytes
        value = int(from_bytes(expected.read(addr, ot.elem_bytes), 8 * ot.elem_bytes))
        # A quarter in the output's 4 fraction bits (Oᵀ leaves requantized to V's format).
        expected.write(addr, to_bytes(np.array(value + (1 << 2)), ot.elem_bytes))
    with pytest.raises(VerificationError, match="off float attention by"):
        check_attention(case, tensors, expected)


def test_a_missing_wait_on_p_is_a_hazard():
    case = random_case(load_config("tiny"), 8, (ATTENTION,))
    instrs = list(case.program.instrs)
    # The first PV COMPUTE reads the Pᵀ an EXP wrote; without its wait it starts too early.
    first_exp = next(i for i, instr in enumerate(instrs) if instr.op == Op.EXP)
    pv = next(i for i in range(first_exp, len(instrs)) if instrs[i].op == Op.COMPUTE)
    instrs[pv] = replace(instrs[pv], wait=(instrs[pv].wait[0], instrs[pv].wait[1], 0))
    program = replace(case.program, instrs=instrs)
    with pytest.raises(VerificationError, match="hazard on weight slot"):
        check_hazards(program, run_program(program, case.hw, trace=True).trace, case.hw.array.rows)


def test_scoreboard_names_attention_tensors():
    case = random_case(load_config("tiny"), 5, (ATTENTION,))
    prepared = prepare(case)
    actual = prepared.expected.data.copy()
    ot, masks = case.program.tensors["attn.OT"], case.program.tensors["attn.masks"]
    item, d = case.attention.work, case.attention.op.head_dim
    addr = ot.addr + (item.group * d + 1) * ot.stride + item.col0 * ot.elem_bytes
    want = int.from_bytes(bytes(actual[addr:addr + ot.elem_bytes]), "little", signed=True)
    actual[addr:addr + ot.elem_bytes] = to_bytes(np.array(want + 3), ot.elem_bytes)
    actual[masks.addr] ^= 1
    count, examples = compare_values(case, prepared.expected, actual)
    assert count == 2
    assert f"attn.OT[{item.group * d + 1}, {item.col0}]: expected {want}, got {want + 3}" in examples
    assert any(e.startswith("attn.masks byte 0") for e in examples)


def test_verify_cli_accepts_attention(monkeypatch, capsys):
    seen = {}

    def verify(hw, seeds, build_root, backpressure=0.0, kinds=None, progress=None):
        seen["kinds"] = kinds
        return VerifyReport(hw, seeds, backpressure, [])

    monkeypatch.setattr("verification.session.verify", verify)
    main(["verify", "tiny", "--programs", "1", "--kinds", "attention"])
    assert seen["kinds"] == [ATTENTION]


def test_grouped_cases_are_named_only_replayable_and_golden_checked():
    from verification.golden import prepare
    from verification.programs import GROUPED

    hw = load_config("tiny")
    cases = [random_case(hw, seed, (GROUPED,)) for seed in range(8)]
    assert {c.kind for c in cases} == {GROUPED}
    assert {c.tasks[0].phase for c in cases} == {"ff", "bp", "wg"}
    assert any(c.tasks[0].block_diagonal > 1 for c in cases)  # groups packed in one GEMM
    assert [c.program.instrs for c in cases] == [
        random_case(hw, seed, (GROUPED,)).program.instrs for seed in range(8)]
    for c in cases:
        prepare(c)  # golden against the math, hazards, slot capacity
    # Named only: the default mixed draw never produces it.
    assert all(random_case(hw, seed).kind != GROUPED for seed in range(30))
