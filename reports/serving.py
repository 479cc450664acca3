"""Tables of a serving run (``serve.json`` of ``archsim serve``, docs/serving.md).

One summary row per serving run (TTFT, TPOT, throughput, the bounding unit of each phase) and
one row per step (prefill chunk or decode step), in the units a serving study reports: cycles
and milliseconds, and tokens per second for throughput.
"""

from __future__ import annotations

from typing import Any

from reports.inputs import ServeData

__all__ = ["SUMMARY_COLUMNS", "STEP_COLUMNS", "serving_table", "steps_table"]

SUMMARY_COLUMNS = [
    "workload", "hardware", "model", "batch", "prompt_tokens", "chunk_tokens", "output_tokens",
    "clock_mhz", "ttft_cycles", "ttft_ms", "tpot_cycles", "tpot_ms", "prefill_tokens_per_s",
    "decode_tokens_per_s", "end_to_end_tokens_per_s", "total_ms", "prefill_bound",
    "decode_bound", "file",
]
STEP_COLUMNS = [
    "step", "phase", "q_len", "kv_len", "cycles", "ms", "linear_cycles", "attention_cycles",
    "attention_share", "kv_bytes", "kv_blocks", "dma_busy_cycles", "pe_array_busy_cycles",
    "vector_busy_cycles", "bound",
]


def _per_s(tokens: float, cycles: float, clock_mhz: float | None) -> float | None:
    """Tokens per second over ``cycles`` at the clock (None without a clock or time)."""
    if not clock_mhz or not cycles:
        return None
    return tokens / (cycles / (clock_mhz * 1e6))


def _ms(cycles: float, clock_mhz: float | None) -> float | None:
    return cycles / (clock_mhz * 1e3) if clock_mhz else None


def serving_table(serves: list[ServeData]) -> tuple[list[str], list[dict[str, Any]]]:
    """One row per serving run.

    Throughput: the prefill's prompt tokens (all sequences) over TTFT, the decode's one token
    per sequence over TPOT, and every output token over the whole run (prefill and decode).
    TPOT is None (n/a) for a run of one output token: it has no decode step.
    """
    rows = []
    for serve in serves:
        d, clock = serve.doc, serve.clock_mhz
        decode = [s for s in d["steps"] if s["phase"] == "decode"]
        total = sum(s["cycles"] for s in d["steps"])
        rows.append({
            "workload": serve.name, "hardware": d.get("hardware"), "model": d["model"],
            "batch": d["batch"], "prompt_tokens": d["prompt_tokens"],
            "chunk_tokens": d.get("chunk_tokens"), "output_tokens": d["output_tokens"],
            "clock_mhz": clock, "ttft_cycles": d["ttft_cycles"],
            "ttft_ms": _ms(d["ttft_cycles"], clock),
            "tpot_cycles": d["tpot_cycles"] if decode else None,
            "tpot_ms": _ms(d["tpot_cycles"], clock) if decode else None,
            "prefill_tokens_per_s": _per_s(d["batch"] * d["prompt_tokens"], d["ttft_cycles"],
                                           clock),
            "decode_tokens_per_s": _per_s(d["batch"], d["tpot_cycles"], clock) if decode else None,
            "end_to_end_tokens_per_s": _per_s(d["batch"] * d["output_tokens"], total, clock),
            "total_ms": _ms(total, clock), "prefill_bound": d.get("prefill_bound"),
            "decode_bound": d.get("decode_bound") if decode else None, "file": str(serve.path),
        })
    return SUMMARY_COLUMNS, rows


def steps_table(serve: ServeData) -> tuple[list[str], list[dict[str, Any]]]:
    """One row per step, in order: prefill chunks, then decode steps."""
    rows = []
    for i, s in enumerate(serve.doc["steps"]):
        busy = s.get("unit_busy_cycles") if isinstance(s.get("unit_busy_cycles"), dict) else {}
        busy = {u: c for u, c in busy.items() if isinstance(c, (int, float))}
        rows.append({
            "step": i, "phase": s["phase"], "q_len": s["q_len"], "kv_len": s["kv_len"],
            "cycles": s["cycles"], "ms": _ms(s["cycles"], serve.clock_mhz),
            "linear_cycles": s["linear_cycles"], "attention_cycles": s["attention_cycles"],
            "attention_share": s["attention_cycles"] / s["cycles"] if s["cycles"] else None,
            "kv_bytes": s.get("kv_bytes"), "kv_blocks": s.get("kv_blocks"),
            "dma_busy_cycles": busy.get("dma"), "pe_array_busy_cycles": busy.get("pe_array"),
            "vector_busy_cycles": busy.get("vector"),
            "bound": max(busy, key=busy.get) if busy else None,
        })
    return STEP_COLUMNS, rows
