"""``archsim dse`` and ``archsim report``: thin shells over reports.dse and reports.html.

Registered by ``archsim.cli`` through :func:`register`. Dask, Optuna and matplotlib are imported
inside the handlers that need them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

__all__ = ["register", "eta_seconds"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``dse`` and ``report`` subcommands to the ``archsim`` parser."""
    from workloads.arguments import at_least, path_argument

    dse = sub.add_parser(
        "dse", help="explore a design space: evaluate a sweep into a SQLite results store",
        description="Evaluate the design points of a sweep YAML (docs/dse.md) into "
                    "OUT/results.db, with a progress bar, then print the best designs. One "
                    "sweep at a time writes a store (it is locked). Ctrl-C stops at once and "
                    "keeps every finished point; --resume continues.",
    )
    dse.add_argument("sweep", type=path_argument,
                     help="sweep YAML file, or example:NAME for a shipped sweep "
                          "('archsim examples' lists them)")
    dse.add_argument("--workers", type=at_least(1), metavar="N",
                     help="local worker processes (default: the CPUs available)")
    dse.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                     help="evaluate on a Dask distributed cluster instead of local processes")
    dse.add_argument("--resume", action="store_true",
                     help="continue the sweep stored in --out, skipping finished points")
    dse.add_argument("--out", help="output directory (default: out/<sweep name>)")
    dse.add_argument("--chunk-size", type=at_least(1), metavar="N",
                     help="points per executor task (default: automatic)")
    dse.add_argument("--top", type=at_least(1), default=10, help="best designs to print (default: 10)")
    dse.add_argument("--quiet", action="store_true", help="no progress bar and no summary table")
    dse.set_defaults(handler=_cmd_dse)

    report = sub.add_parser(
        "report", help="plots and a self-contained HTML report from sweeps and runs",
        description="Build OUT/report.html (images embedded), PNG and SVG plots and CSV tables "
                    "from results stores (results.db), run outputs (results.json) and/or serving "
                    "runs (serve.json).",
    )
    report.add_argument("inputs", nargs="+", metavar="RESULTS",
                        help="results.db of archsim dse, results.json of archsim run, "
                             "serve.json of archsim serve, or the folder one of them wrote")
    report.add_argument("--out", help="output directory (default: report/ next to the first input)")
    report.add_argument("--title", help="report title")
    report.set_defaults(handler=_cmd_report)


def _cmd_dse(args: argparse.Namespace) -> int:
    from rich.console import Console

    from reports.dse import run_sweep
    from reports.sweep import load_sweep

    sweep = load_sweep(args.sweep)
    from archsim.cli import default_out_dir  # the same safe folder name as `archsim run`

    out = Path(args.out) if args.out else default_out_dir(sweep.name)
    console = Console(stderr=True, highlight=False)
    try:
        if args.quiet:
            outcome = run_sweep(sweep, out, workers=args.workers, scheduler=args.scheduler,
                                resume=args.resume, chunk_size=args.chunk_size)
        else:
            outcome = _with_progress(console, sweep, out, args)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(_interrupted(args, out)) from None
    _check_outcome(console, outcome)
    if not args.quiet:
        _print_summary(sweep, outcome, args.top)
    print(f"results: {outcome.store_path}")
    print(f"report:  archsim report {outcome.store_path} --out {out / 'report'}")
    return 0


def _interrupted(args: argparse.Namespace, out: Path) -> str:
    """What a Ctrl-C of ``dse`` leaves: the stored points and the command that continues."""
    import shlex

    from reports.dse import RESULTS_FILE
    from reports.store import ResultStore, StoreError

    db = out / RESULTS_FILE
    try:
        with ResultStore(db, readonly=True) as store:
            held = store.count()
    except StoreError:
        return "nothing was stored"
    again = shlex.join(["archsim", "dse", args.sweep, "--out", str(out), "--resume"])
    kept = f"{_counted(held, 'finished point')} {'is' if held == 1 else 'are'} kept"
    return f"{kept} in {db}; continue with: {again}"


def _check_outcome(console, outcome) -> None:
    """Print why points failed, grouped by reason; raise when not one point succeeded."""
    from reports.dse import SweepError, reason_groups
    from reports.store import ResultStore

    with ResultStore(outcome.store_path, readonly=True) as store:
        groups = reason_groups(store.rows())
        ok = store.count("ok")
    shown = [g for g in groups if g[0] != "infeasible" or not ok]
    if shown:
        console.print("points that did not succeed, by reason:")
        for status, count, message in shown[:10]:
            alike = f" ({count - 1} more like it)" if count > 1 else ""
            console.print(f"  {count:>6,} {status}: {message}{alike}", soft_wrap=True,
                          markup=False)
        if len(shown) > 10:
            console.print(f"  … and {len(shown) - 10} more reasons (archsim report lists them)")
    if not ok:
        counts = ", ".join(f"{n} {s}" for s, n in _status_counts(groups).items())
        raise SweepError(f"no design point of the sweep succeeded ({counts or 'no points'}); "
                         f"the reasons are listed above")


def _status_counts(groups) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status, count, _ in groups:
        counts[status] = counts.get(status, 0) + count
    return counts


def eta_seconds(done: int, total: int, elapsed_s: float) -> float | None:
    """Seconds left at the sweep's mean pace so far, or None before the first point.

    The pace is measured from the start of the sweep (worker start-up included) over every
    resolved point. rich's own estimate averaged only the last 30 s of updates, and points
    arrive a chunk at a time, so a burst made it promise seconds for a sweep of minutes.
    """
    if done <= 0 or elapsed_s <= 0:
        return None
    return max(total - done, 0) * elapsed_s / done


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _with_progress(console, sweep, out: Path, args: argparse.Namespace):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from reports.dse import run_sweep

    columns = (
        TextColumn("[bold]dse[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[elapsed]}"),
        TextColumn("ETA {task.fields[eta]}"),
    )
    # Started by the first point, so that a refused store or a bad base workload prints its
    # one-line error without an empty bar above it.
    bar = Progress(*columns, console=console, transient=False)
    job = bar.add_task(sweep.name, total=None, rate="", elapsed="", eta="")
    started = time.monotonic()

    def update(done: int, total: int) -> None:
        if not bar.live.is_started:
            screen = getattr(sweep.spec.strategy, "screen", None)
            stages = (f" (estimates first, then at most the best {screen.keep:.0%} simulated)"
                      if screen else "")
            console.print(f"sweep {sweep.name}: {sweep.size:,} points in the space, strategy "
                          f"{sweep.spec.strategy.kind}; {total:,} to resolve{stages}; results "
                          f"in {out}", soft_wrap=True)
            bar.start()
        elapsed = time.monotonic() - started
        rate = f"{done / elapsed:.2f} points/s" if elapsed > 0 else ""
        bar.update(job, completed=done, total=total, rate=rate, elapsed=_clock(elapsed),
                   eta=_clock(eta_seconds(done, total, elapsed)))

    try:
        return run_sweep(sweep, out, workers=args.workers, scheduler=args.scheduler,
                         resume=args.resume, chunk_size=args.chunk_size, progress=update)
    finally:
        if bar.live.is_started:  # stopping a bar never started prints an empty line
            bar.stop()


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _print_summary(sweep, outcome, top: int) -> None:
    from rich.console import Console
    from rich.table import Table

    from reports.dse import best_designs
    from reports.store import ResultStore

    console = Console(highlight=False)
    with ResultStore(outcome.store_path, readonly=True) as store:
        rows = list(store.rows())
    counts = {s: sum(r.status == s for r in rows) for s in ("ok", "infeasible", "invalid", "error")}
    best = best_designs(rows, list(sweep.objectives))
    objectives = ", ".join(f"{g} {m}" for m, g in sweep.objectives)
    # A line of its own, not a table title: rich wraps titles to the table's width.
    console.print(f"best designs: Pareto front on {objectives} ({len(best)} of {counts['ok']} "
                  f"ok points; top {min(top, len(best))})", soft_wrap=True)
    table = Table()
    names = [(axis.key, axis.label) for axis, _ in sweep.axes]
    for _, label in names:
        table.add_column(label, justify="right")
    for metric, _ in sweep.objectives:
        table.add_column(metric, justify="right", style="bold")
    for row in best[:top]:
        table.add_row(*(_fmt(row.params.get(key)) for key, _ in names),
                      *(_fmt(row.metrics[m]) for m, _ in sweep.objectives))
    console.print(table)
    line = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    console.print(f"store: {_counted(len(rows), 'point')} ({line}); this run: {outcome.simulated:,} "
                  f"simulated, {outcome.skipped:,} already stored, on {outcome.backend}",
                  soft_wrap=True)
    rss = f"; peak worker memory {outcome.worker_rss_mib:.0f} MiB" if outcome.worker_rss_mib else ""
    restarts = (f"; a lost worker process was replaced {_counted(outcome.pool_restarts, 'time')}"
                if outcome.pool_restarts else "")
    console.print(f"wall time {outcome.wall_s:.1f} s ({outcome.simulate_s:.1f} s of simulation on "
                  f"the workers), {outcome.points_per_s:.2f} points/s{rss}{restarts}",
                  soft_wrap=True)
    if outcome.estimated:
        console.print(f"two-stage search: {outcome.estimated:,} points estimated analytically "
                      f"({outcome.estimate_cpu_s:.1f} CPU-s on the workers); the "
                      f"{outcome.screened_out:,} the estimate ranked outside the best "
                      f"{sweep.spec.strategy.screen.keep:.0%} were not simulated (not stored)",
                      soft_wrap=True)
    if outcome.crosschecks:
        console.print(f"{_counted(outcome.crosschecks, 'point')} timed by the fast engine "
                      f"{'was' if outcome.crosschecks == 1 else 'were'} re-run on the SimPy model: "
                      f"{'equal' if outcome.crosschecks == 1 else 'all equal'}", soft_wrap=True)
    if counts["error"]:
        console.print(f"[red]{_counted(counts['error'], 'point')} failed[/] (reasons above); --resume "
                      f"evaluates them again")


def _counted(count: int, noun: str) -> str:
    """``count`` and ``noun``, plural unless it is one: "1 point", "3 points"."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _cmd_report(args: argparse.Namespace) -> int:
    from reports.html import build_report
    from reports.inputs import resolve_inputs
    from workloads.outputs import check_out_dir

    inputs = resolve_inputs([Path(p) for p in args.inputs])
    # The default is checked as --out is: a file named report/ there failed with a traceback.
    out = Path(args.out) if args.out else inputs[0].resolve().parent / "report"
    check_out_dir(out, default=not args.out)
    written = build_report(inputs, out, title=args.title)
    figures, tables = len(written.figures) // 2, len(written.tables)
    print(f"wrote {written.html} ({figures} figure{'s' * (figures != 1)} as PNG and SVG, "
          f"{tables} CSV table{'s' * (tables != 1)})")
    return 0
