"""Simulation speed: a full ResNet-50 BDWP 2:8 training iteration (batch 32), SAT-like preset.

Target (issue 2): <= 30 s on a 2-core machine with peak memory under 2 GiB. Prints scheduling
and simulation wall time, simulated instructions per second, simulated cycles per wall-second
and peak RSS. Run: ``python benchmarks/bench_resnet50.py``.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

from archsim import simulate
from dataflows.scheduler import schedule
from workloads.load import load_workload

EXAMPLE = Path(__file__).resolve().parents[1] / "workloads" / "examples" / "resnet18_bdwp.yaml"


def main() -> None:
    start = time.perf_counter()
    workload = load_workload(EXAMPLE, overrides=["operations.0.model=resnet50", "operations.0.batch=32"])
    sched = schedule(workload)
    scheduled = time.perf_counter()
    result = simulate(sched)
    done = time.perf_counter()
    wall = done - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"workload: {workload.name} with model=resnet50 batch=32 on {workload.hardware.name}")
    print(f"segments: {result.segments:,}; instructions: {result.instructions:,} "
          f"({result.instructions_simulated:,} simulated, identical segments reused)")
    print(f"simulated cycles: {result.total_cycles:,} ({result.seconds * 1e3:.1f} ms at "
          f"{workload.hardware.clock_mhz:g} MHz)")
    print(f"wall time: {wall:.2f} s (schedule {scheduled - start:.2f} s, simulate {done - scheduled:.2f} s)"
          f"  target <= 30 s: {'ok' if wall <= 30 else 'MISSED'}")
    print(f"simulated instructions/s: {result.instructions_simulated / (done - scheduled):,.0f} "
          f"(represented: {result.instructions / wall:,.0f})")
    print(f"simulated cycles per wall-second: {result.total_cycles / wall:,.0f}")
    print(f"peak memory: {peak_mib:.0f} MiB  target < 2048 MiB: {'ok' if peak_mib < 2048 else 'MISSED'}")


if __name__ == "__main__":
    main()
