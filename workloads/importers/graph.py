"""What every importer produces: the mapped ops of a model and what could not be mapped.

The importers (SCALE-Sim CSV, torch, ONNX) read different sources but build the same
:class:`ImportedModel` through the same constructors (:func:`conv2d`, :func:`linear`,
:func:`matmul`, :func:`attention`), so one layer gives one workload op whatever it came from
(the torch and ONNX imports of one model are identical). Work that is not a GEMM
(normalization, activations, pooling, element-wise arithmetic, embedding look-ups) is listed
with its element count by :func:`category`; anything else is *unsupported*: kept in the
coverage table, or an error with ``strict``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from workloads.errors import SpecError

__all__ = [
    "ModelImportError",
    "MappedOp",
    "Unmapped",
    "WeightRef",
    "ImportedModel",
    "conv2d",
    "linear",
    "matmul",
    "attention",
    "category",
    "NOT_MAPPED",
    "module_path",
]


class ModelImportError(SpecError):
    """A model source cannot be read or mapped (reported as one line, exit code 2)."""


@dataclass(frozen=True, slots=True)
class MappedOp:
    """One workload op: its YAML fields (``op`` first, ``name`` second) and forward MACs.

    ``weights`` is False for products of two activations (attention scores and context):
    they have no weight to prune. ``note`` is written as a YAML comment.
    """

    fields: dict
    macs: int
    source: str
    weights: bool = True
    note: str = ""

    @property
    def name(self) -> str:
        return self.fields["name"]

    @property
    def kind(self) -> str:
        return self.fields["op"]


@dataclass(frozen=True, slots=True)
class Unmapped:
    """Work that became no op: ``category`` is a key of :data:`NOT_MAPPED` or ``unsupported``."""

    name: str
    source: str
    category: str
    elements: int


@dataclass(frozen=True, slots=True)
class WeightRef:
    """Where a weighted op's weight is in the model's ``state_dict``.

    ``key`` is the parameter's qualified name (``fc.weight``, ``self_attn.in_proj_weight``, a
    bare parameter's ``block.W``); ``transposed`` when it is stored ``[in, out]`` (``x @ W``)
    rather than ``[out, in]`` as ``nn.Linear`` and ``F.linear`` store it; ``part`` = (i, n)
    when the op's weight is rows block i of n equal blocks of it (q, k, v of a packed
    ``in_proj_weight``).
    """

    key: str
    transposed: bool = False
    part: tuple[int, int] = (0, 1)


@dataclass
class ImportedModel:
    """A model as archsim sees it: mapped ops in execution order, and everything else."""

    name: str
    source: str
    input_shape: tuple[int, ...] | None
    ops: list[MappedOp] = field(default_factory=list)
    unmapped: list[Unmapped] = field(default_factory=list)
    _names: dict[str, int] = field(default_factory=dict, repr=False)
    #: The layer each later call of a layer is named after (``fc.1`` → ``fc``): its weights
    #: are the layer's own (a checkpoint has ``fc.weight``, not ``fc.1.weight``).
    called_as: dict[str, str] = field(default_factory=dict, repr=False)
    #: Ops whose weight is not ``<layer>.weight`` (see :meth:`weight_of`), by op name.
    weight_refs: dict[str, WeightRef] = field(default_factory=dict, repr=False)

    def unique(self, name: str) -> str:
        """``name``, or ``name.1``, ``name.2``... when a layer runs more than once (ops must
        have distinct names: the scheduler keys its tilings by them)."""
        name = name or "op"
        count = self._names.get(name, 0)
        self._names[name] = count + 1
        if count == 0:
            return name
        self.called_as[f"{name}.{count}"] = name
        return f"{name}.{count}"

    def weights_of(self, op_name: str) -> str:
        """The layer whose weights op ``op_name`` uses (itself, unless a later call)."""
        return self.called_as.get(op_name, op_name)

    def weight_of(self, op_name: str) -> WeightRef:
        """Where op ``op_name``'s weight is in a checkpoint: as the importer recorded it when
        it added the op, else ``<layer>.weight`` of the layer it is a call of."""
        return self.weight_refs.get(op_name) or WeightRef(f"{self.weights_of(op_name)}.weight")

    def add(self, op: MappedOp, weight: WeightRef | None = None) -> None:
        """Append ``op``; ``weight`` says where its weight is when not ``<op name>.weight``."""
        self.ops.append(op)
        if weight is not None:
            self.weight_refs[op.name] = weight

    def skip(self, name: str, source: str, elements: int, strict: bool) -> None:
        """Record work that is not mapped; with ``strict``, unsupported work is an error."""
        cat = category(source)
        if cat == "layout":
            return  # views, reshapes, concatenation: no arithmetic
        if cat == "unsupported" and strict:
            raise ModelImportError(
                f"{self.source}: {name or source}: operator {source!r} is not supported (it is "
                f"neither a GEMM, convolution or attention nor known element-wise work); drop "
                f"--strict to list it as unmapped"
            )
        self.unmapped.append(Unmapped(name, source, cat, int(elements)))

    @property
    def macs(self) -> int:
        return sum(op.macs for op in self.ops)


def _pair_or_int(a: int, b: int) -> int | list[int]:
    return a if a == b else [a, b]


def conv2d(name: str, batch: int, c_in: int, size: tuple[int, int], c_out: int,
           kernel: tuple[int, int], stride: tuple[int, int] = (1, 1),
           padding: tuple[int, int, int, int] = (0, 0, 0, 0), dilation: tuple[int, int] = (1, 1),
           groups: int = 1, source: str = "conv2d") -> MappedOp:
    """A convolution op. ``padding`` is (top, left, bottom, right).

    A convolution the op cannot state literally (asymmetric stride or padding, dilation) is
    written as the convolution with the same im2col GEMM: stride 1, no padding, and an input
    size that gives the same output size (a note says so).
    """
    (h, w), (kh, kw), (sh, sw), (dh, dw) = size, kernel, stride, dilation
    top, left, bottom, right = padding
    ho = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    wo = (w + left + right - dw * (kw - 1) - 1) // sw + 1
    if ho < 1 or wo < 1:
        raise ModelImportError(f"{name}: convolution output is {ho}x{wo}; check --input-shape")
    fields: dict = {"op": "conv2d", "name": name, "in_channels": c_in, "out_channels": c_out,
                    "kernel": _pair_or_int(kh, kw)}
    note = ""
    if sh == sw and top == left == bottom == right and dh == dw == 1:
        if sh != 1:
            fields["stride"] = sh
        if top:
            fields["padding"] = top
        fields["input_size"] = _pair_or_int(h, w)
    else:
        fields["input_size"] = _pair_or_int(ho + kh - 1, wo + kw - 1)
        note = (f"same GEMM as input {h}x{w}, stride {sh}x{sw}, padding {list(padding)}, "
                f"dilation {dh}x{dw}")
    fields["batch"] = batch
    if groups != 1:
        fields["groups"] = groups
    macs = batch * ho * wo * c_out * (c_in // groups) * kh * kw
    return MappedOp(fields, macs, source, note=note)


def _rows(shape: tuple[int, ...]) -> tuple[int, int]:
    """(batch, tokens) of an activation ``[..., features]``: tokens is the second-last dim."""
    lead = shape[:-1]
    if len(lead) <= 1:
        return (lead[0] if lead else 1), 1
    return math.prod(lead[:-1]), lead[-1]


def linear(name: str, x_shape: tuple[int, ...], in_features: int, out_features: int,
           source: str = "linear") -> MappedOp:
    """``Y = X·Wᵀ`` over the leading dims of ``x_shape`` (``[batch, tokens, in]``)."""
    batch, tokens = _rows(x_shape)
    fields: dict = {"op": "linear", "name": name, "in_features": in_features,
                    "out_features": out_features, "batch": batch}
    if tokens != 1:
        fields["tokens"] = tokens
    return MappedOp(fields, batch * tokens * in_features * out_features, source)


def matmul(name: str, a_shape: tuple[int, ...], b_shape: tuple[int, ...],
           source: str = "matmul") -> MappedOp:
    """A product of two activations ``[..., m, k]·[..., k, n]``: a ``gemm`` op repeated over
    the broadcast batch dims (no weights, so it never takes sparsity)."""
    if len(a_shape) < 2 or len(b_shape) < 2:
        raise ModelImportError(f"{name}: matmul of shapes {list(a_shape)} and {list(b_shape)} is not "
                           f"a matrix product")
    m, k = a_shape[-2:]
    n = b_shape[-1]
    lead = a_shape[:-2] if len(a_shape) >= len(b_shape) else b_shape[:-2]
    repeat = math.prod(lead) if lead else 1
    fields: dict = {"op": "gemm", "name": name, "m": m, "k": k, "n": n}
    if repeat != 1:
        fields["repeat"] = repeat
    return MappedOp(fields, m * k * n * repeat, source, weights=False,
                    note="product of two activations")


def attention(name: str, batch: int, heads: int, kv_heads: int, q_len: int, kv_len: int,
              head_dim: int, causal: bool, source: str) -> MappedOp:
    """An attention op (QKᵀ, softmax, PV); MACs are both products, dense."""
    fields: dict = {"op": "attention", "name": name, "heads": heads, "kv_len": kv_len,
                    "head_dim": head_dim, "batch": batch}
    if kv_heads != heads:
        fields["kv_heads"] = kv_heads
    if q_len == 1 and kv_len > 1:
        fields["phase"] = "decode"  # one new token against a KV cache
    elif q_len != kv_len:
        fields["q_len"] = q_len  # chunked prefill (or several tokens per step)
    if causal:
        fields["causal"] = True
    return MappedOp(fields, 2 * batch * heads * q_len * kv_len * head_dim, source, weights=False)


#: Work that is not a GEMM, by category, as torch function names and ONNX op types (lower
#: case, trailing underscores and dunders stripped).
NOT_MAPPED: dict[str, frozenset[str]] = {
    "normalization": frozenset(
        "batch_norm layer_norm group_norm instance_norm rms_norm local_response_norm normalize "
        "batchnormalization layernormalization groupnormalization instancenormalization lrn "
        "simplifiedlayernormalization rmsnormalization meanvariancenormalization".split()),
    "activation": frozenset(
        "relu relu6 hardtanh gelu silu sigmoid tanh hardswish hardsigmoid softmax log_softmax "
        "elu selu celu leaky_relu mish softplus softsign prelu glu logsigmoid erf clip clamp "
        "logsoftmax leakyrelu thresholdedrelu".split()),
    "pooling": frozenset(
        "max_pool1d max_pool2d max_pool3d avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d "
        "adaptive_avg_pool2d adaptive_max_pool1d adaptive_max_pool2d maxpool averagepool "
        "globalaveragepool globalmaxpool lppool max_pool2d_with_indices".split()),
    "element-wise": frozenset(
        "add sub mul div true_divide truediv floordiv floor_divide pow sqrt rsqrt exp log neg "
        "abs reciprocal square mean sum where maximum minimum max min dropout iadd isub imul "
        "idiv itruediv radd rsub rmul rdiv rtruediv masked_fill addcmul addcdiv cumsum "
        "reducemean reducesum reducemax reducemin equal ne eq lt gt le ge logical_not not "
        "and or bitwise_and sign cos sin rotary sort argsort topk kthvalue".split()),
    "embedding": frozenset("embedding gather embedding_bag".split()),
}

#: Shape and data-movement operators: no arithmetic, not listed.
_LAYOUT = frozenset(
    "view reshape flatten permute transpose t contiguous cat concat stack split chunk getitem "
    "setitem size expand expand_as unsqueeze squeeze narrow to type clone dim numel unbind "
    "repeat repeat_interleave slice shape constant constantofshape identity cast range "
    "unflatten tile pad zeros ones zeros_like ones_like arange full new_zeros new_ones "
    "new_empty empty triu tril detach float half int long bool movedim swapaxes index_select "
    "select split_with_sizes tensor_split roll interpolate upsample resize nonzero "
    "dropout2d alpha_dropout feature_alpha_dropout scatter gatherelements "
    "get_device is_floating_point type_as sym_size stride storage_offset mt h mh data real "
    "imag grad requires_grad".split())


def category(op: str) -> str:
    """``normalization``, ``activation``, ``pooling``, ``element-wise``, ``embedding``,
    ``layout`` (no arithmetic) or ``unsupported``."""
    name = op.lower().strip("_")
    name = name[:-1] if name.endswith("_") else name
    if name in _LAYOUT:
        return "layout"
    for cat, names in NOT_MAPPED.items():
        if name in names:
            return cat
    return "unsupported"


def module_path(scopes: list[str]) -> str:
    """A module's qualified name from the scope names of an exported graph.

    ONNX exporters name a node by its module scopes, each either a child name (``conv1``) or
    a name qualified from an ancestor (``layer1.0``, ``conv.0.0``):
    ``["layer1", "layer1.0", "conv1"]`` → ``layer1.0.conv1``.
    """
    parts: list[str] = []
    for scope in scopes:
        comps = scope.split(".")
        for i in range(len(parts)):  # the longest suffix of the path that the scope repeats
            tail = parts[i:]
            if comps[:len(tail)] == tail:
                parts = parts[:i] + comps
                break
        else:
            parts = parts + comps
    return ".".join(parts)


Mode = Literal["inference", "training"]
