"""DSE throughput: the 576-point ResNet-18 BDWP training sweep on local worker processes.

Targets: at least 500 design points of a ResNet-18 training iteration complete on a 2-core
machine, every worker under 1 GiB of peak memory (issue 8), at 50 points/s with 2 workers
(issue 16). The sweep is ``workloads/examples/sweep_resnet18_bdwp.yaml`` (batch 4, see its
header). Prints wall time, points/s, the workers' CPU and wall seconds per point (CPU seconds are
the figure to compare on a shared machine), the points cross-checked on the SimPy model, and
the peak resident memory of each worker process.

Run: ``python benchmarks/bench_dse.py [--workers N] [--out DIR]`` (default: a temporary folder,
deleted afterwards; with --out the store is kept and a rerun with the same --out resumes).

Last measured (2 workers, shared machine, against the session's start c18874e, alternately):
0.033 and 0.038 CPU-s a point against 0.046 and 0.047; 49.9 and 45.5 points/s against 37.1 and
36.7; 34.6 to 43.7 points/s in three more runs as another job's load rose (docs/dse.md,
"Benchmark").
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from reports.dse import run_sweep
from reports.store import ResultStore
from reports.sweep import load_sweep
from workloads.errors import ArchsimError

SWEEP = Path(__file__).resolve().parents[1] / "workloads" / "examples" / "sweep_resnet18_bdwp.yaml"
GIB_MIB = 1024


def _run(out: Path, workers: int, resume: bool):
    sweep = load_sweep(SWEEP)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        job = bar.add_task(sweep.name, total=None)
        outcome = run_sweep(sweep, out, workers=workers, resume=resume,
                            progress=lambda d, t: bar.update(job, completed=d, total=t))
    return sweep, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, help="keep the results store here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        resume = (out / "results.db").exists()
        try:
            sweep, outcome = _run(out, args.workers, resume)
        except ArchsimError as exc:
            raise SystemExit(f"bench_dse: error: {exc}") from None
        with ResultStore(outcome.store_path, readonly=True) as store:
            rows = list(store.rows())
    per_worker: dict[str, float] = defaultdict(float)
    for r in rows:
        if r.worker and r.worker_rss_mib:
            per_worker[r.worker] = max(per_worker[r.worker], r.worker_rss_mib)
    sim = [r.wall_s for r in rows if r.wall_s]
    statuses = {s: sum(r.status == s for r in rows)
                for s in ("ok", "infeasible", "invalid", "error")}
    print(f"sweep: {sweep.name} ({SWEEP.name}), {sweep.size} points, on {outcome.backend}")
    print(f"stored points: {len(rows)} ({', '.join(f'{n} {s}' for s, n in statuses.items() if n)})"
          f"; simulated in this run: {outcome.simulated}")
    print(f"wall time: {outcome.wall_s:.1f} s; throughput: {outcome.points_per_s:.2f} points/s"
          f"  target >= 500 points: {'ok' if len(rows) >= 500 else 'MISSED'}")
    if sim:
        print(f"simulation per point: median {statistics.median(sim):.2f} s, "
              f"max {max(sim):.2f} s (one core)")
    for worker, mib in sorted(per_worker.items()):
        print(f"worker {worker}: peak memory {mib:.0f} MiB")
    worst = max(per_worker.values(), default=0.0)
    print(f"peak memory per worker: max {worst:.0f} MiB  target < {GIB_MIB} MiB: "
          f"{'ok' if worst < GIB_MIB else 'MISSED'}")
    n = max(outcome.simulated, 1)
    print(f"CPU seconds per point (workers, summed): {outcome.simulate_cpu_s / n:.3f} "
          f"(wall {outcome.simulate_s / n:.3f})")
    print(f"points/s per CPU-s: {n / max(outcome.simulate_cpu_s, 1e-9):.1f} points per worker "
          f"CPU-second; with {args.workers} workers on idle cores: "
          f"{args.workers * n / max(outcome.simulate_cpu_s, 1e-9):.1f} points/s  target >= 50: "
          f"{'ok' if outcome.points_per_s >= 50 else 'MISSED'} (measured {outcome.points_per_s:.2f})")
    print(f"points timed by the fast engine and re-run on the SimPy model: {outcome.crosschecks} "
          f"of {outcome.simulated}, all equal (a mismatch stops the sweep)")
    main_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"driving process peak memory: {main_mib:.0f} MiB")


if __name__ == "__main__":
    main()
