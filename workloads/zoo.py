"""Layer shapes of the model zoo: ResNet-18, ResNet-50, VGG-16, ViT-B/16 and BERT-base.

Shapes follow the torchvision / HuggingFace reference definitions (ResNet v1.5: the stride sits on
the 3x3 convolution of a bottleneck). Only GEMM-shaped work is listed: pooling, normalization,
activations, embeddings lookups and softmax run on the vector unit and are not modelled here.
"""

from __future__ import annotations

from dataclasses import replace

from workloads.layers import Layer, conv_output_size
from workloads.spec import DenseSparsity, ModelOp

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
        self.layers.append(Layer(
            name, "conv2d", self.batch * ho * ho, c_in * k * k, c_out, _DENSE, c_in, c_out,
            needs_input_grad=bool(self.layers),
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


def _encoder(b: _Builder, prefix: str, batch: int, tokens: int, hidden: int, heads: int,
             mlp: int) -> None:
    rows, head_dim = batch * tokens, hidden // heads
    b.linear(f"{prefix}.attn.qkv", rows, hidden, 3 * hidden)
    b.matmul(f"{prefix}.attn.scores", tokens, head_dim, tokens, batch * heads)
    b.matmul(f"{prefix}.attn.context", tokens, tokens, head_dim, batch * heads)
    b.linear(f"{prefix}.attn.proj", rows, hidden, hidden)
    b.linear(f"{prefix}.mlp.fc1", rows, hidden, mlp)
    b.linear(f"{prefix}.mlp.fc2", rows, mlp, hidden)


def _vit_b16(op: ModelOp) -> list[Layer]:
    b = _Builder(op.batch, op.image_size)
    patches = b.conv("patch_embed", 3, 768, 16, 16)
    tokens = patches * patches + 1  # + class token
    for i in range(12):
        _encoder(b, f"blocks.{i}", op.batch, tokens, 768, 12, 3072)
    b.linear("head", op.batch, 768, 1000)
    return b.layers


def _bert_base(op: ModelOp) -> list[Layer]:
    b = _Builder(op.batch, 0)
    for i in range(12):
        _encoder(b, f"encoder.{i}", op.batch, op.seq_len, 768, 12, 3072)
    b.linear("pooler", op.batch, 768, 768)
    # Embeddings are lookups (no GEMM); the first GEMM of BERT still needs an input gradient to
    # train the embeddings, unlike a CNN's first layer whose input is the image.
    b.layers[0] = replace(b.layers[0], needs_input_grad=True)
    return b.layers


def model_layers(op: ModelOp) -> list[Layer]:
    """The GEMM-shaped layers of a zoo model (all dense; the caller applies sparsity)."""
    if op.model == "resnet18":
        layers = _resnet(op, (2, 2, 2, 2), bottleneck=False)
    elif op.model == "resnet50":
        layers = _resnet(op, (3, 4, 6, 3), bottleneck=True)
    elif op.model == "vgg16":
        layers = _vgg16(op)
    elif op.model == "vit_b16":
        layers = _vit_b16(op)
    else:
        layers = _bert_base(op)
    prefix = op.name or op.model
    return [_prefixed(layer, prefix) for layer in layers]


def _prefixed(layer: Layer, prefix: str) -> Layer:
    return replace(layer, name=f"{prefix}.{layer.name}")
