"""The :class:`Layer`: one GEMM-shaped layer, the unit the scheduler lowers into GEMMs.

It sits below both :mod:`workloads.layers` (operations → layers) and :mod:`workloads.zoo` (the
layers of named models), which build layers and would otherwise import each other.
Conventions (im2col shapes, ``matmul`` and ``attention`` layers) are described in
:mod:`workloads.layers`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from workloads.spec import AttentionOp, BDWPSparsity, DenseSparsity, NMSparsity

__all__ = [
    "ConvShape", "Layer", "SparsityT", "attention_layer", "conv_input_extent", "conv_output_size",
]

SparsityT = DenseSparsity | NMSparsity | BDWPSparsity


@dataclass(frozen=True, slots=True)
class ConvShape:
    """The geometry of an ungrouped 2-D convolution: what address generation needs to produce
    the rows of its im2col matrix from the feature map (NHWC in DRAM, docs/isa.md)."""

    batch: int
    in_h: int
    in_w: int
    channels: int  # C_in
    kh: int
    kw: int
    stride: int
    padding: int

    @property
    def out_h(self) -> int:
        return conv_output_size(self.in_h, self.kh, self.stride, self.padding)

    @property
    def out_w(self) -> int:
        return conv_output_size(self.in_w, self.kw, self.stride, self.padding)

    @property
    def reads_every_pixel(self) -> bool:
        """Whether some output reads every input row and column (the kernel covers the
        stride's gaps), so a patch of whole input lines holds no pixel nobody reads."""
        return (conv_input_extent(self.in_h, self.kh, self.stride, self.padding) == self.in_h
                and conv_input_extent(self.in_w, self.kw, self.stride, self.padding) == self.in_w)


@dataclass(frozen=True, slots=True)
class Layer:
    """One GEMM-shaped layer: ``Y[rows, out] = X[rows, in] · W[in, out]``.

    Attributes
    ----------
    group_in, group_out
        The sizes N:M groups must divide along ``in`` / ``out`` (C_in / C_out for convolutions,
        where groups lie along channels).
    needs_input_grad
        False for a model's first layer: training computes no gradient for the input image.
    batch_count
        Independent copies computed per step (heads × batch for attention matmuls, the groups of
        a grouped convolution, whose ``in_features``/``out_features`` are then per group).
    note
        Why a layer runs dense although the workload asked for sparsity, if it does.
    block_diagonal
        For a grouped convolution, the groups placed side by side in one GEMM: their weights
        form a block-diagonal ``in × out`` matrix (``in``/``out`` are then that many groups'
        features) and ``batch_count`` such GEMMs cover all groups. The zero blocks are real
        array work; the layer's MACs are ``rows·in·out·batch_count / block_diagonal``.
    feature_map_elems
        For a convolution, the elements of its input feature map that the im2col rows read
        (batch · H' · W' · C_in, with H' and W' the input rows and columns some output reads:
        all of them unless the stride skips some, ``conv_input_extent``). The compulsory DRAM
        traffic of the im2col-expanded operands counts these, not the expansion. 0 for other
        layers, whose GEMM operands are the tensors themselves.
    conv
        For an ungrouped convolution, its geometry (None otherwise): the scheduler may then
        generate the im2col rows on chip from the feature map (docs/scheduler.md).
    """

    name: str
    kind: Literal["linear", "conv2d", "matmul", "attention"]
    rows: int
    in_features: int
    out_features: int
    sparsity: SparsityT
    group_in: int
    group_out: int
    needs_input_grad: bool = True
    batch_count: int = 1
    repeat: int = 1
    note: str = ""
    attention: AttentionOp | None = None  # kind "attention" only
    block_diagonal: int = 1  # groups of a grouped convolution packed into one GEMM
    feature_map_elems: int = 0
    conv: ConvShape | None = None


def attention_layer(op: AttentionOp) -> Layer:
    """The layer of an attention op (mapped by ``dataflows.attention``, not lowered to GEMMs)."""
    return Layer(
        op.name, "attention", op.queries, op.head_dim, op.kv_len, DenseSparsity(), 1, 1,
        batch_count=op.batch * op.heads, repeat=op.repeat, attention=op,
    )


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output extent of a convolution along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


def conv_input_extent(size: int, kernel: int, stride: int, padding: int) -> int:
    """Input positions along one axis that at least one output of a convolution reads.

    All ``size`` of them, except where a stride longer than the kernel skips some (a 1×1
    stride-2 convolution reads every other row). Padding positions are not input.
    """
    out = conv_output_size(size, kernel, stride, padding)
    read = {o * stride + j - padding for o in range(out) for j in range(kernel)}
    return sum(1 for i in read if 0 <= i < size)
