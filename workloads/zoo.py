"""Layer shapes of the model zoo: ResNet-18, ResNet-50, VGG-16, ViT-B/16, BERT-base, a
GPT-2/Llama-style decoder given by its shape, Qwen2.5-7B's shape of that decoder, and a small
video DiT.

Shapes follow the torchvision / HuggingFace reference definitions (ResNet v1.5: the stride sits on
the 3x3 convolution of a bottleneck). Only GEMM-shaped work is listed: pooling, normalization,
activations, embeddings lookups (and the decoder's LM head) are not modelled here. A transformer's
attention is two dense ``matmul`` layers, or, when the model op gives an attention ``pattern``, one
``attention`` layer per block that ``dataflows.attention`` maps FlashAttention-style, softmax
included (docs/attention.md).
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

from workloads.layer import ConvShape, Layer, attention_layer, conv_input_extent, conv_output_size
from workloads.spec import (
    QWEN2_5_7B,
    VIDEO_DIT,
    AttentionOp,
    AttentionPattern,
    DenseSparsity,
    ModelOp,
)

__all__ = ["model_layers"]

_DENSE = DenseSparsity()


class _Builder:
    """Accumulates layers while tracking the spatial size of a CNN's feature map."""

    def __init__(self, batch: int, size: int) -> None:
        self.batch, self.size, self.layers = batch, size, []

    def conv(self, name: str, c_in: int, c_out: int, k: int, stride: int = 1, pad: int = 0,
             size: int | None = None) -> int:
        h = self.size if size is None else size
        ho = conv_output_size(h, k, stride, pad)
        side = conv_input_extent(h, k, stride, pad)
        self.layers.append(Layer(
            name, "conv2d", self.batch * ho * ho, c_in * k * k, c_out, _DENSE, c_in, c_out,
            needs_input_grad=bool(self.layers), feature_map_elems=self.batch * side * side * c_in,
            conv=ConvShape(self.batch, h, h, c_in, k, k, stride, pad),
        ))
        return ho

    def linear(self, name: str, rows: int, f_in: int, f_out: int) -> None:
        self.layers.append(Layer(
            name, "linear", rows, f_in, f_out, _DENSE, f_in, f_out,
            needs_input_grad=bool(self.layers),
        ))

    def matmul(self, name: str, rows: int, k: int, cols: int, copies: int) -> None:
        self.layers.append(Layer(name, "matmul", rows, k, cols, _DENSE, k, cols, batch_count=copies))


def _resnet(op: ModelOp, blocks: tuple[int, ...], bottleneck: bool) -> list[Layer]:
    b = _Builder(op.batch, op.image_size)
    b.size = b.conv("conv1", 3, 64, 7, 2, 3)
    b.size = conv_output_size(b.size, 3, 2, 1)  # max pool
    c_in, expansion = 64, 4 if bottleneck else 1
    for stage, (count, width) in enumerate(zip(blocks, (64, 128, 256, 512)), start=1):
        for i in range(count):
            stride = 2 if stage > 1 and i == 0 else 1
            p = f"layer{stage}.{i}"
            c_out = width * expansion
            if bottleneck:
                b.conv(f"{p}.conv1", c_in, width, 1)
                out = b.conv(f"{p}.conv2", width, width, 3, stride, 1)
                b.conv(f"{p}.conv3", width, c_out, 1, size=out)
            else:
                out = b.conv(f"{p}.conv1", c_in, width, 3, stride, 1)
                b.conv(f"{p}.conv2", width, width, 3, 1, 1, size=out)
            if stride != 1 or c_in != c_out:
                b.conv(f"{p}.downsample", c_in, c_out, 1, stride)
            b.size, c_in = out, c_out
    b.linear("fc", op.batch, c_in, 1000)
    return b.layers


def _vgg16(op: ModelOp) -> list[Layer]:
    b = _Builder(op.batch, op.image_size)
    c_in = 3
    plan = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]
    for block, (width, count) in enumerate(plan, start=1):
        for i in range(count):
            b.conv(f"block{block}.conv{i + 1}", c_in, width, 3, 1, 1)
            c_in = width
        b.size //= 2  # max pool
    b.linear("fc1", op.batch, c_in * b.size * b.size, 4096)
    b.linear("fc2", op.batch, 4096, 4096)
    b.linear("fc3", op.batch, 4096, 1000)
    return b.layers


def _pattern_for(pattern: AttentionPattern, index: int) -> AttentionPattern:
    """The pattern of block ``index``: seeded patterns draw a fresh seed per block."""
    if getattr(pattern, "seed", None) is not None and getattr(pattern, "file", None) is None:
        return pattern.model_copy(update={"seed": pattern.seed + index})
    data = getattr(pattern, "data", None)
    if data is not None and data.source != "npy":
        seeded = data.model_copy(update={"seed": data.seed + index})
        return pattern.model_copy(update={"data": seeded})
    return pattern


def _attention(b: _Builder, op: ModelOp, name: str, index: int, heads: int, kv_heads: int,
               q_len: int, kv_len: int, head_dim: int, causal: bool) -> None:
    """Scores and context of one block: two dense matmuls, or one attention layer (pattern)."""
    if op.pattern is None:
        b.matmul(f"{name}.scores", q_len, head_dim, kv_len, op.batch * heads)
        b.matmul(f"{name}.context", q_len, kv_len, head_dim, op.batch * heads)
        return
    b.layers.append(attention_layer(AttentionOp(
        op="attention", name=name, batch=op.batch, heads=heads, kv_heads=kv_heads, q_len=q_len,
        kv_len=kv_len, head_dim=head_dim, causal=causal, phase=op.phase,
        pattern=_pattern_for(op.pattern, index), block_size=op.block_size,
    )))


def _encoder(b: _Builder, op: ModelOp, prefix: str, index: int, tokens: int, hidden: int,
             heads: int, mlp: int) -> None:
    rows, head_dim = op.batch * tokens, hidden // heads
    b.linear(f"{prefix}.attn.qkv", rows, hidden, 3 * hidden)
    _attention(b, op, f"{prefix}.attn", index, heads, heads, tokens, tokens, head_dim, False)
    b.linear(f"{prefix}.attn.proj", rows, hidden, hidden)
    b.linear(f"{prefix}.mlp.fc1", rows, hidden, mlp)
    b.linear(f"{prefix}.mlp.fc2", rows, mlp, hidden)


def _vit_b16(op: ModelOp) -> list[Layer]:
    b = _Builder(op.batch, op.image_size)
    patches = b.conv("patch_embed", 3, 768, 16, 16)
    tokens = patches * patches + 1  # + class token
    for i in range(12):
        _encoder(b, op, f"blocks.{i}", i, tokens, 768, 12, 3072)
    b.linear("head", op.batch, 768, 1000)
    return b.layers


def _bert_base(op: ModelOp) -> list[Layer]:
    b = _Builder(op.batch, 0)
    for i in range(12):
        _encoder(b, op, f"encoder.{i}", i, op.seq_len, 768, 12, 3072)
    b.linear("pooler", op.batch, 768, 768)
    # Embeddings are lookups (no GEMM); the first GEMM of BERT still needs an input gradient to
    # train the embeddings, unlike a CNN's first layer whose input is the image.
    b.layers[0] = replace(b.layers[0], needs_input_grad=True)
    return b.layers


def _decoder(op: ModelOp) -> list[Layer]:
    """A GPT-2/Llama-style causal decoder: fused QKV (GQA-sized), attention, output projection,
    MLP (GPT-2's fc1/fc2, or Llama's fused gate/up then down with ``gated_mlp``).

    Prefill runs ``seq_len`` tokens per sequence; decode runs one new token against a KV cache
    of ``seq_len`` tokens. ``qwen2_5_7b`` is this decoder at Qwen2.5-7B's shape (gated MLP).
    """
    if op.model == "qwen2_5_7b":
        n_layers, hidden, heads, kv_heads, mlp = QWEN2_5_7B
        op = op.model_copy(update={"gated_mlp": True})
    else:
        n_layers, hidden, heads, mlp = op.decoder_shape()
        kv_heads = op.kv_heads or heads
    head_dim = hidden // heads
    new = op.seq_len if op.phase == "prefill" else 1
    rows = op.batch * new
    b = _Builder(op.batch, 0)
    for i in range(n_layers):
        p = f"blocks.{i}"
        b.linear(f"{p}.attn.qkv", rows, hidden, hidden + 2 * kv_heads * head_dim)
        _attention(b, op, f"{p}.attn", i, heads, kv_heads, new, op.seq_len, head_dim, True)
        b.linear(f"{p}.attn.proj", rows, hidden, hidden)
        if op.gated_mlp:
            b.linear(f"{p}.mlp.gate_up", rows, hidden, 2 * mlp)
            b.linear(f"{p}.mlp.down", rows, mlp, hidden)
        else:
            b.linear(f"{p}.mlp.fc1", rows, hidden, mlp)
            b.linear(f"{p}.mlp.fc2", rows, mlp, hidden)
    # As in BERT, the first GEMM's input comes from the embeddings, which training updates.
    b.layers[0] = replace(b.layers[0], needs_input_grad=True)
    return b.layers


def _video_dit(op: ModelOp) -> list[Layer]:
    """A small video DiT: 2×2 patches of a 16-channel latent embedded to ``hidden``, blocks of
    full spatio-temporal self-attention over all ``frames × height × width`` tokens plus an MLP,
    and the final projection back to patches. adaLN modulation and text cross-attention are
    left out (small next to these GEMMs)."""
    n_layers, hidden, heads, mlp = VIDEO_DIT
    tokens = op.frames * op.height * op.width
    rows, patch = op.batch * tokens, 2 * 2 * 16
    b = _Builder(op.batch, 0)
    b.linear("patch_embed", rows, patch, hidden)
    for i in range(n_layers):
        _encoder(b, op, f"blocks.{i}", i, tokens, hidden, heads, mlp)
    b.linear("final_layer", rows, hidden, patch)
    return b.layers


def model_layers(op: ModelOp) -> list[Layer]:
    """The GEMM-shaped layers of a zoo model (all dense; the caller applies sparsity)."""
    return list(_model_layers(op))


@lru_cache(maxsize=32)
def _model_layers(op: ModelOp) -> tuple[Layer, ...]:
    """:func:`model_layers`, remembered by op (layers are frozen values): loading a workload
    checks them, sizing and scheduling it expand it again, and the points of a sweep share
    their model (about 3 % of a ResNet-18 design point)."""
    if op.model == "resnet18":
        layers = _resnet(op, (2, 2, 2, 2), bottleneck=False)
    elif op.model == "resnet50":
        layers = _resnet(op, (3, 4, 6, 3), bottleneck=True)
    elif op.model == "vgg16":
        layers = _vgg16(op)
    elif op.model == "vit_b16":
        layers = _vit_b16(op)
    elif op.model in ("decoder", "qwen2_5_7b"):
        layers = _decoder(op)
    elif op.model == "video_dit":
        layers = _video_dit(op)
    else:
        layers = _bert_base(op)
    prefix = op.name or op.model
    return tuple(_prefixed(layer, prefix) for layer in layers)


def _prefixed(layer: Layer, prefix: str) -> Layer:
    name = f"{prefix}.{layer.name}"
    if layer.attention is not None:
        op = layer.attention.model_copy(update={"name": name})
        return replace(layer, name=name, attention=op)
    return replace(layer, name=name)
