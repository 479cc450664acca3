"""Attention patterns: block states agree with the element masks, counts are exact, the
FlexAttention BlockMask form round-trips (with torch when installed), specs validate."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from workloads.errors import SpecError
from workloads.generators import attention as A
from workloads.layers import expand
from workloads.load import load_workload
from workloads.spec import AttentionOp, ModelOp
from workloads.zoo import model_layers


def check_consistent(mask: A.AttentionMask) -> np.ndarray:
    """Every block's state matches its elements; ``kept`` counts them (before N:M)."""
    dense = mask.dense()
    for b, h, qb, kb in np.ndindex(mask.state.shape):
        (q0, q1), (k0, k1) = mask.q_range(qb), mask.kv_range(kb)
        blk = dense[b, h, q0:q1, k0:k1]
        want = A.FULL if blk.all() else A.PARTIAL if blk.any() else A.EMPTY
        assert mask.state[b, h, qb, kb] == want, (mask.label, b, h, qb, kb)
    if mask.score_nm is None:
        assert dense.sum() == mask.kept
    return dense


def positions(q_len: int, kv_len: int) -> np.ndarray:
    return np.arange(q_len)[:, None] + kv_len - q_len - np.arange(kv_len)[None, :]


@pytest.mark.parametrize("q_len, kv_len", [(70, 70), (5, 70), (1, 33)])
@pytest.mark.parametrize("causal", [True, False])
def test_causal_and_dense(q_len, kv_len, causal):
    dense = check_consistent(A.causal_mask(2, 3, q_len, kv_len, 16, causal))
    want = positions(q_len, kv_len) >= 0 if causal else np.ones((q_len, kv_len), bool)
    assert np.array_equal(dense[1, 2], want)


@pytest.mark.parametrize("causal", [True, False])
def test_sliding_window_per_head_with_global_tokens(causal):
    windows = (8, 20, 33)
    mask = A.sliding_window_mask(1, 3, 70, 90, 16, windows, global_tokens=5, causal=causal)
    dense = check_consistent(mask)
    d = positions(70, 90)
    for h, w in enumerate(windows):
        band = (d >= 0) & (d < w) if causal else np.abs(d) < w
        sink = (np.arange(90)[None, :] < 5) & ((d >= 0) if causal else True)
        assert np.array_equal(dense[0, h], band | sink)


def test_block_sparse_keeps_the_density_and_the_diagonal():
    mask = A.block_sparse_mask(2, 2, 256, 256, 16, 0.25, seed=4, causal=False)
    check_consistent(mask)
    kept_per_row = (mask.state != A.EMPTY).sum(axis=-1)
    assert np.all(kept_per_row == 4)  # round(0.25 * 16)
    assert np.all(mask.state[..., np.arange(16), np.arange(16)] == A.FULL)
    again = A.block_sparse_mask(2, 2, 256, 256, 16, 0.25, seed=4, causal=False)
    assert np.array_equal(mask.state, again.state)  # seeded


def test_flex_block_lists_round_trip():
    mask = A.block_sparse_mask(1, 2, 100, 100, 16, 0.3, seed=0, causal=True)
    flex = mask.to_flex()
    back = A.from_flex(
        flex["kv_num_blocks"],
        flex["kv_indices"],
        flex["full_kv_num_blocks"],
        flex["full_kv_indices"],
        1,
        2,
        100,
        100,
        16,
        True,
    )
    assert np.array_equal(back.state, mask.state) and back.kept == mask.kept


def test_npz_file_and_its_errors(tmp_path):
    mask = A.block_sparse_mask(1, 1, 64, 64, 16, 0.5, seed=1, causal=False)
    path = tmp_path / "mask.npz"
    np.savez(path, **mask.to_flex())
    loaded = A.load_npz(str(path), 2, 3, 64, 64, 16, causal=False)  # B = H = 1 broadcasts
    assert np.array_equal(loaded.state[1, 2], mask.state[0, 0])
    with pytest.raises(SpecError, match=r"expected kv_num_blocks \[B, H, 2\]"):
        A.load_npz(str(path), 1, 1, 32, 64, 16, causal=False)


def test_torch_block_mask_both_ways():
    torch = pytest.importorskip("torch")
    from torch.nn.attention.flex_attention import create_block_mask

    def window(b, h, q, kv):
        return (q >= kv) & (q - kv < 40)

    block_mask = create_block_mask(window, 1, 2, 300, 300, device="cpu", BLOCK_SIZE=128)
    ours = A.from_torch(block_mask)
    dense = check_consistent(ours)
    d = positions(300, 300)
    assert np.array_equal(dense[0, 1], (d >= 0) & (d < 40))
    exported = A.sliding_window_mask(1, 2, 300, 300, 128, (40,)).to_torch()
    assert torch.equal(exported.to_dense(), block_mask.to_dense())
    assert np.array_equal(A.from_torch(exported).state, ours.state)


def test_blasst_skips_more_with_a_larger_threshold_and_never_the_first_block():
    q, k = A.synthetic_qk(1, 2, 1, 256, 256, 32, seed=0)
    loose = A.blasst_mask(q, k, 32, 1e-6, causal=True)
    tight = A.blasst_mask(q, k, 32, 1e-2, causal=True)
    check_consistent(tight)
    base = A.causal_mask(1, 2, 256, 256, 32).state
    assert np.all((tight.state != A.EMPTY) <= (loose.state != A.EMPTY))
    assert np.all((loose.state != A.EMPTY) <= (base != A.EMPTY))
    assert np.count_nonzero(tight.state) < np.count_nonzero(loose.state)
    assert np.all(tight.state[..., 0] != A.EMPTY)  # the first visited block always runs


def test_topk_keeps_the_best_visible_tokens():
    q, k = A.synthetic_qk(1, 2, 2, 64, 64, 32, seed=1)
    mask = A.topk_mask(q, k, 16, 10, 8, causal=True)
    dense = check_consistent(mask)
    visible = np.arange(64) + 1
    assert np.array_equal(dense.sum(axis=-1)[0, 0], np.minimum(visible, 10))
    # With every channel the approximate score is the exact one: the top keys by q·k.
    exact = A.topk_mask(q, k, 16, 10, 32, causal=True).dense()
    s = q[0, 1, 63] @ k[0, 1].T
    assert set(np.flatnonzero(exact[0, 1, 63])) == set(np.argsort(-s)[:10])


def test_score_nm_counts_n_of_every_m_visible_keys():
    mask = A.score_nm_mask(1, 1, 10, 10, 4, n=2, m=4, causal=True)
    assert mask.score_nm == (2, 4)
    # Query t sees t+1 keys: 2 per whole group of 4, up to 2 of the cut group.
    assert mask.kept == sum((t + 1) // 4 * 2 + min((t + 1) % 4, 2) for t in range(10))


def write(tmp_path, text: str):
    path = tmp_path / "w.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_npy_tensors_load_relative_to_the_workload(tmp_path):
    q, k = A.synthetic_qk(1, 2, 1, 64, 64, 16, seed=5)
    (tmp_path / "data").mkdir()
    np.save(tmp_path / "data" / "q.npy", q)
    np.save(tmp_path / "data" / "k.npy", k)
    w = load_workload(
        write(
            tmp_path,
            """\
        version: 1
        name: t
        hardware: tiny
        operations:
          - op: attention
            name: a
            heads: 2
            kv_heads: 1
            kv_len: 64
            head_dim: 16
            causal: true
            block_size: 16
            pattern:
              kind: topk
              tokens: 8
              channels: 4
              data: {source: npy, q: data/q.npy, k: data/k.npy}
        """,
        )
    )
    op = w.operations[0]
    assert op.pattern.data.q == str((tmp_path / "data" / "q.npy").resolve())
    from_files = A.build_mask(op)
    assert np.array_equal(from_files.state, A.topk_mask(q, k, 16, 8, 4, True).state)


@pytest.mark.parametrize(
    "body, message",
    [
        (
            "{op: attention, name: a, heads: 6, kv_heads: 4, kv_len: 64, head_dim: 16}",
            r"operations\[0\]: heads=6 must be a multiple of kv_heads=4",
        ),
        (
            "{op: attention, name: a, heads: 2, kv_len: 64, head_dim: 16, "
            "pattern: {kind: sliding_window, window: [8, 8, 8]}}",
            r"window lists 3 spans; give one per head \(2\)",
        ),
        (
            "{op: attention, name: a, heads: 2, kv_len: 64, head_dim: 16, "
            "pattern: {kind: block_sparse}}",
            "give exactly one of 'density'",
        ),
        (
            "{op: attention, name: a, heads: 2, kv_len: 64, head_dim: 16, block_size: 30, "
            "pattern: {kind: nm, n: 2, m: 4}}",
            r"block_size=30 must be a multiple of pattern.m=4",
        ),
        (
            "{op: attention, name: a, heads: 2, kv_len: 64, head_dim: 16, "
            "pattern: {kind: blasst, data: {source: npy, q: nope.npy, k: nope.npy}}}",
            "file not found",
        ),
        (
            "{op: attention, name: a, heads: 2, kv_len: 64, head_dim: 16, q_len: 65, causal: true}",
            r"q_len=65 exceeds kv_len=64 with causal: true: query i sits at position "
            r"kv_len - q_len \+ i, before key 0 for the first 1; more queries than keys is "
            r"allowed only for non-causal dense prefill \(cross-attention",
        ),
        (
            "{op: attention, name: a, heads: 2, kv_len: 64, head_dim: 16, q_len: 100, "
            "pattern: {kind: diagonal, window: 8}}",
            r"q_len=100 exceeds kv_len=64 with pattern 'diagonal': query i sits at position",
        ),
        (
            "{op: attention, name: a, heads: 2, kv_len: 64, head_dim: 16, q_len: 65, "
            "phase: decode}",
            r"q_len=65 exceeds kv_len=64 with phase: decode: query i sits",
        ),
        (
            "{op: model, model: resnet18, batch: 1, pattern: {kind: nm, n: 2, m: 4}}",
            "model 'resnet18' has no attention",
        ),
        ("{op: model, model: bert_base, batch: 1, heads: 4}", "only model: decoder takes"),
    ],
)
def test_spec_errors_name_the_line_and_the_fix(tmp_path, body, message):
    path = write(
        tmp_path,
        f"""\
        version: 1
        name: t
        hardware: tiny
        operations:
          - {body}
        """,
    )
    with pytest.raises(SpecError, match=message) as err:
        load_workload(path)
    assert f"{path}:5:" in str(err.value)


def test_training_refuses_what_the_attention_backward_does_not_model(tmp_path):
    """Training runs the attention backward, except through N:M-pruned scores and decode."""
    for extra, message in (("model: bert_base, pattern: {kind: nm, n: 2, m: 4}",
                            "does not model N:M pruning"),
                           ("model: decoder, phase: decode, pattern: {kind: dense}",
                            "decode needs mode: inference")):
        path = write(
            tmp_path,
            f"""\
            version: 1
            name: t
            hardware: tiny
            mode: training
            operations:
              - {{op: model, batch: 1, {extra}}}
            """,
        )
        with pytest.raises(SpecError, match=message):
            load_workload(path)


def test_zoo_transformers_take_a_pattern():
    bert = model_layers(
        ModelOp(
            op="model",
            model="bert_base",
            batch=2,
            seq_len=256,
            pattern={"kind": "nm", "n": 2, "m": 4},
        )
    )
    attn = [lay for lay in bert if lay.kind == "attention"]
    assert len(attn) == 12 and not any(lay.kind == "matmul" for lay in bert)
    assert attn[3].name == "bert_base.encoder.3.attn" == attn[3].attention.name
    assert (attn[3].attention.heads, attn[3].attention.queries, attn[3].attention.head_dim) == (
        12,
        256,
        64,
    )
    seeds = {
        lay.attention.pattern.seed
        for lay in model_layers(
            ModelOp(
                op="model",
                model="vit_b16",
                batch=1,
                pattern={"kind": "block_sparse", "density": 0.5, "seed": 7},
            )
        )
        if lay.kind == "attention"
    }
    assert seeds == set(range(7, 19))  # a fresh mask per block


def test_decoder_shapes_gqa_gated_mlp_and_decode():
    op = ModelOp(
        op="model",
        model="decoder",
        batch=2,
        seq_len=1024,
        layers=2,
        hidden=512,
        heads=8,
        kv_heads=2,
        mlp=1536,
        gated_mlp=True,
        phase="decode",
        pattern={"kind": "dense"},
    )
    layers = model_layers(op)
    assert [lay.name.split(".", 3)[-1] for lay in layers[:5]] == [
        "attn.qkv",
        "attn",
        "attn.proj",
        "mlp.gate_up",
        "mlp.down",
    ]
    qkv, attn = layers[0], layers[1].attention
    assert (qkv.rows, qkv.in_features, qkv.out_features) == (2, 512, 512 + 2 * 2 * 64)
    assert (attn.queries, attn.kv_len, attn.groups, attn.causal) == (1, 1024, 2, True)
    # GPT-2 small by default: 12 blocks of 4 GEMMs + attention as two matmuls.
    gpt2 = model_layers(ModelOp(op="model", model="decoder", batch=1, seq_len=128))
    assert len(gpt2) == 12 * 6
    weights = sum(lay.in_features * lay.out_features for lay in gpt2 if lay.kind == "linear")
    assert weights == 12 * (768 * 2304 + 768 * 768 + 2 * 768 * 3072)


def test_explicit_attention_ops_expand_to_attention_layers():
    op = AttentionOp(op="attention", name="a", heads=4, kv_len=64, head_dim=16, repeat=3)
    from workloads.load import load_hardware
    from workloads.spec import WorkloadSpec

    w = WorkloadSpec(version=1, name="t", hardware=load_hardware("tiny"), operations=(op,))
    (layer,) = expand(w)
    assert layer.kind == "attention" and layer.repeat == 3 and layer.attention is op


def test_cross_attention_may_have_more_queries_than_keys(tmp_path):
    """Non-causal dense attention has no positions to respect: a decoder's 200 queries attend
    to a 50-token memory (refused before: 'q_len=200 exceeds kv_len=50'); every key is seen by
    every query, and the op's layer is 200 query rows against 50 keys."""
    path = write(
        tmp_path,
        """\
        version: 1
        name: t
        hardware: tiny
        operations:
          - {op: attention, name: cross, heads: 2, q_len: 200, kv_len: 50, head_dim: 16,
             block_size: 32}
        """,
    )
    (layer,) = expand(load_workload(path))
    assert (layer.rows, layer.in_features, layer.out_features) == (200, 16, 50)
    mask = check_consistent(A.build_mask(layer.attention))
    assert mask.shape == (1, 2, 200, 50) and mask.all()
