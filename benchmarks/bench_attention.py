"""Simulation speed: prefill of a 12-layer decoder at 4k tokens with 90 % block-sparse attention.

Target (issue 6): <= 30 s on a 2-core machine with peak memory under 2 GiB. The workload is
``workloads/examples/attention_model.yaml`` (GPT-2-small shape, a fresh random block mask per
layer keeping 10 % of the key blocks, every linear layer included). Prints scheduling and
simulation wall time, simulated vs represented instructions, peak RSS and what the attention
layers did. Run: ``python benchmarks/bench_attention.py``.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

from archsim import simulate
from dataflows.scheduler import schedule
from workloads.load import load_workload

EXAMPLE = Path(__file__).resolve().parents[1] / "workloads" / "examples" / "attention_model.yaml"


def main() -> None:
    start = time.perf_counter()
    workload = load_workload(EXAMPLE)
    sched = schedule(workload)
    scheduled = time.perf_counter()
    result = simulate(sched)
    done = time.perf_counter()
    wall = done - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    attn = result.attention
    attn_cycles = sum(r.cycles for r in attn)
    print(f"workload: {workload.name} on {workload.hardware.name}")
    print(
        f"segments: {result.segments:,}; instructions: {result.instructions:,} "
        f"({result.instructions_simulated:,} simulated, identical programs reused)"
    )
    print(
        f"simulated cycles: {result.total_cycles:,} ({result.seconds * 1e3:.1f} ms at "
        f"{workload.hardware.clock_mhz:g} MHz); attention {attn_cycles:,} "
        f"({attn_cycles / result.total_cycles:.0%})"
    )
    skipped = sum(r.blocks_skipped for r in attn) / max(1, sum(r.blocks_total for r in attn))
    print(
        f"attention: {len(attn)} layers, {skipped:.1%} of key blocks skipped, speedup over dense "
        f"attention "
        f"{sum(r.dense_cycles for r in attn) / max(1, attn_cycles):.2f}x, bound: "
        f"{', '.join(sorted({r.bound_overall for r in attn}))}"
    )
    print(
        f"wall time: {wall:.2f} s (load + schedule {scheduled - start:.2f} s, simulate "
        f"{done - scheduled:.2f} s)  target <= 30 s: {'ok' if wall <= 30 else 'MISSED'}"
    )
    verdict = "ok" if peak_mib < 2048 else "MISSED"
    print(f"peak memory: {peak_mib:.0f} MiB  target < 2048 MiB: {verdict}")


if __name__ == "__main__":
    main()
