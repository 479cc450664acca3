"""Layers → GEMM tasks, one per training phase.

Every GEMM computes ``C[m, n] = A[m, k] · B[k, n]`` with ``B`` the operand held stationary in the
PE array. Sparsity is exploitable only when ``B`` is pruned N:M along ``k`` (the reduction
dimension): the PE's mux then picks the matching activations. The three phases of a weighted
layer ``W[out, in]`` (DESIGN.md, "BDWP as the scheduler sees it"):

========  ========================  =====  =========================================
phase     GEMM                      k      B pruned along k when
========  ========================  =====  =========================================
ff        Y  = X · Wᵀ               in     N:M along ``in``, or BDWP (FF mask)
bp        dX = dY · W               out    N:M along ``out``, or BDWP (BP mask)
wg        dW = dYᵀ · X              rows   never (dense)
========  ========================  =====  =========================================

A convolution's BP is ``dX = dY · W`` through the im2col-expanded dX (``k`` = out), summed back
onto the feature map outside the array — except for an ungrouped, stride-1, "same"-sized
convolution with a kernel larger than 1×1, whose input gradient *is* a convolution: dY padded
by ``kh − 1 − p`` convolved with the flipped, transposed weight (C_out → C_in channels). Its BP
GEMM is that convolution's im2col GEMM (``m`` = N·H·W input pixels, ``k`` = kh·kw·C_out,
``n`` = C_in; the same MACs), which writes dX once instead of kh·kw times and can read its
rows from dY on chip (``GemmTask.conv``). Stride 2 would need a dilated dY; it keeps im2col.

A grouped convolution (``groups`` = g, depthwise when g = C_in) is g independent convolutions.
Its layer packs p of them into one GEMM with a block-diagonal weight (``block_diagonal`` = p;
``workloads.layers.groups_per_gemm`` fills the array's columns): ``in`` = p·C_in/g·kh·kw,
``out`` = p·C_out/g, and every phase is one GEMM of that shape with ``copies`` = g/p, computed
back to back in one program. FF and BP compute the zero blocks of the block-diagonal weight,
WG the unused off-diagonal blocks of dW: the array executes p times the layer's MACs, which are
1/g of the ungrouped convolution's in every phase (``GemmTask.macs_dense``).

Attention ``matmul`` layers have two activation operands: in training their gradients are two
``bp`` GEMMs (``dA = dC·Bᵀ`` and ``dB = Aᵀ·dC``).

This is the workload's arithmetic, decided before any hardware choice (tiling, loop order,
placement are ``dataflows``' business), so it lives in ``workloads``: the scheduler and the
measured baselines (``baselines.measure``, which may import only ``workloads``) lower a
workload through this one function and so see exactly the same GEMMs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from workloads.layer import ConvShape, Layer
from workloads.spec import BDWPSparsity, HardwareSpec, NMSparsity

__all__ = ["GemmTask", "lower_layer", "lower"]

Phase = Literal["inference", "ff", "bp", "wg"]


@dataclass(frozen=True, slots=True)
class GemmTask:
    """One GEMM of one phase of one layer.

    Attributes
    ----------
    nm
        ``(n, m)`` when ``B`` is pruned N:M along ``k``, else None. Whether the array skips the
        pruned weights is ``sparse_on(hw)``; otherwise it runs the masked weights dense.
    weight
        The weight copy ``B`` comes from (``"<layer>.W.ff"`` / ``".bp"``) when ``B`` is a pruned
        weight, for the pre-generation pass; None otherwise.
    copies
        Independent instances computed back to back in one program (heads × batch for attention,
        the groups of a grouped convolution).
    repeat
        Identical sequential layers; simulated once, counted ``repeat`` times.
    block_diagonal
        Groups of a grouped convolution packed into this GEMM: only 1/``block_diagonal`` of
        its products belong to the layer (the rest are zero blocks or unused blocks).
    im2col_elems
        For a convolution's GEMM, the feature-map elements behind its im2col-expanded matrix
        (``Layer.feature_map_elems``): A in ``ff``/``inference`` (X), C in ``bp`` (dX), B in
        ``wg`` (X). 0 when no operand is an im2col expansion.
    conv
        The geometry of the convolution whose im2col matrix A is (``ff``/``inference`` of an
        ungrouped convolution; ``bp`` of one computed as the transposed convolution, above),
        or B is (``wg``), else None: the scheduler may then generate that operand's rows on
        chip from the feature map instead of reading the expansion (docs/scheduler.md).
        ``im2col_elems`` counts that feature map.
    """

    name: str
    layer: str
    phase: Phase
    m: int
    k: int
    n: int
    nm: tuple[int, int] | None = None
    weight: str | None = None
    copies: int = 1
    repeat: int = 1
    block_diagonal: int = 1
    im2col_elems: int = 0
    conv: ConvShape | None = None

    def sparse_on(self, hw: HardwareSpec) -> bool:
        return self.nm is not None and hw.supports(*self.nm)

    @property
    def macs_dense(self) -> int:
        """Dense-equivalent multiply-accumulates of one copy: the layer's own products
        (without the zero blocks of a block-diagonal GEMM)."""
        return self.m * self.k * self.n // self.block_diagonal

    def distinct_elems(self) -> tuple[int, int, int]:
        """Distinct elements of (A, B, C) in one copy: each matrix's size, except that an
        im2col-expanded matrix counts its feature map (``im2col_elems``)."""
        sizes = [self.m * self.k, self.k * self.n, self.m * self.n]
        if self.im2col_elems:
            # A transposed-convolution BP (``conv`` set) expands A (dY), not C.
            expanded = {"inference": 0, "ff": 0, "bp": 0 if self.conv else 2, "wg": 1}
            sizes[expanded[self.phase]] = self.im2col_elems
        return sizes[0], sizes[1], sizes[2]

    def macs_executed(self, hw: HardwareSpec) -> int:
        """MACs the array performs for one copy: N/M of dense when it skips pruned weights,
        and a block-diagonal GEMM's zero blocks included."""
        if self.sparse_on(hw):
            n, m = self.nm
            return self.m * (self.k // m * n) * self.n
        return self.m * self.k * self.n


def _ff_pattern(layer: Layer) -> tuple[int, int] | None:
    s = layer.sparsity
    if isinstance(s, BDWPSparsity) or (isinstance(s, NMSparsity) and s.dim == "in"):
        return (s.n, s.m)
    return None


def _bp_pattern(layer: Layer) -> tuple[int, int] | None:
    s = layer.sparsity
    if isinstance(s, BDWPSparsity) or (isinstance(s, NMSparsity) and s.dim == "out"):
        return (s.n, s.m)
    return None


def _transposed_conv(layer: Layer) -> ConvShape | None:
    """The convolution that computes ``layer``'s input gradient, where it is one whose output
    is exactly the input (stride 1, "same" size, kernel > 1×1, ungrouped); else None."""
    c = layer.conv
    if c is None or c.stride != 1 or c.kh * c.kw == 1 or layer.batch_count != 1:
        return None
    if (c.out_h, c.out_w) != (c.in_h, c.in_w):
        return None
    return ConvShape(c.batch, c.out_h, c.out_w, layer.out_features, c.kh, c.kw, 1,
                     c.kh - 1 - c.padding)


def lower_layer(layer: Layer, mode: Literal["inference", "training"]) -> list[GemmTask]:
    """The GEMMs of one layer in execution order (FF; then BP and WG in training)."""
    if layer.kind == "attention":
        return []  # not a GEMM: dataflows.attention maps it (the scheduler sees an empty group)
    rows, f_in, f_out, name = layer.rows, layer.in_features, layer.out_features, layer.name
    same = {"copies": layer.batch_count, "repeat": layer.repeat,
            "block_diagonal": layer.block_diagonal, "im2col_elems": layer.feature_map_elems}
    phase: Phase = "inference" if mode == "inference" else "ff"
    if layer.kind == "matmul":
        tasks = [GemmTask(name, name, phase, rows, f_in, f_out, **same)]
        if mode == "training":
            tasks.append(GemmTask(f"{name}.grad_a", name, "bp", rows, f_out, f_in, **same))
            tasks.append(GemmTask(f"{name}.grad_b", name, "bp", f_in, rows, f_out, **same))
        return tasks
    ff_nm = _ff_pattern(layer)
    ff_weight = f"{name}.W.ff" if ff_nm else None
    tasks = [GemmTask(name, name, phase, rows, f_in, f_out, ff_nm, ff_weight, **same,
                      conv=layer.conv)]
    if mode == "training":
        if layer.needs_input_grad:
            bp_nm = _bp_pattern(layer)
            bp_weight = f"{name}.W.bp" if bp_nm else None
            transposed = _transposed_conv(layer)
            if transposed is None:
                tasks.append(GemmTask(f"{name}.bp", name, "bp", rows, f_out, f_in, bp_nm,
                                      bp_weight, **same))
            else:
                c = transposed
                tasks.append(GemmTask(
                    f"{name}.bp", name, "bp", c.batch * c.out_h * c.out_w, f_out * c.kh * c.kw,
                    layer.conv.channels, bp_nm, bp_weight, repeat=layer.repeat,
                    im2col_elems=c.batch * c.in_h * c.in_w * c.channels, conv=c))
        tasks.append(GemmTask(f"{name}.wg", name, "wg", f_out, rows, f_in, **same,
                              conv=layer.conv))
    return tasks


def lower(layers: list[Layer], mode: Literal["inference", "training"]) -> list[list[GemmTask]]:
    """Per layer, its GEMM tasks. Training runs all FF GEMMs, then BP/WG in reverse layer order."""
    per_layer = [lower_layer(layer, mode) for layer in layers]
    if mode == "inference":
        return per_layer
    forward = [[t for t in tasks if t.phase == "ff"] for tasks in per_layer]
    backward = [[t for t in tasks if t.phase != "ff"] for tasks in reversed(per_layer)]
    return forward + [b for b in backward if b]
