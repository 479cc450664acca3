"""The vector unit's fixed-point softmax arithmetic, in numpy.

Two users: the stand-alone unit (``rtl/softmax.py``; :func:`softmax_fixed`), and the online
softmax of the attention instructions (``rtl/online_softmax.py``), which the golden interpreter
``verification.golden.Interpreter`` executes with :class:`SoftmaxState` and the helpers at the
end of this module.

The stand-alone unit computes a base-2 softmax per **lane** (one query column each) over a tile
of scores that streams in one row (one key) per beat: ``p_i = 2^x_i / Σ_j 2^x_j`` over the kept
scores. Attention folds ``log2(e)/√d`` into Q, so this is the usual softmax of ``q·k/√d``.

Number formats (:class:`~dataflows.softmax_format.SoftmaxFormat`, derived from the hardware):

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

import numpy as np

from dataflows.softmax_format import SoftmaxFormat
from verification.errors import VerificationError
from workloads.arith import wrap
from workloads.generators.attention import top_n_scores

__all__ = [
    "exp_table",
    "exp2_neg",
    "reciprocal",
    "softmax_fixed",
    "softmax_float",
    "error_bound",
    "quantization_bound",
    "quantize_scores",
    "scores",
    "probabilities",
    "scale",
    "select_nm",
    "SoftmaxState",
]


def exp_table(fmt: SoftmaxFormat) -> np.ndarray:
    """The exp table ``T`` (:attr:`SoftmaxFormat.exp_table`, the RTL's ROM) as int64."""
    return np.asarray(fmt.exp_table, dtype=np.int64)


def exp2_neg(d: np.ndarray, fmt: SoftmaxFormat) -> np.ndarray:
    """``2^(-d / 2^F)`` in ``E`` fraction bits for integer ``d ≥ 0`` (step 2 above)."""
    d = np.asarray(d, dtype=np.int64)
    table = exp_table(fmt)
    q = np.minimum(d >> fmt.frac_bits, 63)
    return table[d & ((1 << fmt.frac_bits) - 1)] >> q


def reciprocal(sums: np.ndarray, fmt: SoftmaxFormat) -> np.ndarray:
    """``R = ⌊2^K / S⌋`` per lane (step 4), 0 for a sum of 0 (a lane that kept nothing)."""
    sums = np.asarray(sums, dtype=np.int64)
    return np.where(sums > 0, (1 << fmt.k) // np.maximum(sums, 1), 0)


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
    r = np.where(any_kept, reciprocal(s, fmt), 0)
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
# The online softmax of the attention instructions (docs/isa.md, ops 7-10): the arithmetic the
# golden interpreter applies to its buffers, and the per-column state the instructions share.
# --------------------------------------------------------------------------------------------


def scores(acc: np.ndarray, fmt: SoftmaxFormat) -> np.ndarray:
    """Scores of accumulator entries: ``clamp(acc >> score_shift)`` to the score range."""
    lo, hi = fmt.score_range
    return np.clip(np.asarray(acc, dtype=np.int64) >> fmt.score_shift, lo, hi)


def probabilities(e: np.ndarray, fmt: SoftmaxFormat) -> np.ndarray:
    """EXP's operands ``P̃ = min(round(e / 2^(E−P)), 2^P − 1)`` from exponentials ``e``."""
    drop = fmt.exp_bits - fmt.prob_bits
    p = (e + (1 << (drop - 1))) >> drop if drop > 0 else e << -drop
    return np.minimum(p, (1 << fmt.prob_bits) - 1)


def scale(acc: np.ndarray, factor: np.ndarray, shift: int, acc_bits: int) -> np.ndarray:
    """RESCALE and NORMALIZE: ``⌊acc[i][j] · factor[j] / 2^shift⌋`` in ``acc_bits``."""
    # Python integers: the product of an accumulator and a factor may pass 64 bits.
    prod = np.asarray(acc).astype(object) * np.asarray(factor)[None, :].astype(object)
    return wrap((prod >> shift).astype(np.int64), acc_bits)


def select_nm(x: np.ndarray, keep: np.ndarray, e: np.ndarray, n: int, m: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """EXP with ``n:m``: of every ``m`` rows of ``x[rows, cols]`` the top ``n`` scores (masked
    rows and a cut group's padding rank below every kept score, ties to the lower row), in
    increasing row order: ``(e of the chosen rows, their indices)``, both ``[groups·n, cols]``."""
    chosen = top_n_scores(x.T, keep.T, n, m).T  # rows padded to whole groups
    groups = chosen.shape[0] // m
    padded = np.pad(e, ((0, chosen.shape[0] - e.shape[0]), (0, 0)))
    idx = np.argsort(~chosen.reshape(groups, m, -1), axis=1, kind="stable")[:, :n, :]
    picked = np.take_along_axis(padded.reshape(groups, m, -1), idx, axis=1)
    return picked.reshape(groups * n, -1), idx.reshape(groups * n, -1)


class SoftmaxState:
    """The vector unit's per-query-column state, and which columns it is defined for.

    ROWMAX with ``accumulate = 0`` defines the running max ``mx``, the flag "has seen a kept
    score" and the running sum ``l`` of the tile's columns (and of no other column); any ROWMAX
    defines the correction ``c`` of its columns. An instruction that needs a part of the state
    its columns do not define is a defective program: :class:`VerificationError`.

    Parameters
    ----------
    fmt
        The number format.
    cols
        Columns of state (``array.cols``: no vector instruction has more).
    """

    def __init__(self, fmt: SoftmaxFormat, cols: int) -> None:
        self.fmt = fmt
        self.mx = np.zeros(cols, np.int64)
        self.seen = np.zeros(cols, bool)
        self.sums = np.zeros(cols, np.int64)
        self.corr = np.zeros(cols, np.int64)
        self.running = np.zeros(cols, bool)  # mx, seen and l are defined
        self.corrected = np.zeros(cols, bool)  # c is defined

    @staticmethod
    def _require(defined: np.ndarray, cols: int, what: str, fix: str) -> None:
        if not defined[:cols].all():
            j = int(np.argmin(defined[:cols]))
            raise VerificationError(f"the {what} of query column {j} is undefined ({fix})")

    def _require_running(self, cols: int) -> None:
        self._require(self.running, cols, "running max and sum",
                      "no ROWMAX with accumulate=0 started this column's softmax")

    def rowmax(self, x: np.ndarray, keep: np.ndarray, reset: bool) -> None:
        """ROWMAX over scores ``x[rows, cols]`` (``keep``: unmasked): ``mx' = max(mx, block
        max)``, ``c = 2^(mx − mx')`` (0 for a column with no kept score yet), ``l ← ⌊l·c/2^E⌋``."""
        cols = x.shape[1]
        if reset:
            self.mx[:cols], self.seen[:cols], self.sums[:cols] = 0, False, 0
            self.running[:], self.corrected[:] = False, False
            self.running[:cols] = True
        self._require_running(cols)
        mx, seen = self.mx[:cols], self.seen[:cols]
        block_any = keep.any(axis=0)
        block_max = np.where(keep, x, self.fmt.score_range[0]).max(axis=0)
        new = np.where(seen, np.where(block_any, np.maximum(mx, block_max), mx), block_max)
        corr = np.where(seen, exp2_neg(np.where(seen, new - mx, 0), self.fmt), 0)
        self.sums[:cols] = (self.sums[:cols] * corr) >> self.fmt.exp_bits
        self.corr[:cols], self.corrected[:cols] = corr, True
        self.mx[:cols], self.seen[:cols] = new, seen | block_any

    def exponentials(self, x: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """EXP's ``e = 2^(x − mx)`` of scores ``x[rows, cols]`` (0 where masked)."""
        cols = x.shape[1]
        self._require_running(cols)
        d = np.maximum(self.mx[None, :cols] - x, 0)
        return np.where(keep, exp2_neg(d, self.fmt), 0)

    def add(self, e: np.ndarray) -> None:
        """``l += Σ e`` over the rows EXP writes (the chosen ones, with N:M)."""
        self.sums[:e.shape[1]] += e.sum(axis=0)

    def correction(self, cols: int) -> np.ndarray:
        """RESCALE's factors: the last ROWMAX's ``c``."""
        self._require(self.corrected, cols, "correction",
                      "no ROWMAX computed one for this column since its softmax started")
        return self.corr[:cols]

    def reciprocals(self, cols: int) -> np.ndarray:
        """NORMALIZE's factors ``R = ⌊2^K / l⌋`` (0 where ``l = 0``)."""
        self._require_running(cols)
        return reciprocal(self.sums[:cols], self.fmt)
