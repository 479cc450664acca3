"""The Amaranth RTL accelerator that executes the scheduler's tile programs unchanged.

Blocks (one per module): :mod:`rtl.pe` (the unified dense/N:M MAC), :mod:`rtl.array` (the
weight-stationary systolic array), :mod:`rtl.buffers` (double-buffered input, weight and
accumulator SRAMs), :mod:`rtl.dma` (the memory engine), :mod:`rtl.vector` (the N:M compressor of
the vector unit), :mod:`rtl.compute` (the PE-array unit), :mod:`rtl.controller` (instruction
memories and completion-count waits) and :mod:`rtl.top` (``AccelTop``). Every parameter comes from
:class:`workloads.spec.HardwareSpec` through :class:`rtl.params.Geometry`.

Importing this package is cheap: Amaranth is imported only by the block modules, so the
``archsim`` CLI can register ``archsim rtl`` without loading it. Build with
``from rtl.build import build, write_verilog``.
"""

from __future__ import annotations

from rtl.errors import RTLError

__all__ = ["RTLError"]
