"""The two-stage search (``strategy.screen``) on the 576-point ResNet-18 BDWP sweep: how well
the analytic estimate ranks the points, what the screen costs, and what it keeps.

``python benchmarks/bench_screen.py [--keep 0.2] [--workers 2]`` runs the full sweep (exact,
every point) and then the screened one, side by side on the same workers, and prints

* the estimate against the exact results of every point: rank correlation (Spearman) and the
  range of estimate / exact for cycles, energy and DRAM bytes, and the estimate's CPU seconds
  per point (in this process, points in the sweep's grouped order);
* for several ``keep`` fractions, how many of the exact Pareto front's points the screen would
  simulate (and so find);
* the screened sweep itself, run with ``--keep``: its wall time, the workers' CPU seconds
  (estimates and simulations) against the full sweep's, and whether its stored Pareto front
  is the full sweep's.

CPU seconds are the figures to compare on a shared machine.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from archsim.estimate import estimate_metrics
from reports.dse import best_designs, grouped, run_sweep, screen_ranking
from reports.store import ResultStore
from reports.sweep import ScreenSpec, load_sweep, override_args, point_hash
from workloads.load import load_workload

SWEEP = Path(__file__).resolve().parents[1] / "workloads" / "examples" / "sweep_resnet18_bdwp.yaml"
COMPARED = ("cycles", "energy_pj", "dram_bytes")


def _estimates(sweep) -> tuple[dict[str, dict], float]:
    """Every point's estimate (with its axis names), and the CPU seconds per point."""
    out, cpu = {}, time.process_time()
    for p in grouped(list(sweep.grid()), sweep):
        workload = load_workload(sweep.workload_path, hardware=sweep.hardware,
                                 overrides=[*sweep.fixed, *override_args(p)])
        out[point_hash(p)] = {**estimate_metrics(workload), **sweep.names(p)}
    return out, (time.process_time() - cpu) / len(out)


def _accuracy(estimates: dict, exact: dict) -> None:
    common = sorted(set(estimates) & set(exact))
    print(f"estimate vs exact on {len(common)} points:")
    for metric in COMPARED:
        e = np.array([estimates[h][metric] for h in common], dtype=float)
        x = np.array([exact[h].metrics[metric] for h in common], dtype=float)
        ratio = e / x
        print(f"  {metric:>10}: Spearman {spearmanr(e, x).statistic:.3f}, estimate/exact "
              f"{ratio.min():.3f} .. {ratio.max():.3f} (median {np.median(ratio):.3f})")


def _retention(sweep, estimates: dict, exact: dict) -> None:
    front = {r.hash for r in best_designs(list(exact.values()), list(sweep.objectives))}
    ranked = screen_ranking(estimates, sweep)
    print(f"exact Pareto front: {len(front)} points; of them, the screen would simulate:")
    for keep in (0.05, 0.1, 0.2, 0.3):
        chosen = set(ranked[:math.ceil(keep * len(ranked))])
        print(f"  keep {keep:.0%} ({len(chosen)} points): {len(front & chosen)} of {len(front)}")


def _run(sweep, keep: float | None, workers: int, out: Path):
    """Run ``sweep`` (screened with ``keep``, or in full) into ``out``: its outcome and rows."""
    if keep is not None:
        strategy = sweep.spec.strategy.model_copy(update={"screen": ScreenSpec(keep=keep)})
        sweep = replace(sweep, spec=sweep.spec.model_copy(update={"strategy": strategy}))
    outcome = run_sweep(sweep, out, workers=workers)
    with ResultStore(outcome.store_path, readonly=True) as store:
        return outcome, list(store.rows())


def _compare(keep: float, full, screened) -> None:
    (full_out, full_rows), (out, rows) = full, screened
    objectives = list(load_sweep(SWEEP).objectives)
    cpu = out.estimate_cpu_s + out.simulate_cpu_s
    same = ({r.hash for r in best_designs(rows, objectives)}
            == {r.hash for r in best_designs(full_rows, objectives)})
    print(f"full sweep: {full_out.simulated} points simulated, wall {full_out.wall_s:.1f} s, "
          f"workers' CPU {full_out.simulate_cpu_s:.1f} s")
    print(f"screened sweep, keep {keep:.0%}: {out.proposed} points, {out.simulated} simulated, "
          f"{out.screened_out} screened out; wall {out.wall_s:.1f} s; workers' CPU {cpu:.1f} s "
          f"({out.estimate_cpu_s:.1f} estimating, {out.simulate_cpu_s:.1f} simulating): "
          f"{full_out.simulate_cpu_s / cpu:.2f}x less CPU than the full sweep")
    print(f"  stored Pareto front = the full sweep's: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=float, default=0.2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    sweep = load_sweep(SWEEP)
    with tempfile.TemporaryDirectory() as tmp:
        full = _run(sweep, None, args.workers, Path(tmp) / "full")
        screened = _run(sweep, args.keep, args.workers, Path(tmp) / "screened")
    exact = {r.hash: r for r in full[1] if r.status == "ok"}
    estimates, per_point = _estimates(sweep)
    print(f"sweep: {sweep.name}, {sweep.size} points; estimate: {per_point * 1e3:.1f} CPU-ms "
          f"per point (in this process, grouped order)")
    _accuracy(estimates, exact)
    _retention(sweep, estimates, exact)
    _compare(args.keep, full, screened)


if __name__ == "__main__":
    main()
