"""Layers → GEMM tasks: moved to :mod:`workloads.lowering` (the workload's own arithmetic, which
``baselines`` needs too and may import only from ``workloads``). Re-exported here for the
modules that still import it from ``dataflows``; new code imports ``workloads.lowering``.
"""

from __future__ import annotations

from workloads.lowering import GemmTask, Phase, lower, lower_layer

__all__ = ["GemmTask", "Phase", "lower_layer", "lower"]
