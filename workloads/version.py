"""The installed archsim: its version, for every record that states which archsim produced it,
and the command that adds one of its optional extras (``install_hint``).

The version is declared once, statically, in ``pyproject.toml`` and read back from the package
metadata, so ``pip show archsim``, ``archsim --version`` and every ``archsim_version`` field
agree. It lives in ``workloads``, the lowest layer, so any package may import it without
importing the simulator (``archsim.__version__`` is this same string, for users).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["ARCHSIM_VERSION", "install_hint", "installed_version", "program_identity"]


def installed_version(package: str = "archsim", missing: str = "0+unknown") -> str:
    """The installed version of ``package``, or ``missing`` when it is not installed (archsim
    run from a source tree that was never installed: say so rather than guess)."""
    try:
        return version(package)
    except PackageNotFoundError:
        return missing


def program_identity(name: str) -> str:
    """Which executable ``name`` (a command on PATH or a path) resolves to, as ``path:size:mtime``
    (``-`` when there is none): build caches key on it, so that an upgraded tool at the same
    path is a new key (a version string alone misses a system install's upgrade)."""
    import shutil

    found = shutil.which(name)
    if not found:
        return "-"
    stat = Path(found).resolve().stat()
    return f"{found}:{stat.st_size}:{stat.st_mtime_ns}"


#: The version of the installed ``archsim`` distribution.
ARCHSIM_VERSION: str = installed_version()


def install_hint(extra: str) -> str:
    """The command that installs an optional extra: from a source checkout (an editable
    install, or running from the clone) ``pip install -e '<clone>[extra]'``, else from PyPI."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        return f"pip install 'archsim[{extra}]'"
    where = "." if Path.cwd().resolve() == root else str(root)
    return f"pip install -e '{where}[{extra}]'"
