"""The ``archsim`` command line: a thin shell over the API.

Every command is also a function call: ``main(["run", "w.yaml"]) -> exit code``. Any
``ArchsimError`` becomes one line on stderr and exit code 2, never a traceback. Heavy
dependencies (amaranth, cocotb, torch, dask) are imported inside the command that needs them.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from workloads.errors import ArchsimError

__all__ = ["main", "write_run_outputs", "RESULTS_SCHEMA_VERSION"]

#: Bumped whenever a field of results.json changes meaning (docs/results.md).
RESULTS_SCHEMA_VERSION = 1


def _parser() -> argparse.ArgumentParser:
    from archsim import __version__

    parser = argparse.ArgumentParser(
        prog="archsim", description="Simulate sparse DNN workloads on a SAT-like accelerator."
    )
    parser.add_argument("--version", action="version", version=f"archsim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="simulate a workload and report cycles, traffic and energy")
    run.add_argument("workload", help="workload YAML file")
    run.add_argument("--hardware", help="hardware YAML file or preset name (overrides the file's)")
    run.add_argument("--out", help="output directory (default: out/<workload name>)")
    run.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a field before validation, e.g. hardware.array.rows=16 (repeatable)",
    )
    run.add_argument(
        "--compare-dense", action="store_true",
        help="also simulate the workload with all sparsity removed and report the speedup",
    )
    run.add_argument(
        "--baseline", metavar="B.json",
        help="compare with a measured baseline from 'archsim baseline' (docs/baselines.md)",
    )
    run.add_argument("--layers", type=int, default=15, help="rows of the per-layer table to print")
    run.add_argument("--quiet", action="store_true", help="print only the output paths")
    run.set_defaults(handler=_cmd_run)
    for module in _COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


#: Modules that add subcommands: each has ``register(subparsers)`` and imports its heavy
#: dependencies (amaranth, cocotb, torch, dask) only inside the handler it registers.
_COMMAND_MODULES = tuple(
    m for m in ("rtl.cli", "verification.cli", "baselines.cli", "reports.cli")
    if importlib.util.find_spec(m.split(".")[0]) and importlib.util.find_spec(m)
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``archsim`` console script; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ArchsimError as exc:
        print(f"archsim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("archsim: interrupted", file=sys.stderr)
        return 130


# --------------------------------------------------------------------------------------------
# archsim run
# --------------------------------------------------------------------------------------------


def _dense_variant(workload):
    from workloads.spec import DenseSparsity

    dense = DenseSparsity()
    ops = tuple(
        op.model_copy(update={"sparsity": None}) if "sparsity" in type(op).model_fields else op
        for op in workload.operations
    )
    return workload.model_copy(update={"sparsity": dense, "operations": ops})


def _simulate_with_progress(workload, quiet: bool):
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from archsim.api import simulate
    from dataflows.scheduler import schedule

    sched = schedule(workload)
    if quiet or len(sched.segments) < 50:
        return simulate(sched)
    columns = (TextColumn("simulating {task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} segments"), TimeRemainingColumn())
    with Progress(*columns, transient=True, console=_console(stderr=True)) as bar:
        job = bar.add_task(workload.name, total=len(sched.segments))
        return simulate(sched, progress=lambda done, total: bar.update(job, completed=done))


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def amdahl_bound(result) -> float:
    """Speedup over dense if every GEMM kept its dense efficiency: dense MACs / executed MACs."""
    return result.macs_dense_equivalent / max(result.macs_executed, 1)


def prepare_out_dir(out: Path) -> Path:
    """Create the output directory up front, so a bad ``--out`` fails before a long simulation."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".archsim-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ArchsimError(f"--out {out}: cannot write there: {exc.strerror or exc}") from None
    return out


def _write_atomically(path: Path, write) -> None:
    # Write to a temporary sibling, then rename: an interrupted run never leaves half a file.
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        write(fh)
    tmp.replace(path)


def write_run_outputs(out: Path, workload, result, comparison: dict | None,
                      baseline_comparison: dict | None = None) -> tuple[Path, Path]:
    """Write ``results.json`` and ``layers.csv`` (schema: docs/results.md)."""
    from archsim import __version__

    prepare_out_dir(out)
    doc = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "archsim_version": __version__,
        "workload": workload.model_dump(mode="json", exclude={"hardware"}),
        "hardware": workload.hardware.model_dump(mode="json"),
        "summary": result.summary(),
        "amdahl_bound": amdahl_bound(result),
        "comparison": comparison,
        "baseline_comparison": baseline_comparison,
        "layers": [rec.as_dict() for rec in result.layers],
        "spgemm": [op.as_dict() for op in result.spgemm],
        "attention": [rec.as_dict() for rec in result.attention],
    }
    results = out / "results.json"
    _write_atomically(results, lambda fh: fh.write(json.dumps(doc, indent=2) + "\n"))
    layers = out / "layers.csv"

    def write_csv(fh) -> None:
        fields = list(result.layers[0].as_dict()) if result.layers else ["name"]
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rec.as_dict() for rec in result.layers)

    _write_atomically(layers, write_csv)
    if result.attention:  # sparsity vs speedup per attention layer, for plots (docs/attention.md)
        from archsim.attention import write_csv as write_attention

        _write_atomically(out / "attention.csv", lambda fh: write_attention(fh, result.attention))
    return results, layers


def _fmt(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.3g}"


def _print_summary(workload, result, comparison: dict | None, layer_rows: int) -> None:
    from rich.table import Table

    console = _console()
    table = Table(title=f"{workload.name} on {workload.hardware.name} ({workload.mode})", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("total cycles", f"{result.total_cycles:,}"),
        ("time", f"{result.seconds * 1e3:.3f} ms at {workload.hardware.clock_mhz:g} MHz"),
        ("MACs executed", _fmt(result.macs_executed)),
        ("MACs dense-equivalent", _fmt(result.macs_dense_equivalent)),
        ("PE utilization", f"{result.utilization:.1%} (effective {result.effective_utilization:.1%})"),
        ("DRAM read / written", f"{_fmt(result.dram_read_bytes)}B / {_fmt(result.dram_write_bytes)}B"),
        ("energy", f"{result.energy_pj['total'] / 1e9:.4f} mJ"),
        ("busy cycles dma / pe / vector", " / ".join(f"{v:,}" for v in result.unit_busy_cycles.values())),
        ("ideal speedup bound (dense MACs / executed)", f"{amdahl_bound(result):.3f}x"),
        ("instructions (simulated)", f"{result.instructions:,} ({result.instructions_simulated:,})"),
    ]
    if comparison:
        rows.append(("dense baseline cycles", f"{comparison['dense_cycles']:,}"))
        rows.append(("speedup over dense", f"{comparison['speedup']:.3f}x (bound {comparison['amdahl_bound']:.3f}x)"))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if layer_rows > 0 and result.layers:
        top = sorted(result.layers, key=lambda r: r.cycles, reverse=True)[:layer_rows]
        lt = Table(title=f"top {len(top)} of {len(result.layers)} GEMMs by cycles")
        for col in ("name", "phase", "m x k x n", "sparsity", "cycles", "share", "util"):
            # Fold long layer names instead of cutting them: the name is what a user looks for.
            lt.add_column(col, justify="left" if col in ("name", "phase", "sparsity") else "right",
                          overflow="fold", no_wrap=col != "name")
        pes = workload.hardware.array.rows * workload.hardware.array.cols
        for r in top:
            util = r.macs_executed / (r.cycles * pes) if r.cycles else 0.0
            lt.add_row(r.name, r.phase, f"{r.m}x{r.k}x{r.n}", r.sparsity, f"{r.cycles:,}",
                       f"{r.cycles / result.total_cycles:.1%}", f"{util:.0%}")
        console.print(lt)


def _print_spgemm(result) -> None:
    """One table per SpGEMM op: a column per dataflow, side by side, the winner marked."""
    from rich.table import Table

    console = _console()
    for op in result.spgemm:
        stats = op.matrix_stats
        operands = f"{op.a['name']} · {op.b['name']}" if op.b else f"{op.a['name']} squared"
        table = Table(title=f"SpGEMM {op.name}: {operands}\n{stats['n_rows']:,} rows, "
                            f"{stats['nnz']:,} nnz, {stats['multiplies']:,} multiplies, "
                            f"nnz(C) {stats['nnz_c']:,}")
        table.add_column("")
        winner = op.best.dataflow
        for r in op.dataflows:
            table.add_column(f"{r.dataflow}{' (winner)' if r.dataflow == winner else ''}",
                             justify="right")
        rows = [
            ("cycles", lambda r: f"{r.cycles:,}"),
            *((f"DRAM {k}", lambda r, k=k: f"{_fmt(r.dram_bytes[k])}B")
              for k in ("a", "b", "c", "partial")),
            ("multiplier util.", lambda r: f"{r.multiplier_utilization:.1%}"),
            ("hash collisions", lambda r: f"{r.hash_collisions:,}"),
            ("merge stalls", lambda r: f"{r.merge_stall_cycles:,}"),
            ("functional check", lambda r: r.functional_check),
        ]
        for name, cell in rows:
            table.add_row(name, *(cell(r) for r in op.dataflows))
        console.print(table)


def _cmd_run(args: argparse.Namespace) -> int:
    from workloads.load import load_workload

    workload = load_workload(args.workload, hardware=args.hardware, overrides=args.overrides)
    out = prepare_out_dir(Path(args.out) if args.out else Path("out") / workload.name)
    baseline = None
    if args.baseline:  # read and match it before simulating, so a bad file costs nothing
        from baselines.compare import load_baseline_for

        baseline = load_baseline_for(args.baseline, workload)
    result = _simulate_with_progress(workload, args.quiet)
    comparison = None
    if args.compare_dense:
        dense = _simulate_with_progress(_dense_variant(workload), args.quiet)
        comparison = {
            "dense_cycles": dense.total_cycles,
            "speedup": dense.total_cycles / result.total_cycles,
            "amdahl_bound": amdahl_bound(result),
        }
    from archsim.api import with_spgemm

    result = with_spgemm(result, workload)  # SpGEMM ops run on their engine, after the GEMMs
    baseline_comparison = None
    if baseline is not None:
        from baselines.compare import compare

        baseline_comparison = compare(baseline, workload, result, args.baseline)
    results, layers = write_run_outputs(out, workload, result, comparison, baseline_comparison)
    if not args.quiet:
        _print_summary(workload, result, comparison, args.layers)
        _print_spgemm(result)
        if result.attention:
            from archsim.attention import attention_table

            _console().print(attention_table(result.attention))
        if baseline_comparison is not None:
            from baselines.compare import print_comparison

            print_comparison(baseline_comparison, args.layers)
    print(f"wrote {results} and {layers}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
