"""Report inputs: DSE results stores (``results.db``) and run outputs (``results.json``).

Everything the plots need is read here once, into plain dataclasses, so the plotting code never
touches SQLite or JSON files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reports.store import PointRow, ResultStore, StoreError
from workloads.errors import ArchsimError

__all__ = ["ReportError", "SweepData", "RunData", "read_inputs"]


class ReportError(ArchsimError):
    """A report input is missing or is not an archsim results file."""


@dataclass
class SweepData:
    """One results store.

    Attributes
    ----------
    sweep
        The sweep description stored with the results (``Sweep.describe()``).
    rows
        Every stored point, per-GEMM rows decoded.
    """

    path: Path
    name: str
    sweep: dict[str, Any]
    rows: list[PointRow]

    @property
    def objectives(self) -> list[tuple[str, str]]:
        return [(o["metric"], o["goal"]) for o in self.sweep.get("objectives", [])]

    @property
    def axes(self) -> list[tuple[str, str]]:
        """``(override key, axis name)`` pairs."""
        return [(a["key"], a["name"]) for a in self.sweep.get("axes", [])]

    @property
    def screened(self) -> str:
        """How a two-stage search chose the stored points ("" when every point was
        simulated): the store then holds only the estimate's best (docs/dse.md)."""
        keep = (self.sweep.get("strategy", {}).get("screen") or {}).get("keep")
        return (f"screened: only the {keep:.0%} the analytic estimate ranked best were simulated"
                if keep is not None else "")

    @property
    def ok(self) -> list[PointRow]:
        return [r for r in self.rows if r.status == "ok" and r.metrics]


@dataclass
class RunData:
    """One ``results.json`` of ``archsim run`` (schema: docs/results.md)."""

    path: Path
    doc: dict[str, Any]

    @property
    def name(self) -> str:
        return self.doc["workload"].get("name", self.path.parent.name)

    @property
    def model(self) -> str:
        """The zoo model of a one-model workload, else the workload name (bar labels)."""
        ops = self.doc["workload"].get("operations", [])
        if len(ops) == 1 and ops[0].get("op") == "model":
            return ops[0]["model"]
        return self.name


def _read_run(path: Path) -> RunData:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    missing = [k for k in ("schema_version", "workload", "hardware", "summary", "layers")
               if not isinstance(doc, dict) or k not in doc]
    if missing:
        raise ReportError(f"{path}: not a results.json of 'archsim run' (missing "
                          f"{', '.join(missing)}; docs/results.md)")
    return RunData(path, doc)


def _read_sweep(path: Path) -> SweepData:
    try:
        with ResultStore(path, readonly=True) as store:
            meta = store.meta()
            rows = list(store.rows(layers=True))
    except StoreError as exc:
        raise ReportError(str(exc)) from None
    sweep = meta.get("sweep") or {}
    return SweepData(path, sweep.get("name", path.parent.name), sweep, rows)


#: What an output folder of each command holds, in the order a folder is searched.
_FOLDER_RESULTS = ("results.json", "results.db")


def resolve_inputs(paths: list[Path]) -> list[Path]:
    """The result files the inputs name: a file as it is, a folder written by ``archsim run``
    or ``archsim dse`` as the results it holds (both when it holds both)."""
    resolved = []
    for path in paths:
        if not path.is_dir():
            resolved.append(path)
            continue
        found = [path / name for name in _FOLDER_RESULTS if (path / name).is_file()]
        if not found:
            raise ReportError(f"{path}: a folder without results.json (archsim run) or "
                              f"results.db (archsim dse)")
        resolved.extend(found)
    return resolved


def read_inputs(paths: list[Path]) -> tuple[list[SweepData], list[RunData]]:
    """Read every input; ``.json`` files are run outputs, anything else a results store."""
    sweeps, runs = [], []
    for path in paths:
        if not path.is_file():
            raise ReportError(f"{path}: no such file")
        if path.suffix == ".json":
            runs.append(_read_run(path))
        else:
            sweeps.append(_read_sweep(path))
    return sweeps, runs
