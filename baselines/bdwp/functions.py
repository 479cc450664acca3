"""N:M masks and the BDWP autograd functions.

BDWP (bidirectional weight pruning) keeps a layer's weight ``W[out, in]`` N:M sparse in both
GEMMs of training that read it:

======  ==============  =========  ==========================================
phase   GEMM            reduction  weight operand
======  ==============  =========  ==========================================
FF      ``Y = X Wᵀ``    ``in``     ``W ⊙ M_ff`` (N:M along ``in``)
BP      ``dX = dY W``   ``out``    ``W ⊙ M_bp`` (N:M along ``out``, a second mask)
WG      ``dW = dYᵀ X``  batch      dense, straight-through to the dense master ``W``
======  ==============  =========  ==========================================

The weight gradient also gets the SR-STE term ``decay · (1 − M_ff) · W``, which slowly pulls the
pruned weights towards zero so that the mask settles instead of flip-flopping.

Because BP uses a different mask than FF, the backward pass is deliberately *not* the
derivative of the forward pass; the functions here implement the algorithm, not the calculus.
For a conv weight ``[C_out, C_in, kh, kw]`` the FF groups lie along ``C_in`` (SR-STE permutes the
weight to ``[C_out, kh, kw, C_in]`` and groups the last axis, which is the same as grouping
axis 1 directly) and the BP groups lie along ``C_out`` (axis 0). So for linear and conv weights
alike, FF groups run along axis 1 and BP groups along axis 0.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = [
    "BP_MASK_SOURCES",
    "DEFAULT_DECAY",
    "BDWPConv2dFunction",
    "BDWPLinearFunction",
    "bdwp_masks",
    "check_nm",
    "nm_mask",
]

#: SR-STE's decay coefficient λ_W (aojunzz/NM-sparsity uses 2e-4).
DEFAULT_DECAY = 2e-4

#: Where the BP mask is computed from: the dense master weight, or the FF-pruned weight (as the
#: related Bi-Mask code does). Which one BDWP uses is not public, hence the option.
BP_MASK_SOURCES = ("dense", "forward_masked")

# In both a linear weight [out, in] and a conv weight [C_out, C_in, kh, kw], axis 1 is the FF
# reduction (in / C_in) and axis 0 the BP reduction (out / C_out).
_FF_DIM = 1
_BP_DIM = 0


def check_nm(n: object, m: object) -> None:
    """Validate an N:M pair.

    Raises
    ------
    TypeError
        If ``n`` or ``m`` is not an ``int``.
    ValueError
        If not ``0 < n <= m``.
    """
    for name, value in (("n", n), ("m", m)):
        # bool is an int subclass; True:2 is far more likely a bug than a request for 1:2.
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if not 0 < n <= m:  # type: ignore[operator]
        raise ValueError(f"n must satisfy 0 < n <= m, got n={n}, m={m}")


def nm_mask(w: torch.Tensor, n: int, m: int, dim: int) -> torch.Tensor:
    """Keep the N largest-magnitude elements of every group of M consecutive elements along `dim`.

    Ties are broken deterministically in favour of the lower index: the mask is built from a
    *stable* ascending sort of ``-|w|``. (``torch.topk`` is not stable, so equal magnitudes
    could be picked differently on different backends or thread counts.)

    Parameters
    ----------
    w : torch.Tensor
        Tensor to prune (not modified; no gradient flows through the mask).
    n, m : int
        Keep ``n`` of every ``m``; ``0 < n <= m``.
    dim : int
        Axis along which the groups of ``m`` consecutive elements lie; its size must be a
        multiple of ``m``.

    Returns
    -------
    torch.Tensor
        A 0/1 tensor of ``w``'s shape, dtype and device, with exactly ``n`` ones per group.

    Raises
    ------
    ValueError
        If ``n``/``m`` are invalid, ``dim`` is out of range, or ``w.shape[dim]`` is not a
        multiple of ``m``.
    """
    check_nm(n, m)
    if w.dim() == 0:
        raise ValueError("nm_mask needs a tensor with at least one dimension, got a scalar")
    if not -w.dim() <= dim < w.dim():
        raise ValueError(
            f"dim={dim} is out of range for a tensor with shape {tuple(w.shape)} "
            f"(expected {-w.dim()} <= dim < {w.dim()})"
        )
    size = w.shape[dim]
    if size % m:
        raise ValueError(
            f"dimension {dim} of a tensor with shape {tuple(w.shape)} has size {size}, "
            f"which is not a multiple of m={m}; pad the layer or choose another M"
        )
    with torch.no_grad():
        moved = w.detach().movedim(dim, -1)
        groups = moved.reshape(*moved.shape[:-1], size // m, m)
        # Stable sort of -|w|: larger magnitudes first, and among equal magnitudes the lower
        # index first, which is the documented tie-break.
        order = torch.sort(groups.abs().neg(), dim=-1, stable=True).indices
        mask = torch.zeros_like(groups)
        mask.scatter_(-1, order[..., :n], 1)
        return mask.reshape(moved.shape).movedim(-1, dim).contiguous()


def bdwp_masks(
    weight: torch.Tensor, n: int, m: int, *, bp_mask_source: str = "dense"
) -> tuple[torch.Tensor, torch.Tensor]:
    """FF and BP masks of a linear ``[out, in]`` or conv ``[C_out, C_in, kh, kw]`` weight.

    Parameters
    ----------
    weight : torch.Tensor
        The dense master weight.
    n, m : int
        N:M ratio of both masks.
    bp_mask_source : {"dense", "forward_masked"}
        ``"dense"``: ``M_bp = nm_mask(W, along out)``.
        ``"forward_masked"``: ``M_bp = M_ff ⊙ nm_mask(W ⊙ M_ff, along out)``, so BP never reads a
        weight that FF pruned (as in the Bi-Mask code); a group along ``out`` then holds *at
        most* N nonzeros, because it may contain fewer than N FF survivors.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``(M_ff, M_bp)``, 0/1 tensors of ``weight``'s shape and dtype.

    Raises
    ------
    ValueError
        If ``bp_mask_source`` is unknown, the weight is not 2-D or 4-D, or ``in``/``out`` is not
        a multiple of ``m``.
    """
    if bp_mask_source not in BP_MASK_SOURCES:
        raise ValueError(
            f"bp_mask_source must be one of {BP_MASK_SOURCES}, got {bp_mask_source!r}"
        )
    if weight.dim() not in (2, 4):
        raise ValueError(
            "expected a linear weight [out, in] or a conv weight [C_out, C_in, kh, kw], "
            f"got shape {tuple(weight.shape)}"
        )
    mask_ff = nm_mask(weight, n, m, _FF_DIM)
    if bp_mask_source == "dense":
        mask_bp = nm_mask(weight, n, m, _BP_DIM)
    else:
        with torch.no_grad():
            pruned = weight.detach() * mask_ff
        mask_bp = nm_mask(pruned, n, m, _BP_DIM) * mask_ff
    return mask_ff, mask_bp


def _weight_grad_decay(
    grad_weight: torch.Tensor, weight: torch.Tensor, mask_ff: torch.Tensor, decay: float
) -> torch.Tensor:
    # SR-STE: the straight-through gradient is dense, so pruned weights keep learning; the decay
    # term shrinks them so that a pruned weight must earn its way back into the mask.
    if decay:
        grad_weight = grad_weight + decay * (1 - mask_ff) * weight
    return grad_weight


class BDWPLinearFunction(torch.autograd.Function):
    """``y = x (W ⊙ M_ff)ᵀ + b`` with the BDWP backward pass.

    Call as ``BDWPLinearFunction.apply(x, weight, bias, mask_ff, mask_bp, decay)``; ``bias``
    may be ``None``. The masks are treated as constants (no gradient).

    Backward:

    - ``dX = dY (W ⊙ M_bp)``  (BP: the second mask, not the derivative of the forward pass),
    - ``dW = dYᵀ X + decay · (1 − M_ff) · W``  (WG: dense, straight-through, SR-STE decay),
    - ``db = Σ dY``.

    With ``mask_bp is mask_ff`` this is plain SR-STE (the ``nm_ff_only`` mode).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        mask_ff: torch.Tensor,
        mask_bp: torch.Tensor,
        decay: float = DEFAULT_DECAY,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight, mask_ff, mask_bp)
        ctx.decay = float(decay)
        return F.linear(x, weight * mask_ff, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, mask_ff, mask_bp = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = grad_w = grad_b = None
        if need_x:
            grad_x = torch.matmul(grad_out, weight * mask_bp)
        # Flatten every leading (batch/sequence) axis: WG reduces over all of them.
        grad_2d = grad_out.reshape(-1, weight.shape[0])
        if need_w:
            grad_w = grad_2d.t().matmul(x.reshape(-1, weight.shape[1]))
            grad_w = _weight_grad_decay(grad_w, weight, mask_ff, ctx.decay)
        if need_b:
            grad_b = grad_2d.sum(0)
        return grad_x, grad_w, grad_b, None, None, None


class BDWPConv2dFunction(torch.autograd.Function):
    """2-D convolution with ``W ⊙ M_ff`` forward and the BDWP backward pass.

    Call as ``BDWPConv2dFunction.apply(x, weight, bias, mask_ff, mask_bp, decay, stride,
    padding, dilation, groups)`` with a batched input ``[B, C_in, H, W]``, integer pairs for
    ``stride``/``padding``/``dilation`` (string paddings and non-zero padding modes are resolved
    by :class:`~baselines.bdwp.modules.BDWPConv2d` before this call).

    Backward is the im2col image of :class:`BDWPLinearFunction`: the input gradient is the
    transposed convolution of ``dY`` with ``W ⊙ M_bp``; the weight gradient is the dense
    correlation of ``X`` with ``dY`` plus ``decay · (1 − M_ff) · W``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        mask_ff: torch.Tensor,
        mask_bp: torch.Tensor,
        decay: float,
        stride: tuple[int, int],
        padding: tuple[int, int],
        dilation: tuple[int, int],
        groups: int,
    ) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(
                f"BDWPConv2dFunction expects a batched input [B, C_in, H, W], "
                f"got shape {tuple(x.shape)}"
            )
        ctx.save_for_backward(x, weight, mask_ff, mask_bp)
        ctx.decay = float(decay)
        ctx.conv = (list(stride), list(padding), list(dilation), int(groups))
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight * mask_ff, bias, stride, padding, dilation, groups)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, mask_ff, mask_bp = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        # One aten call yields all three gradients. The weight gradient depends only on the
        # weight's shape, so passing W ⊙ M_bp (needed for dX) leaves dW dense as BDWP requires.
        grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad_out.contiguous(),
            x,
            weight * mask_bp,
            [weight.shape[0]] if ctx.has_bias else None,
            stride,
            padding,
            dilation,
            False,
            [0, 0],
            groups,
            [need_x, need_w, need_b and ctx.has_bias],
        )
        if need_w:
            grad_w = _weight_grad_decay(grad_w, weight, mask_ff, ctx.decay)
        return (
            grad_x if need_x else None,
            grad_w if need_w else None,
            grad_b if need_b else None,
            None, None, None, None, None, None, None,
        )
