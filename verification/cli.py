"""``archsim verify``: random programs on the RTL, checked against numpy and the SimPy model.

::

    archsim verify tiny --programs 200 --seed 0
    archsim verify my_hw.yaml --set array.rows=8 --seed 1234 --programs 1   # replay one seed

Program ``i`` of a run uses seed ``S + i``, so any failing program replays alone with
``--seed <its seed> --programs 1`` (and the whole run with the same ``--seed``/``--programs``).
The command prints each failure, then the programs run, value mismatches, the largest cycle
difference and the seeds; it exits 1 if any program failed and 2 on a user error. cocotb,
Verilator and amaranth are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import shlex
import sys
from collections import Counter
from pathlib import Path

__all__ = ["register", "DEFAULT_BACKPRESSURE"]

#: Probability of a withheld memory ready/valid per cycle with a bare ``--backpressure``.
DEFAULT_BACKPRESSURE = 0.3


def register(subparsers) -> None:
    """Add the ``verify`` subcommand to ``archsim``'s parser."""
    from verification.programs import ATTENTION, CONV, GROUPED, KINDS
    from workloads.arguments import at_least

    p = subparsers.add_parser(
        "verify",
        help="run random tile programs on the RTL (cocotb + Verilator); compare values with "
             "numpy and cycles with the SimPy model",
        description="Run random tile programs on the Amaranth RTL under cocotb and Verilator. "
                    "Values must match the numpy golden model bit for bit and cycle counts the "
                    "SimPy model exactly.")
    p.add_argument("hardware", help="hardware YAML file or preset name (e.g. tiny)")
    p.add_argument("--programs", type=at_least(1), default=20, metavar="N",
                   help="random programs to run (default 20)")
    p.add_argument("--seed", type=at_least(0), default=0, metavar="S",
                   help="seed of the first program; program i uses S+i (default 0)")
    p.add_argument("--backpressure", type=_probability, nargs="?", const=DEFAULT_BACKPRESSURE,
                   default=0.0, metavar="P",
                   help="random memory backpressure (probability per cycle, default "
                        f"{DEFAULT_BACKPRESSURE}); cycle counts then change and only values "
                        "are compared")
    known = [*KINDS, ATTENTION, GROUPED, CONV]
    p.add_argument("--kinds", type=lambda s: _kinds(s, known), default=None, metavar="K,K",
                   help=f"only these kinds of program: {', '.join(known)} (the default mix is "
                        f"{', '.join(KINDS)}; {ATTENTION}, {GROUPED} and {CONV} run only when named)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a hardware field, e.g. array.rows=8 (repeatable)")
    p.add_argument("--build-dir", type=Path, default=None, metavar="DIR",
                   help="where Verilog and Verilator builds are kept (default: build/verify)")
    p.add_argument("--verbose", action="store_true", help="print every program, not only failures")
    p.set_defaults(handler=_cmd_verify)


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability in (0, 1), got {text!r}")
    return value


def _kinds(text: str, known) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in known]
    if unknown or not kinds:
        named = ", ".join(unknown) if unknown else repr(text)
        hints = [h for k in unknown for h in difflib.get_close_matches(k, known, n=1)]
        hint = f"; did you mean {', '.join(hints)}?" if hints else ""
        raise argparse.ArgumentTypeError(f"unknown kind(s) {named}{hint}; known: "
                                         f"{', '.join(known)}")
    return kinds


def replay_command(args: argparse.Namespace, seed: int, programs: int = 1) -> str:
    """The ``archsim verify`` command line that reruns ``programs`` programs from ``seed``."""
    words = ["archsim", "verify", args.hardware, "--seed", str(seed), "--programs", str(programs)]
    for item in args.overrides:
        words += ["--set", item]
    if args.kinds:
        words += ["--kinds", ",".join(args.kinds)]
    if args.backpressure:
        words += ["--backpressure", f"{args.backpressure:g}"]
    return shlex.join(words)


def _cmd_verify(args: argparse.Namespace) -> int:
    from verification.session import verify
    from workloads.load import load_hardware

    hw = load_hardware(args.hardware, overrides=args.overrides)
    seeds = list(range(args.seed, args.seed + args.programs))
    build_root = args.build_dir if args.build_dir is not None else Path("build") / "verify"
    out = sys.stdout
    a = hw.array
    print(f"verify: {hw.name} ({a.rows}x{a.cols} array, {hw.data_bits}-bit operands, "
          f"{hw.acc_bits}-bit accumulators), {len(seeds)} programs, seeds "
          f"{seeds[0]}..{seeds[-1]}", file=out)
    if args.backpressure:
        print(f"random backpressure p={args.backpressure:g}: cycle counts are not compared, "
              f"values only", file=out)
    out.flush()
    done: list = []
    logged = not out.isatty()  # a pipe or a CI log: a line per chunk, as no spinner shows

    def progress(results) -> None:
        done.extend(results)
        for r in results:
            if args.verbose or not r.ok:
                print(f"  {r.summary()}", file=out)
                if not r.ok:
                    print(f"    {r.description}", file=out)
                    print(f"    replay: {replay_command(args, r.seed)}", file=out)
        if logged:
            failed = sum(not r.ok for r in done)
            print(f"  {len(done)}/{len(seeds)} programs done, {failed} failed", file=out)
        out.flush()

    from rich.console import Console

    from rtl.cli import progress_lines

    lines = progress_lines(Console(file=out, highlight=False),
                           f"building the RTL and running {len(seeds)} programs",
                           detail=lambda: f"{len(done)}/{len(seeds)} programs done")
    with lines if logged else contextlib.nullcontext():
        report = verify(hw, seeds, build_root, args.backpressure, args.kinds, progress)
    missing = _missing_kinds(args, report)
    _print_report(report, args, out, missing)
    return 0 if report.ok and not missing else 1


def _missing_kinds(args: argparse.Namespace, report) -> list[str]:
    """A line for each kind ``--kinds`` named that no program was: the run did not verify
    what was asked of it, which a PASS would hide (each seed draws one of the named kinds by
    weight, and a pre-generation draw runs as nm_ff on hardware without N:M patterns)."""
    ran = Counter(r.kind for r in report.results)
    lines = []
    for kind in dict.fromkeys(args.kinds or ()):
        if ran[kind]:
            continue
        if kind == "pregen" and not report.hardware.nm_patterns:
            why = (f"{report.hardware.name} has no nm_patterns, so pre-generation programs run "
                   f"as nm_ff; add an N:M pattern (--set) to verify pregen")
        elif len(args.kinds) > 1:
            why = (f"each seed draws one of {', '.join(args.kinds)} by weight; run more "
                   f"--programs, or name {kind} alone")
        else:
            why = "no program was drawn"
        lines.append(f"requested kind {kind}: 0 of {len(report.results)} programs ran ({why})")
    return lines


def _print_report(report, args: argparse.Namespace, out, missing: list[str]) -> None:
    results = report.results
    kinds = Counter(r.kind for r in results)
    timed = sum(r.timed_instructions for r in results)
    print(f"programs run: {len(results)} ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})",
          file=out)
    print(f"value mismatches: {report.value_mismatches} program(s)", file=out)
    if args.backpressure:
        print("max |cycle difference|: not compared (random backpressure)", file=out)
    else:
        diff = report.max_cycle_diff
        print(f"max |cycle difference|: {'n/a' if diff is None else diff} "
              f"(cycles compared on {sum(r.cycle_diff is not None for r in results)} programs; "
              f"{timed} instruction start/end pairs timed)", file=out)
    failed = [r.seed for r in report.failures]
    print(f"failed programs: {len(failed)}" + (f" (seeds {', '.join(map(str, failed))})"
                                                if failed else ""), file=out)
    print(f"seeds: {report.seeds[0]}..{report.seeds[-1]}; replay this run: "
          f"{replay_command(args, report.seeds[0], len(report.seeds))}", file=out)
    print(f"time: build {report.build_seconds:.1f} s, simulation {report.run_seconds:.1f} s",
          file=out)
    for line in missing:
        print(line, file=out)
    print(f"result: {'PASS' if report.ok and not missing else 'FAIL'}", file=out)
