"""Drop-in ``nn.Linear`` / ``nn.Conv2d`` replacements that train with BDWP.

Each module keeps the dense master weight as its parameter and derives the N:M masks from it.
The masks are recomputed whenever the weight changes and cached otherwise: on CPU the grouped
sort that builds a mask can cost more than the layer's GEMM, and between two optimizer steps
(evaluation, gradient accumulation, several forwards per step) the weight does not change.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .functions import (
    BP_MASK_SOURCES,
    DEFAULT_DECAY,
    BDWPConv2dFunction,
    BDWPLinearFunction,
    bdwp_masks,
    check_nm,
    nm_mask,
)

__all__ = ["MODES", "BDWPConv2d", "BDWPLinear"]

#: ``"dense"``: a plain layer. ``"nm_ff_only"``: SR-STE (FF N:M, BP reuses the FF mask).
#: ``"bdwp"``: FF and BP each with their own N:M mask.
MODES = ("dense", "nm_ff_only", "bdwp")


class _BDWPMixin:
    """Shared option handling and the mask cache of :class:`BDWPLinear` and :class:`BDWPConv2d`."""

    weight: nn.Parameter
    n: int
    m: int
    mode: str
    bp_mask_source: str
    decay: float
    _mask_cache: tuple[Any, ...] | None

    def _init_bdwp(
        self, n: int, m: int, mode: str, bp_mask_source: str, decay: float,
        ff_extent: tuple[str, int], bp_extent: tuple[str, int],
    ) -> None:
        check_nm(n, m)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if bp_mask_source not in BP_MASK_SOURCES:
            raise ValueError(
                f"bp_mask_source must be one of {BP_MASK_SOURCES}, got {bp_mask_source!r}"
            )
        if not decay >= 0:  # also rejects NaN
            raise ValueError(f"decay must be >= 0, got {decay!r}")
        name = type(self).__name__
        # Check divisibility here, at construction, so that a bad layer fails where it is
        # declared rather than at its first forward deep inside a training loop.
        needed = [] if mode == "dense" else [("FF", "in", ff_extent)]
        if mode == "bdwp":
            needed.append(("BP", "out", bp_extent))
        for phase, axis, (what, size) in needed:
            if size % m:
                raise ValueError(
                    f"{name}: {what}={size} is not a multiple of m={m}; the {phase} mask groups "
                    f"M consecutive weights along `{axis}`. Keep this layer dense "
                    f"(mode='dense') or choose another M"
                )
        self.n, self.m, self.mode = n, m, mode
        self.bp_mask_source, self.decay = bp_mask_source, float(decay)
        self._mask_cache = None

    def masks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(M_ff, M_bp)`` for the current weight, recomputing only when it changed.

        The cache key is the weight object itself, its autograd version counter (bumped by
        every in-place update such as ``optimizer.step()`` or ``load_state_dict``), its
        ``data_ptr`` (changed by ``weight.data = ...``, ``.to()``), dtype, device and the N:M
        options. In ``"nm_ff_only"`` mode ``M_bp`` is ``M_ff``.

        Raises
        ------
        ValueError
            In ``"dense"`` mode, which has no masks.
        """
        if self.mode == "dense":
            raise ValueError(f"{type(self).__name__} in mode='dense' has no N:M masks")
        w = self.weight
        key = (
            w._version, w.data_ptr(), w.dtype, w.device,
            self.n, self.m, self.mode, self.bp_mask_source,
        )
        cache = self._mask_cache
        if cache is not None and cache[0]() is w and cache[1] == key:
            return cache[2], cache[3]
        if self.mode == "nm_ff_only":
            mask_ff = nm_mask(w, self.n, self.m, 1)
            mask_bp = mask_ff
        else:
            mask_ff, mask_bp = bdwp_masks(w, self.n, self.m, bp_mask_source=self.bp_mask_source)
        # A weak reference, so that a replaced weight is not kept alive by the cache.
        self._mask_cache = (weakref.ref(w), key, mask_ff, mask_bp)
        return mask_ff, mask_bp

    def reset_mask_cache(self) -> None:
        """Forget the cached masks.

        Needed only after in-place edits through ``weight.data`` (``weight.data.mul_(...)``),
        which bypass the version counter that the cache relies on.
        """
        self._mask_cache = None

    def __getstate__(self) -> dict[str, Any]:
        # Weak references cannot be pickled (torch.save(module)); masks are cheap to rebuild.
        state = self.__dict__.copy()
        state["_mask_cache"] = None
        return state

    def _bdwp_extra_repr(self) -> str:
        if self.mode == "dense":
            return "mode='dense'"
        return (
            f"n={self.n}, m={self.m}, mode={self.mode!r}, "
            f"bp_mask_source={self.bp_mask_source!r}, decay={self.decay}"
        )


class BDWPLinear(_BDWPMixin, nn.Linear):
    """``nn.Linear`` trained with N:M bidirectional weight pruning.

    The parameter ``weight`` is the dense master weight ``[out, in]``. Forward computes
    ``x (W ⊙ M_ff)ᵀ + b``; backward uses ``W ⊙ M_bp`` for the input gradient and a dense,
    straight-through weight gradient with the SR-STE decay (see :class:`BDWPLinearFunction`).
    The masks apply in training and evaluation alike: the model that is evaluated is the
    sparse one.

    Parameters
    ----------
    in_features, out_features, bias, device, dtype
        As for ``nn.Linear``.
    n, m : int
        Keep ``n`` of every ``m`` consecutive weights; ``0 < n <= m``.
    mode : {"dense", "nm_ff_only", "bdwp"}
        ``"dense"`` is exactly ``nn.Linear``; ``"nm_ff_only"`` prunes FF only and reuses
        ``M_ff`` in BP (SR-STE); ``"bdwp"`` prunes FF along ``in`` and BP along ``out``.
    bp_mask_source : {"dense", "forward_masked"}
        Whether ``M_bp`` is computed from ``W`` or from ``W ⊙ M_ff`` (see
        :func:`~baselines.bdwp.functions.bdwp_masks`).
    decay : float
        SR-STE decay coefficient, ``2e-4`` by default.

    Attributes
    ----------
    n, m, mode, bp_mask_source, decay
        The options above; changing them later invalidates the mask cache.

    Raises
    ------
    ValueError
        If an option is invalid, ``in_features`` is not a multiple of ``m`` (any pruned
        mode), or ``out_features`` is not a multiple of ``m`` (``mode="bdwp"``).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: Any = None,
        dtype: torch.dtype | None = None,
        *,
        n: int,
        m: int,
        mode: str = "bdwp",
        bp_mask_source: str = "dense",
        decay: float = DEFAULT_DECAY,
    ) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self._init_bdwp(
            n, m, mode, bp_mask_source, decay,
            ff_extent=("in_features", in_features), bp_extent=("out_features", out_features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "dense":
            return F.linear(x, self.weight, self.bias)
        mask_ff, mask_bp = self.masks()
        return BDWPLinearFunction.apply(x, self.weight, self.bias, mask_ff, mask_bp, self.decay)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._bdwp_extra_repr()}"


class BDWPConv2d(_BDWPMixin, nn.Conv2d):
    """``nn.Conv2d`` trained with N:M bidirectional weight pruning.

    The weight ``[C_out, C_in/groups, kh, kw]`` is the dense master weight. The FF mask groups
    M consecutive input channels for each ``(C_out, kh, kw)`` position (SR-STE's
    ``[C_out, kh, kw, C_in]`` layout); the BP mask groups M consecutive output channels for each
    ``(C_in, kh, kw)`` position. Everything else follows :class:`BDWPLinear`.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, \
padding_mode, device, dtype
        As for ``nn.Conv2d``.
    n, m, mode, bp_mask_source, decay
        As for :class:`BDWPLinear`.

    Attributes
    ----------
    n, m, mode, bp_mask_source, decay
        The options above.

    Raises
    ------
    ValueError
        If an option is invalid, ``in_channels / groups`` is not a multiple of ``m`` (any
        pruned mode), or ``out_channels / groups`` is not a multiple of ``m`` (``"bdwp"``; the
        BP groups must not straddle two convolution groups).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: str | int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: torch.dtype | None = None,
        *,
        n: int,
        m: int,
        mode: str = "bdwp",
        bp_mask_source: str = "dense",
        decay: float = DEFAULT_DECAY,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, device, dtype,
        )
        self._init_bdwp(
            n, m, mode, bp_mask_source, decay,
            ff_extent=("in_channels/groups", in_channels // groups),
            bp_extent=("out_channels/groups", out_channels // groups),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "dense":
            return self._conv_forward(x, self.weight, self.bias)
        if x.dim() == 3:  # unbatched [C, H, W], which nn.Conv2d accepts too
            return self.forward(x.unsqueeze(0)).squeeze(0)
        padding = self.padding
        if isinstance(padding, str) or self.padding_mode != "zeros":
            # Pad explicitly (differentiably) so the autograd function only ever sees integer,
            # symmetric padding; this is how nn.Conv2d handles non-zero padding modes too, and
            # it also covers padding='same' with an even kernel (asymmetric padding).
            pad_mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=pad_mode)
            padding = (0, 0)
        mask_ff, mask_bp = self.masks()
        return BDWPConv2dFunction.apply(
            x, self.weight, self.bias, mask_ff, mask_bp, self.decay,
            self.stride, padding, self.dilation, self.groups,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._bdwp_extra_repr()}"
