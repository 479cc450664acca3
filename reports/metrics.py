"""The metrics a design point reports, and which of them DSE may optimize.

One registry serves the sweep validator (names usable in constraints and objectives), the
results store (every metric lands in one JSON column) and the report (labels and units).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Metric", "METRICS", "OBJECTIVES", "AREA_METRICS", "DENSE_METRICS", "metric"]


@dataclass(frozen=True, slots=True)
class Metric:
    """One reported quantity.

    Attributes
    ----------
    name
        Identifier used in sweep files, the store and CSV columns.
    label
        Axis label for plots, with the unit.
    goal
        The better direction when the metric is an objective.
    needs
        ``"area"``: only with a fitted area model; ``"dense"``: only with ``compare_dense: true``.
    """

    name: str
    label: str
    goal: Literal["min", "max"]
    description: str
    needs: Literal["", "area", "dense"] = ""


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("cycles", "cycles", "min", "total cycles of the workload"),
    Metric("latency_s", "latency (s)", "min", "cycles / clock"),
    Metric("energy_pj", "energy (pJ)", "min", "total energy from the per-action table"),
    Metric("edp_j_s", "EDP (J·s)", "min", "energy (J) × latency (s)"),
    Metric("throughput_gmacs", "throughput (dense-equivalent GMAC/s)", "max",
           "dense-equivalent MACs per second"),
    Metric("utilization", "PE utilization", "max", "executed MACs / (cycles · PEs)"),
    Metric("effective_utilization", "effective PE utilization", "max",
           "dense-equivalent MACs / (cycles · PEs); above 1 when N:M skipping pays off"),
    Metric("macs_executed", "MACs executed", "min", "MACs the PE array performed"),
    Metric("macs_dense_equivalent", "dense-equivalent MACs", "min", "MACs of the dense GEMMs"),
    Metric("amdahl_bound", "speedup bound", "max",
           "speedup over dense if no row ran faster than its MACs shrank (mac_bound)"),
    Metric("dram_read_bytes", "DRAM read (B)", "min", "bytes read from DRAM"),
    Metric("dram_write_bytes", "DRAM written (B)", "min", "bytes written to DRAM"),
    Metric("dram_bytes", "DRAM traffic (B)", "min", "bytes read + written"),
    Metric("instructions", "instructions", "min", "tile instructions executed"),
    Metric("pe_busy_cycles", "PE-array busy cycles", "min", "cycles the PE array computed"),
    Metric("pe_stall_cycles", "PE-array stall cycles", "min", "PE array waiting on a dependency"),
    Metric("dma_busy_cycles", "DMA busy cycles", "min", "cycles the DMA engine moved data"),
    Metric("dma_stall_cycles", "DMA stall cycles", "min", "DMA waiting on a dependency"),
    Metric("vector_busy_cycles", "vector busy cycles", "min", "cycles the vector unit worked"),
    Metric("vector_stall_cycles", "vector stall cycles", "min", "vector unit waiting"),
    Metric("energy_mac_pj", "MAC energy (pJ)", "min", "energy of the MACs"),
    Metric("energy_dram_pj", "DRAM energy (pJ)", "min", "energy of DRAM traffic"),
    Metric("energy_sram_pj", "SRAM energy (pJ)", "min", "energy of buffer traffic"),
    Metric("energy_vector_pj", "vector energy (pJ)", "min", "energy of the vector unit"),
    Metric("pes", "PEs", "min", "array rows × cols"),
    Metric("peak_gmacs", "peak GMAC/s", "max", "PEs × clock"),
    Metric("dram_gbytes_per_s", "DRAM bandwidth (GB/s)", "max", "bytes per cycle × clock"),
    Metric("dense_cycles", "dense cycles", "min", "cycles with all sparsity removed", "dense"),
    Metric("speedup", "speedup over dense", "max", "dense_cycles / cycles", "dense"),
    Metric("lut", "LUTs", "min", "LUTs from the fitted area model", "area"),
    Metric("ff", "flip-flops", "min", "flip-flops from the fitted area model", "area"),
    Metric("dsp", "DSPs", "min", "DSP slices from the fitted area model", "area"),
    Metric("bram", "BRAM36", "min", "block RAMs (RAMB36 equivalents) from the area model", "area"),
    Metric("uram", "URAM288", "min", "UltraRAMs from the fitted area model", "area"),
    Metric("area", "area (fraction of the XCVU9P)", "min",
           "largest fraction of the device's LUTs, FFs, DSPs, BRAMs or URAMs the design uses",
           "area"),
    Metric("gmacs_per_klut", "GMAC/s per kLUT", "max", "throughput per thousand LUTs", "area"),
    Metric("gmacs_per_dsp", "GMAC/s per DSP", "max", "throughput per DSP slice", "area"),
)}

#: Metrics a sweep may optimize (the brief's cycles/latency, energy, area, EDP, throughput per
#: LUT or DSP, plus speedup and utilization, which SAT's evaluation reports).
OBJECTIVES = (
    "cycles", "latency_s", "energy_pj", "edp_j_s", "area", "throughput_gmacs", "gmacs_per_klut",
    "gmacs_per_dsp", "speedup", "utilization", "effective_utilization", "dram_bytes",
)

AREA_METRICS = tuple(name for name, m in METRICS.items() if m.needs == "area")
DENSE_METRICS = tuple(name for name, m in METRICS.items() if m.needs == "dense")


def metric(name: str) -> Metric:
    """The registered metric ``name``; unknown names get a generic one (a report never fails)."""
    return METRICS.get(name) or Metric(name, name.replace("_", " "), "min", name)
