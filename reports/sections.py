"""Readers for the optional sections of results.json.

``spgemm`` (one entry per ``op: spgemm``, every simulated dataflow side by side; written by
archsim.spgemm) and ``attention`` (one record per attention layer with its density and speedup
over dense attention; archsim.attention). These functions flatten them into rows for the plots
and return nothing when a run has no such section, so a report works with or without them.
"""

from __future__ import annotations

from typing import Any

from reports.inputs import RunData

__all__ = ["spgemm_rows", "attention_rows"]


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _entries(section: Any) -> list[dict]:
    if isinstance(section, dict):
        section = list(section.values())
    return [e for e in section or () if isinstance(e, dict)]


def spgemm_rows(run: RunData) -> list[dict[str, Any]]:
    """``{matrix, dataflow, cycles, dram_bytes, winner}`` per SpGEMM op and dataflow."""
    rows = []
    for entry in _entries(run.doc.get("spgemm")):
        name = str(entry.get("name") or "?")
        for flow in _entries(entry.get("dataflows")):
            if not _num(flow.get("cycles")):
                continue
            dram = flow.get("dram_bytes")
            if isinstance(dram, dict):
                dram = sum(v for v in dram.values() if _num(v))
            if not _num(dram):
                dram = (flow.get("dram_read_bytes") or 0) + (flow.get("dram_write_bytes") or 0)
            rows.append({"matrix": name, "dataflow": str(flow.get("dataflow")),
                         "cycles": flow["cycles"], "dram_bytes": dram,
                         "winner": flow.get("dataflow") == entry.get("winner")})
    return rows


def attention_rows(run: RunData) -> list[dict[str, Any]]:
    """``{layer, pattern, sparsity, speedup}`` per attention layer (sparsity = 1 − density)."""
    rows = []
    for entry in _entries(run.doc.get("attention")):
        density, speedup = entry.get("density"), entry.get("speedup")
        sparsity = 1.0 - density if _num(density) else entry.get("sparsity")
        if _num(sparsity) and _num(speedup):
            rows.append({"layer": str(entry.get("layer") or "?"),
                         "pattern": str(entry.get("pattern") or "?"),
                         "sparsity": float(sparsity), "speedup": float(speedup)})
    return rows
