"""The FlashAttention-style mapping: its programs compute masked attention, conserve MACs, skip
the KV traffic of skipped blocks, and decode at 32k is bound by the KV stream."""

from __future__ import annotations

import numpy as np
import pytest

from archsim import simulate
from archsim.model import run_program
from dataflows.attention import (
    TAG_K,
    TAG_Q,
    TAG_V,
    attention_macs,
    attention_segments,
    item_chunks,
    item_program,
    plan_attention,
)
from dataflows.cost import (
    exp_cycles,
    normalize_cycles,
    reciprocal_cycles,
    rowmax_cycles,
    scale_cycles,
    softmax_cycles,
)
from dataflows.isa import Instr, Op, decode, encode
from dataflows.softmax_format import SoftmaxFormat
from verification.dram import attention_image, attention_tensors, quantize, read_dense
from verification.golden import Interpreter
from workloads.errors import MappingError
from workloads.generators.attention import synthetic_qk, top_n_scores
from workloads.load import load_hardware
from workloads.spec import AttentionOp, WorkloadSpec

SAT, TINY = load_hardware("sat_vcu1525"), load_hardware("tiny")


def op_of(**fields) -> AttentionOp:
    base = {
        "op": "attention",
        "name": "attn",
        "heads": 4,
        "kv_heads": 2,
        "kv_len": 150,
        "head_dim": 40,
        "causal": True,
        "block_size": 32,
    }
    return AttentionOp.model_validate({**base, **fields})


# --------------------------------------------------------------------------------------------
# Values: every program of the op, interpreted, gives masked attention
# --------------------------------------------------------------------------------------------


def _reference(op, hw, qi, ki, vi, allowed) -> np.ndarray:
    """Base-2 softmax attention of the integer operands, with the pattern's element mask and,
    for N:M scores, the top-N of every M keys by fixed-point score (ties: lower index)."""
    fmt = SoftmaxFormat.of(hw)
    frac, shift = fmt.operand_frac_bits, fmt.score_shift
    g = op.heads // op.groups
    kk, vv = np.repeat(ki, g, axis=1), np.repeat(vi, g, axis=1)
    x = np.einsum("bhqd,bhkd->bhqk", qi, kk) >> shift
    keep = allowed.copy()
    if op.pattern.kind == "nm":
        keep &= top_n_scores(x, keep, op.pattern.n, op.pattern.m)[..., : op.kv_len]
    s = np.where(keep, x / 2.0**hw.vector_unit.score_frac_bits, -np.inf)
    top = np.where(keep.any(-1, keepdims=True), s.max(-1, keepdims=True), 0.0)
    e = np.where(keep, np.exp2(s - top), 0.0)
    total = e.sum(-1, keepdims=True)
    p = np.divide(e, total, out=np.zeros_like(e), where=total > 0)
    return np.einsum("bhqk,bhkd->bhqd", p, vv / 2.0**frac)


#: Output error bound on SAT: datapath error, plus half an LSB of Oᵀ's 8 fraction bits.
OUT_TOL = 1e-3 + 2.0**-9


def run_values(op: AttentionOp, hw, seed: int = 0):
    """(hardware output, float reference) of every query, both [batch, heads, q_len, d]."""
    fmt = SoftmaxFormat.of(hw)
    frac = fmt.operand_frac_bits
    q, k = synthetic_qk(op.batch, op.heads, op.groups, op.queries, op.kv_len, op.head_dim, seed)
    rng = np.random.default_rng(seed)
    v = rng.uniform(-1, 1, size=(op.batch, op.groups, op.kv_len, op.head_dim))
    # Q carries log2(e)/√d, so the base-2 softmax is the usual one; keep scores in range.
    scale = np.log2(np.e) / np.sqrt(op.head_dim) / 4
    qi = quantize(q * scale, frac, hw.data_bits)
    ki, vi = quantize(k / 4, frac, hw.data_bits), quantize(v, frac, hw.data_bits)
    plan = plan_attention(op, hw)
    image = attention_image(plan, hw, attention_tensors(plan, qi, ki, vi))
    golden = Interpreter(hw)
    for item in plan.items:
        chunks = item_chunks(plan, item, hw)
        for i, steps in enumerate(chunks):
            program = item_program(plan, item, steps, i == 0, i == len(chunks) - 1, hw)
            image = golden.run(program, image)
    ot = plan.layout.tensors["attn.OT"]
    # Oᵀ leaves requantized to V's format (docs/isa.md, "Requantizing stores").
    assert ot.elem_bytes == hw.data_bytes
    out = read_dense(image.data, ot.addr, ot.rows, ot.cols, ot.stride, ot.elem_bytes, hw.data_bits)
    g = op.heads // op.groups
    out = out.reshape(op.batch, op.groups, op.head_dim, g, op.queries)
    out = out.transpose(0, 1, 3, 4, 2).reshape(op.batch, op.heads, op.queries, op.head_dim)
    return out / 2.0**frac, _reference(op, hw, qi, ki, vi, plan.mask.dense())


@pytest.mark.parametrize(
    "fields",
    [
        {},  # causal prefill, GQA: 32-column tiles cross the boundary between two query heads
        {"causal": False, "kv_heads": 4},
        {"pattern": {"kind": "sliding_window", "window": [20, 40, 70, 150], "global_tokens": 3}},
        {"pattern": {"kind": "block_sparse", "density": 0.4, "seed": 2}},
        {"pattern": {"kind": "topk", "tokens": 24, "channels": 8}},
        {"pattern": {"kind": "nm", "n": 2, "m": 4}},
        {"pattern": {"kind": "nm", "n": 1, "m": 2}, "kv_len": 133},  # ragged N:M group at the end
        {"phase": "decode", "kv_len": 300, "heads": 8},  # 4 heads of a group share the K/V stream
        {"q_len": 20, "kv_len": 150},  # chunked prefill: queries at positions 130..149
        # cross-attention to a shorter memory: 7 query blocks of 32 against 2 key blocks
        {"q_len": 200, "kv_len": 50, "causal": False},
    ],
)
def test_programs_compute_masked_attention(fields):
    hw_out, ref = run_values(op_of(**fields), SAT)
    # 15-bit probabilities and 16-bit exponentials of values within ±1: a few 1e-4 at most,
    # plus half an LSB of the 8 fraction bits Oᵀ is stored with.
    assert np.abs(hw_out - ref).max() < OUT_TOL, np.abs(hw_out - ref).max()


def test_chunked_programs_keep_the_softmax_state_between_segments():
    tight = SAT.model_copy(
        update={"controller": SAT.controller.model_copy(update={"instruction_depth": 8})}
    )
    op = op_of(kv_len=300, pattern={"kind": "sliding_window", "window": 100})
    plan = plan_attention(op, tight)
    assert max(len(item_chunks(plan, item, tight)) for item in plan.items) > 2
    hw_out, ref = run_values(op, tight)
    assert np.abs(hw_out - ref).max() < OUT_TOL


def test_eight_bit_operands_still_approximate_attention():
    hw_out, ref = run_values(op_of(head_dim=8, heads=2, kv_heads=1, kv_len=40, block_size=16), TINY)
    assert np.abs(hw_out - ref).max() < 0.1  # 4-bit fractions: coarse, but attention


# --------------------------------------------------------------------------------------------
# Work, traffic and bounds
# --------------------------------------------------------------------------------------------


def workload(*ops: AttentionOp, hw=SAT) -> WorkloadSpec:
    return WorkloadSpec(version=1, name="t", hardware=hw, operations=ops)


@pytest.mark.parametrize(
    "pattern",
    [
        {"kind": "dense"},
        {"kind": "sliding_window", "window": 64, "global_tokens": 2},
        {"kind": "block_sparse", "density": 0.3, "seed": 1},
        {"kind": "topk", "tokens": 40, "channels": 8},
        {"kind": "nm", "n": 1, "m": 2},
    ],
)
def test_executed_macs_are_unmasked_blocks_times_macs_per_block(pattern):
    op = op_of(heads=4, kv_heads=4, kv_len=520, head_dim=64, block_size=128, pattern=pattern)
    rec = simulate(workload(op)).attention[0]
    plan = plan_attention(op, SAT)
    nm = plan.score_nm
    expected = sum(
        attention_macs(b.rows, op.head_dim, it.cols, nm) for it in plan.items for b in it.blocks
    )
    assert rec.macs_executed == expected
    # One head per work item here, so the unmasked blocks are the mask's own.
    mask = plan.mask
    q_rows = [mask.q_range(i)[1] - mask.q_range(i)[0] for i in range(mask.q_blocks)]
    kv_rows = [mask.kv_range(j)[1] - mask.kv_range(j)[0] for j in range(mask.kv_blocks)]
    by_mask = sum(
        attention_macs(kv_rows[kb], op.head_dim, q_rows[qb], nm)
        for _, _, qb, kb in zip(*np.nonzero(mask.state))
    )
    assert rec.macs_executed == by_mask
    assert rec.blocks_executed + rec.blocks_skipped == rec.blocks_total
    assert rec.macs_dense == 2 * op.heads * op.queries * op.kv_len * op.head_dim


def test_block_skipping_cuts_kv_bytes_in_proportion():
    dense = op_of(heads=8, kv_heads=2, kv_len=4096, head_dim=64, block_size=128, phase="decode")
    sparse = dense.model_copy(
        update={
            "name": "sparse",
            "pattern": op_of(pattern={"kind": "block_sparse", "density": 0.25, "seed": 3}).pattern,
        }
    )
    a, b = simulate(workload(dense, sparse)).attention
    per_block = 2 * 128 * 64 * SAT.data_bytes  # K rows and Vᵀ columns of one block
    assert a.kv_bytes == a.blocks_executed * per_block
    assert b.kv_bytes == b.blocks_executed * per_block
    assert b.blocks_executed < a.blocks_executed
    assert b.kv_bytes / a.kv_bytes == pytest.approx(b.blocks_executed / a.blocks_executed)


def test_decode_at_32k_is_bound_by_the_kv_stream():
    op = AttentionOp(
        op="attention",
        name="dec",
        heads=32,
        kv_heads=8,
        kv_len=32768,
        head_dim=128,
        causal=True,
        phase="decode",
    )
    rec = simulate(workload(op)).attention[0]
    assert rec.bound_overall == "dram"
    assert rec.bound["qk"] == rec.bound["pv"] == "dram"
    kv_share = (rec.busy["pv"]["dram"] + rec.busy["qk"]["dram"]) / sum(
        r for units in rec.busy.values() for u, r in units.items() if u == "dram"
    )
    assert kv_share > 0.99
    assert rec.kv_bytes == 2 * 8 * 32768 * 128 * SAT.data_bytes
    assert rec.kv_bytes > 100 * rec.q_bytes


def test_identical_work_items_share_one_program():
    op = op_of(heads=12, kv_heads=12, kv_len=4096, head_dim=64, block_size=128, causal=False)
    segments = attention_segments("attn", op, SAT, {})
    assert len(segments) == 1 and segments[0].repeat == 12 * 4096 // 32


def test_phase_tags_account_every_load():
    op = op_of(heads=2, kv_heads=1, kv_len=256, head_dim=64, block_size=128, causal=False)
    plan = plan_attention(op, SAT)
    item = plan.items[0]
    (steps,) = item_chunks(plan, item, SAT)
    program = item_program(plan, item, steps, True, True, SAT)
    stats = run_program(program, SAT)
    loads = {
        tag: sum(1 for i, t in zip(program.instrs, program.tags) if t == tag and i.unit == 0)
        for tag in (TAG_Q, TAG_K, TAG_V)
    }
    # One step of 256 keys: Qᵀ and K once per 32-channel chunk, Vᵀ once per 32 keys.
    assert loads == {TAG_Q: 2, TAG_K: 2, TAG_V: 8}
    assert stats.tasks[TAG_K].macs == 256 * 64 * 32 == stats.tasks[TAG_V].macs


def test_mapping_errors_say_what_to_change():
    with pytest.raises(MappingError, match=r"N:M on scores 4:8 .* add \{n: 4, m: 8\}"):
        plan_attention(op_of(head_dim=8, pattern={"kind": "nm", "n": 4, "m": 8}), TINY)
    with pytest.raises(MappingError, match="enlarge buffers.accumulator_bytes or lower block_size"):
        plan_attention(op_of(block_size=256, kv_len=512), TINY)


# --------------------------------------------------------------------------------------------
# Instructions: encoding and latencies (tiny: 2 lanes, 8-bit data, exp stage 2 cycles)
# --------------------------------------------------------------------------------------------


def test_new_instructions_round_trip_and_keep_the_old_opcodes():
    assert [
        int(o) for o in (Op.LOAD_A, Op.LOAD_B, Op.STORE_C, Op.COMPUTE, Op.COMPRESS, Op.STORE_B)
    ] == [1, 2, 3, 4, 5, 6]
    for instr in (
        Instr(
            Op.EXP,
            wait=(3, 1, 0),
            c_slot=0,
            b_slot=1,
            k=32,
            rows=64,
            cols=4,
            nm_n=2,
            nm_m=4,
            mask=True,
            slot=1,
        ),
        Instr(Op.LOAD_MASK, slot=1, addr=4096, stride=1, rows=128, cols=32),
        Instr(Op.ROWMAX, accumulate=True, rows=128, cols=32),
    ):
        assert decode(encode(instr)) == instr


def test_vector_latencies_by_hand():
    # tiny: softmax_width 2; a 6 x 3 tile has 6 * ceil(3/2) = 12 beats. Exp stage 2, multiplier 2,
    # accumulator read 1; reciprocal 7 + 4 + 1 = 12 quotient bits.
    assert rowmax_cycles(6, 3, TINY) == 1 + 12 + 2 + 2
    assert exp_cycles(6, 3, TINY) == 1 + 12 + 2 + 1
    assert scale_cycles(6, 3, TINY) == 1 + 12 + 2
    assert reciprocal_cycles(TINY) == 12
    assert normalize_cycles(6, 3, TINY) == 12 + 15
    assert softmax_cycles(6, 2, TINY) == 6 + (6 + 2) + 12 + (6 + 2 + 2)
