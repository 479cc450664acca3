"""Weight-stationary against output-stationary, layer by layer, on the SAT-like preset.

Simulates each workload twice on ``sat_vcu1525``, once per ``array.dataflow``, and prints a
markdown table per workload: for every distinct GEMM (identical layers merged, their count
shown), the cycles and DRAM reads of both arrays, the PE-array busy cycles, the tilings and the
reason for the difference, read off the figures (docs/scheduler.md, "Output-stationary"):

* ``reads``: the mappings read different DRAM bytes (another tiling won the search);
* ``fill/drain``: the PE array is busier on one array at the same traffic — a weight-stationary
  COMPUTE pays its skew and drain (rows + cols + 1 cycles) per reduction chunk, an
  output-stationary one once per buffer tile, but ``rows`` cycles per block of ``rows``
  outputs and chunk even when fewer rows or steps fill it, plus a longer drain (3·rows);
* ``DMA-bound``: both wait on DRAM, so a PE difference hardly shows.

Run: ``python benchmarks/bench_dataflows.py [--workloads resnet18_bdwp bert_inference_nm]``;
prints the CPU seconds of each simulation as well.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from archsim import simulate
from workloads.load import load_workload

EXAMPLES = Path(__file__).resolve().parents[1] / "workloads" / "examples"
DATAFLOWS = ("weight_stationary", "output_stationary")


def _run(example: str, dataflow: str):
    start = time.process_time()
    workload = load_workload(EXAMPLES / f"{example}.yaml",
                             overrides=[f"hardware.array.dataflow={dataflow}"])
    return simulate(workload), time.process_time() - start


def _reason(ws, os_) -> str:
    if abs(os_.dram_read_bytes - ws.dram_read_bytes) > 0.01 * max(ws.dram_read_bytes, 1):
        more = "more" if os_.dram_read_bytes > ws.dram_read_bytes else "less"
        return f"reads: the OS tiling reads {more}"
    hidden = " (partly hidden: DMA-bound)" if "dma" in (ws.bound, os_.bound) else ""
    if os_.pe_busy_cycles < ws.pe_busy_cycles:
        return "fill/drain once per buffer tile (WS: once per chunk)" + hidden
    if os_.pe_busy_cycles > ws.pe_busy_cycles:
        return ("one chunk per COMPUTE or partly filled blocks: OS pays 3·rows of fill and "
                "drain per COMPUTE (WS rows + 1)" + hidden)
    if os_.cycles == ws.cycles:
        return "same"
    if os_.tiling != ws.tiling:
        return "another tiling at the same reads and PE cycles: other DMA/PE overlap"
    return "same busy cycles, other DMA/PE overlap (COMPUTE lengths differ)"


def _rows(ws_result, os_result):
    """(key, count, ws record, os record) per distinct GEMM, in layer order."""
    merged: dict[tuple, list] = {}
    for ws, os_ in zip(ws_result.layers, os_result.layers, strict=True):
        assert ws.name == os_.name
        if ws.phase == "pregen":  # the vector unit's compression: no COMPUTE, the same on both
            continue
        key = (ws.phase, ws.m, ws.k, ws.n, ws.sparsity, ws.cycles, os_.cycles)
        if key in merged:
            merged[key][1] += ws.repeat
        else:
            merged[key] = [ws.name, ws.repeat, ws, os_]
    return merged.values()


def _table(example: str) -> None:
    (ws_result, ws_cpu), (os_result, os_cpu) = (_run(example, d) for d in DATAFLOWS)
    print(f"\n### {example} on sat_vcu1525 (CPU s: WS {ws_cpu:.1f}, OS {os_cpu:.1f})\n")
    print("| GEMM | × | phase | m×k×n | WS cycles | OS cycles | OS/WS | WS reads MB | "
          "OS reads MB | WS tiling | OS tiling | reason |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, count, ws, os_ in _rows(ws_result, os_result):
        print(f"| {name} | {count} | {ws.phase} | {ws.m}×{ws.k}×{ws.n} | {ws.cycles:,} | "
              f"{os_.cycles:,} | {os_.cycles / max(ws.cycles, 1):.3f} | "
              f"{ws.dram_read_bytes / 1e6:.1f} | {os_.dram_read_bytes / 1e6:.1f} | {ws.tiling} | "
              f"{os_.tiling} | {_reason(ws, os_)} |")
    ws_s, os_s = ws_result.summary(), os_result.summary()
    print(f"| **total** | | | | {ws_s['total_cycles']:,} | {os_s['total_cycles']:,} | "
          f"{os_s['total_cycles'] / ws_s['total_cycles']:.3f} | {ws_s['dram_read_bytes'] / 1e6:.1f} | "
          f"{os_s['dram_read_bytes'] / 1e6:.1f} | | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=["resnet18_bdwp", "bert_inference_nm"])
    for example in parser.parse_args().workloads:
        _table(example)


if __name__ == "__main__":
    main()
