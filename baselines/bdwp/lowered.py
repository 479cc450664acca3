"""BDWP layers run as explicit GEMMs, so that N:M weights can use 2:4 semi-structured kernels.

cuSPARSELt and CUTLASS 2:4 kernels multiply a sparse 2-D weight with a dense matrix; there is no
sparse convolution. To measure what 2:4 buys in a real training step, every convolution is
lowered to GEMMs the way the accelerator lowers it (im2col), with the reduction axis ordered
``(kh, kw, C_in)`` so that BDWP's FF groups (M consecutive input channels for each
``(C_out, kh, kw)``) are M consecutive entries of a lowered weight row, and its BP groups
(M consecutive output channels) are M consecutive entries of a row of the transposed weight:

- FF: ``Y = X_col · (W ⊙ M_ff)ᵀ``   — the weight ``[C_out, K]`` is the 2:4 operand,
- BP: ``dX_col = dY · (W ⊙ M_bp)``   — the weight ``[K, C_out]`` (transposed) is the 2:4 operand,
  then ``dX = col2im(dX_col)``,
- WG: ``dW = dYᵀ · X_col``   — dense, as BDWP prescribes.

The numbers match :class:`~baselines.bdwp.functions.BDWPConv2dFunction` (a test), so the
lowered layer is the same algorithm; only the kernels differ. A GEMM whose weight torch refuses
to store as 2:4 (shape or dtype outside the backend's limits) runs masked-dense, and the layer
records why in :attr:`LoweredBDWP.dense_reasons`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .functions import DEFAULT_DECAY, _weight_grad_decay, bdwp_masks

__all__ = ["KERNELS", "ConvGeometry", "LoweredBDWP", "lower_input", "lower_weight"]

#: How a lowered layer runs its GEMMs: ``dense`` (no masks), ``masked`` (BDWP masks applied,
#: dense kernels) or ``semi_structured`` (BDWP masks, FF and BP on 2:4 kernels).
KERNELS = ("dense", "masked", "semi_structured")


@dataclass(frozen=True, slots=True)
class ConvGeometry:
    """Kernel size, stride and zero padding of a lowered convolution (square, no dilation)."""

    kernel: int
    stride: int
    padding: int

    def output_size(self, size: int) -> int:
        """Output height (or width) for an input of height (or width) ``size``."""
        return (size + 2 * self.padding - self.kernel) // self.stride + 1


def lower_input(x: torch.Tensor, g: ConvGeometry) -> torch.Tensor:
    """``[B, C, H, W]`` → the im2col matrix ``[B·OH·OW, kh·kw·C]``, reduction ordered (kh, kw, C)."""
    b, c = x.shape[:2]
    cols = F.unfold(x, g.kernel, padding=g.padding, stride=g.stride)  # [B, C·kk, L]
    kk, length = g.kernel * g.kernel, cols.shape[-1]
    return cols.view(b, c, kk, length).permute(0, 3, 2, 1).reshape(b * length, kk * c)


def lower_weight(w: torch.Tensor) -> torch.Tensor:
    """``[C_out, C_in, kh, kw]`` → ``[C_out, kh·kw·C_in]`` (the order of :func:`lower_input`)."""
    return w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)


def _raise_weight(w2d: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    c_out, c_in, kh, kw = shape
    return w2d.view(c_out, kh, kw, c_in).permute(0, 3, 1, 2)


def _fold_input_grad(dx_col: torch.Tensor, x_shape: torch.Size, g: ConvGeometry) -> torch.Tensor:
    b, c, h, w = x_shape
    kk = g.kernel * g.kernel
    length = dx_col.shape[0] // b
    cols = dx_col.reshape(b, length, kk, c).permute(0, 3, 2, 1).reshape(b, c * kk, length)
    return F.fold(cols, (h, w), g.kernel, padding=g.padding, stride=g.stride)


def _to_2_4(w: torch.Tensor, backend: str | None) -> tuple[torch.Tensor, str | None]:
    """The weight as a 2:4 semi-structured tensor, or itself and torch's reason for refusing."""
    if backend is None:
        return w, "no 2:4 semi-structured backend on this device"
    cls = (torch.sparse.SparseSemiStructuredTensorCUSPARSELT if backend == "cusparselt"
           else torch.sparse.SparseSemiStructuredTensorCUTLASS)
    try:
        return cls.from_dense(w.contiguous()), None
    except (RuntimeError, NotImplementedError, ValueError) as exc:
        return w, (str(exc).splitlines() or [type(exc).__name__])[0]


class _LoweredFunction(torch.autograd.Function):
    """``Y = X_col · W_ffᵀ`` with BDWP's backward, GEMMs on the kernels of ``layer``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, layer: LoweredBDWP,
    ) -> torch.Tensor:
        g = layer.geometry
        x_col = lower_input(x, g) if g else x.reshape(-1, weight.shape[1])
        w2d = lower_weight(weight) if g else weight
        masks = layer.current_masks(weight)
        w_ff = w2d * (lower_weight(masks[0]) if g else masks[0]) if masks else w2d
        y = F.linear(x_col, layer.kernel_weight(w_ff, "ff"))
        ctx.save_for_backward(x_col, weight, *masks)
        ctx.layer, ctx.x_shape = layer, x.shape
        if g is None:
            return y.reshape(*x.shape[:-1], weight.shape[0])
        oh, ow = (g.output_size(side) for side in x.shape[2:])
        return y.reshape(x.shape[0], oh, ow, weight.shape[0]).permute(0, 3, 1, 2)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x_col, weight, *masks = ctx.saved_tensors
        layer: LoweredBDWP = ctx.layer
        g = layer.geometry
        c_out = weight.shape[0]
        dy = (grad_out.permute(0, 2, 3, 1) if g else grad_out).reshape(-1, c_out)
        w2d = lower_weight(weight) if g else weight
        w_bp = w2d * (lower_weight(masks[1]) if g else masks[1]) if masks else w2d
        dx_col = F.linear(dy, layer.kernel_weight(w_bp.t(), "bp"))
        dx = _fold_input_grad(dx_col, ctx.x_shape, g) if g else dx_col.reshape(ctx.x_shape)
        dw2d = dy.t().matmul(x_col)
        dw = _raise_weight(dw2d, weight.shape) if g else dw2d
        if masks:
            dw = _weight_grad_decay(dw, weight, masks[0], layer.decay)
        return dx, dw, None


class LoweredBDWP(nn.Module):
    """A convolution (``geometry`` given) or linear layer (``geometry=None``) run as GEMMs.

    Parameters
    ----------
    weight_shape
        ``[C_out, C_in, k, k]`` for a convolution, ``[out, in]`` for a linear layer.
    geometry
        Kernel, stride and padding of a convolution; None for a linear layer (no bias: the
        ResNet layers this serves are followed by batch normalization, and the classifier's
        bias is not a GEMM).
    kernels
        One of :data:`KERNELS`.
    n, m, bp_mask_source, decay
        BDWP's options (:func:`~baselines.bdwp.functions.bdwp_masks`), used unless ``dense``.
    backend
        ``"cusparselt"``, ``"cutlass"`` or None: the 2:4 backend for ``semi_structured``.

    Attributes
    ----------
    dense_reasons
        ``{"ff"|"bp": reason}`` for each GEMM that ran masked-dense under ``semi_structured``.
    """

    def __init__(self, weight_shape: tuple[int, ...], geometry: ConvGeometry | None, *,
                 kernels: str = "dense", n: int = 2, m: int = 4, bp_mask_source: str = "dense",
                 decay: float = DEFAULT_DECAY, backend: str | None = None,
                 device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {KERNELS}, got {kernels!r}")
        self.weight = nn.Parameter(torch.empty(weight_shape, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        self.geometry, self.kernels = geometry, kernels
        self.n, self.m, self.bp_mask_source, self.decay = n, m, bp_mask_source, decay
        self.backend = backend
        self.dense_reasons: dict[str, str] = {}

    def current_masks(self, weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(M_ff, M_bp)`` of the current weight (recomputed each step: the weight changes),
        or ``()`` for dense kernels."""
        if self.kernels == "dense":
            return ()
        with torch.no_grad():
            return bdwp_masks(weight.detach(), self.n, self.m, bp_mask_source=self.bp_mask_source)

    def kernel_weight(self, w: torch.Tensor, gemm: str) -> torch.Tensor:
        """The masked weight of the ``ff`` or ``bp`` GEMM, as its kernel wants it stored."""
        if self.kernels != "semi_structured":
            return w
        sparse, reason = _to_2_4(w, self.backend)
        if reason is not None:
            self.dense_reasons[gemm] = reason
        return sparse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _LoweredFunction.apply(x, self.weight, self)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, geometry={self.geometry}, kernels={self.kernels!r}"
