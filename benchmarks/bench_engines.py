"""The fast timing engine against the SimPy model, in full (issue 16): 1,000 random programs
(random waits, deadlocks included), the verification programs of every kind, and every shipped
example workload. Every comparison must be equal: cycles and every statistic (every
``SimResult`` field for the examples, the per-instruction trace for programs).

``tests/archsim/test_fast.py`` samples the same comparisons; this runs them all and prints how
many were equal and the CPU seconds of each engine. Exit status 1 on any difference. Run:
``python benchmarks/bench_engines.py [--programs 1000] [--seeds 40]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from archsim.api import simulate
from archsim.fast import run_program_fast
from archsim.model import run_program
from verification.configs import load_config
from verification.programs import ATTENTION, random_case
from verification.random_waits import random_waits_program
from workloads.errors import SimulationError
from workloads.load import load_hardware, load_workload

EXAMPLES = sorted(p for p in (Path(__file__).resolve().parents[1] / "workloads" / "examples")
                  .glob("*.yaml") if not p.stem.startswith("sweep"))
CPU = {"simpy": 0.0, "fast": 0.0}


def _timed(which: str, fn, *args, **kwargs):
    start = time.process_time()
    try:
        return fn(*args, **kwargs)
    except SimulationError as exc:  # a deadlock: both engines must report it alike
        return str(exc)
    finally:
        CPU[which] += time.process_time() - start


def _snapshot(stats) -> object:
    if isinstance(stats, str):
        return stats
    return (stats.busy, stats.stall, stats.cycles, stats.vector_groups, stats.trace,
            {t: dataclasses.asdict(ts) for t, ts in stats.tasks.items()},
            dict(stats.sram_read_bytes), dict(stats.sram_write_bytes))


def _same_program(program, hw) -> bool:
    reference = _timed("simpy", run_program, program, hw, trace=True)
    fast = _timed("fast", run_program_fast, program, hw, trace=True)
    return _snapshot(fast) == _snapshot(reference)


def random_programs(n: int) -> tuple[int, int, int]:
    """(equal, compared, deadlocked) over ``n`` random programs, half with forward waits."""
    hw, rng = load_hardware("tiny"), np.random.default_rng(2026)
    equal = deadlocks = 0
    for i in range(n):
        program = random_waits_program(rng, forward=i % 2 == 1)
        equal += _same_program(program, hw)
        try:
            run_program_fast(program, hw)
        except SimulationError:
            deadlocks += 1
    return equal, n, deadlocks


def verification_programs(seeds: int) -> tuple[int, int]:
    equal = total = 0
    for config in ("tiny", "wide"):
        hw = load_config(config)
        for kinds in (None, (ATTENTION,)):
            for seed in range(seeds):
                equal += _same_program(random_case(hw, seed, kinds).program, hw)
                total += 1
    return equal, total


def examples() -> tuple[int, list[str]]:
    differ = []
    for path in EXAMPLES:
        workload = load_workload(path)
        reference = _timed("simpy", simulate, workload, engine="simpy")
        if _timed("fast", simulate, workload, engine="fast") != reference:
            differ.append(path.stem)
    return len(EXAMPLES) - len(differ), differ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=40, help="verification seeds per config and kind")
    args = parser.parse_args()
    np.seterr(all="ignore")
    equal, n, deadlocks = random_programs(args.programs)
    print(f"random programs: {equal} of {n} equal ({deadlocks} deadlock, reported alike)")
    v_equal, v_total = verification_programs(args.seeds)
    print(f"verification programs (tiny, wide; GEMM kinds and attention): {v_equal} of {v_total} equal")
    e_equal, differ = examples()
    print(f"shipped examples: {e_equal} of {len(EXAMPLES)} equal in every SimResult field"
          + (f"; DIFFERENT: {', '.join(differ)}" if differ else ""))
    print(f"CPU seconds: SimPy model {CPU['simpy']:.1f}, fast engine {CPU['fast']:.1f} "
          f"({CPU['simpy'] / max(CPU['fast'], 1e-9):.1f}x; the examples' scheduling counts in both)")
    if equal < n or v_equal < v_total or differ:
        sys.exit(1)


if __name__ == "__main__":
    main()
