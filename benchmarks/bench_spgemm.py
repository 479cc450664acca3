"""Simulation speed and memory of the SpGEMM model: C = A·A for a 100k-row power-law matrix.

A is an R-MAT graph (Graph500 parameters) with 100,000 rows and 1,000,000 nonzeros; A·A has
about 343 M partial products and 178 M nonzeros. Each dataflow is simulated (timing only: the
functional check is for small matrices) in a fresh process, so that its peak resident memory
is its own. Run it from the repository root:

    python benchmarks/bench_spgemm.py [--hardware sat_vcu1525] [--dataflows inner outer ...]

It prints, per dataflow, the simulated cycles, the partial-product DRAM bytes, the wall and
CPU time of the simulation (matrix generation excluded) and the peak resident memory, and exits
non-zero if a dataflow takes more than 60 s (wall) or 4 GiB. On a shared machine the wall time
includes waiting for a core: the CPU time is the figure to compare.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

LIMIT_S = 60.0
LIMIT_BYTES = 4 * 2**30
N, NNZ, SEED = 100_000, 1_000_000, 0


def run_one(dataflow: str, hardware: str) -> None:
    """Child process: build A, simulate one dataflow, print one line of figures."""
    from archsim.spgemm import simulate_dataflow
    from dataflows.spgemm import SpGEMMProblem
    from workloads.generators.sparse_matrices import rmat
    from workloads.load import load_hardware

    hw = load_hardware(hardware)
    a = rmat(N, NNZ, seed=SEED)
    start, cpu = time.perf_counter(), time.process_time()
    result = simulate_dataflow(SpGEMMProblem(a, a, hw), dataflow)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    print(f"{dataflow}\t{result.cycles}\t{seconds:.1f}\t{cpu:.1f}\t{peak}\t"
          f"{result.dram_bytes['partial']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hardware", default="sat_vcu1525")
    parser.add_argument("--dataflows", nargs="+", default=["inner", "outer", "gustavson", "hash"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_one(args.child, args.hardware)
        return 0
    print(f"C = A·A, A = rmat(n={N:,}, nnz={NNZ:,}, seed={SEED}) on {args.hardware}")
    print(f"{'dataflow':<10} {'cycles':>16} {'partial bytes':>16} {'wall s':>8} {'CPU s':>7} "
          f"{'peak MiB':>9}")
    ok = True
    for dataflow in args.dataflows:
        cmd = [sys.executable, __file__, "--child", dataflow, "--hardware", args.hardware]
        line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()
        _, cycles, seconds, cpu, peak, partial = line
        ok &= float(seconds) <= LIMIT_S and int(peak) < LIMIT_BYTES
        print(f"{dataflow:<10} {int(cycles):>16,} {int(partial):>16,} {float(seconds):>8.1f} "
              f"{float(cpu):>7.1f} {int(peak) / 2**20:>9.0f}")
    print(f"limits: {LIMIT_S:.0f} s and {LIMIT_BYTES / 2**30:.0f} GiB per dataflow: "
          f"{'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
