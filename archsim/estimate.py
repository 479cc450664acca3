"""An analytic estimate of a workload's metrics, without building or timing a program.

The first stage of a two-stage design-space search (docs/dse.md, "Two-stage search") ranks
points by it; only the points it ranks best are then simulated exactly, and only exact results
are stored. Per GEMM it takes the tiling the offline search ranks first
(``dataflows.tiling.search_tilings``, without the exact timing of near-ties the scheduler
adds) and that search's own estimate (``dataflows.tiling.estimate``: busy cycles per unit, the
busiest bounding the GEMM, plus the first loads and last stores no overlap hides). It leaves
out what only a program shows — interleaving a layer's backward GEMMs, the stalls of dependent
units — and judges the dense fallback on the same estimates, so it is a ranking, not a result:
on the 576-point ResNet-18 BDWP sweep its cycles are within 0.979–1.052 of the exact ones
(Spearman 1.000), energy 0.847–1.051 (``python benchmarks/bench_screen.py``, docs/dse.md).

Buffer (SRAM) traffic is counted per COMPUTE as ``archsim.accounting`` does, in closed form
(the output-stationary array reads a COMPUTE's weights again for every block of PE rows);
pre-generation as a load, a compression and a store per weight tile. Attention layers and SpGEMM ops have no estimate here (:class:`EstimateError`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

from archsim.stats import energy_pj
from dataflows.cost import compress_cycles, dma_cycles
from dataflows.scheduler import buffer_slots, compressed_in_dram, ranked_tiling
from dataflows.tiling import Tiling, chunked, estimate, m_widths
from workloads.arith import ceil_div
from workloads.errors import SpecError
from workloads.layers import expand
from workloads.lowering import GemmTask, lower
from workloads.spec import HardwareSpec, SchedulePasses, SpGEMMOp, WorkloadSpec

__all__ = ["EstimateError", "ESTIMATED_METRICS", "estimate_metrics", "check_covered"]

#: The metrics :func:`estimate_metrics` gives (area metrics come from the area model, exact).
ESTIMATED_METRICS = ("cycles", "latency_s", "energy_pj", "edp_j_s", "throughput_gmacs",
                     "utilization", "effective_utilization", "macs_executed",
                     "macs_dense_equivalent", "dram_read_bytes", "dram_write_bytes", "dram_bytes")


class EstimateError(SpecError):
    """The workload has operations the analytic estimate does not cover."""


@dataclass(frozen=True, slots=True)
class _Totals:
    cycles: int = 0
    macs: int = 0
    dense_macs: int = 0
    dram_read: int = 0
    dram_write: int = 0
    sram_read: int = 0
    sram_write: int = 0

    def plus(self, other: _Totals, times: int = 1) -> _Totals:
        """``self + times · other``, field by field."""
        return _Totals(*(getattr(self, f) + times * getattr(other, f)
                         for f in self.__dataclass_fields__))


def estimate_metrics(workload: WorkloadSpec) -> dict[str, float]:
    """The workload's :data:`ESTIMATED_METRICS`, analytically (see the module docstring).

    Raises
    ------
    EstimateError
        If the workload has an attention layer or an SpGEMM op.
    """
    layers = expand(workload)
    _check_covered(workload, layers)
    hw = workload.hardware
    # Interleaving is what only programs show: the estimate ignores it (and _mapping's memo
    # then serves a sweep's points with and without it alike).
    passes = workload.schedule.model_copy(update={"interleave": False})
    pregen = workload.mode == "training" and passes.pregenerate_sparse_weights
    compressed = compressed_in_dram(workload)
    total = _Totals()
    for task in (t for group in lower(layers, workload.mode) for t in group):
        total = total.plus(_mapping(task, hw, passes, compressed, pregen), task.repeat)
    return _metrics(total, hw)


@lru_cache(maxsize=8192)
def _mapping(task: GemmTask, hw: HardwareSpec, passes: SchedulePasses, compressed: bool,
             pregen: bool) -> _Totals:
    """One run of a GEMM (all its copies), and of pre-generating its weight: its sparse
    mapping, or its dense one where that is estimated faster (the scheduler's dense fallback).
    Remembered: a sweep's points repeat their GEMMs (its scheduler passes, its N:M patterns
    for the dense mappings)."""
    tiling = ranked_tiling(task, hw, passes, compressed)
    slots = buffer_slots(passes.double_buffering)
    run = _Totals().plus(_gemm(task, tiling, hw, slots), task.copies)
    if not tiling.sparse:
        return run
    if pregen and task.weight:
        run = run.plus(_pregen(task, tiling, hw))
    dense = _mapping(replace(task, nm=None, weight=None), hw, passes, False, False)
    return dense if dense.cycles < run.cycles else run


def check_covered(workload: WorkloadSpec) -> None:
    """Raise :class:`EstimateError` if the workload has what the estimate does not cover."""
    _check_covered(workload, expand(workload))


def _check_covered(workload: WorkloadSpec, layers: list) -> None:
    for op in workload.operations:
        if isinstance(op, SpGEMMOp):
            raise EstimateError(f"SpGEMM op {op.name!r} has no analytic estimate")
    for layer in layers:
        if layer.kind == "attention":
            raise EstimateError(f"attention layer {layer.name!r} has no analytic estimate")


def _gemm(task: GemmTask, tiling: Tiling, hw: HardwareSpec, slots: int) -> _Totals:
    """One copy of one GEMM."""
    est = estimate(task, tiling, hw, slots)
    m, k, n = tiling.dims(task)
    db, ab = hw.data_bytes, hw.acc_bytes
    nk, nn = ceil_div(k, tiling.tk), ceil_div(n, tiling.tn)
    # Weight tiles read: once per COMPUTE's m-tile; the output-stationary array reads them
    # again for every block of PE rows of it.
    rows = hw.array.rows
    m_tiles = sum(count * (ceil_div(w, rows) if hw.array.output_stationary else 1)
                  for w, count in m_widths(task, tiling, m))
    executed = task.macs_executed(hw) if tiling.sparse else task.m * task.k * task.n
    k_held = k // task.nm[1] * task.nm[0] if tiling.sparse else k  # weight rows held per pass
    # Per COMPUTE (accounting._pe): its weight tile, its streamed A rows, its accumulators
    # written (and read back after the first k-tile); the loads write what DRAM gives, the
    # stores read the accumulators.
    # A chunked output-stationary COMPUTE covers a buffer tile's k-tiles at once: it adds
    # into its accumulators once (tiling.pe_cycles counts COMPUTEs the same way).
    k_computes = ceil_div(nk, min(tiling.kb, nk)) if chunked(tiling, hw) else nk
    reads = (m_tiles * k_held * n + m * k * nn) * db + m * n * k_computes * ab
    writes = est.read_bytes + m * n * k_computes * ab
    return _Totals(cycles=est.cycles, macs=executed, dense_macs=task.macs_dense,
                   dram_read=est.read_bytes, dram_write=m * n * db, sram_read=reads,
                   sram_write=writes)


def _pregen(task: GemmTask, tiling: Tiling, hw: HardwareSpec) -> _Totals:
    """Compressing one pruned weight copy: per tile a dense load, a COMPRESS, a store, the
    DMA overlapping the vector unit (the busier one bounds it)."""
    _, k, n = tiling.dims(task)
    nm_n, nm_m = task.nm
    tiles = ceil_div(k, tiling.tk) * ceil_div(n, tiling.tn)
    tk, tn, db = min(tiling.tk, k), min(tiling.tn, n), hw.data_bytes
    kept = tk // nm_m * nm_n
    dma = tiles * (dma_cycles(tk, tn * db, hw) + dma_cycles(kept, tn * db, hw))
    vec = tiles * compress_cycles(tk, tn, nm_m, hw)
    dense, packed = k * n * db, k // nm_m * nm_n * n * db
    return _Totals(cycles=max(dma, vec) + dma_cycles(tk, tn * db, hw), dram_read=dense,
                   dram_write=packed, sram_read=dense + packed, sram_write=dense + packed)


def _metrics(t: _Totals, hw: HardwareSpec) -> dict[str, float]:
    seconds = t.cycles / (hw.clock_mhz * 1e6)
    energy = energy_pj(hw.energy, t.macs, t.dram_read, t.dram_write, t.sram_read, t.sram_write,
                       0)["total"]
    pes = hw.array.rows * hw.array.cols
    return {
        "cycles": t.cycles,
        "latency_s": seconds,
        "energy_pj": energy,
        "edp_j_s": energy * 1e-12 * seconds,
        "throughput_gmacs": t.dense_macs / seconds / 1e9 if seconds else 0.0,
        "utilization": t.macs / (t.cycles * pes) if t.cycles else 0.0,
        "effective_utilization": t.dense_macs / (t.cycles * pes) if t.cycles else 0.0,
        "macs_executed": t.macs,
        "macs_dense_equivalent": t.dense_macs,
        "dram_read_bytes": t.dram_read,
        "dram_write_bytes": t.dram_write,
        "dram_bytes": t.dram_read + t.dram_write,
    }
