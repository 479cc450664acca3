"""Where a command writes its outputs: its default folder, and its refusal to replace the
outputs of an earlier run there without ``--force``.

Shared by every command that writes a folder of results (``run``, ``serve``, ``dse``, ``rtl``):
each package may import ``workloads`` (DESIGN.md), not ``archsim.cli``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

from workloads.errors import ArchsimError

__all__ = ["default_out_dir", "refuse_earlier_outputs"]


def default_out_dir(name: str, overrides: Sequence[str] = (), parent: Path = Path("out")) -> Path:
    """``out/<name>`` (or ``parent/<name>``), the name reduced to one safe folder level (it
    never leaves ``parent``).

    ``--set`` overrides join the name (``out/<name>+<key>_<value>…``): a run with other
    settings, another model for one, must not overwrite the plain run's folder.
    """
    from workloads.load import dotted_override  # the loader imports yaml; only callers pay

    label = name + "".join(f"+{dotted_override(item)}" for item in overrides)
    safe = re.sub(r"[^\w.+-]+", "_", label).strip("._") or "workload"
    if len(safe) > 100:  # keep it short, and distinct: a digest of everything it stands for
        safe = safe[:88] + "-" + hashlib.sha256(label.encode()).hexdigest()[:10]
    return parent / safe


def refuse_earlier_outputs(out: Path, names: Sequence[str], force: bool) -> None:
    """Fail if ``out`` already holds any of ``names``, unless ``force``.

    They are an earlier run's results: a rerun with another workload, hardware or engine would
    replace them without a word (``--hardware`` does not change the default folder). Refused as
    ``archsim dse`` refuses a store that holds points, before any work.
    """
    held = [name for name in names if (out / name).exists()]
    if held and not force:
        raise ArchsimError(f"{out} already holds the outputs of an earlier run "
                           f"({', '.join(held)}); pass --force to replace them, or choose "
                           f"another --out")
