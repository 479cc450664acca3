"""Integer arithmetic every layer shares: ceiling division, two's-complement wrap, index widths.

Each lives here once so the scheduler, the model, the RTL parameters and the golden models
cannot drift apart (a hardware width rounded two ways is a cycle or a bit of difference).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ceil_div", "wrap", "index_bits", "next_pow2"]


def ceil_div(a, b):
    """⌈a / b⌉ for non-negative integers (also element-wise on integer numpy arrays)."""
    return -(-a // b)


def wrap(values: np.ndarray, bits: int) -> np.ndarray:
    """Two's complement wrap-around of int64 values to ``bits`` bits (sign-extended to int64).

    int64 arithmetic already wraps modulo 2⁶⁴, and 2^bits divides 2⁶⁴, so wrapping the int64
    result gives the exact ``bits``-bit result whatever overflowed on the way.
    """
    shift = np.int64(64 - bits)
    return (np.asarray(values, dtype=np.int64) << shift) >> shift


def index_bits(m: int) -> int:
    """Bits needed to address one of M positions in a group (⌈log2 M⌉, at least 1)."""
    return max(1, (m - 1).bit_length())


def next_pow2(x: int) -> int:
    """The smallest power of two that is at least ``x`` (1 for ``x <= 1``): bank counts."""
    return 1 << max(0, (x - 1).bit_length())
