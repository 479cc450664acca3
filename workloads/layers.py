"""Operations → layers: one weighted layer (or activation matmul) per entry, shapes lowered.

A :class:`Layer` is the unit the scheduler lowers into GEMMs. Convolutions are lowered by im2col:
``rows`` = batch·H_out·W_out, ``in_features`` = C_in·kh·kw, ``out_features`` = C_out. Attention
score/context products are ``matmul`` layers: both operands are activations, so they have no
weights, no sparsity, and in training two input-gradient GEMMs instead of BP + WG. An
``attention`` layer (an ``op: attention``, or a transformer block given an attention pattern)
is no GEMM: it carries its :class:`~workloads.spec.AttentionOp`, and ``dataflows.attention`` maps
it (``rows``/``in_features``/``out_features`` are q_len/head_dim/kv_len, ``batch_count`` is
batch·heads, so QKᵀ alone would be ``rows·in·out·batch_count`` MACs).
"""

from __future__ import annotations

from dataclasses import replace

from workloads import zoo
from workloads.layer import (
    ConvShape,
    Layer,
    SparsityT,
    attention_layer,
    conv_input_extent,
    conv_output_size,
)
from workloads.spec import (
    AttentionOp,
    Conv2dOp,
    DenseSparsity,
    GemmOp,
    LinearOp,
    ModelOp,
    SpGEMMOp,
    WorkloadSpec,
    _pair,
    pruned_dims,
)

# Layer and its helpers live in workloads.layer (below zoo); re-exported for importers here.
__all__ = ["Layer", "expand", "conv_output_size", "attention_layer", "groups_per_gemm"]


def _fits(sparsity: SparsityT, layer: Layer) -> str:
    """Empty if ``sparsity`` can apply to ``layer``; otherwise why it cannot."""
    sizes = {"in": layer.group_in, "out": layer.group_out}
    for dim in pruned_dims(sparsity):
        if sizes[dim] % sparsity.m:
            return f"dense: {dim} group size {sizes[dim]} is not a multiple of m={sparsity.m}"
    return ""


def groups_per_gemm(groups: int, out_per_group: int, cols: int) -> int:
    """How many groups of a grouped convolution share one GEMM, block-diagonally.

    A group alone fills ``out_per_group`` of the array's ``cols`` columns (one, for a
    depthwise convolution), so the rest idle. Packing p groups fills ``p·out_per_group``
    columns and needs ⌈p·in/rows⌉ ≤ p·⌈in/rows⌉ reduction passes instead of p passes of its own:
    never more passes, and p times fewer DMA rows. p is the largest divisor of ``groups`` whose
    outputs fit the columns (1 when one group already fills them).
    """
    fit = max(1, cols // out_per_group)
    return max(d for d in range(1, min(groups, fit) + 1) if groups % d == 0)


def _from_op(op: GemmOp | LinearOp | Conv2dOp, sparsity: SparsityT, cols: int) -> Layer:
    if isinstance(op, GemmOp):
        return Layer(op.name, "linear", op.m, op.k, op.n, sparsity, op.k, op.n, repeat=op.repeat)
    if isinstance(op, LinearOp):
        return Layer(
            op.name, "linear", op.batch * op.tokens, op.in_features, op.out_features, sparsity,
            op.in_features, op.out_features, repeat=op.repeat,
        )
    (h, w), (kh, kw) = _pair(op.input_size), _pair(op.kernel)
    ho = conv_output_size(h, kh, op.stride, op.padding)
    wo = conv_output_size(w, kw, op.stride, op.padding)
    # A grouped convolution is `groups` independent convolutions of C_in/g → C_out/g channels;
    # p of them share one block-diagonal GEMM, and g/p such GEMMs (batch_count; lowering makes
    # them GEMM copies) cover all groups.
    g = op.groups
    c_in, c_out = op.in_channels // g, op.out_channels // g
    p = groups_per_gemm(g, c_out, cols) if g > 1 else 1
    read = conv_input_extent(h, kh, op.stride, op.padding) * conv_input_extent(w, kw, op.stride, op.padding)
    return Layer(
        op.name, "conv2d", op.batch * ho * wo, p * c_in * kh * kw, p * c_out, sparsity, c_in,
        c_out, batch_count=g // p, repeat=op.repeat, block_diagonal=p,
        feature_map_elems=op.batch * read * p * c_in,  # per GEMM copy: its p groups' channels
        conv=ConvShape(op.batch, h, w, c_in, kh, kw, op.stride, op.padding) if g == 1 else None,
    )


def expand(workload: WorkloadSpec) -> list[Layer]:
    """All layers of a workload in execution order, with sparsity resolved per layer."""
    layers: list[Layer] = []
    for op in workload.operations:
        if isinstance(op, SpGEMMOp):
            continue  # sparse-sparse products run on the SpGEMM engine, not as GEMM layers
        if isinstance(op, AttentionOp):
            layers.append(attention_layer(op))
            continue
        if isinstance(op, ModelOp):
            sparsity = op.sparsity or workload.sparsity
            for layer in zoo.model_layers(op):
                if layer.kind in ("matmul", "attention"):
                    layers.append(layer)
                    continue
                why = _fits(sparsity, layer)
                chosen = DenseSparsity() if why else sparsity
                layers.append(replace(layer, sparsity=chosen, note=why))
        else:
            layers.append(_from_op(op, op.sparsity or workload.sparsity, workload.hardware.array.cols))
    return layers

