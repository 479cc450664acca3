"""Testbench pieces shared by every cocotb test of the accelerator.

Plain-Python models with a two-phase cycle interface (``drive`` the DUT's inputs for a cycle,
then ``sample`` its settled outputs), so they are unit-tested without a simulator:

* :mod:`~verification.common.ports` — port and payload-field names as Amaranth emits them;
* :mod:`~verification.common.host` — the ``instr`` stream driver, ``start`` and ``busy``;
* :mod:`~verification.common.memory` — DRAM with docs/isa.md timing and optional backpressure;
* :mod:`~verification.common.monitor` — memory requests matched to DMA instructions;
* :mod:`~verification.common.protocol` — Amaranth stream rules on the DUT's outputs;
* :mod:`~verification.common.scoreboard` — verdicts on values and cycles.

:mod:`~verification.common.bench` binds them to a DUT and is the only one importing cocotb.
"""
