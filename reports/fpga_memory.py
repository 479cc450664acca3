"""Which FPGA cells Yosys makes of one RTL memory: the area model's memory rule.

``synth_xilinx -family xcup -uram`` maps every memory with ``memory_libmap`` (Yosys
passes/memory/memory_libmap.cc, libraries techlibs/xilinx/lutrams_xcu.txt, brams_xc4v.txt and
urams.txt): it prices each way to build the memory and takes the cheapest. This module prices the
same candidates for the RTL's memories (one write port, one synchronous read port with an
enable), so the area model knows each memory's cells instead of fitting a slope through the
steps a memory makes as its shape changes (docs/dse.md, "Area model"):

* **logic**: ``width·depth`` (``-logic-cost-ram 1``), all flip-flops;
* **LUTRAM** (simple dual port ``RAM32M16``/``RAM64M8``, 14 bits × 32 or 7 bits × 64; dual port
  8×32 … 1×256): 16 per unit, scaled by the width used; the synchronous read port's register is
  ``width`` flip-flops;
* **block RAM** (simple dual port ``RAMB18``/``RAMB36``, 2^14 / 2^15 bits in widths 1, 2, 4, 9,
  18, 36 (72); cost 129 / 257);
* **UltraRAM** (72 bits × 4096, cost 1024).

Each candidate costs its units plus ``memory_libmap``'s penalties for the read multiplexer
(½ per bit and extra address range) and the write demultiplexer. A memory written in enable
groups (the weight buffer, entry by entry) pads each group to the unit's byte (9 bits in block
RAM and UltraRAM; a whole unit in LUTRAM), as ``memory_libmap``'s swizzle does. One measured
refinement: Yosys stores three 48-bit words in a pair of UltraRAMs (two per 12,288 words), seen
with ``benchmarks/area_memory_probe.py`` on single memories; the candidate ``uram_pair`` prices it.
Not modelled: ``memory_libmap``'s emulation scores (a few points, tie-breakers) and uneven
splits of a depth just past a unit's (48 × 4,097: Yosys 7 RAMB36, the rule 7.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

from dataflows.buffer_shapes import MemoryShape

__all__ = ["MemoryCells", "memory_cells"]

_MUX, _DEMUX = 0.5, 0.5  # memory_libmap's FACTOR_MUX and FACTOR_DEMUX
_BRAM_WIDTHS = (1, 2, 4, 9, 18, 36, 72)
#: (kind, address bits at width index 0, widths, cost, cells counted per unit, byte)
_BLOCKS = (
    ("bram", 15, _BRAM_WIDTHS, 257, 1.0, 9),      # RAMB36 simple dual port
    ("bram", 14, _BRAM_WIDTHS[:-1], 129, 0.5, 9),  # RAMB18: half a RAMB36
)
#: LUTRAM (address bits, bits per unit): simple dual port, then dual port.
_LUTRAMS = ((5, 14), (6, 7), (5, 8), (6, 4), (7, 2), (8, 1))


@dataclass(frozen=True, slots=True)
class MemoryCells:
    """Cells of one memory: BRAM in RAMB36 equivalents, LUTRAM cells, flip-flops, UltraRAMs."""

    kind: str
    cost: float
    bram: float = 0.0
    uram: float = 0.0
    lutram: float = 0.0
    ff: float = 0.0


def _padded(width: int, group: int, byte: int, unit: int) -> int:
    """Bits one word takes in units of ``unit`` bits, each enable group starting at a byte."""
    groups, last = divmod(width, group)
    bits = groups * ceil(group / byte) * byte + (ceil(last / byte) * byte if last else 0)
    return ceil(bits / unit)


def _penalty(mult_a: int, width: int) -> float:
    """memory_libmap's read multiplexer and write demultiplexer over ``mult_a`` address ranges."""
    return _MUX * (mult_a - 1) * width + (_DEMUX * mult_a if mult_a > 1 else 0.0)


def _candidates(m: MemoryShape):
    w, d, g = m.width, m.depth, m.group_bits
    yield MemoryCells("logic", float(w * d), ff=float(w * d))
    for abits, unit in _LUTRAMS:
        mult_a = ceil(d / (1 << abits))
        cost = 16 * mult_a * w / unit + _penalty(mult_a, w)
        yield MemoryCells("lutram", cost, lutram=float(mult_a * _padded(w, g, unit, unit)),
                          ff=float(w))
    for kind, abits, widths, unit_cost, cells, byte in _BLOCKS:
        for i, unit in enumerate(widths):
            mult_a = ceil(d / (1 << (abits - i)))
            repl = mult_a * _padded(w, g, min(byte, unit), unit)
            yield MemoryCells(kind, unit_cost * repl + _penalty(mult_a, w), bram=repl * cells)
    mult_a = ceil(d / 4096)
    repl = mult_a * _padded(w, g, 9, 72)
    yield MemoryCells("uram", 1024 * repl + _penalty(mult_a, w), uram=float(repl))
    per_pair = 144 // w if w <= 72 else 0  # words per address of a pair of UltraRAMs
    if per_pair > 1 and g == w:
        pairs = ceil(d / (4096 * per_pair))
        yield MemoryCells("uram_pair", 2048 * pairs + _penalty(pairs * per_pair, w),
                          uram=2.0 * pairs)


def memory_cells(m: MemoryShape) -> MemoryCells:
    """The cheapest way to build one of ``m``'s memories, as ``synth_xilinx -uram`` does."""
    return min(_candidates(m), key=lambda c: c.cost)
