"""Issue 18 part 3: the FlashAttention-2-style attention backward (dataflows/attention_backward.py).

Five GEMMs per visited cell against the forward's two, masked cells skipped exactly as the
forward skips them, a program whose instructions and cycles can be counted by hand, and
transformer models that train with it."""

from __future__ import annotations

import pytest
from test_attention import SAT, op_of

from archsim import simulate
from archsim.model import run_program
from dataflows.attention import plan_attention
from dataflows.attention_backward import (
    BackwardLayout,
    backward_items,
    backward_macs,
    backward_program,
    d_prepass_segments,
)
from dataflows.cost import dma_cycles, dscore_cycles, exp_cycles, stats_cycles
from dataflows.isa import Op, Unit
from workloads.spec import ModelOp, WorkloadSpec


def _train(*ops) -> dict:
    result = simulate(WorkloadSpec(version=1, name="t", hardware=SAT, mode="training",
                                   operations=ops))
    return {rec.layer: rec for rec in result.attention}


@pytest.mark.parametrize("shape", [dict(kv_len=256, head_dim=64, block_size=128),
                                   dict(kv_len=200, head_dim=40, block_size=32)])
def test_dense_backward_executes_two_and_a_half_times_the_forward_macs(shape):
    op = op_of(pattern={"kind": "dense"}, causal=False, **shape)
    recs = _train(op)
    fwd, bwd = recs["attn"], recs["attn.backward"]
    assert bwd.phase == "backward" and fwd.phase == "prefill"
    assert 2 * bwd.macs_executed == 5 * fwd.macs_executed
    assert bwd.macs_executed == 5 * op.heads * op.kv_len * op.kv_len * op.head_dim
    assert bwd.macs_executed == bwd.macs_dense and bwd.blocks_skipped == 0


@pytest.mark.parametrize("pattern", [
    {"kind": "dense"},
    {"kind": "sliding_window", "window": 64, "global_tokens": 2},
    {"kind": "block_sparse", "density": 0.3, "seed": 1},
    {"kind": "vertical_slash", "vertical": 12, "slash": 10, "last_q": 40},
    {"kind": "diagonal", "window": 90},
    {"kind": "vertical_stripe", "frame_tokens": 96, "stripe_frames": [0, 2], "window": 16},
    {"kind": "gated_block", "top_k": 2},
    {"kind": "blasst", "threshold": 0.01},
], ids=lambda p: p["kind"])
def test_masked_backward_runs_exactly_the_unmasked_cells(pattern):
    """Executed backward MACs = Σ over the mask's non-empty (head, query block, key block)
    cells of 5 · query rows · key rows · d; the estimate is the forward's, not repeated."""
    op = op_of(pattern=pattern, kv_len=300, repeat=2)
    recs = _train(op)
    plan = plan_attention(op, SAT)
    bwd = recs["attn.backward"]
    assert bwd.macs_executed == backward_macs(plan) > 0
    assert bwd.macs_estimate == 0 and bwd.blocks_skipped + bwd.blocks_executed == bwd.blocks_total
    if pattern["kind"] != "dense":
        assert bwd.macs_executed < bwd.macs_dense and bwd.blocks_skipped > 0


def test_one_backward_program_counted_by_hand():
    """64 queries × 64 keys × 32 channels, one head, dense, on the 32×32 array: two backward
    items of 32 keys; each visits the two full 32-row query blocks as one 64-row step."""
    op = op_of(pattern={"kind": "dense"}, causal=False, heads=1, kv_heads=1, kv_len=64,
               head_dim=32, block_size=32)
    plan = plan_attention(op, SAT)
    items = backward_items(plan, SAT)
    assert [(it.key0, it.cols, len(it.visits), it.visits[0].block.rows) for it in items] == [
        (0, 32, 1, 64), (32, 32, 1, 64)]
    lay = BackwardLayout.of(plan, SAT, 0)
    prog = backward_program(plan, items[0], items[0].visits, True, True, lay, lay.masks, SAT)
    ops = [i.op for i in prog.instrs]
    # DMA: Kᵀ, Vᵀ, K tiles; L and D; Q and dO rows; per 32 query rows dOᵀ and Qᵀ rows; the
    # visit's dQ add (one channel chunk); dVᵀ and dKᵀ stores. PE: S and dP; per 32 rows dVᵀ,
    # dKᵀ and dQ. Vector: PEXP, DSCORE per 32 rows.
    assert ops.count(Op.LOAD_B) == 3 and ops.count(Op.STATS) == 2
    assert ops.count(Op.LOAD_A) == 2 + 2 * 2 and ops.count(Op.STORE_ADD) == 1
    assert ops.count(Op.STORE_C) == 2 and ops.count(Op.COMPUTE) == 2 + 3 * 2
    assert ops.count(Op.PEXP) == ops.count(Op.DSCORE) == 2
    macs = sum(i.m * i.k * i.cols for i in prog.instrs if i.op == Op.COMPUTE)
    assert macs == 5 * 64 * 32 * 32
    stats = run_program(prog, SAT)
    assert sum(stats.tasks[t].macs for t in stats.tasks) == macs
    assert stats.busy[Unit.VEC] == 2 * (exp_cycles(32, 32, SAT) + dscore_cycles(32, 32, SAT))


def test_d_prepass_cycles_by_hand():
    """D = rowsum(dO ∘ O) of 32 queries × 32 channels: LOAD_A dOᵀ and LOAD_B Oᵀ one after the
    other on the DMA port, DSCORE once both are in, then the STATS store: a serial chain."""
    op = op_of(pattern={"kind": "dense"}, causal=False, heads=1, kv_heads=1, kv_len=32,
               head_dim=32, block_size=32)
    plan = plan_attention(op, SAT)
    lay = BackwardLayout.of(plan, SAT, 0)
    [seg] = d_prepass_segments("attn.backward", plan, SAT, lay, {})
    assert [i.op for i in seg.program.instrs] == [Op.LOAD_A, Op.LOAD_B, Op.DSCORE, Op.STATS]
    row = 32 * SAT.data_bytes
    expected = (2 * dma_cycles(32, row, SAT) + dscore_cycles(32, 32, SAT)
                + stats_cycles(1, 32, True, SAT))
    assert run_program(seg.program, SAT).cycles == expected


def test_decoder_trains_with_attention_backward():
    """A small decoder with an attention pattern in training: each block's attention runs its
    forward with the other FF GEMMs and its backward among the BP/WG GEMMs, in reverse order."""
    model = ModelOp(op="model", model="decoder", batch=1, seq_len=256, layers=2, hidden=128,
                    heads=2, mlp=256, pattern={"kind": "sliding_window", "window": 128})
    result = simulate(WorkloadSpec(version=1, name="t", hardware=SAT, mode="training",
                                   operations=[model]))
    names = [r.name for r in result.layers]
    fwd = [n for n in names if n.endswith(".attn")]
    bwd = [n for n in names if n.endswith(".attn.backward")]
    assert len(fwd) == len(bwd) == 2
    assert max(map(names.index, fwd)) < min(map(names.index, bwd))
    assert bwd == ["decoder.blocks.1.attn.backward", "decoder.blocks.0.attn.backward"]
    assert any(r.phase in ("bp", "wg") for r in result.layers)
    recs = {r.layer: r for r in result.attention}
    for f, b in zip(fwd, reversed(bwd)):
        assert 2 * recs[b].macs_executed == 5 * recs[f].macs_executed


def test_a_mask_without_its_block_grid_refuses_the_backward_in_one_line(monkeypatch):
    """Beyond GRID_LIMIT a key/offset mask keeps per-head descriptors, no grid; the backward
    walks the grid, so training says why it cannot run (it crashed with a TypeError before)."""
    import workloads.generators.attention as A
    from workloads.errors import MappingError

    monkeypatch.setattr(A, "GRID_LIMIT", 0)
    op = op_of(pattern={"kind": "vertical_slash", "vertical": 12, "slash": 10, "last_q": 40},
               kv_len=300)
    with pytest.raises(MappingError, match="needs the mask's block grid") as info:
        _train(op)
    assert "\n" not in str(info.value)


def test_cross_attention_to_a_shorter_memory_trains_with_every_query_block():
    """200 queries (7 blocks of 32) against a 50-key memory (2 blocks), non-causal dense: the
    forward runs 2 · q · kv · d MACs per head, the backward 5 · q · kv · d, each backward item
    of keys visits all 200 query rows of every head, and the fast engine agrees with SimPy."""
    op = op_of(pattern={"kind": "dense"}, causal=False, q_len=200, kv_len=50)
    plan = plan_attention(op, SAT)
    items = backward_items(plan, SAT)
    assert [it.key0 for it in items if it.batch == 0 and it.group == 0] == [0, 32]
    for it in items:
        for h_in in range(op.heads // op.groups):
            assert sum(v.block.rows for v in it.visits if v.head_in == h_in) == 200
    spec = WorkloadSpec(version=1, name="t", hardware=SAT, mode="training", operations=[op])
    simpy, fast = simulate(spec), simulate(spec, engine="fast")
    recs = {rec.layer: rec for rec in simpy.attention}
    fwd, bwd = recs["attn"], recs["attn.backward"]
    assert fwd.macs_executed == fwd.macs_dense == 2 * op.heads * 200 * 50 * op.head_dim
    assert bwd.macs_executed == bwd.macs_dense == 5 * op.heads * 200 * 50 * op.head_dim
    assert bwd.blocks_total == op.heads * 7 * 2 and bwd.blocks_skipped == 0
    assert fast.total_cycles == simpy.total_cycles
    assert fast.layers == simpy.layers and fast.attention == simpy.attention
