"""archsim: cycle-level SimPy performance model of a SAT-like sparse DNN accelerator."""

from __future__ import annotations

__version__ = "0.1.0"

from archsim.api import simulate  # noqa: E402
from archsim.stats import SimResult  # noqa: E402

__all__ = ["simulate", "SimResult", "__version__"]
