"""The installed archsim version, for every record that states which archsim produced it.

The version is declared once, statically, in ``pyproject.toml`` and read back from the package
metadata, so ``pip show archsim``, ``archsim --version`` and every ``archsim_version`` field
agree. It lives in ``workloads``, the lowest layer, so any package may import it without
importing the simulator (``archsim.__version__`` is this same string, for users).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["ARCHSIM_VERSION"]


def _installed_version() -> str:
    try:
        return version("archsim")
    except PackageNotFoundError:
        # Running from a source tree that was never installed: say so rather than guess.
        return "0+unknown"


#: The version of the installed ``archsim`` distribution.
ARCHSIM_VERSION: str = _installed_version()
