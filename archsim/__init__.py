"""archsim: cycle-level SimPy performance model of a SAT-like sparse DNN accelerator."""

from __future__ import annotations

from archsim.api import simulate
from archsim.stats import SimResult
from workloads.version import ARCHSIM_VERSION as __version__

__all__ = ["simulate", "SimResult", "__version__"]
