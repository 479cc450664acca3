"""Simulated accelerator vs measured baseline, op by op (``archsim run W.yaml --baseline B``).

The baseline must have been measured for the same workload: same name, same mode, and the same
ops (GEMM names, shapes, copies, repeats and N:M patterns; SpGEMM names, shapes and nonzero
counts), which :func:`load_baseline_for` checks *before* the simulation runs so that a mismatch
costs nothing. Simulated seconds are an op's cycles over the clock; measured seconds are the
baseline's median per call times ``repeat``. ``speedup`` is measured / simulated: above 1 the
simulated accelerator is faster than the measured device, below 1 slower.

Attention layers pair with the simulator's attention rows by name, and SpGEMM ops with its
SpGEMM results (the fastest dataflow, which is what the simulated total counts). Rows present on
one side only are kept with ``null`` for the other: weight pre-generation segments (the
accelerator compresses N:M weights once per iteration; torch has no counterpart) and any op the
simulator does not report. The totals give both the whole of each side and the rows both sides
have (``*_matched_s``).

No torch here: reading a baseline must stay cheap.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from baselines.errors import BaselineError
from baselines.measure import (  # torch is imported only inside measure()
    AttentionItem,
    SpGEMMItem,
    workload_attention,
    workload_spgemms,
    workload_tasks,
)
from baselines.schema import BaselineDoc, OpRow, read_baseline
from workloads.spec import WorkloadSpec

__all__ = ["load_baseline_for", "check_matches", "compare", "print_comparison"]

_GEMM_PHASES = ("inference", "ff", "bp", "wg")


def _keyed(names: Iterable[str]) -> list[tuple[str, int]]:
    """(name, occurrence) per item, so that repeated GEMM names still pair up in order."""
    seen: dict[str, int] = {}
    keys = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        keys.append((name, seen[name]))
    return keys


def _signature(op) -> tuple:
    """What must agree between the workload and the baseline for one op (a workload item or a
    baseline row)."""
    if isinstance(op, SpGEMMItem) or isinstance(op, OpRow) and op.phase == "spgemm":
        return ("spgemm", op.m, op.k, op.n, op.nnz_a, op.nnz_b)
    if isinstance(op, AttentionItem):
        a = op.op
        return ("attention", a.queries, a.head_dim, a.kv_len, a.batch * a.heads, op.repeat,
                a.pattern.kind, a.causal, a.groups)
    if isinstance(op, OpRow) and op.attention is not None:
        at = op.attention
        return ("attention", op.m, op.k, op.n, op.copies, op.repeat, at.pattern, at.causal,
                at.kv_heads)
    nm = op.nm if isinstance(op, OpRow) else (f"{op.nm[0]}:{op.nm[1]}" if op.nm else None)
    return ("gemm", op.m, op.k, op.n, op.copies, op.repeat, nm)


def _describe(signature: tuple) -> str:
    kind, m, k, n, *rest = signature
    if kind == "spgemm":
        return f"SpGEMM {m}x{k}x{n} with nnz(A)={rest[0]}, nnz(B)={rest[1]}"
    if kind == "attention":
        copies, repeat, pattern, causal, kv_heads = rest
        repeated = f", repeated {repeat}x" if repeat > 1 else ""
        return (f"attention of {m} queries over {n} keys (head_dim {k}, {copies} batch x heads, "
                f"{kv_heads} K/V heads{repeated}), {pattern}{' causal' if causal else ''}")
    copies, repeat, nm = rest
    copies_text = f" x{copies} copies" if copies > 1 else ""
    repeat_text = f", repeated {repeat}x" if repeat > 1 else ""
    return f"{m}x{k}x{n}{copies_text}{repeat_text}, {nm or 'dense'}"


def _expected(workload: WorkloadSpec) -> dict[tuple[str, int], tuple]:
    """(name, occurrence) → signature of every op the baseline must hold for ``workload``."""
    ops = [*workload_tasks(workload), *workload_attention(workload), *workload_spgemms(workload)]
    return {key: _signature(op) for key, op in zip(_keyed(op.name for op in ops), ops)}


def check_matches(doc: BaselineDoc, workload: WorkloadSpec, path: str | Path) -> None:
    """Raise if ``doc`` was not measured for ``workload`` as it is now.

    Raises
    ------
    BaselineError
        Different workload name or mode, an op missing on either side, or an op whose shape,
        copies, repeat count, N:M pattern or nonzero counts differ (for example after ``--set``
        on one command only). The message names the first difference.
    """
    if doc.workload.name != workload.name:
        raise BaselineError(
            f"{path}: baseline was measured for workload {doc.workload.name!r}, not "
            f"{workload.name!r}"
        )
    if doc.workload.mode != workload.mode:
        raise BaselineError(
            f"{path}: baseline was measured for {doc.workload.mode}, but workload "
            f"{workload.name!r} runs {workload.mode}; re-measure it with 'archsim baseline'"
        )
    expected = _expected(workload)
    ops = dict(zip(_keyed(op.name for op in doc.ops), doc.ops))
    missing = [key for key in expected if key not in ops]
    if missing:
        raise BaselineError(
            f"{path}: the baseline has no op {missing[0][0]!r} of workload {workload.name!r} "
            f"({len(missing)} missing); the workload changed since it was measured"
        )
    extra = [key for key in ops if key not in expected]
    if extra:
        raise BaselineError(
            f"{path}: the baseline has op {extra[0][0]!r}, which workload {workload.name!r} "
            f"does not have ({len(extra)} extra); the workload changed since it was measured"
        )
    for key, want in expected.items():
        got = _signature(ops[key])
        if got != want:
            raise BaselineError(
                f"{path}: op {key[0]!r} is {_describe(want)} in the workload but "
                f"{_describe(got)} in the baseline; measure the workload as simulated (pass the "
                f"same --set options to 'archsim baseline')"
            )


def load_baseline_for(path: str | Path, workload: WorkloadSpec) -> BaselineDoc:
    """Read a baseline file and check that it belongs to ``workload``."""
    doc = read_baseline(path)
    check_matches(doc, workload, path)
    return doc


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def _row(rec, op: OpRow | None, clock_hz: float) -> dict:
    """One comparison row from a simulated record (or None) and a baseline row (or None)."""
    simulated = rec.cycles / clock_hz if rec is not None else None
    measured = op.total_s if op is not None else None
    src = rec if rec is not None else op
    return {
        "name": src.name, "phase": src.phase, "m": src.m, "k": src.k, "n": src.n,
        "sparsity": rec.sparsity if rec is not None else None,
        "cycles": rec.cycles if rec is not None else None, "simulated_s": simulated,
        "method": op.method if op is not None else None, "measured_s": measured,
        "speedup": _ratio(measured, simulated),
    }


@dataclass(frozen=True, slots=True)
class _SpGEMMRecord:
    """A simulated SpGEMM op in the shape of a layer record: its fastest dataflow counts."""

    name: str
    phase: str
    m: int
    k: int
    n: int
    sparsity: str
    cycles: int


def _spgemm_records(result, ops: dict) -> list[_SpGEMMRecord]:
    records = []
    for sp in getattr(result, "spgemm", ()):  # SimResult gained SpGEMM ops later than layers
        op = next((o for (name, _), o in ops.items() if name == sp.name), None)
        m, k, n = (op.m, op.k, op.n) if op is not None else (0, 0, 0)
        best = sp.best
        records.append(_SpGEMMRecord(sp.name, "spgemm", m, k, n,
                                     f"spgemm: {best.dataflow} (fastest dataflow)", best.cycles))
    return records


def compare(doc: BaselineDoc, workload: WorkloadSpec, result, path: str | Path) -> dict:
    """The ``baseline_comparison`` object of results.json (schema: docs/results.md).

    Parameters
    ----------
    doc
        A baseline already checked against ``workload`` (:func:`load_baseline_for`).
    result
        The workload's :class:`archsim.stats.SimResult`.
    path
        The baseline file, recorded for provenance.
    """
    clock_hz = workload.hardware.clock_mhz * 1e6
    ops = dict(zip(_keyed(op.name for op in doc.ops), doc.ops))
    rows = []
    simulated = [*result.layers, *_spgemm_records(result, ops)]
    for key, rec in zip(_keyed(rec.name for rec in simulated), simulated):
        op = ops.pop(key, None)
        if op is None and rec.phase in _GEMM_PHASES:
            raise BaselineError(f"{path}: the baseline has no op {rec.name!r}")
        rows.append(_row(rec, op, clock_hz))
    rows.extend(_row(None, op, clock_hz) for op in ops.values())  # measured only (SpGEMM)
    both = [r for r in rows if r["simulated_s"] is not None and r["measured_s"] is not None]
    simulated_matched = sum(r["simulated_s"] for r in both)
    measured_matched = sum(r["measured_s"] for r in both)
    prov = doc.provenance
    return {
        "baseline_file": str(path),
        "device": prov.device,
        "device_name": prov.device_name,
        "dtype": prov.dtype,
        "threads": prov.threads,
        "torch_version": prov.torch_version,
        "date_utc": prov.date_utc,
        "clock_mhz": workload.hardware.clock_mhz,
        "totals": {
            "simulated_s": result.seconds,
            "measured_s": doc.totals.seconds,
            "speedup": _ratio(doc.totals.seconds, result.seconds),
            "simulated_matched_s": simulated_matched,
            "measured_matched_s": measured_matched,
            "matched_speedup": _ratio(measured_matched, simulated_matched),
        },
        "ops": rows,
    }


def _fmt_speedup(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}x"


def _seconds(x: float | None) -> str:
    from baselines.cli import format_seconds

    return "-" if x is None else format_seconds(x)


def print_comparison(comparison: dict, rows: int) -> None:
    """Print the comparison as a table: the ``rows`` ops that take longest, then the totals."""
    from rich.table import Table

    from baselines.cli import console

    ops = comparison["ops"]
    shown = ops if len(ops) <= rows else sorted(
        ops, key=lambda r: max(r["simulated_s"] or 0.0, r["measured_s"] or 0.0),
        reverse=True)[:rows]
    title = (f"simulated accelerator ({comparison['clock_mhz']:g} MHz) vs measured "
             f"{comparison['device_name']} ({comparison['device']}, {comparison['dtype']})")
    if len(shown) < len(ops):
        title += f"; top {len(shown)} of {len(ops)} by time"
    table = Table(title=title)
    for col in ("name", "phase", "sparsity", "baseline method", "simulated", "measured",
                "speedup"):
        left = col in ("name", "phase", "sparsity", "baseline method")
        table.add_column(col, justify="left" if left else "right")
    for r in shown:
        table.add_row(r["name"], r["phase"], r["sparsity"] or "-", r["method"] or "-",
                      _seconds(r["simulated_s"]), _seconds(r["measured_s"]),
                      _fmt_speedup(r["speedup"]))
    t = comparison["totals"]
    table.add_section()
    table.add_row("total", "", "", "", _seconds(t["simulated_s"]), _seconds(t["measured_s"]),
                  _fmt_speedup(t["speedup"]))
    partial = any(r["simulated_s"] is None or r["measured_s"] is None for r in ops)
    if partial:
        table.add_row("total, ops on both sides", "", "", "", _seconds(t["simulated_matched_s"]),
                      _seconds(t["measured_matched_s"]), _fmt_speedup(t["matched_speedup"]))
    out = console()
    out.print(table)
    out.print("speedup = measured / simulated (above 1: the accelerator is faster); '-': the op "
              "exists on one side only")
