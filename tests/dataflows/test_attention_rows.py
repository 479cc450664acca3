"""Key-set/offset masks kept without their block grid (the 1M-token path) map and time exactly
as with it: the per-head descriptors give every block the grid's state, and the mapping's
segments, cycles, MACs, traffic and cycle split are the same either way."""

from __future__ import annotations

import numpy as np
import pytest
from test_attention import SAT, op_of, workload

import workloads.generators.attention as A
from archsim import simulate
from dataflows.attention import plan_attention
from dataflows.attention_estimate import attention_layer_segments


@pytest.mark.parametrize("seed", range(6))
def test_descriptor_states_and_rows_equal_the_grid(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    monkeypatch.setattr(A, "_ROWS_AT_ONCE", 1 + seed)  # rows computed in runs of 1..6
    for _ in range(8):
        block = int(rng.choice([4, 8, 16]))
        kv_len = int(rng.integers(5, 200))
        q_len = int(rng.integers(1, kv_len + 1))
        keys = rng.random((2, kv_len)) < rng.choice([0.02, 0.2, 0.97])
        offsets = rng.random((2, 2 * kv_len - 1)) < rng.choice([0.01, 0.2, 0.98])
        for causal in (True, False):
            mask = A.keys_offsets_mask(1, 2, q_len, kv_len, block, keys, offsets, causal, "x")
            rows = mask.rows
            for h in range(2):
                grid = rows.states(h, np.arange(mask.q_blocks)[:, None],
                                   np.arange(mask.kv_blocks)[None, :])
                assert (grid == mask.state[0, h]).all()
                for qb in range(mask.q_blocks):
                    kbs, st = rows.row(h, qb)
                    assert kbs.tolist() == np.flatnonzero(mask.state[0, h, qb]).tolist()
                    assert (st == mask.state[0, h, qb, kbs]).all()
            assert rows.nonempty() == np.count_nonzero(mask.state[0])


def _figures(op):
    rec = simulate(workload(op)).attention[0]
    return (rec.cycles, rec.macs_executed, rec.macs_estimate, rec.estimate_bytes,
            dict(rec.phase_cycles), rec.density, rec.block_density, rec.blocks_executed,
            rec.blocks_total, rec.speedup)


@pytest.mark.parametrize("pattern", [
    {"kind": "vertical_slash", "vertical": 40, "slash": 30, "last_q": 64},
    {"kind": "vertical_stripe", "frame_tokens": 384, "stripe_frames": [0, 3], "window": 40},
    {"kind": "multi_diagonal", "window": 24, "frame_tokens": 512},
], ids=lambda p: p["kind"])
@pytest.mark.parametrize("kv_len,q_len", [(4096, None), (3000, 1100)])
def test_without_the_grid_the_mapping_and_timing_are_the_same(pattern, kv_len, q_len,
                                                              monkeypatch):
    op = op_of(heads=4, kv_heads=2, kv_len=kv_len, q_len=q_len, head_dim=64, block_size=128,
               pattern=pattern)
    with_grid = plan_attention(op, SAT)
    assert with_grid.mask.state is not None
    segments = attention_layer_segments("attn", op, SAT, {})
    figures = _figures(op)
    monkeypatch.setattr(A, "GRID_LIMIT", 0)
    import dataflows.attention as DA
    monkeypatch.setattr(DA, "_ROW_RUN", 3)  # Visits from runs of 3 query blocks' rows
    without = plan_attention(op, SAT)
    assert without.mask.state is None
    assert [(i.col0, i.blocks.index.tolist(), i.blocks.partial.tolist(), i.mask_offset)
            for i in without.items] == [
        (i.col0, i.blocks.index.tolist(), i.blocks.partial.tolist(), i.mask_offset)
        for i in with_grid.items]
    other = attention_layer_segments("attn", op, SAT, {})
    assert [(s.key, s.repeat, s.work) for s in other] == [(s.key, s.repeat, s.work)
                                                         for s in segments]
    assert [s.program.instrs for s in other] == [s.program.instrs for s in segments]
    assert _figures(op) == figures


def test_item_pairs_are_the_query_blocks_of_the_columns():
    from dataflows.attention import item_pairs
    rng = np.random.default_rng(3)
    for _ in range(300):
        kv_heads = int(rng.integers(1, 3))
        heads = kv_heads * int(rng.integers(1, 4))
        kv_len = int(rng.integers(1, 300))
        q_len = int(rng.integers(1, kv_len + 1))
        block, width = int(rng.choice([8, 32, 128])), int(rng.choice([8, 32, 100]))
        op = op_of(heads=heads, kv_heads=kv_heads, kv_len=kv_len, q_len=q_len, block_size=block)
        g, group = heads // kv_heads, int(rng.integers(0, kv_heads))
        col0 = int(rng.integers(0, g * q_len))
        cols = min(width, g * q_len - col0)
        c = np.arange(col0, col0 + cols)
        expected = sorted({(group * g + int(h), int(q) // block)
                           for h, q in zip(c // q_len, c % q_len)})
        assert list(item_pairs(op, block, group, col0, cols)) == expected


@pytest.mark.parametrize("pattern,causal", [
    ({"kind": "vertical_slash", "vertical": 40, "slash": 30, "last_q": 64}, True),
    ({"kind": "block_sparse", "density": 0.3, "seed": 2}, False),
    ({"kind": "sliding_window", "window": 300, "global_tokens": 4}, True),
], ids=lambda p: p["kind"] if isinstance(p, dict) else str(p))
def test_batched_cuts_count_every_items_chunks(pattern, causal, monkeypatch):
    """The segments (Visits merged and cut in batches, shapes as bytes) count exactly the
    chunks ``item_chunks`` gives each work item, by first/last flag and step shapes, and each
    program is the one its first item's chunk builds."""
    from collections import Counter

    import dataflows.attention as DA
    monkeypatch.setattr(DA, "_BATCH_BLOCKS", 50)  # many batches
    tight = SAT.model_copy(update={"controller": SAT.controller.model_copy(
        update={"instruction_depth": 40})})
    op = op_of(heads=4, kv_heads=2, kv_len=3000, q_len=2000, head_dim=64, block_size=128,
               pattern=pattern, causal=causal)
    plan = plan_attention(op, tight)
    expected = Counter()
    for item in plan.items:
        chunks = DA.item_chunks(plan, item, tight)
        for i, chunk in enumerate(chunks):
            expected[(item.cols, i == 0, i == len(chunks) - 1,
                      tuple((b.rows, b.partial, b.count) for b in chunk))] += 1
    assert max(expected.values()) > 1 and any(not k[1] for k in expected)  # several chunks
    got = Counter()
    for seg in DA.attention_segments("attn", op, tight, {}, plan):
        shapes = np.frombuffer(seg.key[-1], dtype=np.uint32).reshape(-1, 2)  # rows, count
        got[(seg.key[5], seg.key[6], seg.key[7],
             tuple((int(r), c == 0, max(int(c), 1)) for r, c in shapes))] += seg.repeat
        assert seg.work.blocks == int(np.maximum(shapes[:, 1], 1).sum())
    assert got == expected


def _greedy_cuts(needs, lo, end, limit):
    """The greedy cut one step at a time: a chunk takes steps while every unit's sum fits."""
    out = []
    while lo < end:
        hi, used = lo, np.zeros(3, dtype=np.int64)
        while hi < end and (used + needs[hi] <= limit).all():
            used += needs[hi]
            hi += 1
        assert hi > lo
        out.append((lo, hi))
        lo = hi
    return out


def test_chunk_bounds_of_many_items_is_the_greedy_cut():
    from dataflows.attention import chunk_bounds_of
    from workloads.errors import MappingError
    rng = np.random.default_rng(5)
    seen = set()
    for _ in range(60):
        needs = rng.integers(0, 9, size=(int(rng.integers(0, 300)), 3))
        if needs.size and rng.random() < 0.25:  # one step too long for any chunk
            needs[rng.integers(0, needs.shape[0]), rng.integers(0, 3)] = 12
        starts = np.unique(np.append(rng.integers(0, max(1, needs.shape[0]), 6), 0)).tolist()
        starts = sorted(starts + [starts[-1]])  # an empty item too
        reserved = tuple(int(r) for r in rng.integers(0, 3, 3))
        depth = 12
        limit = np.array([depth - r for r in reserved])
        ends = starts[1:] + [needs.shape[0]]
        if any((needs[a:b] > limit).any() for a, b in zip(starts, ends)):
            with pytest.raises(MappingError, match="instruction_depth=12 is too small"):
                chunk_bounds_of(needs, starts, depth, reserved, "step")
            seen.add("refused")
            continue
        got = chunk_bounds_of(needs, starts, depth, reserved, "step")
        assert got == [_greedy_cuts(needs, a, b, limit) for a, b in zip(starts, ends)]
        seen.add("cut")
    assert seen == {"refused", "cut"}


def test_band_states_are_the_block_classification_of_the_band():
    from workloads.generators.attention import EMPTY, FULL, PARTIAL, _band_state
    rng = np.random.default_rng(11)
    for _ in range(200):
        block = int(rng.integers(1, 9))
        kv_len = int(rng.integers(1, 60))
        q_len = int(rng.integers(1, kv_len + 1))
        lo = float(rng.choice([-np.inf, rng.integers(-20, 20)]))
        hi = float(rng.choice([np.inf, lo + rng.integers(0, 30)]))
        d = (np.arange(q_len)[:, None] + kv_len - q_len) - np.arange(kv_len)[None, :]
        inside = (d >= lo) & (d <= hi)
        want = np.empty((-(-q_len // block), -(-kv_len // block)), dtype=np.uint8)
        for qb in range(want.shape[0]):
            for kb in range(want.shape[1]):
                cell = inside[qb * block:(qb + 1) * block, kb * block:(kb + 1) * block]
                want[qb, kb] = FULL if cell.all() else PARTIAL if cell.any() else EMPTY
        assert (_band_state(q_len, kv_len, block, lo, hi) == want).all()
