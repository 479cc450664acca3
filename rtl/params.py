"""Every RTL parameter, derived once from a :class:`~workloads.spec.HardwareSpec`.

No block takes a width, depth or count of its own: each reads :class:`Geometry`, which reads the
spec. The derivations that are not a plain copy of a spec field are the buffer organisations:

* **Input buffer (A).** An activation row of a dense tile has ``rows`` operands; an N:M tile's row
  has ``rows/n·m`` (the reduction it covers). The buffer is ``a_banks`` banks of ``rows`` operands
  each. A row of ``cols`` operands occupies ``q = next_pow2(⌈cols/rows⌉)`` consecutive banks at
  one address, so ``a_banks/q`` rows share an address and a COMPUTE reads a whole row of any width
  in one cycle. ``a_depth`` makes each slot hold what the scheduler may put there:
  ``buffers.input_bytes / 2`` bytes of rows of any supported width.
* **Weight buffer (B).** A slot holds ``buffers.weight_bytes / 2`` bytes of dense rows of
  ``cols`` operands (a buffer-level tile of several array tiles, each from its ``b_row``), and
  at least the largest dense weight tile (``k_max`` rows), because COMPRESS turns a dense tile
  into compressed rows in place. Rows are spread over ``b_banks = m_max`` banks (row ``r`` in
  bank ``r % m_max``) so the vector unit reads a whole group of M rows in one cycle.
* **Accumulator buffer (C).** One bank per array column (columns finish at skewed times), each
  slot ``buffers.accumulator_bytes / 2`` bytes.
* **Mask store.** LOAD_MASK brings a mask tile as one burst of beats, kept as they come:
  ``mask_words`` beat-wide words per slot, enough for a tile as tall as an accumulator slot
  (a score tile lives there) plus one, because a mask row may straddle two words and the
  vector unit reads a word pair.
"""

from __future__ import annotations

from dataclasses import dataclass

from dataflows.buffer_shapes import buffer_shapes
from dataflows.isa import SLOTS_PER_BUFFER
from rtl.errors import RTLError
from workloads.arith import ceil_div
from workloads.spec import HardwareSpec

__all__ = ["Geometry", "ceil_log2"]


def ceil_log2(x: int) -> int:
    """Bits needed to count ``x`` distinct values (0 for ``x <= 1``)."""
    return max(0, (x - 1).bit_length())


@dataclass(frozen=True, slots=True)
class Geometry:
    """Widths, depths and counts of every RTL block.

    Attributes
    ----------
    output_stationary
        The array is output-stationary (``array.dataflow``), not weight-stationary.
    patterns
        The ``(n, m)`` pairs the unified PE runs sparse, in spec order.
    m_max, n_max
        Largest M and N of those patterns (1 when the PE is dense-only): ``m_max`` is the number of
        activation lanes per PE (its M:1 mux), ``n_max`` the compressor's output count.
    index_bits
        Bits of a stored weight index, ⌈log2 m_max⌉ (0 for a dense-only PE).
    a_banks, a_depth
        Input-buffer banks (a power of two) and rows per bank per slot.
    k_max
        Rows of the largest dense weight tile: ``rows`` or ``rows/n·m`` of any pattern.
    b_banks, b_depth
        Weight-buffer banks (``m_max``) and rows per bank per slot.
    c_depth
        Accumulator rows per column per slot.
    row_bytes_max, beats_max
        The longest DMA row in bytes and in memory beats.
    lanes
        Vector-unit lanes in use: one column each, so at most ``cols``.
    softmax_lanes
        Query columns the softmax datapath handles per beat (``vector_unit.softmax_width``).
    mask_row_bytes_max, mask_words
        Bytes of the widest mask row (⌈cols/8⌉) and beat-wide words per mask slot.
    """

    name: str
    output_stationary: bool
    rows: int
    cols: int
    data_bits: int
    acc_bits: int
    data_bytes: int
    acc_bytes: int
    beat_bytes: int
    latency_cycles: int
    patterns: tuple[tuple[int, int], ...]
    m_max: int
    n_max: int
    index_bits: int
    a_banks: int
    a_depth: int
    k_max: int
    b_banks: int
    b_depth: int
    c_depth: int
    row_bytes_max: int
    beats_max: int
    lanes: int
    vector_pipeline_cycles: int
    instruction_depth: int
    softmax_lanes: int
    mask_row_bytes_max: int
    mask_words: int

    @classmethod
    def of(cls, hw: HardwareSpec) -> Geometry:
        """The geometry of ``hw``.

        Raises
        ------
        RTLError
            If the RTL cannot implement ``hw`` (each message says which field and why).
        """
        r, c, db = hw.array.rows, hw.array.cols, hw.data_bytes
        patterns = tuple((p.n, p.m) for p in hw.nm_patterns)
        if hw.dram.latency_cycles < 1:
            raise RTLError(
                f"{hw.name}: dram.latency_cycles must be at least 1 for the RTL, got "
                f"{hw.dram.latency_cycles}: a store reads its first row from the accumulator "
                f"SRAM (1 cycle) while its request travels to memory"
            )
        if hw.vector_unit.pipeline_cycles < 1:
            raise RTLError(
                f"{hw.name}: vector_unit.pipeline_cycles must be at least 1 for the RTL, got "
                f"{hw.vector_unit.pipeline_cycles}: the first cycle is the weight SRAM read"
            )
        shapes = buffer_shapes(hw)  # one home for the buffers' arithmetic (the area model reads it)
        m_max, k_max = shapes.b_banks, shapes.k_max
        n_max = max((n for n, _ in patterns), default=1)
        slot_a = hw.buffers.input_bytes // SLOTS_PER_BUFFER
        if slot_a < k_max * db:
            raise RTLError(
                f"{hw.name}: half of buffers.input_bytes ({slot_a} B) cannot hold one activation "
                f"row of {k_max} operands ({k_max * db} B); enlarge buffers.input_bytes"
            )
        slot_b = hw.buffers.weight_bytes // SLOTS_PER_BUFFER
        if slot_b < k_max * c * db:
            raise RTLError(
                f"{hw.name}: half of buffers.weight_bytes ({slot_b} B) cannot hold the largest "
                f"dense weight tile ({k_max}x{c} operands, {k_max * c * db} B); enlarge "
                f"buffers.weight_bytes"
            )
        c_depth = shapes.c_depth
        if c_depth < 1:
            raise RTLError(
                f"{hw.name}: half of buffers.accumulator_bytes "
                f"({hw.buffers.accumulator_bytes // SLOTS_PER_BUFFER} B) cannot hold one accumulator row of "
                f"{c} x {hw.acc_bytes} B; enlarge buffers.accumulator_bytes"
            )
        beat = hw.dram.bandwidth_bytes_per_cycle
        mask_row = ceil_div(c, 8)
        if mask_row > beat:
            raise RTLError(
                f"{hw.name}: a mask row of {c} columns ({mask_row} B) is wider than a memory beat "
                f"({beat} B); the vector unit reads a mask row from one pair of beats, so "
                f"dram.bandwidth_bytes_per_cycle must be at least {mask_row}"
            )
        ib = shapes.index_bits
        a_banks = shapes.a_banks
        compressed_row = c * db + ceil_div(c * ib, 8)
        row_bytes_max = max(a_banks * r * db, compressed_row, c * hw.acc_bytes)
        return cls(
            name=hw.name,
            output_stationary=hw.array.output_stationary,
            rows=r,
            cols=c,
            data_bits=hw.data_bits,
            acc_bits=hw.acc_bits,
            data_bytes=db,
            acc_bytes=hw.acc_bytes,
            beat_bytes=beat,
            latency_cycles=hw.dram.latency_cycles,
            patterns=patterns,
            m_max=m_max,
            n_max=n_max,
            index_bits=ib,
            a_banks=a_banks,
            a_depth=shapes.a_depth,
            k_max=k_max,
            b_banks=m_max,
            b_depth=shapes.b_depth,
            c_depth=c_depth,
            row_bytes_max=row_bytes_max,
            beats_max=ceil_div(row_bytes_max, beat),
            lanes=min(hw.vector_unit.lanes, c),
            vector_pipeline_cycles=hw.vector_unit.pipeline_cycles,
            instruction_depth=hw.controller.instruction_depth,
            softmax_lanes=hw.vector_unit.softmax_width,
            mask_row_bytes_max=mask_row,
            mask_words=shapes.mask_words,
        )

    @property
    def sparse(self) -> bool:
        """True when the PE has the M:1 activation mux (at least one N:M pattern)."""
        return bool(self.patterns)

    @property
    def a_rows(self) -> int:
        """Most activation rows one input slot can address (rows of at most ``rows`` operands)."""
        return self.a_depth * self.a_banks

    @property
    def b_rows(self) -> int:
        """Rows one weight slot can address."""
        return self.b_depth * self.b_banks

    @property
    def mask_bytes_max(self) -> int:
        """The largest mask tile LOAD_MASK may bring: an accumulator slot's rows of mask rows."""
        return self.c_depth * self.mask_row_bytes_max

    @property
    def m_values(self) -> tuple[int, ...]:
        """Distinct group sizes M of the supported patterns, ascending."""
        return tuple(sorted({m for _, m in self.patterns}))
