"""``archsim baseline W.yaml --device cuda|cpu``: measure a workload's GEMMs and SpGEMMs.

Registered into the ``archsim`` command line by ``archsim.cli`` (``register(subparsers)``). torch
is imported only when the command runs, so ``archsim run`` never pays for it.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["register", "format_seconds", "console"]

#: Width of tables written to a file or pipe: rich's 80-column default would wrap every cell.
_PIPE_WIDTH = 160


def register(subparsers) -> None:
    """Add the ``baseline`` subcommand to the ``archsim`` parser."""
    from workloads.arguments import at_least, path_argument

    p = subparsers.add_parser(
        "baseline",
        help="measure the workload's GEMMs with torch kernels on CUDA or CPU",
        description="Measure every GEMM of a workload (FF/BP/WG in training) and every attention "
        "layer with torch, and every SpGEMM with scipy (CPU) or torch CSR (CUDA); write a "
        "baseline JSON for 'archsim run --baseline' (schema: docs/baselines.md).",
    )
    p.add_argument("workload", type=path_argument,
                   help="workload YAML file, or example:NAME for a shipped example "
                        "('archsim examples' lists them)")
    p.add_argument("--device", required=True, choices=("cuda", "cpu"),
                   help="cuda: CUDA events with an L2 flush between reps; cpu: perf_counter_ns")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"),
                   help="operand type (default: fp16 on cuda, fp32 on cpu)")
    p.add_argument("--reps", type=at_least(1), default=20, help="timed samples per distinct op")
    p.add_argument("--warmup", type=at_least(0), default=3, help="untimed calls before the samples")
    p.add_argument("--threads", type=at_least(1),
                   help="CPU threads for torch (default: torch's setting); always recorded")
    p.add_argument("--flex-compile", action="store_true",
                   help="run attention ops with a block pattern through torch.compile'd "
                   "FlexAttention (skips empty blocks) instead of SDPA with a boolean mask")
    p.add_argument("--out",
                   help="output JSON (default: baseline-<device>-<dtype>.json in the folder "
                        "'archsim run' writes to: out/<workload>, joined by each --set)")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier baseline at that path (refused without it)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a workload field, as for 'archsim run' (repeatable)",
    )
    p.add_argument("--rows", type=at_least(0), default=20, help="rows of the per-op table to print")
    p.add_argument("--quiet", action="store_true", help="print only the output path")
    p.set_defaults(handler=_cmd_baseline)


def format_seconds(s: float) -> str:
    """A duration with a unit that keeps 3 significant digits readable (ns to s)."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def console(stderr: bool = False):
    """A rich console; wide when it writes to a file or pipe, the terminal's width otherwise."""
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal:
        out.width = _PIPE_WIDTH
    return out


def _measure_with_progress(workload, args: argparse.Namespace):
    from rich.progress import BarColumn, Progress, TextColumn

    from baselines.measure import measure

    options = {"device": args.device, "dtype": args.dtype, "reps": args.reps,
               "warmup": args.warmup, "threads": args.threads, "flex_compile": args.flex_compile}
    err = console(stderr=True)
    if args.quiet or not err.is_terminal:  # a progress bar in a log file is noise
        return measure(workload, **options)
    columns = (TextColumn("measuring {task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total} measurements"))
    with Progress(*columns, transient=True, console=err) as bar:
        job = bar.add_task(workload.name, total=None)

        def progress(done: int, total: int, name: str) -> None:
            bar.update(job, completed=done, total=total, description=name)

        return measure(workload, progress=progress, **options)


def _print_table(doc, rows: int) -> None:
    from rich.table import Table

    prov = doc.provenance
    out = console()
    ops = list(doc.ops)
    shown = ops if len(ops) <= rows else sorted(ops, key=lambda r: r.total_s, reverse=True)[:rows]
    title = (f"{doc.workload.name} ({doc.workload.mode}): torch {prov.torch_version} on "
             f"{prov.device_name}, {prov.dtype}, {prov.threads} threads, {prov.timer}")
    if len(shown) < len(ops):
        title += f"; top {len(shown)} of {len(ops)} GEMMs by time"
    table = Table(title=title)
    for col in ("name", "phase", "m x k x n", "method", "median", "p20", "p80", "GFLOP/s", "GB/s"):
        left = col in ("name", "phase", "method")
        table.add_column(col, justify="left" if left else "right")
    for r in shown:
        shape = f"{r.m}x{r.k}x{r.n}" + (f" x{r.copies}" if r.copies > 1 else "")
        name = r.name + (f" (x{r.repeat})" if r.repeat > 1 else "")
        table.add_row(
            name, r.phase, shape, r.method, format_seconds(r.median_s), format_seconds(r.p20_s),
            format_seconds(r.p80_s), f"{r.flop_per_s / 1e9:.2f}", f"{r.bytes_per_s / 1e9:.2f}",
        )
    t = doc.totals
    table.add_section()
    table.add_row("total", "", "", "", format_seconds(t.seconds), "", "",
                  f"{t.flop_per_s / 1e9:.2f}", "")
    out.print(table)
    out.print(f"{t.ops} ops, {t.measured_shapes} measured (identical ops reuse one "
                  f"measurement); (xN): repeated N times, counted in the total")
    notes: dict[tuple[str, str], int] = {}
    for r in ops:
        if r.method_note:
            notes[(r.method, r.method_note)] = notes.get((r.method, r.method_note), 0) + 1
    for (method, note), count in notes.items():
        out.print(f"{method} ({count} op{'s' if count > 1 else ''}): {note}")


def _cmd_baseline(args: argparse.Namespace) -> int:
    from workloads.files import make_dirs
    from workloads.load import load_workload
    from workloads.outputs import check_out_file, default_out_dir

    workload = load_workload(args.workload, overrides=args.overrides)
    dtype = args.dtype or ("fp16" if args.device == "cuda" else "fp32")  # measure()'s defaults
    # Beside the results of 'archsim run' with the same --set: a measurement of other settings
    # must not take the plain one's place.
    default = (default_out_dir(workload.name, args.overrides)
               / f"baseline-{args.device}-{dtype}.json")
    # Checked before measuring, so that a bad --out fails in a second; and measured on a lent
    # GPU, a baseline may not be measurable again: an earlier one is refused before measuring.
    out = check_out_file(args.out or default, args.force, example="baseline.json",
                         default=not args.out)
    make_dirs(out.parent)  # an interrupted measurement removes it again while it is empty
    doc = _measure_with_progress(workload, args)
    for warning in doc.warnings:
        print(f"archsim: warning: {warning}", file=sys.stderr)
    # Written to a temporary sibling and renamed: an interrupted write never leaves half a file.
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(doc.to_json())
    tmp.replace(out)
    if not args.quiet:
        _print_table(doc, args.rows)
    print(f"wrote {out}")
    return 0
