"""Simulation speed: a full ResNet-50 BDWP 2:8 training iteration (batch 32), SAT-like preset.

Targets: <= 10 s with the SimPy model on a 2-core machine (issue 13; issue 16 aims at 5 s, and
2 s with the fast engine), peak memory under 1 GiB. The schedule is built once; then both timing
engines simulate it, and their results must be equal. Prints wall and CPU seconds of each step
(CPU seconds are the figure to compare on a shared machine), simulated instructions per second
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


def _timed(fn, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    workload = load_workload(EXAMPLE, overrides=["operations.0.model=resnet50", "operations.0.batch=32"])
    sched, sched_wall, sched_cpu = _timed(schedule, workload)
    results = {}
    print(f"workload: {workload.name} with model=resnet50 batch=32 on {workload.hardware.name}")
    print(f"schedule: {sched_wall:.2f} s wall, {sched_cpu:.2f} s CPU")
    for engine in ("simpy", "fast"):
        result, wall, cpu = _timed(simulate, sched, engine=engine)
        results[engine] = result
        total = sched_cpu + cpu
        print(f"simulate ({engine}): {wall:.2f} s wall, {cpu:.2f} s CPU; schedule + simulate "
              f"{total:.2f} CPU-s; {result.instructions_simulated / cpu:,.0f} instructions/CPU-s")
    result = results["simpy"]
    print(f"engines equal: {results['fast'] == result}")
    print(f"segments: {result.segments:,}; instructions: {result.instructions:,} "
          f"({result.instructions_simulated:,} simulated, identical segments reused)")
    print(f"simulated cycles: {result.total_cycles:,} ({result.seconds * 1e3:.1f} ms at "
          f"{workload.hardware.clock_mhz:g} MHz)")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory: {peak_mib:.0f} MiB  target < 1024 MiB: {'ok' if peak_mib < 1024 else 'MISSED'}")


if __name__ == "__main__":
    main()
