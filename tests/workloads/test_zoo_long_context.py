"""Issue 18, part 5: the Qwen2.5-7B-shaped decoder and the small video DiT in the zoo."""

from __future__ import annotations

import pytest

from workloads.errors import SpecError
from workloads.spec import ModelOp
from workloads.zoo import model_layers


def _weights(layers) -> int:
    return sum(lay.in_features * lay.out_features for lay in layers if lay.kind == "linear")


def test_qwen2_5_7b_has_its_published_shape():
    layers = model_layers(ModelOp(op="model", model="qwen2_5_7b", batch=1, seq_len=1024,
                                  pattern={"kind": "dense"}))
    attention = [lay.attention for lay in layers if lay.kind == "attention"]
    assert len(attention) == 28
    assert {(a.heads, a.kv_heads, a.head_dim, a.causal) for a in attention} == {(28, 4, 128, True)}
    # Qwen2.5-7B: 6.53 B non-embedding parameters (biases and norms aside).
    assert _weights(layers) == pytest.approx(6.53e9, rel=0.005)
    qkv = layers[0]
    assert (qkv.in_features, qkv.out_features) == (3584, 3584 + 2 * 4 * 128)


def test_qwen2_5_7b_decodes_against_its_cache():
    layers = model_layers(ModelOp(op="model", model="qwen2_5_7b", batch=2, seq_len=4096,
                                  phase="decode", pattern={"kind": "dense"}))
    att = next(lay.attention for lay in layers if lay.kind == "attention")
    assert (att.queries, att.kv_len, att.batch) == (1, 4096, 2)
    assert layers[0].rows == 2


def test_video_dit_attends_over_all_frames():
    op = ModelOp(op="model", model="video_dit", batch=1, frames=4, height=8, width=12,
                 pattern={"kind": "multi_diagonal", "window": 8, "frame_tokens": 96})
    layers = model_layers(op)
    attention = [lay.attention for lay in layers if lay.kind == "attention"]
    assert len(attention) == 12
    assert {(a.kv_len, a.queries, a.heads, a.head_dim, a.causal) for a in attention} == {
        (384, 384, 12, 64, False)}
    assert layers[0].name.endswith("patch_embed") and layers[0].rows == 384


@pytest.mark.parametrize(("fields", "message"), [
    ({"model": "video_dit", "pattern": {"kind": "multi_diagonal", "window": 8,
                                        "frame_tokens": 100}},
     r"frame_tokens=100 must be height x width = 256"),
    ({"model": "video_dit", "seq_len": 64}, "give those, not seq_len"),
    ({"model": "qwen2_5_7b", "layers": 4}, "only model: decoder takes"),
    ({"model": "decoder", "frames": 4}, "only model: video_dit takes"),
])
def test_shape_fields_are_checked(fields, message):
    with pytest.raises((SpecError, ValueError), match=message):
        ModelOp.model_validate({"op": "model", "batch": 1, **fields})
