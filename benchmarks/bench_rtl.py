"""Verilog generation and Yosys synthesis times of the accelerator for several array sizes.

Run on demand (not part of the test suite; a 16x16 synthesis takes minutes)::

    python benchmarks/bench_rtl.py                      # tiny-based 8x8 and 16x16
    python benchmarks/bench_rtl.py --sizes 4 8 --hardware sat_vcu1525 --no-synth

Each size is the hardware description with ``array.rows = array.cols = N`` and, where the
preset's weight buffer cannot hold the larger array's biggest dense weight tile, a weight buffer
just large enough (``buffers.weight_bytes``). Times are wall-clock and CPU seconds (this process
plus Yosys, which runs in child processes); on a shared machine the CPU column is the one to
compare. Synthesis uses the flow of ``archsim rtl --synth`` (rtl/synth.py).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _sized(hardware: str, n: int):
    from workloads.load import load_hardware

    hw = load_hardware(hardware, overrides=[f"array.rows={n}", f"array.cols={n}"])
    ratio = max([1.0] + [p.m / p.n for p in hw.nm_patterns])
    needed = 2 * int(n * ratio) * n * hw.data_bytes  # two slots of the largest dense tile
    if hw.buffers.weight_bytes < needed:
        hw = load_hardware(hardware, overrides=[f"array.rows={n}", f"array.cols={n}",
                                                f"buffers.weight_bytes={needed}"])
    return hw


def measure(hardware: str, n: int, work: Path, synth: bool) -> dict:
    """Times and sizes for one ``n × n`` accelerator."""
    from rtl.synth import resources, synthesize, write_flow

    hw = _sized(hardware, n)
    out = work / f"{hw.name}_{n}x{n}"
    wall, cpu = time.perf_counter(), _cpu()
    paths = write_flow(hw, out)
    row = {
        "size": f"{n}x{n}",
        "verilog_s": time.perf_counter() - wall,
        "verilog_cpu_s": _cpu() - cpu,
        "verilog_mb": paths["accel_top.v"].stat().st_size / 1e6,
    }
    if synth:
        wall, cpu = time.perf_counter(), _cpu()
        run = synthesize(out)
        row["synth_peak_mib"] = run.peak_memory_bytes / 2**20
        row["synth_s"] = time.perf_counter() - wall
        row["synth_cpu_s"] = _cpu() - cpu
        row.update(resources(run.stat)["total"])
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hardware", default="tiny", help="preset or YAML file (default tiny)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16], help="array sizes N")
    parser.add_argument("--no-synth", action="store_true", help="only generate Verilog")
    parser.add_argument("--work", help="keep the generated files here (default: a temp dir)")
    args = parser.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    from workloads.errors import ArchsimError

    console = Console(width=160)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        rows = []
        for n in args.sizes:
            with console.status(f"{args.hardware} {n}x{n}: Verilog"
                                + ("" if args.no_synth else " and synthesis")):
                try:
                    rows.append(measure(args.hardware, n, work, not args.no_synth))
                except ArchsimError as exc:
                    console.print(f"[red]{n}x{n}: {exc}[/red]")
    table = Table(title=f"archsim rtl: {args.hardware}, Verilog generation and Yosys synthesis")
    columns = ["size", "verilog_s", "verilog_cpu_s", "verilog_mb"]
    if not args.no_synth:
        columns += ["synth_s", "synth_cpu_s", "synth_peak_mib", "LUT", "FF", "CARRY", "DSP",
                    "BRAM36", "URAM", "LUTRAM"]
    for col in columns:
        table.add_column(col, justify="left" if col == "size" else "right")
    for row in rows:
        table.add_row(*(f"{row[c]:.1f}" if isinstance(row[c], float) else f"{row[c]:,}"
                        if isinstance(row[c], int) else str(row[c]) for c in columns))
    console.print(table)
    return 0 if len(rows) == len(args.sizes) else 1


if __name__ == "__main__":
    sys.exit(main())
