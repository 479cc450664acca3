"""Issue 18's patterns as masks: vertical-slash from the last-query estimation, Sparse-vDiT's
diagonal / multi-diagonal / vertical-stripe, SeerAttention-style gated blocks and element masks
from .npy/.npz/.pt files — block states that agree with the elements, exact kept counts, and
one-line errors for bad fields and files."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from archsim.cli import main
from workloads.errors import SpecError
from workloads.generators import attention as A
from workloads.load import load_workload
from workloads.spec import AttentionOp


def op_of(pattern: dict, **fields) -> AttentionOp:
    base = {"op": "attention", "name": "a", "heads": 4, "kv_heads": 2, "kv_len": 70,
            "head_dim": 16, "causal": True, "block_size": 8, "pattern": pattern}
    return AttentionOp.model_validate({**base, **fields})


def check_blocks_agree(mask: A.AttentionMask) -> None:
    dense = mask.dense()
    assert mask.kept == int(dense.sum())
    for b, h, qb, kb in np.ndindex(mask.state.shape):
        (q0, q1), (k0, k1) = mask.q_range(qb), mask.kv_range(kb)
        block = dense[b, h, q0:q1, k0:k1]
        state = mask.state[b, h, qb, kb]
        assert (state == A.EMPTY) == (not block.any()) or state == A.PARTIAL
        if state == A.FULL:
            assert block.all()
        if state == A.EMPTY:
            assert not block.any()


PATTERNS = [
    {"kind": "vertical_slash", "vertical": 5, "slash": 6, "last_q": 8},
    {"kind": "diagonal", "window": 7},
    {"kind": "multi_diagonal", "window": 3, "frame_tokens": 12},
    {"kind": "multi_diagonal", "window": 9, "frame_tokens": 12, "frames": 2},  # bands overlap
    {"kind": "vertical_stripe", "frame_tokens": 10, "stripe_frames": [0, 3], "window": 2},
    {"kind": "gated_block", "top_k": 2},
    {"kind": "gated_block", "threshold": 0.2},
]


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: p["kind"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("q_len", [None, 17])
def test_block_states_and_counts_agree_with_the_elements(pattern, causal, q_len):
    if pattern["kind"] == "vertical_slash" and not causal:
        pytest.skip("vertical-slash is causal")
    check_blocks_agree(A.build_mask(op_of(pattern, causal=causal, q_len=q_len)))


def test_diagonal_is_the_band_around_each_query():
    mask = A.build_mask(op_of({"kind": "diagonal", "window": 3}, causal=False, heads=2,
                              kv_heads=2))
    q, k = np.meshgrid(np.arange(70), np.arange(70), indexing="ij")
    assert np.array_equal(mask.dense()[0, 0], np.abs(q - k) < 3)


def test_multi_diagonal_repeats_the_band_every_frame():
    mask = A.build_mask(op_of({"kind": "multi_diagonal", "window": 2, "frame_tokens": 10,
                               "frames": 1}, causal=False, heads=2, kv_heads=2))
    q, k = np.meshgrid(np.arange(70), np.arange(70), indexing="ij")
    d = q - k
    expected = (np.abs(d) < 2) | (np.abs(d - 10) < 2) | (np.abs(d + 10) < 2)
    assert np.array_equal(mask.dense()[0, 1], expected)


def test_vertical_stripe_keeps_whole_key_frames():
    mask = A.build_mask(op_of({"kind": "vertical_stripe", "frame_tokens": 10,
                               "stripe_frames": [2], "window": 1}, causal=False))
    dense = mask.dense()[0, 0]
    assert dense[:, 20:30].all() and np.array_equal(np.diag(dense), np.ones(70, bool))
    assert dense.sum() == 70 * 10 + 60


def test_vertical_slash_indices_follow_the_last_queries_attention():
    rng = np.random.default_rng(0)
    kv_len, d = 64, 8
    k = rng.standard_normal((kv_len, d))
    q = np.zeros((4, d))
    # The last 4 queries all look at key 10 (a vertical) and at the key 3 behind them (a slash).
    k[10] = 0
    k[10, 0] = 30.0
    q[:, 0] = 1.0
    verticals, slashes = A.vertical_slash_indices(q, k, kv_len, 2, 1)
    assert list(verticals) == [0, 10] and list(slashes) == [0]
    # Key 0 and the main diagonal are always kept; they fill the budget of one.
    v1, s1 = A.vertical_slash_indices(q, k, kv_len, 1, 1)
    assert list(v1) == [0] and list(s1) == [0]


def test_vertical_slash_mask_from_an_indices_file(tmp_path):
    np.savez(tmp_path / "vs.npz", vertical=np.array([[0, 33]]), slash=np.array([[0, 5]]))
    path = tmp_path / "w.yaml"
    path.write_text(textwrap.dedent("""\
        version: 1
        name: t
        hardware: tiny
        operations:
          - {op: attention, name: a, heads: 2, kv_len: 70, head_dim: 16, causal: true,
             block_size: 8, pattern: {kind: vertical_slash, vertical: 2, slash: 2,
             indices: vs.npz}}
        """))
    mask = A.build_mask(load_workload(path).operations[0])
    dense = mask.dense()[0, 1]
    q, k = np.meshgrid(np.arange(70), np.arange(70), indexing="ij")
    expected = ((k == 0) | (k == 33) | (q - k == 0) | (q - k == 5)) & (k <= q)
    assert np.array_equal(dense, expected)
    check_blocks_agree(mask)


def test_gated_block_keeps_top_k_blocks_and_the_diagonal():
    mask = A.build_mask(op_of({"kind": "gated_block", "top_k": 1}, causal=False))
    # One block chosen by the gate plus the diagonal block: one or two per query block.
    per_row = (mask.state != A.EMPTY).sum(axis=-1)
    assert per_row.min() >= 1 and per_row.max() <= 2
    assert all(mask.state[0, h, i, i] != A.EMPTY for h in range(4) for i in range(9))


def _element_array(shape=(1, 1, 20, 24), seed=1):
    return np.random.default_rng(seed).random(shape) < 0.3


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".pt"])
def test_element_masks_are_read_from_npy_npz_and_torch(tmp_path, suffix):
    dense = _element_array()
    path = tmp_path / f"m{suffix}"
    if suffix == ".npy":
        np.save(path, dense)
    elif suffix == ".npz":
        np.savez(path, mask=dense)
    else:
        torch = pytest.importorskip("torch")
        torch.save(torch.from_numpy(dense), path)
    (tmp_path / "w.yaml").write_text(
        "version: 1\nname: t\nhardware: tiny\noperations:\n"
        "  - {op: attention, name: a, heads: 3, kv_len: 24, q_len: 20, head_dim: 8, block_size: 8,"
        f" pattern: {{kind: element_mask, file: m{suffix}}}}}\n")
    mask = A.build_mask(load_workload(tmp_path / "w.yaml").operations[0])
    assert np.array_equal(mask.dense(), np.broadcast_to(dense, (1, 3, 20, 24)))
    check_blocks_agree(mask)


@pytest.mark.parametrize(("content", "message"), [
    (np.zeros((1, 1, 20, 23), bool), r"shape \(1, 1, 20, 23\); expected a 0/1 mask"),
    (np.full((1, 1, 20, 24), 2, np.int8), "values other than 0 and 1"),
    (np.zeros((1, 1, 20, 24), np.float32), "dtype float32 is not booleans or integers"),
])
def test_bad_element_mask_files_are_one_line(tmp_path, content, message):
    np.save(tmp_path / "m.npy", content)
    with pytest.raises(SpecError, match=message) as err:
        A.load_element_mask(str(tmp_path / "m.npy"), 1, 3, 20, 24)
    assert "\n" not in str(err.value) and "m.npy" in str(err.value)


def test_bad_indices_file_is_one_line(tmp_path):
    np.savez(tmp_path / "vs.npz", vertical=np.array([[0, 99]]), slash=np.array([[0]]))
    with pytest.raises(SpecError, match=r"vertical indices must lie in 0..69"):
        A._indices_file(str(tmp_path / "vs.npz"), 2, 70)


@pytest.mark.parametrize(("body", "message"), [
    ("pattern: {kind: vertical_slash, vertical: 4, slash: 4}, causal: false",
     "pattern 'vertical_slash' needs causal: true"),
    ("pattern: {kind: vertical_slash, vertical: 0, slash: 4}, causal: true",
     r"operations\[0\]\.pattern\.vertical: Input should be greater than 0"),
    ("pattern: {kind: gated_block}", "give exactly one of 'top_k'"),
    ("pattern: {kind: gated_block, top_k: 2, threshold: 0.1}", "give exactly one of 'top_k'"),
    ("pattern: {kind: multi_diagonal, window: 4}", "pattern.frame_tokens: required field is missing"),
    ("pattern: {kind: vertical_stripe, frame_tokens: 8, stripe_frames: []}",
     "stripe_frames: .*at least 1"),
    ("pattern: {kind: element_mask, file: m.txt}", "expected a .npy, .npz or .pt file"),
    ("pattern: {kind: element_mask, file: missing.npy}", "file not found"),
    ("pattern: {kind: diagonal, window: 4, widht: 2}", "widht: unknown key"),
])
def test_bad_fields_are_one_line_with_the_line_and_exit_2(tmp_path, capsys, body, message):
    path = tmp_path / "w.yaml"
    path.write_text(
        "version: 1\nname: t\nhardware: tiny\noperations:\n"
        f"  - {{op: attention, name: a, heads: 2, kv_len: 64, head_dim: 16, {body}}}\n")
    with pytest.raises(SpecError, match=message) as err:
        load_workload(path)
    assert str(err.value).startswith(f"{path}:5: ")
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"archsim: error: {path}:5: ")


def test_vertical_slash_picks_of_heads_sharing_keys_are_each_heads_indices():
    """Heads scored in one GEMM pick what each picks alone (same float32 scores)."""
    rng = np.random.default_rng(4)
    kv_len, n, d = 3001, 24, 32
    q = rng.standard_normal((3, n, d), dtype=np.float32) * 2
    k = rng.standard_normal((kv_len, d), dtype=np.float32)
    together = A.vertical_slash_picks(q, k, kv_len, 40, 50)
    for h in range(3):
        alone = A.vertical_slash_indices(q[h], k, kv_len, 40, 50)
        assert all(np.array_equal(a, b) for a, b in zip(together[h], alone))
