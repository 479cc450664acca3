"""Verify many random programs on every default configuration, and time it.

::

    python benchmarks/bench_verify.py                    # 100 programs on each configuration
    python benchmarks/bench_verify.py --programs 500 --seed 10000 --build-dir build/verify
    python benchmarks/bench_verify.py --hardware sat_vcu1525 --programs 20   # issue 20: at size

For each configuration of :data:`verification.configs.CONFIGS` (or the one ``--hardware`` names,
a preset or a file, with ``--set`` overrides) the RTL is built once (kept in ``--build-dir``)
and ``--programs`` random scheduler programs run on it; every value must match the golden model
and every cycle count the SimPy model. Prints one row per configuration (programs, failures,
largest cycle difference, instructions timed, simulated cycles, build and simulation time,
programs and cycles per second) and every failure with its replay command, then the CPU seconds
and peak memory of this process and of its children (Verilator, the C++ compiler, the
simulator). Exits 1 if any program failed.
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

from verification.configs import CONFIGS
from verification.session import verify
from workloads.load import load_hardware


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--programs", type=int, default=100, help="programs per configuration")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first program")
    parser.add_argument("--backpressure", type=float, default=0.0,
                        help="random memory backpressure probability (values only)")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"configurations to run (default: {','.join(CONFIGS)})")
    parser.add_argument("--hardware", default=None, metavar="H",
                        help="a hardware preset or file to run instead of the configurations")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a field of --hardware (repeatable)")
    parser.add_argument("--build-dir", type=Path, default=Path("build") / "verify")
    args = parser.parse_args(argv)
    configs = ({args.hardware: (args.hardware, tuple(args.overrides))} if args.hardware else
               {name: CONFIGS[name] for name in args.configs.split(",")})

    header = (f"{'config':<10} {'programs':>8} {'failed':>6} {'max|dc|':>7} {'timed':>7} "
              f"{'cycles':>9} {'build s':>7} {'sim s':>7} {'prog/s':>6} {'cycles/s':>9}")
    rows, failures = [], []
    for name, (preset, overrides) in configs.items():
        hw = load_hardware(preset, overrides=list(overrides))
        seeds = list(range(args.seed, args.seed + args.programs))
        report = verify(hw, seeds, args.build_dir, args.backpressure)
        cycles = sum(r.rtl_cycles or 0 for r in report.results)
        diff = report.max_cycle_diff
        sim = max(report.run_seconds, 1e-9)
        rows.append(f"{name:<10} {len(report.results):>8} {len(report.failures):>6} "
                    f"{'-' if diff is None else diff:>7} "
                    f"{sum(r.timed_instructions for r in report.results):>7} {cycles:>9} "
                    f"{report.build_seconds:>7.1f} {report.run_seconds:>7.1f} "
                    f"{len(report.results) / sim:>6.2f} {cycles / sim:>9.0f}")
        sets = "".join(f" --set {o}" for o in overrides)
        bp = f" --backpressure {args.backpressure:g}" if args.backpressure else ""
        for r in report.failures:
            failures.append(f"{r.summary()}\n  replay: archsim verify {preset}{sets}"
                            f"{bp} --seed {r.seed} --programs 1")
        print(f"{name}: done", file=sys.stderr, flush=True)
    print(header)
    print("\n".join(rows))
    if args.backpressure:
        print("random backpressure: cycle counts not compared (values only)")
    for line in failures:
        print(line)
    _print_resources()
    return 1 if failures else 0


def _print_resources() -> None:
    """CPU seconds and peak resident memory, of this process and of its finished children
    (Verilator, the C++ compiler and the simulator run as children)."""
    for who, label in ((resource.RUSAGE_SELF, "this process"),
                       (resource.RUSAGE_CHILDREN, "children")):
        use = resource.getrusage(who)
        print(f"{label}: {use.ru_utime + use.ru_stime:.1f} CPU s, peak resident "
              f"{use.ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    sys.exit(main())
