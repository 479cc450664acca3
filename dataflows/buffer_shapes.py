"""Shapes of the accelerator's on-chip buffers: banks, words per bank and word widths.

Pure arithmetic on a :class:`~workloads.spec.HardwareSpec`, with one home for both readers:
``rtl.params.Geometry`` builds the RTL's memories from it, and the DSE area model
(``reports.area``) predicts the FPGA cells of those memories from it (reports may not import
rtl, DESIGN.md). The buffer organisations themselves are explained in ``rtl/params.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from dataflows.isa import SLOTS_PER_BUFFER
from dataflows.tiling import input_banks
from workloads.arith import ceil_div, index_bits, next_pow2
from workloads.spec import HardwareSpec

__all__ = ["BufferShapes", "MemoryShape", "buffer_shapes"]


@dataclass(frozen=True, slots=True)
class MemoryShape:
    """``count`` identical RTL memories of ``depth`` words of ``width`` bits, written in
    enable groups of ``group_bits`` (the whole word unless the writer enables parts)."""

    name: str
    count: int
    width: int
    depth: int
    group_bits: int


@dataclass(frozen=True, slots=True)
class BufferShapes:
    """Banks and words per bank of each buffer (see ``rtl.params.Geometry`` for the meaning).

    ``c_depth`` may be 0 and ``a_depth`` too small for a row on hardware the RTL refuses;
    ``Geometry.of`` says why.
    """

    rows: int
    cols: int
    data_bits: int
    acc_bits: int
    index_bits: int
    a_banks: int
    a_depth: int
    k_max: int
    b_banks: int
    b_depth: int
    c_depth: int
    mask_words: int
    beat_bytes: int

    def memories(self) -> tuple[MemoryShape, ...]:
        """Every buffer memory, two slots each: input (a bank of ``rows`` operands), weight (a
        row of ``cols`` entries, each a value and an index, enabled entry by entry), accumulator
        (a column), and the mask store (two banks of beat-wide words per slot)."""
        entry = self.data_bits + self.index_bits
        return (
            MemoryShape("input", SLOTS_PER_BUFFER * self.a_banks, self.rows * self.data_bits,
                        self.a_depth, self.rows * self.data_bits),
            MemoryShape("weight", SLOTS_PER_BUFFER * self.b_banks, self.cols * entry,
                        self.b_depth, entry),
            MemoryShape("accumulator", SLOTS_PER_BUFFER * self.cols, self.acc_bits,
                        self.c_depth, self.acc_bits),
            MemoryShape("mask", SLOTS_PER_BUFFER * 2, 8 * self.beat_bytes,
                        ceil_div(self.mask_words, 2), 8 * self.beat_bytes),
        )


def buffer_shapes(hw: HardwareSpec) -> BufferShapes:
    """The buffer shapes of ``hw``."""
    r, c, db = hw.array.rows, hw.array.cols, hw.data_bytes
    patterns = [(p.n, p.m) for p in hw.nm_patterns]
    m_max = max((m for _, m in patterns), default=1)
    spans = [r] + [r // n * m for n, m in patterns]  # reduction covered by one tile
    a_banks = input_banks(hw)
    slot_a = hw.buffers.input_bytes // SLOTS_PER_BUFFER
    # Rows of width ``span`` that fit a slot, each taking q banks; a_banks/q rows per address.
    a_depth = max(ceil_div(slot_a // (span * db) * next_pow2(ceil_div(span, r)), a_banks)
                  for span in spans)
    slot_b = hw.buffers.weight_bytes // SLOTS_PER_BUFFER
    c_depth = hw.buffers.accumulator_bytes // SLOTS_PER_BUFFER // (c * hw.acc_bytes)
    beat = hw.dram.bandwidth_bytes_per_cycle
    return BufferShapes(
        rows=r, cols=c, data_bits=hw.data_bits, acc_bits=hw.acc_bits,
        index_bits=index_bits(m_max) if patterns else 0,
        a_banks=a_banks, a_depth=a_depth, k_max=max(spans), b_banks=m_max,
        b_depth=ceil_div(max(max(spans), slot_b // (c * db)), m_max), c_depth=c_depth,
        mask_words=ceil_div(c_depth * ceil_div(c, 8), beat) + 1, beat_bytes=beat,
    )
