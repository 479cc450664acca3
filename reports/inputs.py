"""Report inputs: DSE results stores (``results.db``), run outputs (``results.json``) and
serving runs (``serve.json``).

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

__all__ = ["ReportError", "SweepData", "RunData", "ServeData", "read_inputs", "resolve_inputs"]


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


@dataclass
class ServeData:
    """One ``serve.json`` of ``archsim serve`` (docs/serving.md)."""

    path: Path
    doc: dict[str, Any]

    @property
    def name(self) -> str:
        """The workload's name (files before it was recorded: the folder's name)."""
        return str(self.doc.get("workload") or self.path.parent.name or self.doc["model"])

    @property
    def clock_mhz(self) -> float | None:
        """The clock (files before it was recorded: TTFT in cycles over TTFT in ms)."""
        clock = self.doc.get("clock_mhz")
        if _number(clock) and clock > 0:
            return float(clock)
        cycles, ms = self.doc.get("ttft_cycles"), self.doc.get("ttft_ms")
        return cycles / (ms * 1e3) if _number(cycles) and _number(ms) and ms > 0 else None


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_RUN_KEYS = ("schema_version", "workload", "hardware", "summary", "layers")
_SERVE_KEYS = ("model", "batch", "prompt_tokens", "output_tokens", "ttft_cycles", "tpot_cycles",
               "steps")


def _read_json(path: Path) -> RunData | ServeData:
    """A run output or a serving run, told apart by their keys, with every field the report
    reads checked (reports.schema)."""
    from reports.schema import run_problem, serve_problem

    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    serving = isinstance(doc, dict) and "ttft_cycles" in doc
    keys, what = ((_SERVE_KEYS, "a serve.json of 'archsim serve'") if serving else
                  (_RUN_KEYS, "a results.json of 'archsim run'"))
    missing = [k for k in keys if not isinstance(doc, dict) or k not in doc]
    if missing:
        also = "" if serving else " nor a serve.json of 'archsim serve' (docs/serving.md)"
        raise ReportError(f"{path}: not {what} (missing {', '.join(missing)}; "
                          f"{'docs/serving.md' if serving else 'docs/results.md'}){also}")
    problem = (serve_problem if serving else run_problem)(doc)
    if problem:
        raise ReportError(f"{path}: {problem}")
    return ServeData(path, doc) if serving else RunData(path, doc)


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
_FOLDER_RESULTS = ("results.json", "serve.json", "results.db")


def resolve_inputs(paths: list[Path]) -> list[Path]:
    """The result files the inputs name: a file as it is, a folder written by ``archsim run``,
    ``archsim serve`` or ``archsim dse`` as the results it holds (all when it holds several)."""
    resolved = []
    for path in paths:
        if not path.is_dir():
            resolved.append(path)
            continue
        found = [path / name for name in _FOLDER_RESULTS if (path / name).is_file()]
        if not found:
            raise ReportError(f"{path}: a folder without results.json (archsim run), "
                              f"serve.json (archsim serve) or results.db (archsim dse)")
        resolved.extend(found)
    return resolved


def read_inputs(paths: list[Path]) -> tuple[list[SweepData], list[RunData], list[ServeData]]:
    """Read every input; ``.json`` files are run outputs or serving runs (by their keys),
    anything else a results store."""
    sweeps, runs, serves = [], [], []
    for path in paths:
        if not path.is_file():
            raise ReportError(f"{path}: " + ("not a regular file; expected results.json, "
                                             "serve.json or results.db" if path.exists()
                                             else "no such file"))
        if path.suffix == ".json":
            doc = _read_json(path)
            (serves if isinstance(doc, ServeData) else runs).append(doc)
        else:
            sweeps.append(_read_sweep(path))
    return sweeps, runs, serves
