"""Verification: one tile program on the RTL (cocotb + Verilator) against numpy and SimPy.

A program from the scheduler runs on the Amaranth accelerator in a cocotb testbench whose memory
model takes its latency and bandwidth from the same :class:`~workloads.spec.HardwareSpec` as the
SimPy model. Values are compared bit for bit with a numpy interpreter of the instruction set
(:mod:`verification.golden`), which in turn is checked against the plain math (C = A·B with N:M
masks); cycle counts are compared exactly with :func:`archsim.model.run_program`.

Importing this package is cheap: cocotb, Verilator and amaranth are imported only by the modules
that drive a simulation (``verification.common``, ``verification.top``, ``verification.session``).
"""

from __future__ import annotations

from verification.errors import VerificationError

__all__ = ["VerificationError"]
