"""Where ``archsim import`` writes: the ``hardware:`` entry, and the write that happens only once
the generated workload loads (``--out`` is checked first, by ``workloads.outputs``).

A failed import never touches what the user had: the workload goes to a trial file of its own
beside ``--out`` (so that a relative hardware path resolves as it will in ``--out``), is loaded
there by ``workloads.load`` like any workload, and only then replaces ``--out``. An error in
the generated text is reported against the command-line argument that produced it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from workloads.importers.graph import ModelImportError

__all__ = ["hardware_entry", "write_checked"]


def hardware_entry(hardware: str, out: Path) -> str:
    """The workload's ``hardware:`` for ``--hardware``. A preset name stays as given; a file,
    which the user named from the current folder, becomes a path from ``out``'s folder, which
    is where the loader resolves a workload's hardware path."""
    path = Path(hardware)
    if not path.is_file():
        return hardware
    rel = os.path.relpath(path.resolve(), out.parent.resolve())
    # Without a suffix or a slash the loader would read the entry as a preset name.
    return rel if rel.endswith((".yaml", ".yml")) or "/" in rel else f"./{rel}"


def write_checked(out: Path, text: str, blame: dict[str, str]) -> None:
    """Write ``text`` to ``out`` once it loads as a workload; ``blame`` maps a generated
    field (``hardware``, ``sparsity``, ``mode``, ``operations``) to the argument behind it
    (``--hardware nohw``). On any failure ``out``, the folders above it and every other file
    stay as they were."""
    created = [p for p in out.parents if not p.exists()]  # innermost first
    trial = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        trial = _trial_file(out, text)
        _load(trial, text, blame, out)
        os.replace(trial, out)
        trial, created = None, []
    except OSError as exc:
        raise ModelImportError(f"--out {out}: cannot write: {exc.strerror or exc}") from None
    finally:
        if trial is not None:
            trial.unlink(missing_ok=True)
        for folder in created:
            try:
                folder.rmdir()
            except OSError:  # not empty: someone else's now, keep it and its parents
                break


def _trial_file(out: Path, text: str) -> Path:
    """A new file beside ``out`` holding ``text``; O_EXCL so that no file the user has (an
    earlier ``.w.yaml.importing`` of their own included) is ever overwritten."""
    for attempt in range(100):
        trial = out.with_name(f".{out.name}.{os.getpid()}.{attempt}.importing")
        try:
            fd = os.open(trial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        return trial
    raise ModelImportError(f"--out {out}: no free name for a trial file beside it")


def _load(trial: Path, text: str, blame: dict[str, str], out: Path) -> None:
    from workloads.errors import ArchsimError
    from workloads.load import load_workload

    try:
        load_workload(trial)
    except ArchsimError as exc:
        raise ModelImportError(_blamed(str(exc), trial, text, blame, out)) from None


def _blamed(message: str, trial: Path, text: str, blame: dict[str, str], out: Path) -> str:
    """``message`` about line L of the generated text, told against the argument that wrote
    that line; a line no argument wrote is the importer's and keeps the generated file's
    place (``w.yaml (as generated; not written):12``)."""
    found = re.match(rf"{re.escape(str(trial))}:(\d+): (.*)", message)
    generated = f"{out} (as generated; not written)"
    if found is None:
        return message.replace(str(trial), generated)
    line, rest = int(found[1]), found[2]
    written = text.splitlines()[line - 1] if line <= text.count("\n") else ""
    field = "operations" if written.startswith(" ") else written.split(":", 1)[0]
    argument = blame.get(field)
    if argument is None or (field == "operations" and ".sparsity" not in rest.split(":")[0]):
        return f"{generated}:{line}: {rest}"
    rest = rest.removeprefix(f"{field}: ")
    return f"{argument}: {rest}"
