"""Golden model of the vector unit's fixed-point softmax (``rtl/softmax.py``), in numpy.

The unit computes a base-2 softmax per **lane** (one query column each) over a tile of scores
that streams in one row (one key) per beat: ``p_i = 2^x_i / Σ_j 2^x_j`` over the kept scores.
Attention folds ``log2(e)/√d`` into Q, so this is the usual softmax of ``q·k/√d``.

Number formats (all from :class:`~workloads.spec.HardwareSpec`, :class:`SoftmaxFormat`):

* scores ``x``: ``score_bits``-bit two's complement with ``F = score_frac_bits`` fraction bits;
* exponentials ``e``: unsigned with ``E = exp_bits`` fraction bits, ``e ∈ (0, 2^E]``;
* probabilities ``p``: unsigned with ``P = data_bits - 1`` fraction bits, saturated to
  ``2^P - 1`` (they feed the PE array as non-negative operands).

Algorithm, per lane (the RTL does exactly this):

1. ``m = max`` of the kept scores (a lane with no kept score outputs zeros);
2. ``d = m - x ≥ 0``; ``q = d >> F``, ``f = d mod 2^F``; ``e = T[f] >> q`` where the table
   ``T[f] = round(2^E · 2^(-f / 2^F))`` (so ``T[0] = 2^E``); masked scores give ``e = 0``;
3. ``S = Σ e`` (``S ≥ 2^E``: the maximum contributes ``2^E``);
4. ``R = ⌊2^K / S⌋`` with ``K = E + P + G`` (``G`` guard bits), a ``P + G + 1``-bit quotient;
5. ``p = min(⌊(e·R + 2^(K-P-1)) / 2^(K-P)⌋, 2^P - 1)``.

**Error bound** against float64 softmax of the same fixed-point scores (proved in
:func:`error_bound`'s docstring and checked by ``verification/softmax/test_golden_softmax.py``):

    |p_i / 2^P - softmax(x)_i| ≤ 2^-P + 1.25 · (1 + softmax(x)_i · (n - 1)) · 2^-E

for a lane with ``n`` kept scores. Rounding real scores to ``F`` fraction bits moves each
probability by at most a further factor ``2^(±2^-F)`` (:func:`quantization_bound`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dataflows.cost import SOFTMAX_GUARD_BITS, attention_formats
from verification.errors import VerificationError
from workloads.arith import ceil_div, wrap
from workloads.generators.attention import top_n_scores
from workloads.spec import HardwareSpec

__all__ = [
    "SoftmaxFormat",
    "exp_table",
    "exp2_neg",
    "softmax_fixed",
    "softmax_float",
    "error_bound",
    "quantization_bound",
    "quantize_scores",
    "attention_formats",
    "AttentionInterpreter",
]


@dataclass(frozen=True, slots=True)
class SoftmaxFormat:
    """The softmax datapath's widths, derived once from a :class:`HardwareSpec`.

    Attributes
    ----------
    lanes
        Query columns per beat (``vector_unit.softmax_width``).
    score_bits, frac_bits
        Score width and fraction bits (``F``; the exp table has ``2^F`` entries).
    exp_bits
        ``E``: fraction bits of exponentials and sums.
    prob_bits
        ``P = data_bits - 1``: fraction bits of the probabilities.
    guard_bits
        ``G``: extra reciprocal bits (``dataflows.cost.SOFTMAX_GUARD_BITS``).
    """

    lanes: int
    score_bits: int
    frac_bits: int
    exp_bits: int
    prob_bits: int
    guard_bits: int = SOFTMAX_GUARD_BITS

    @classmethod
    def of(cls, hw: HardwareSpec) -> SoftmaxFormat:
        vu = hw.vector_unit
        return cls(
            vu.softmax_width, vu.score_bits, vu.score_frac_bits, vu.exp_bits, hw.data_bits - 1
        )

    @property
    def k(self) -> int:
        """``K``: the reciprocal is ``⌊2^K / S⌋``."""
        return self.exp_bits + self.prob_bits + self.guard_bits

    @property
    def recip_bits(self) -> int:
        """Quotient bits of the reciprocal (``P + G + 1``)."""
        return self.prob_bits + self.guard_bits + 1

    @property
    def score_range(self) -> tuple[int, int]:
        return -(1 << (self.score_bits - 1)), (1 << (self.score_bits - 1)) - 1


def exp_table(fmt: SoftmaxFormat) -> np.ndarray:
    """``T[f] = round(2^E · 2^(-f / 2^F))`` for ``f < 2^F`` (int64; ``T[0] = 2^E``).

    The values are irrational for ``f > 0``, so no entry sits on a rounding tie; the RTL's ROM
    is initialised from this very function.
    """
    f = np.arange(1 << fmt.frac_bits, dtype=np.float64)
    return np.floor(np.exp2(fmt.exp_bits - f / (1 << fmt.frac_bits)) + 0.5).astype(np.int64)


def exp2_neg(d: np.ndarray, fmt: SoftmaxFormat) -> np.ndarray:
    """``2^(-d / 2^F)`` in ``E`` fraction bits for integer ``d ≥ 0`` (step 2 above)."""
    d = np.asarray(d, dtype=np.int64)
    table = exp_table(fmt)
    q = np.minimum(d >> fmt.frac_bits, 63)
    return table[d & ((1 << fmt.frac_bits) - 1)] >> q


def softmax_fixed(x: np.ndarray, keep: np.ndarray | None, fmt: SoftmaxFormat) -> np.ndarray:
    """The unit's probabilities (int64, ``P`` fraction bits) for scores ``x[rows, lanes]``.

    ``keep`` (bool, same shape; None: all kept) masks scores out. Columns are independent
    lanes; a column with no kept score gives zeros.
    """
    x = np.asarray(x, dtype=np.int64)
    keep = np.ones(x.shape, dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    lo, hi = fmt.score_range
    if x.size and (x.min() < lo or x.max() > hi):
        raise ValueError(f"scores must fit {fmt.score_bits} bits two's complement ({lo}..{hi})")
    any_kept = keep.any(axis=0)
    m = np.where(keep, x, lo).max(axis=0) if x.size else np.zeros(x.shape[1], dtype=np.int64)
    e = np.where(keep, exp2_neg(np.where(keep, m - x, 0), fmt), 0)
    s = e.sum(axis=0)
    r = np.where(any_kept, (1 << fmt.k) // np.maximum(s, 1), 0)
    shift = fmt.k - fmt.prob_bits
    p = (e * r + (1 << (shift - 1))) >> shift
    return np.minimum(p, (1 << fmt.prob_bits) - 1)


def softmax_float(x: np.ndarray, keep: np.ndarray | None, fmt: SoftmaxFormat) -> np.ndarray:
    """Float64 base-2 softmax of the fixed-point scores ``x / 2^F`` per column (masked → 0)."""
    x = np.asarray(x, dtype=np.float64) / (1 << fmt.frac_bits)
    keep = np.ones(x.shape, dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    z = np.where(keep, x, -np.inf)
    top = z.max(axis=0)
    top = np.where(np.isfinite(top), top, 0.0)
    e = np.where(keep, np.exp2(z - top), 0.0)
    total = e.sum(axis=0)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def error_bound(p_float: np.ndarray, keep: np.ndarray | None, fmt: SoftmaxFormat) -> np.ndarray:
    """The bound on ``|p_fixed / 2^P - p_float|`` per element (see the module docstring).

    Proof sketch. Let ``u_i = 2^E · 2^(-d_i / 2^F)`` be the exact scaled exponential. The table
    entry is within 1/2 of exact and the shift floors, so ``|e_i - u_i| ≤ 1/2`` when ``q = 0``
    and ``< 1 + 1/4`` when ``q ≥ 1``: ``δ = 1.25``. The maximum is exact (``e = u = 2^E``), so
    ``|S - U| ≤ (n - 1)·δ`` and ``S ≥ 2^E``. Then
    ``|e_i/S - u_i/U| ≤ |e_i - u_i|/S + (u_i/U)·|U - S|/S ≤ δ·(1 + p_i·(n - 1))·2^-E``.
    The reciprocal's truncation costs at most ``e_i/2^K ≤ 2^(-P-G)``, rounding ``2^(-P-1)``
    and saturation at most one LSB, together at most ``2^-P`` for ``G ≥ 1``.
    """
    keep = np.ones(p_float.shape, dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    n = keep.sum(axis=0)
    return 2.0**-fmt.prob_bits + 1.25 * (1 + p_float * np.maximum(n - 1, 0)) * 2.0**-fmt.exp_bits


def quantization_bound(p_float: np.ndarray, fmt: SoftmaxFormat) -> np.ndarray:
    """Extra error from rounding real scores to ``F`` fraction bits: each score moves by at most
    ``2^(-F-1)``, so every ratio ``2^(x_i - x_j)`` by a factor in ``2^(±2^-F)`` and each
    probability by at most ``p · (2^(2^-F) - 1)``."""
    return p_float * (2.0 ** (2.0**-fmt.frac_bits) - 1.0)


def quantize_scores(scores: np.ndarray, fmt: SoftmaxFormat) -> np.ndarray:
    """Real scores in log2 units → the unit's fixed point (round half up, saturating)."""
    lo, hi = fmt.score_range
    q = np.floor(np.asarray(scores, dtype=np.float64) * (1 << fmt.frac_bits) + 0.5)
    return np.clip(q, lo, hi).astype(np.int64)


# --------------------------------------------------------------------------------------------
# The attention instructions (docs/isa.md), functionally: a golden interpreter of the programs
# ``dataflows.attention`` emits, on logical tensors. It checks that the mapping computes masked
# attention (tests/dataflows/test_attention.py); the vector-unit semantics are the ones above.
# --------------------------------------------------------------------------------------------


class AttentionInterpreter:
    """Executes attention programs instruction by instruction (program order).

    Parameters
    ----------
    hw
        The hardware description.
    tensors
        DRAM contents by tensor name (``program.tensors``): integer matrices of each tensor's
        ``rows × cols`` (Qᵀ, K, Vᵀ operands, Oᵀ accumulators) and, for the masks, a uint8 vector.
        Oᵀ is written in place.
    """

    def __init__(self, hw: HardwareSpec, tensors: dict[str, np.ndarray]) -> None:
        self.hw, self.tensors = hw, tensors
        self.fmt = SoftmaxFormat.of(hw)
        self.frac, self.shift, self.p_frac = attention_formats(hw)
        self.a = [np.zeros((0, 0), np.int64)] * 2
        self.b = [(np.zeros((0, 0), np.int64), None)] * 2
        self.acc = [np.zeros((0, 0), np.int64), np.zeros((0, 0), np.int64)]
        self.masks = [np.zeros((0, 0), bool)] * 2
        self.mx = self.any = self.sums = self.corr = None

    def run(self, program) -> None:
        from dataflows.isa import Op

        handlers = {
            Op.LOAD_A: self._load_a,
            Op.LOAD_B: self._load_b,
            Op.LOAD_MASK: self._load_mask,
            Op.COMPUTE: self._compute,
            Op.ROWMAX: self._rowmax,
            Op.RESCALE: self._rescale,
            Op.EXP: self._exp,
            Op.NORMALIZE: self._normalize,
            Op.STORE_C: self._store_c,
        }
        self.layout = program.tensors
        for instr in program.instrs:
            handlers[instr.op](instr)

    # -- DRAM ----------------------------------------------------------------------------------
    def _locate(self, addr: int):
        for name, t in self.layout.items():
            if t.addr <= addr < t.addr + t.nbytes:
                off = addr - t.addr
                return name, t, off // t.stride, off % t.stride // t.elem_bytes
        raise VerificationError(f"address {addr:#x} lies in no tensor of the program")

    def _read(self, instr) -> np.ndarray:
        name, t, r0, c0 = self._locate(instr.addr)
        if instr.stride != t.stride:
            raise VerificationError(
                f"{instr.op.name} reads {name} with stride {instr.stride}; its rows are "
                f"{t.stride} bytes apart"
            )
        src = self.tensors[name]
        out = np.zeros((instr.rows, instr.cols), dtype=np.int64)
        # Columns past the row's end (a padded N:M group) only ever meet zero probabilities.
        block = src[r0 : r0 + instr.rows, c0 : c0 + instr.cols]
        out[: block.shape[0], : block.shape[1]] = block
        return out

    def _load_a(self, instr) -> None:
        self.a[instr.slot] = self._read(instr)

    def _load_b(self, instr) -> None:
        self.b[instr.slot] = (self._read(instr), None)

    def _load_mask(self, instr) -> None:
        name, t, _, off = self._locate(instr.addr)
        width = ceil_div(instr.cols, 8)
        raw = self.tensors[name][off : off + instr.rows * width].reshape(instr.rows, width)
        bits = np.unpackbits(raw, axis=1, bitorder="little")[:, : instr.cols]
        self.masks[instr.slot] = bits.astype(bool)

    def _store_c(self, instr) -> None:
        name, _, r0, c0 = self._locate(instr.addr)
        self.tensors[name][r0 : r0 + instr.rows, c0 : c0 + instr.cols] = self.acc[instr.slot][
            : instr.rows, : instr.cols
        ]

    # -- PE array ------------------------------------------------------------------------------
    def _compute(self, instr) -> None:
        a = self.a[instr.slot]
        values, idx = self.b[instr.b_slot]
        b = values[: instr.k, : instr.cols]
        if instr.nm_n:
            n, m = instr.nm_n, instr.nm_m
            cols = (np.arange(instr.k)[:, None] // n) * m + idx[: instr.k, : instr.cols]
            gathered = a[: instr.m][:, cols]  # [m, k, cols]
            prod = np.einsum("ikj,kj->ij", gathered, b)
        else:
            prod = a[: instr.m, : instr.k] @ b
        acc = self.acc[instr.c_slot]
        if instr.accumulate:
            prod = prod + acc[: instr.m, : instr.cols]
        new = np.zeros((max(instr.m, acc.shape[0]), max(instr.cols, acc.shape[1])), np.int64)
        new[: acc.shape[0], : acc.shape[1]] = acc
        new[: instr.m, : instr.cols] = wrap(prod, self.hw.acc_bits)
        self.acc[instr.c_slot] = new

    # -- vector unit ---------------------------------------------------------------------------
    def _scores(self, instr, first: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.fmt.score_range
        s = self.acc[instr.c_slot][first : first + rows, : instr.cols] >> self.shift
        keep = np.ones(s.shape, dtype=bool)
        if instr.mask:
            keep &= self.masks[instr.slot][first : first + rows, : instr.cols]
        return np.clip(s, lo, hi), keep

    def _rowmax(self, instr) -> None:
        x, keep = self._scores(instr, 0, instr.rows)
        cols = instr.cols
        if not instr.accumulate:
            self.mx = np.zeros(cols, np.int64)
            self.any = np.zeros(cols, bool)
            self.sums = np.zeros(cols, np.int64)
        block_any = keep.any(axis=0)
        block_max = np.where(keep, x, self.fmt.score_range[0]).max(axis=0)
        new = np.where(
            self.any, np.where(block_any, np.maximum(self.mx, block_max), self.mx), block_max
        )
        self.corr = np.where(self.any, exp2_neg(new - self.mx, self.fmt), 0)
        self.sums = (self.sums * self.corr) >> self.fmt.exp_bits
        self.mx, self.any = new, self.any | block_any

    def _rescale(self, instr) -> None:
        acc = self.acc[instr.slot]
        # Python integers: the product of an accumulator and a factor may pass 64 bits.
        prod = acc[: instr.rows, : instr.cols].astype(object) * self.corr[None, :].astype(object)
        acc[: instr.rows, : instr.cols] = wrap(
            (prod >> self.fmt.exp_bits).astype(np.int64), self.hw.acc_bits
        )

    def _exp(self, instr) -> None:
        x, keep = self._scores(instr, instr.k, instr.rows)
        e = np.where(keep, exp2_neg(np.maximum(self.mx[None, :] - x, 0), self.fmt), 0)
        if instr.nm_n:
            n, m = instr.nm_n, instr.nm_m
            chosen = top_n_scores(x.T, keep.T, n, m).T  # rows padded to whole groups
            groups = chosen.shape[0] // m
            ep = np.pad(e, ((0, chosen.shape[0] - instr.rows), (0, 0)))
            # The N chosen rows of each group, in increasing index order.
            idx = np.argsort(~chosen.reshape(groups, m, -1), axis=1, kind="stable")[:, :n, :]
            e = np.take_along_axis(ep.reshape(groups, m, -1), idx, axis=1).reshape(groups * n, -1)
            idx = idx.reshape(groups * n, -1)
        else:
            idx = None
        self.sums = self.sums + e.sum(axis=0)
        drop = self.fmt.exp_bits - self.p_frac
        p = (e + (1 << (drop - 1))) >> drop if drop > 0 else e << -drop
        self.b[instr.b_slot] = (np.minimum(p, (1 << self.p_frac) - 1), idx)

    def _normalize(self, instr) -> None:
        r = np.where(self.sums > 0, (1 << self.fmt.k) // np.maximum(self.sums, 1), 0)
        acc = self.acc[instr.slot]
        prod = acc[: instr.rows, : instr.cols].astype(object) * r[None, :].astype(object)
        acc[: instr.rows, : instr.cols] = wrap(
            (prod >> (self.fmt.k - self.fmt.exp_bits)).astype(np.int64), self.hw.acc_bits
        )
