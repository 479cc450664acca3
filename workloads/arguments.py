"""Command-line arguments the commands share: ``example:NAME`` and argparse types.

The example workloads and sweeps ship inside the package (``workloads/examples``), so
``archsim run example:resnet18_bdwp`` and ``archsim dse example:sweep_tiny`` work after ``pip
install`` from any folder, and ``archsim examples`` lists them with the first sentence of each
file's leading comment. Every command's parser takes its argument types from here (each
package may import ``workloads``, DESIGN.md), beside :func:`path_argument`.
"""

from __future__ import annotations

import argparse
import difflib
import re
from pathlib import Path

import workloads
from workloads.errors import ArchsimError

__all__ = ["EXAMPLES_DIR", "PREFIX", "ExampleError", "examples", "resolve", "description",
           "path_argument", "at_least"]

EXAMPLES_DIR = Path(workloads.__file__).resolve().parent / "examples"
#: What marks a command-line argument as the name of a shipped example.
PREFIX = "example:"


class ExampleError(ArchsimError):
    """``example:NAME`` names no shipped example."""


def examples() -> dict[str, Path]:
    """Every shipped example by name (the file name without ``.yaml``), sorted."""
    return {p.stem: p for p in sorted(EXAMPLES_DIR.glob("*.yaml"))}


def description(path: Path, limit: int = 100) -> str:
    """The first sentence of the file's leading ``#`` comment, cut at ``limit`` characters."""
    lines: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(lines)
    match = re.match(r"(.+?\.)(\s|$)", text)
    sentence = match.group(1) if match else text
    return sentence if len(sentence) <= limit else sentence[: limit - 1].rstrip() + "…"


def resolve(ref: str) -> str:
    """``example:NAME`` → the shipped file's path; anything else is returned unchanged.

    Raises
    ------
    ExampleError
        When ``NAME`` is not a shipped example (with a did-you-mean).
    """
    if not ref.startswith(PREFIX):
        return ref
    name = ref[len(PREFIX):].removesuffix(".yaml")
    found = examples()
    if name in found:
        return str(found[name])
    hint = difflib.get_close_matches(name, list(found), n=1)
    close = f"did you mean {PREFIX}{hint[0]}? " if hint else ""
    raise ExampleError(f"{ref}: no shipped example of that name; {close}"
                       f"'archsim examples' lists them")


def path_argument(text: str) -> str:
    """argparse ``type=`` for a YAML argument that may name a shipped example."""
    try:
        return resolve(text)
    except ExampleError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def at_least(minimum: int):
    """argparse ``type=`` for an integer of at least ``minimum``: a count refused while the
    arguments are parsed, so that no file or folder is touched first."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, "
                                             f"got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"  # argparse names the type in some messages
    return parse
