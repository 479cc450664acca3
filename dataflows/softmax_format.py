"""The vector unit's softmax number format, derived once from a :class:`HardwareSpec`.

Attention's operands, scores, exponentials and probabilities have fixed-point formats that the
cost formulas (reciprocal width), the RTL (``rtl/softmax.py``, ``rtl/online_softmax.py``) and
the golden model (``verification/golden_softmax.py``) must agree on bit for bit. They all take
them from :meth:`SoftmaxFormat.of`; nothing else derives a softmax width.

* operands Q (pre-scaled by ``log2(e)/√d``), K, V: ``data_bits`` two's complement with
  ``operand_frac_bits = data_bits // 2`` fraction bits, so a score ``q·k`` in the accumulator
  has twice that;
* scores ``x = clamp(acc >> score_shift)``: ``score_bits`` two's complement with
  ``F = score_frac_bits`` fraction bits (log2 units; the exp table has ``2^F`` entries);
* exponentials and running sums: unsigned with ``E = exp_bits`` fraction bits;
* probabilities P̃: unsigned with ``P = data_bits - 1`` fraction bits (non-negative operands of
  the PE array);
* reciprocals ``⌊2^K / sum⌋`` with ``K = E + P + G``: ``P + G + 1`` quotient bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from workloads.spec import HardwareSpec

__all__ = ["SOFTMAX_GUARD_BITS", "SoftmaxFormat"]

#: Extra fraction bits of a reciprocal beyond the output's, so that truncating it costs at most
#: 1/16 of an output LSB (verification/golden_softmax.py derives the error bound).
SOFTMAX_GUARD_BITS = 4


@dataclass(frozen=True, kw_only=True)  # no slots: exp_table is cached in the instance's dict
class SoftmaxFormat:
    """The softmax datapath's widths (see the module docstring).

    Attributes
    ----------
    lanes
        Query columns per beat of the stand-alone unit (``vector_unit.softmax_width``).
    operand_frac_bits
        Fraction bits of attention's operands Q, K and V (``data_bits // 2``).
    score_bits, frac_bits
        Score width and its fraction bits ``F`` (``vector_unit.score_frac_bits``).
    score_shift
        Right shift from an accumulator's ``2·operand_frac_bits`` fraction bits to ``F``.
    exp_bits
        ``E``: fraction bits of exponentials and running sums.
    prob_bits
        ``P = data_bits - 1``: fraction bits of the probabilities P̃.
    guard_bits
        ``G``: extra reciprocal bits (:data:`SOFTMAX_GUARD_BITS`).
    """

    lanes: int
    operand_frac_bits: int
    score_bits: int
    frac_bits: int
    score_shift: int
    exp_bits: int
    prob_bits: int
    guard_bits: int = SOFTMAX_GUARD_BITS

    @classmethod
    def of(cls, hw: HardwareSpec) -> SoftmaxFormat:
        vu = hw.vector_unit
        frac = hw.data_bits // 2
        return cls(
            lanes=vu.softmax_width,
            operand_frac_bits=frac,
            score_bits=vu.score_bits,
            frac_bits=vu.score_frac_bits,
            score_shift=max(0, 2 * frac - vu.score_frac_bits),
            exp_bits=vu.exp_bits,
            prob_bits=hw.data_bits - 1,
        )

    @property
    def k(self) -> int:
        """``K``: the reciprocal is ``⌊2^K / S⌋``."""
        return self.exp_bits + self.prob_bits + self.guard_bits

    @property
    def recip_bits(self) -> int:
        """Quotient bits of the reciprocal, ``P + G + 1``: a sum is at least ``2^E`` (the
        maximum contributes exactly one), so the quotient is below ``2^(P + G + 1)``."""
        return self.prob_bits + self.guard_bits + 1

    @property
    def score_range(self) -> tuple[int, int]:
        """The lowest and highest score (two's complement of ``score_bits``)."""
        return -(1 << (self.score_bits - 1)), (1 << (self.score_bits - 1)) - 1

    @cached_property
    def exp_table(self) -> tuple[int, ...]:
        """``T[f] = round(2^E · 2^(-f / 2^F))`` for ``f < 2^F`` (``T[0] = 2^E``): the exp ROM of
        the RTL and the golden model's table. The values are irrational for ``f > 0``, so no
        entry sits on a rounding tie."""
        size = 1 << self.frac_bits
        return tuple(math.floor(2.0 ** (self.exp_bits - f / size) + 0.5) for f in range(size))
