"""Issue 18's patterns on the mapping: their programs compute the masked attention, the PE array
executes exactly the unmasked blocks' MACs, and the estimation work of data-dependent patterns
is charged — as PE-array MACs, vector work and DRAM bytes of its own — and reported apart."""

from __future__ import annotations

import numpy as np
import pytest
from test_attention import OUT_TOL, SAT, op_of, run_values, workload

from archsim import simulate
from archsim.model import run_program
from dataflows.attention import TAG_EST, attention_macs, plan_attention
from dataflows.attention_estimate import attention_layer_segments, estimate_items
from dataflows.isa import Op

NEW_PATTERNS = [
    {"kind": "vertical_slash", "vertical": 12, "slash": 10, "last_q": 40},
    {"kind": "diagonal", "window": 90},
    {"kind": "multi_diagonal", "window": 24, "frame_tokens": 96},
    {"kind": "multi_diagonal", "window": 24, "frame_tokens": 96, "frames": 1},
    {"kind": "vertical_stripe", "frame_tokens": 96, "stripe_frames": [0, 2], "window": 16},
    {"kind": "gated_block", "top_k": 2},
    {"kind": "gated_block", "threshold": 0.3},
]


@pytest.mark.parametrize("pattern", NEW_PATTERNS, ids=lambda p: p["kind"])
def test_new_patterns_compute_masked_attention(pattern):
    hw_out, ref = run_values(op_of(pattern=pattern), SAT)
    assert np.abs(hw_out - ref).max() < OUT_TOL, np.abs(hw_out - ref).max()


def _estimate_macs_by_formula(op, est_items) -> int:
    """What the estimate's COMPUTEs must execute: scores rows·channels·columns per step, an
    identity copy of rows² per exponential tile (softmax), and one MAC per pooled element."""
    r, total = SAT.array.rows, 0
    for it in est_items:
        for step in it.steps:
            if it.pool:
                total += step.rows * it.channels
                continue
            total += step.rows * it.channels * it.cols
            if it.softmax:
                tiles = [min(r, step.rows - p) for p in range(0, step.rows, r)]
                total += sum(t * t for t in tiles) * it.cols
    return total


@pytest.mark.parametrize("pattern", NEW_PATTERNS + [
    {"kind": "blasst", "threshold": 0.01},
    {"kind": "topk", "tokens": 40, "channels": 8},
], ids=lambda p: p["kind"])
@pytest.mark.parametrize("causal", [True, False])
def test_executed_macs_are_unmasked_blocks_and_estimation_apart(pattern, causal):
    if pattern["kind"] == "vertical_slash" and not causal:
        pytest.skip("vertical-slash needs causal")
    op = op_of(heads=4, kv_heads=4, kv_len=520, head_dim=64, block_size=128, pattern=pattern,
               causal=causal)
    rec = simulate(workload(op)).attention[0]
    plan = plan_attention(op, SAT)
    mask = plan.mask
    q_rows = [mask.q_range(i)[1] - mask.q_range(i)[0] for i in range(mask.q_blocks)]
    kv_rows = [mask.kv_range(j)[1] - mask.kv_range(j)[0] for j in range(mask.kv_blocks)]
    by_mask = sum(attention_macs(kv_rows[kb], op.head_dim, q_rows[qb], None)
                  for _, _, qb, kb in zip(*np.nonzero(mask.state)))
    assert rec.macs_executed == by_mask
    items, _ = estimate_items(plan, SAT)
    assert rec.macs_estimate == _estimate_macs_by_formula(op, items)
    static = pattern["kind"] in ("diagonal", "multi_diagonal", "vertical_stripe")
    assert (rec.macs_estimate == 0) == static
    assert (rec.estimate_bytes == 0) == static
    assert rec.bound["estimate"] == "none" if static else rec.bound["estimate"] != "none"
    assert sum(rec.phase_cycles.values()) == rec.cycles


def test_vertical_slash_estimate_is_the_last_queries_against_every_key():
    last, heads, kv_len, d = 40, 4, 520, 64
    op = op_of(heads=heads, kv_heads=2, kv_len=kv_len, head_dim=d, block_size=128,
               pattern={"kind": "vertical_slash", "vertical": 8, "slash": 8, "last_q": last})
    rec = simulate(workload(op)).attention[0]
    # QKᵀ of the last 40 queries of each of 4 heads against 520 keys over 64 channels, plus the
    # identity copies of the exponentials: 32-key tiles (16 + 8 rows at the ragged end) for
    # column tiles of 32 and 8 queries.
    qk = heads * last * kv_len * d
    tiles = [32] * 16 + [8]
    copies = heads * sum(t * t for t in tiles) * last
    assert rec.macs_estimate == qk + copies
    # The estimate reads K once per column tile and writes its probabilities (2 bytes each).
    assert rec.estimate_bytes >= heads * last * kv_len * SAT.data_bytes


def test_blasst_charges_the_qk_of_the_blocks_it_skips():
    op = op_of(heads=4, kv_heads=4, kv_len=1024, head_dim=64, block_size=128,
               pattern={"kind": "blasst", "threshold": 0.05})
    plan = plan_attention(op, SAT)
    rec = simulate(workload(op)).attention[0]
    allowed = sum(1 for it in plan.items for _ in range(it.col0 // 128 + 1))  # causal blocks
    skipped = allowed - sum(len(it.blocks) for it in plan.items)
    assert skipped > 0
    # Each skipped block costs its QKᵀ: 128 keys × 64 channels × 32 query columns.
    assert rec.macs_estimate == skipped * 128 * 64 * 32


def test_estimate_segments_carry_only_the_estimate_tag():
    op = op_of(pattern={"kind": "gated_block", "top_k": 2})
    segments = attention_layer_segments("attn", op, SAT, {})
    est = [s for s in segments if s.work.estimate]
    assert est and all(t == TAG_EST for s in est for t in s.program.tags)
    ops = {i.op for s in est for i in s.program.instrs}
    assert {Op.LOAD_A, Op.LOAD_B, Op.COMPUTE, Op.ROWMAX, Op.EXP, Op.STORE_C} <= ops
    assert all(t != TAG_EST for s in segments if not s.work.estimate for t in s.program.tags)


def test_the_estimate_share_of_the_split_is_its_segments_cycles():
    op = op_of(heads=4, kv_heads=2, kv_len=520, head_dim=64, block_size=128,
               pattern={"kind": "vertical_slash", "vertical": 8, "slash": 8, "last_q": 40})
    result = simulate(workload(op))
    rec = result.attention[0]
    segments = attention_layer_segments("attn", op, SAT, {})
    est = sum(run_program(s.program, SAT).cycles * s.repeat for s in segments if s.work.estimate)
    assert rec.phase_cycles["estimate"] == est > 0
    assert sum(rec.phase_cycles.values()) == rec.cycles


def test_repeated_ops_keep_their_speedup():
    # The dense baseline's segments already run op.repeat times; counting repeat again made a
    # repeated op's speedup repeat times too large.
    pattern = {"kind": "sliding_window", "window": 128}
    one = simulate(workload(op_of(kv_len=512, block_size=128, pattern=pattern))).attention[0]
    three = simulate(workload(op_of(kv_len=512, block_size=128, pattern=pattern,
                                    repeat=3))).attention[0]
    assert three.cycles == 3 * one.cycles and three.dense_cycles == 3 * one.dense_cycles
    assert three.speedup == pytest.approx(one.speedup)


def test_merged_steps_equal_the_greedy_merge():
    """``merge_arrays`` (vectorized, for million-token items) against the greedy rule: a full
    block joins the previous step if that is full, adjacent and stays within ``max_rows``."""
    from dataflows.attention import Block, merge_arrays

    rng = np.random.default_rng(7)
    for _ in range(200):
        block, kv = int(rng.choice([16, 32, 128])), int(rng.integers(1, 3000))
        kb = -(-kv // block)
        index = np.sort(rng.choice(kb, size=int(rng.integers(0, kb + 1)), replace=False))
        rows = np.minimum(block, kv - index * block)
        partial = rng.random(index.size) < rng.random()
        max_rows = block * int(rng.integers(1, 6))
        greedy: list[Block] = []
        for j, r, p in zip(index.tolist(), rows.tolist(), partial.tolist()):
            last = greedy[-1] if greedy else None
            if (last and not p and not last.partial and last.index + last.count == j
                    and last.rows + r <= max_rows):
                greedy[-1] = Block(last.index, last.rows + r, False, last.count + 1)
            else:
                greedy.append(Block(j, r, p))
        assert merge_arrays(index, rows, partial, block, max_rows).blocks() == tuple(greedy)
