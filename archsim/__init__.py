"""archsim: cycle-level SimPy performance model of a SAT-like sparse DNN accelerator.

``simulate``, ``SimResult`` and ``__version__`` load on first use (PEP 562): importing a
submodule, as the ``archsim`` command does for ``archsim.cli``, must not load the simulator
first (0.3 s of numpy, pydantic and the specs, during which Ctrl-C was Python's traceback).
"""

from __future__ import annotations

import importlib

__all__ = ["simulate", "SimResult", "__version__"]

#: Each public name and the module it comes from, under its name there.
_LAZY = {
    "simulate": ("archsim.api", "simulate"),
    "SimResult": ("archsim.stats", "SimResult"),
    "__version__": ("workloads.version", "ARCHSIM_VERSION"),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'archsim' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
