"""How well the mapping uses the memory hierarchy: BDWP training on the SAT-like preset.

Prints, for ResNet-18 and ResNet-50 BDWP 2:8 training at batch 32 on ``sat_vcu1525``: DRAM
reads and writes against the compulsory traffic (each operand read once, each output written
once; a convolution's feature map, not its im2col expansion), the total against the total,
cycles, the dense iteration's cycles and the 2:8 speedup over it, the GEMMs that still read
more than 1.5x their compulsory bytes, and the CPU seconds each simulation took.

With ``--input-sweep``, instead: the first model's BDWP iteration with the input buffer from
256 KiB to 16 MiB (each power of two), printing cycles, DRAM reads and writes and their ratio to
the compulsory traffic (which does not depend on the buffers), so the reads can be seen falling
as the buffer grows, and never rising (the search's monotonicity, tests/dataflows).
Run: ``python benchmarks/bench_mapping.py [--batch 32] [--models resnet18 resnet50]
[--input-sweep]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from archsim import simulate
from workloads.load import load_workload

EXAMPLES = Path(__file__).resolve().parents[1] / "workloads" / "examples"


def _run(example: str, overrides: list[str]):
    start = time.process_time()
    result = simulate(load_workload(EXAMPLES / example, overrides=overrides))
    return result, time.process_time() - start


def _worst(result, count: int = 6) -> list[str]:
    """The GEMMs with the most excess reads (per iteration), where reads exceed 1.5x."""
    rows = []
    for rec in result.layers:
        excess = rec.dram_read_bytes - rec.compulsory_read_bytes
        if rec.compulsory_read_bytes and rec.dram_read_bytes > 1.5 * rec.compulsory_read_bytes:
            rows.append((excess, rec.name, rec.dram_read_bytes, rec.compulsory_read_bytes))
    rows.sort(reverse=True)
    return [f"    {name:34} {read / 1e6:9.1f} MB read for {comp / 1e6:7.1f} MB "
            f"(+{excess / 1e6:.1f} MB)" for excess, name, read, comp in rows[:count]]


INPUT_SWEEP_KIB = [256 << i for i in range(7)]  # 256 KiB .. 16 MiB


def _input_sweep(model: str, batch: int) -> None:
    """Cycles and DRAM traffic of one BDWP iteration as the input buffer grows."""
    print(f"{model} BDWP 2:8, batch {batch}, sat_vcu1525, input buffer swept")
    print(f"  {'input buffer':>12} {'cycles':>13} {'DRAM read':>11} {'written':>10} "
          f"{'read/comp':>9} {'written/comp':>12} {'CPU s':>6}")
    for kib in INPUT_SWEEP_KIB:
        result, cpu = _run("resnet18_bdwp.yaml", [
            f"operations.0.model={model}", f"operations.0.batch={batch}",
            f"hardware.buffers.input_bytes={kib * 1024}"])
        t = result.traffic()
        read = sum(r.dram_read_bytes for r in result.layers)
        written = sum(r.dram_write_bytes for r in result.layers)
        size = f"{kib // 1024} MiB" if kib >= 1024 else f"{kib} KiB"
        print(f"  {size:>12} {result.total_cycles:13,d} {read / 1e6:8.1f} MB "
              f"{written / 1e6:7.1f} MB {read / t['compulsory_read_bytes']:8.2f}x "
              f"{written / t['compulsory_write_bytes']:11.2f}x {cpu:6.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--input-sweep", action="store_true",
                        help="sweep the input buffer (256 KiB to 16 MiB) for the first model")
    args = parser.parse_args()
    if args.input_sweep:
        _input_sweep(args.models[0], args.batch)
        return
    for model in args.models:
        base = [f"operations.0.model={model}", f"operations.0.batch={args.batch}"]
        bdwp, cpu = _run("resnet18_bdwp.yaml", base)
        dense, cpu_dense = _run("resnet18_dense.yaml", base)
        t = bdwp.traffic()
        read = sum(r.dram_read_bytes for r in bdwp.layers)
        written = sum(r.dram_write_bytes for r in bdwp.layers)
        c_read, c_written = t["compulsory_read_bytes"], t["compulsory_write_bytes"]
        print(f"{model} BDWP 2:8, batch {args.batch}, sat_vcu1525")
        print(f"  DRAM read     {read / 1e6:10.1f} MB  compulsory {c_read / 1e6:8.1f} MB  "
              f"{read / c_read:5.2f}x")
        print(f"  DRAM written  {written / 1e6:10.1f} MB  compulsory {c_written / 1e6:8.1f} MB  "
              f"{written / c_written:5.2f}x")
        print(f"  read+written  {(read + written) / 1e6:10.1f} MB  compulsory "
              f"{(c_read + c_written) / 1e6:8.1f} MB  {(read + written) / (c_read + c_written):5.2f}x")
        print(f"  cycles {bdwp.total_cycles:,d} (bound: {bdwp.bound}); dense "
              f"{dense.total_cycles:,d}; 2:8 speedup {dense.total_cycles / bdwp.total_cycles:.3f}x"
              f" (time bound {bdwp.time_bound:.3f}x)")
        print(f"  CPU seconds: BDWP {cpu:.1f}, dense {cpu_dense:.1f}")
        worst = _worst(bdwp)
        if worst:
            print("  GEMMs reading more than 1.5x their compulsory bytes (most excess first):")
            print("\n".join(worst))


if __name__ == "__main__":
    main()
