"""BDWP 2:8 vs dense training iterations (batch 32) on the SAT-like preset.

Prints, for ResNet-18 and VGG-16: simulated cycles of both, the speedup, and its MAC bound
(each row's time scaled by dense / executed MACs; docs/results.md). Run: ``python benchmarks/bench_bdwp_speedup.py [--batch 32]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from archsim import simulate
from archsim.cli import amdahl_bound
from workloads.load import load_workload

EXAMPLES = Path(__file__).resolve().parents[1] / "workloads" / "examples"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--models", nargs="+", default=["resnet18", "vgg16"])
    args = parser.parse_args()
    print(f"{'model':10} {'batch':>5} {'dense cycles':>14} {'BDWP cycles':>14} {'speedup':>8} {'bound':>7} {'wall s':>7}")
    for model in args.models:
        start = time.perf_counter()
        base = [f"operations.0.model={model}", f"operations.0.batch={args.batch}"]
        bdwp = simulate(load_workload(EXAMPLES / "resnet18_bdwp.yaml", overrides=base))
        dense = simulate(load_workload(EXAMPLES / "resnet18_dense.yaml", overrides=base))
        speedup = dense.total_cycles / bdwp.total_cycles
        wall = time.perf_counter() - start
        print(f"{model:10} {args.batch:5d} {dense.total_cycles:14,d} {bdwp.total_cycles:14,d} "
              f"{speedup:7.3f}x {amdahl_bound(bdwp):6.3f}x {wall:7.1f}")


if __name__ == "__main__":
    main()
