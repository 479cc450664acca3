"""Where a command writes its outputs: its default folder, the check that a folder (or the
folder of a single output file) can be written before any work, and the refusal to replace an
earlier run's outputs there without ``--force``.

Shared by every command that writes results (``run``, ``serve``, ``dse``, ``rtl``, ``baseline``,
``import``): each package may import ``workloads`` (DESIGN.md), not ``archsim.cli``.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from workloads.errors import ArchsimError

__all__ = ["default_out_dir", "out_dir_label", "check_out_dir", "check_out_file",
           "refuse_earlier_outputs"]


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


def out_dir_label(out: Path, default: bool = False, kind: str = "folder") -> str:
    """How an error names the output ``kind`` (folder or file): ``--out DIR`` as given, or, for
    the command's default (``default``), the path and how to choose another: no ``--out`` was
    given."""
    if default:
        return f"{out} (the default output {kind}; choose another with --out)"
    return f"--out {out}"


def check_out_dir(out: Path, default: bool = False) -> Path:
    """Fail now if ``out`` cannot become a writable folder; creates nothing. ``default``: it
    is the command's default folder (the errors say so, :func:`out_dir_label`)."""
    _check_writable(out, out, default)
    return out


def check_out_file(out: Path | str, force: bool, *, example: str,
                   what: str = "the outputs of an earlier run", default: bool = False) -> Path:
    """Fail now if ``out``, the one file a command writes, cannot be written, or exists and
    ``force`` is not given (:func:`refuse_earlier_outputs`, ``what`` says what it may be);
    creates nothing; returns it as a path. Missing folders above it are fine: the command
    creates them. ``example`` is a file name to suggest when ``out`` is a folder (or, given as
    text, ends in a separator: a Path drops it, and the file was written as ``DIR``);
    ``default``: ``out`` is the command's default file."""
    if isinstance(out, str) and out.endswith(tuple(filter(None, (os.sep, os.altsep)))):
        raise ArchsimError(f"{out_dir_label(out, default, 'file')}: names a folder; name the "
                           f"file, e.g. {Path(out) / example}")
    out = Path(out)
    _check_writable(out, out.parent, default, "file")
    if out.is_dir():
        raise ArchsimError(f"{out_dir_label(out, default, 'file')}: is a folder; name the "
                           f"file, e.g. {out / example}")
    refuse_earlier_outputs(out.parent, (out.name,), force, what)
    return out


def _check_writable(out: Path, folder: Path, default: bool = False,
                    kind: str = "folder") -> None:
    """Fail unless ``folder`` (``out`` or the folder ``out`` goes into) is, or can become, a
    folder this process can write in. Errors name ``out`` (:func:`out_dir_label`)."""
    if "\0" in str(out):  # Path.exists() says False to it; mkdir would raise a ValueError
        raise ArchsimError(f"{out_dir_label(repr(str(out)), default, kind)}: not a usable path "
                           "(it holds a NUL byte, which no file name can)")
    label = out_dir_label(out, default, kind)
    first = next(p for p in (folder, *folder.parents) if p.exists())  # "." always exists
    if not first.is_dir():  # mkdir would only say "File exists"
        what = "is a file" if first == out else f"is inside {first}, a file"
        raise ArchsimError(f"{label}: {what}; expected a folder")
    if not os.access(first, os.W_OK | os.X_OK):
        where = "" if first == out else f" ({first} is read-only)"
        raise ArchsimError(f"{label}: cannot write there{where}")
    try:  # access() trusts root everywhere (/proc, read-only mounts); a real folder proves it
        os.rmdir(tempfile.mkdtemp(prefix=".archsim-write-test-", dir=first))
    except OSError as exc:
        raise ArchsimError(f"{label}: cannot write there: {exc.strerror or exc}") from None


def refuse_earlier_outputs(out: Path, names: Sequence[str], force: bool,
                           what: str = "the outputs of an earlier run") -> None:
    """Fail if ``out`` already holds any of ``names``, unless ``force``; ``what`` says what
    they may be.

    They are an earlier run's results: a rerun with another workload, hardware or engine would
    replace them without a word (``--hardware`` does not change the default folder). Refused as
    ``archsim dse`` refuses a store that holds points, before any work.
    """
    held = [name for name in names if os.path.lexists(out / name)]  # a dangling link too
    if held and not force:
        them = "it" if len(held) == 1 else "them"
        folder = "the current folder" if out == Path(".") else out  # --out w.yaml: not "."
        raise ArchsimError(f"{folder} already holds {what} ({', '.join(held)}); pass --force "
                           f"to replace {them}, or choose another --out")
