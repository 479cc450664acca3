"""Memory and time of a VGG-16 training iteration at batch 32 (issue 16): BDWP 2:8 and dense.

Target: peak memory under 1 GiB for each (issue 16). One process per variant (``--variant``),
so each peak is its own; without it, both run, each in a fresh child process. Each prints the
CPU and wall seconds of scheduling and of simulating (``--engine``: ``fast``, the default, or
``simpy``), the instructions and the peak resident memory. Run:
``python benchmarks/bench_vgg.py [--engine simpy]``.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "workloads" / "examples"
VARIANTS = {"bdwp": EXAMPLES / "resnet18_bdwp.yaml", "dense": EXAMPLES / "resnet18_dense.yaml"}
GIB_MIB = 1024


def _timed(fn, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def run(variant: str, engine: str) -> None:
    from archsim import simulate
    from dataflows.scheduler import schedule
    from workloads.load import load_workload

    workload = load_workload(VARIANTS[variant],
                             overrides=["operations.0.model=vgg16", "operations.0.batch=32"])
    sched, s_wall, s_cpu = _timed(schedule, workload)
    result, r_wall, r_cpu = _timed(simulate, sched, engine=engine)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"vgg16 {variant} batch 32 on {workload.hardware.name}: schedule {s_cpu:.2f} CPU-s "
          f"({s_wall:.2f} s wall), simulate ({engine}) {r_cpu:.2f} CPU-s ({r_wall:.2f} s wall), "
          f"total {s_cpu + r_cpu:.2f} CPU-s")
    print(f"  instructions {result.instructions:,} ({result.instructions_simulated:,} simulated), "
          f"cycles {result.total_cycles:,}")
    print(f"  peak memory {peak_mib:.0f} MiB  target < {GIB_MIB} MiB: "
          f"{'ok' if peak_mib < GIB_MIB else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS))
    parser.add_argument("--engine", choices=("fast", "simpy"), default="fast")
    args = parser.parse_args()
    if args.variant:
        run(args.variant, args.engine)
        return
    for variant in VARIANTS:  # a child each: ru_maxrss is a process's peak, never reset
        subprocess.run([sys.executable, __file__, "--variant", variant, "--engine", args.engine],
                       check=True)


if __name__ == "__main__":
    main()
