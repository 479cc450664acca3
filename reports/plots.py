"""Report figures with matplotlib (object API, Agg canvas: no display, no global pyplot state).

Each function takes report inputs (reports.inputs) and returns :class:`Plot` objects, or nothing
when its data is absent, so a report shows what its inputs support and never fails for lack of
a section. Figures: Pareto fronts, speedup over dense per model, per-layer latency breakdown,
utilization, roofline, SpGEMM dataflows and attention sparsity (the last two from the optional
``spgemm`` and ``attention`` keys of results.json).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator

from reports.inputs import RunData, ServeData, SweepData
from reports.metrics import metric
from reports.pareto import pareto_mask
from reports.store import PointRow

__all__ = [
    "Plot",
    "layer_breakdown",
    "sweep_plots",
    "run_plots",
    "speedup_plot",
    "spgemm_plot",
    "attention_plot",
    "serve_plot",
]

#: One colour per role, used the same way in every figure.
COLORS = {
    "compute": "#4C72B0", "dram": "#DD8452", "stall": "#A5A5A5", "front": "#C44E52",
    "points": "#8C8C8C", "infeasible": "#E8A0A0", "bar": "#4C72B0", "bound": "#222222",
}
PHASE_COLORS = {"ff": "#4C72B0", "bp": "#55A868", "wg": "#C44E52", "pregen": "#8172B2",
                "inference": "#4C72B0", "prefill": "#DD8452", "decode": "#937860"}


@dataclass
class Plot:
    """A finished figure: ``name`` is the file stem, ``caption`` says how to read it."""

    name: str
    title: str
    caption: str
    figure: Figure


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig


def _log_if_wide(ax, values: Sequence[float], axis: str) -> None:
    v = [x for x in values if x and x > 0]
    if v and max(v) / min(v) > 100:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def _short(name: str, prefix: str) -> str:
    return name[len(prefix):] if prefix and name.startswith(prefix) else name


def _common_prefix(names: Sequence[str]) -> str:
    if len(names) < 2:
        return ""
    parts = [n.split(".") for n in names]
    prefix = []
    for group in zip(*parts):
        if len(set(group)) != 1:
            break
        prefix.append(group[0])
    return ".".join(prefix) + "." if prefix else ""


def _params_label(row: PointRow, axes: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{name}={_fmt_value(row.params.get(key))}" for key, name in axes)


def _fmt_value(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{x}" for k, x in v.items()) + "}"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


# --------------------------------------------------------------------------------------------
# Per-layer latency breakdown (runs and the best design of a sweep)
# --------------------------------------------------------------------------------------------


def _breakdown(layers: list[dict[str, Any]], bw_bytes_per_cycle: float) -> dict[str, list]:
    """Cycles per layer split into compute, exposed DRAM time and other stalls.

    ``compute`` is the PE array's busy time. Of the remaining cycles, the part that the layer's
    DRAM traffic at full bandwidth would take is ``dram``; whatever is left (latency, pipeline
    fill, dependencies) is ``stall``. The three add up to the layer's cycles.
    """
    # Network order: where each layer's first GEMM runs (weight pre-generation runs ahead of
    # the whole iteration and would put the dense stem convolution last).
    agg: dict[str, list[float]] = {}
    for row in sorted(layers, key=lambda r: r["phase"] == "pregen"):
        agg.setdefault(row["layer"], [0.0, 0.0, 0.0])
    for row in layers:
        cycles = float(row["cycles"])
        compute = min(float(row["pe_busy_cycles"]), cycles)
        transfer = (row["dram_read_bytes"] + row["dram_write_bytes"]) / bw_bytes_per_cycle
        dram = min(cycles - compute, transfer)
        a = agg[row["layer"]]
        a[0] += compute
        a[1] += dram
        a[2] += cycles - compute - dram
    names = list(agg)
    return {"layer": names, "compute": [agg[n][0] for n in names],
            "dram": [agg[n][1] for n in names], "stall": [agg[n][2] for n in names]}


def layer_breakdown(layers: list[dict[str, Any]], hardware: dict[str, Any], title: str,
                    name: str, max_layers: int = 60) -> Plot | None:
    """Stacked horizontal bars: per layer (all phases), compute / DRAM / stall cycles."""
    if not layers:
        return None
    data = _breakdown(layers, hardware["dram"]["bandwidth_bytes_per_cycle"])
    order = sorted(range(len(data["layer"])),
                   key=lambda i: -(data["compute"][i] + data["dram"][i] + data["stall"][i]))
    keep = sorted(order[:max_layers])  # execution order reads best
    rest = order[max_layers:]
    labels = [data["layer"][i] for i in keep]
    prefix = _common_prefix(labels)
    labels = [_short(label, prefix) for label in labels]
    parts = {k: [data[k][i] for i in keep] for k in ("compute", "dram", "stall")}
    if rest:
        labels.append(f"other ({len(rest)} layers)")
        for k in parts:
            parts[k].append(sum(data[k][i] for i in rest))
    total = sum(sum(v) for v in parts.values())
    fig = _figure(8.5, 1.5 + 0.22 * len(labels))
    ax = fig.add_subplot()
    y = np.arange(len(labels))[::-1]
    left = np.zeros(len(labels))
    for key, label in (("compute", "compute (PE array busy)"), ("dram", "DRAM transfer exposed"),
                       ("stall", "other stall")):
        vals = np.array(parts[key])
        share = vals.sum() / total if total else 0
        ax.barh(y, vals, left=left, color=COLORS[key], label=f"{label}: {share:.0%}", height=0.75)
        left += vals
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("cycles (all phases of the layer)")
    ax.xaxis.set_major_formatter(EngFormatter())
    ax.set_title(title, fontsize=10)
    # Below the axes, so that no bar is ever hidden behind it.
    fig.legend(loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    ax.margins(y=0.01)
    caption = ("Cycles of each layer, all training phases summed, split into PE-array busy time, "
               "the DRAM transfer time that compute did not hide (bytes / bandwidth, at most the "
               "non-compute cycles), and the remaining stall (latency, fill, dependencies).")
    if prefix:
        caption += f" Layer names drop the common prefix '{prefix}'."
    return Plot(name, title, caption, fig)


# --------------------------------------------------------------------------------------------
# Sweeps
# --------------------------------------------------------------------------------------------


def _pareto_plot(sweep: SweepData) -> Plot | None:
    objectives = sweep.objectives
    ok = [r for r in sweep.ok if all(m in r.metrics for m, _ in objectives)]
    if not ok or not objectives:
        return None
    infeasible = [r for r in sweep.rows if r.status == "infeasible" and r.metrics
                  and all(m in r.metrics for m, _ in objectives)]
    if len(objectives) == 1:
        m, goal = objectives[0]
        vals = sorted((r.metrics[m] for r in ok), reverse=goal == "max")
        fig = _figure(7, 4)
        ax = fig.add_subplot()
        ax.plot(range(1, len(vals) + 1), vals, ".", color=COLORS["points"])
        ax.plot([1], [vals[0]], "o", color=COLORS["front"], label="best")
        ax.set_xlabel("design rank")
        ax.set_ylabel(metric(m).label)
        _log_if_wide(ax, vals, "y")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        ax.set_title(f"{sweep.name}: {goal} {m} over {len(vals)} designs", fontsize=10)
        return Plot(f"{_slug(sweep.name)}_objective", f"{sweep.name}: objective", (
            "Every feasible design ranked by the single objective; the best is marked."), fig)
    pairs = [(0, 1), (0, 2), (1, 2)][: 1 if len(objectives) == 2 else 3]
    fig = _figure(6.2 * len(pairs), 4.6)
    full = pareto_mask(np.array([[r.metrics[m] for m, _ in objectives] for r in ok]),
                       [g for _, g in objectives])
    for k, (i, j) in enumerate(pairs):
        ax = fig.add_subplot(1, len(pairs), k + 1)
        (mx, gx), (my, gy) = objectives[i], objectives[j]
        xs = np.array([r.metrics[mx] for r in ok], dtype=float)
        ys = np.array([r.metrics[my] for r in ok], dtype=float)
        _feasible_scatter(ax, ok, xs, ys, dict(sweep.axes))
        if infeasible:
            ax.scatter([r.metrics[mx] for r in infeasible], [r.metrics[my] for r in infeasible],
                       s=14, marker="x", color=COLORS["infeasible"],
                       label=f"constraint failed ({len(infeasible)})", zorder=1)
        if len(objectives) > 2 and full.any():
            ax.scatter(xs[full], ys[full], s=22, facecolor="none", edgecolor="#4C72B0",
                       label="Pareto-optimal on all objectives", zorder=3)
        front = pareto_mask(np.column_stack([xs, ys]), [gx, gy])
        order = np.argsort(xs[front])
        ax.plot(xs[front][order], ys[front][order], "o-", color=COLORS["front"], ms=5, lw=1.5,
                label=f"Pareto front ({int(front.sum())})", zorder=4, drawstyle="steps-post"
                if gx == gy == "min" else "default")
        ax.set_xlabel(f"{metric(mx).label} ({'lower' if gx == 'min' else 'higher'} is better)")
        ax.set_ylabel(f"{metric(my).label} ({'lower' if gy == 'min' else 'higher'} is better)")
        _log_if_wide(ax, xs, "x")
        _log_if_wide(ax, ys, "y")
        for axis, vals in ((ax.xaxis, xs), (ax.yaxis, ys)):
            top = np.nanmax(np.abs(vals))
            if axis.get_scale() == "linear" and (top >= 1e4 or 0 < top < 1e-2):
                axis.set_major_formatter(EngFormatter())  # 250 G or 4 µ, not an offset "1e11"
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    screened = f"\n{sweep.screened}" if sweep.screened else ""
    fig.suptitle(f"{sweep.name}: Pareto front ({len(ok)} feasible of {len(sweep.rows)} points)"
                 f"{screened}", fontsize=11)
    return Plot(f"{_slug(sweep.name)}_pareto", f"{sweep.name}: Pareto front", (
        "Each dot is a simulated design that met every constraint (one marker per value of a "
        "text-valued axis, such as the dataflow); red: the designs no other design beats on "
        "both plotted objectives; crosses: designs that failed a constraint on a metric."), fig)


#: Markers and colours of the categories of a text-valued sweep axis (e.g. array.dataflow).
_CATEGORY_STYLES = (("o", "#8C8C8C"), ("^", "#4C72B0"), ("s", "#55A868"), ("D", "#8172B2"),
                    ("v", "#CCB974"), ("P", "#64B5CD"))


def _category_axis(ok: list[PointRow]) -> str | None:
    """The first sweep parameter with text values (2 to 6 of them), to tell designs apart."""
    for key in ok[0].params:
        values = {r.params.get(key) for r in ok}
        if all(isinstance(v, str) for v in values) and 2 <= len(values) <= len(_CATEGORY_STYLES):
            return key
    return None


def _feasible_scatter(ax, ok: list[PointRow], xs: np.ndarray, ys: np.ndarray,
                      names: dict[str, str]) -> None:
    """The feasible designs, one marker per value of a text-valued axis where there is one
    (``names``: axis names by override key)."""
    key = _category_axis(ok)
    if key is None:
        ax.scatter(xs, ys, s=12, color=COLORS["points"], alpha=0.6,
                   label=f"feasible designs ({len(ok)})", zorder=2)
        return
    values = sorted({r.params[key] for r in ok})
    for value, (marker, color) in zip(values, _CATEGORY_STYLES):
        sel = np.array([r.params[key] == value for r in ok])
        ax.scatter(xs[sel], ys[sel], s=16, marker=marker, color=color, alpha=0.7,
                   label=f"{names.get(key, key)} = {value} ({int(sel.sum())})", zorder=2)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _utilization_plot(sweep: SweepData) -> Plot | None:
    ok = [r for r in sweep.ok if "utilization" in r.metrics]
    if len(ok) < 2:
        return None
    pes = [r.metrics.get("pes", 0) for r in ok]
    xkey, xlabel = ("pes", "PEs (array rows × cols)")
    if len(set(pes)) < 2:
        numeric = [(k, n) for k, n in sweep.axes
                   if all(isinstance(r.params.get(k), (int, float)) for r in ok)
                   and len({r.params.get(k) for r in ok}) > 1]
        if not numeric:
            return None
        xkey, xlabel = numeric[0][0], numeric[0][1]
    xs = [r.metrics["pes"] if xkey == "pes" else r.params[xkey] for r in ok]
    bw = [r.metrics.get("dram_gbytes_per_s", 0) for r in ok]
    fig = _figure(7.5, 4.5)
    ax = fig.add_subplot()
    # Designs with the same x sit on one vertical line: a small jitter shows how many there are.
    rng = np.random.default_rng(0)
    jitter = np.exp(rng.uniform(-0.06, 0.06, len(xs)))
    sc = ax.scatter(np.array(xs, dtype=float) * jitter, [r.metrics["utilization"] for r in ok],
                    c=bw, cmap="viridis", s=16, alpha=0.85)
    fig.colorbar(sc, ax=ax, label="DRAM bandwidth (GB/s)")
    if xkey == "pes":
        ax.set_xscale("log", base=2)
        ticks = sorted(set(xs))
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("PE utilization (executed MACs / (cycles · PEs))")
    ax.set_ylim(0, min(1.05, max(r.metrics["utilization"] for r in ok) * 1.15 + 0.02))
    ax.grid(alpha=0.3)
    ax.set_title(f"{sweep.name}: utilization of {len(ok)} designs", fontsize=10)
    return Plot(f"{_slug(sweep.name)}_utilization", f"{sweep.name}: utilization", (
        "Fraction of PE-cycles doing useful (executed) MACs per design, against array size, "
        "coloured by DRAM bandwidth: where more PEs stop paying off, memory is the limit."), fig)


def _roof(ax, peak: float, bw: float, lo: float, hi: float, label: str | None, color: str,
          style: str = "-") -> None:
    x = np.geomspace(min(lo, peak / bw / 4), max(hi, peak / bw * 4), 200)
    ax.plot(x, np.minimum(peak, bw * x), style, color=color, lw=1.3, label=label, zorder=2)


def _plain_log_axes(ax) -> None:
    # Log axes spanning less than a decade otherwise label ticks as 6×10⁰.
    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(fmt)
        axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _roof_text(peak: float, bw: float) -> str:
    return f"{peak:.3g} GMAC/s, {bw:.3g} GB/s"


def _finish_roofline(ax, title: str) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_axes(ax)
    ax.set_xlabel("operational intensity (executed MACs per DRAM byte)")
    ax.set_ylabel("performance (executed GMAC/s)")
    ax.grid(alpha=0.3, which="major")
    ax.set_title(title, fontsize=10)


def _run_roofline(run: RunData) -> Plot | None:
    hw = run.doc["hardware"]
    clock = hw["clock_mhz"] * 1e6
    peak = hw["array"]["rows"] * hw["array"]["cols"] * clock / 1e9
    bw = hw["dram"]["bandwidth_bytes_per_cycle"] * clock / 1e9
    groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for row in run.doc["layers"]:
        traffic = row["dram_read_bytes"] + row["dram_write_bytes"]
        if row["macs_executed"] and traffic and row["cycles"]:
            groups[row["phase"]].append((row["macs_executed"] / traffic,
                                         row["macs_executed"] / (row["cycles"] / clock) / 1e9))
    if not groups:
        return None
    fig = _figure(7.5, 4.8)
    ax = fig.add_subplot()
    xs = [x for pts in groups.values() for x, _ in pts]
    _roof(ax, peak, bw, min(xs) / 2, max(xs) * 2, f"roof: {_roof_text(peak, bw)}", "#222222")
    for phase, pts in groups.items():
        ax.scatter(*zip(*pts), s=18, alpha=0.85, label=phase, color=PHASE_COLORS.get(phase),
                   zorder=3)
    _finish_roofline(ax, f"{run.name}: roofline per GEMM")
    ax.legend(fontsize=8, loc="lower right")
    return Plot(f"{_slug(run.name)}_roofline", f"{run.name}: roofline per GEMM", (
        "Each dot is one GEMM (coloured by phase), its executed MACs against its DRAM traffic "
        "and cycles; the roof is the PE array's peak MAC rate and the DRAM bandwidth."), fig)


def _sweep_roofline(sweep: SweepData) -> Plot | None:
    pts = []
    for r in sweep.ok:
        m = r.metrics
        if m.get("dram_bytes") and m.get("latency_s") and m.get("macs_executed"):
            pts.append((m["macs_executed"] / m["dram_bytes"],
                        m["macs_executed"] / m["latency_s"] / 1e9,
                        (m["peak_gmacs"], m["dram_gbytes_per_s"])))
    if not pts:
        return None
    roofs = sorted({roof for _, _, roof in pts}, reverse=True)
    xs = [x for x, _, _ in pts]
    lo, hi = min(xs) / 2, max(xs) * 2
    fig = _figure(7.5, 4.8)
    ax = fig.add_subplot()
    if len(roofs) <= 6:
        # Few distinct machines: each roof and its designs share a colour.
        palette = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B2", "#937860"]
        for k, roof in enumerate(roofs):
            mine = [(x, y) for x, y, rf in pts if rf == roof]
            _roof(ax, *roof, lo, hi, None, palette[k])
            ax.scatter(*zip(*mine), s=16, alpha=0.85, color=palette[k], zorder=3,
                       label=f"{_roof_text(*roof)} ({len(mine)})")
        ax.legend(fontsize=7, loc="lower right", title="roof (designs)", title_fontsize=7)
        caption = ("Each dot is one design's whole workload, in the colour of its hardware's "
                   "roof: min(peak MAC rate, DRAM bandwidth × intensity).")
    else:
        # Many machines: colour each design by how close it gets to its own roof instead.
        frac = [y / min(rf[0], rf[1] * x) for x, y, rf in pts]
        sc = ax.scatter(xs, [y for _, y, _ in pts], c=frac, cmap="viridis", s=16, zorder=3,
                        vmin=0, vmax=1)
        fig.colorbar(sc, ax=ax, label="fraction of the design's own roof")
        _roof(ax, *roofs[0], lo, hi, f"highest roof: {_roof_text(*roofs[0])}", "#222222")
        _roof(ax, *roofs[-1], lo, hi, f"lowest roof: {_roof_text(*roofs[-1])}", "#888888", "--")
        ax.legend(fontsize=7, loc="lower right")
        caption = (f"Each dot is one design's whole workload, coloured by the fraction of its "
                   f"own roof it reaches; {len(roofs)} distinct roofs, the highest and lowest "
                   f"drawn.")
    _finish_roofline(ax, f"{sweep.name}: roofline of {len(pts)} designs")
    return Plot(f"{_slug(sweep.name)}_roofline", f"{sweep.name}: roofline", caption, fig)


def sweep_plots(sweep: SweepData) -> list[Plot]:
    """Pareto front, utilization, roofline, and the per-layer breakdown of the best design."""
    from reports.dse import best_designs

    plots = [_pareto_plot(sweep), _utilization_plot(sweep), _sweep_roofline(sweep)]
    best = best_designs(sweep.rows, sweep.objectives) if sweep.objectives else []
    if best and best[0].layers and best[0].hardware:
        b = best[0]
        m, _ = sweep.objectives[0]
        plots.append(layer_breakdown(
            b.layers, b.hardware, f"{sweep.name}: per-layer latency of the best design on {m}\n"
            f"({_params_label(b, sweep.axes)})", f"{_slug(sweep.name)}_best_layers"))
    return [p for p in plots if p is not None]


# --------------------------------------------------------------------------------------------
# Runs (results.json)
# --------------------------------------------------------------------------------------------


def _run_utilization(runs: list[RunData]) -> Plot | None:
    order = ["inference", "ff", "bp", "wg", "prefill", "decode"]
    data = []
    for run in runs:
        pes = run.doc["hardware"]["array"]["rows"] * run.doc["hardware"]["array"]["cols"]
        by = defaultdict(lambda: [0, 0, 0])
        for row in run.doc["layers"]:
            b = by[row["phase"]]
            b[0] += row["macs_executed"]
            b[1] += row["macs_dense_equivalent"]
            b[2] += row["cycles"]
        # Phases without MACs (weight pre-generation runs on the vector unit) have no utilization.
        util = {p: (v[0] / (v[2] * pes), v[1] / (v[2] * pes)) for p, v in by.items()
                if v[2] and v[0]}
        if util:
            data.append((run, util))
    present = sorted({p for _, d in data for p in d},
                     key=lambda p: (order.index(p) if p in order else len(order), p))
    if not present:
        return None
    fig = _figure(max(6.0, 1.2 + 1.6 * len(data) * len(present) / 3), 4.2)
    ax = fig.add_subplot()
    width = 0.8 / len(present)
    x = np.arange(len(data))
    for k, phase in enumerate(present):
        util = [d.get(phase, (0, 0))[0] for _, d in data]
        eff = [d.get(phase, (np.nan, np.nan))[1] for _, d in data]
        pos = x - 0.4 + width * (k + 0.5)
        ax.bar(pos, util, width * 0.9, color=PHASE_COLORS.get(phase), label=phase)
        ax.scatter(pos, eff, marker="_", s=120, color=COLORS["bound"], zorder=3,
                   label="effective (dense-equivalent)" if k == 0 else None)
    ax.set_xticks(x, [r.name for r, _ in data], fontsize=8)
    ax.set_ylabel("PE utilization")
    ax.axhline(1.0, color="#999999", lw=0.8, ls="--")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=min(6, len(present) + 1), loc="upper left")
    ax.set_ylim(0, max(1.1, max((e for _, d in data for _, e in d.values()), default=1) * 1.25))
    ax.set_title("PE utilization per phase", fontsize=10)
    return Plot("runs_utilization", "utilization per phase", (
        "Bars: executed MACs / (cycles · PEs) per phase of each run; black ticks: the same with "
        "dense-equivalent MACs, above the bar when N:M skipping pays off (FF and BP under "
        "BDWP; WG stays dense)."), fig)


def run_plots(runs: list[RunData]) -> list[Plot]:
    """Per-layer breakdown and roofline of each run, and utilization per phase across runs."""
    plots: list[Plot | None] = []
    for run in runs:
        plots.append(layer_breakdown(run.doc["layers"], run.doc["hardware"],
                                     f"{run.name}: per-layer latency", f"{_slug(run.name)}_layers"))
        plots.append(_run_roofline(run))
    plots.append(_run_utilization(runs))
    return [p for p in plots if p is not None]


# --------------------------------------------------------------------------------------------
# Speedup over dense per model (SAT's evaluation figure)
# --------------------------------------------------------------------------------------------


def speedup_plot(sweeps: list[SweepData], runs: list[RunData]) -> Plot | None:
    """Bars of speedup over dense per model, with the ideal (Amdahl) bound marked.

    From runs with ``comparison`` (``archsim run --compare-dense``) one bar each; from sweeps
    with ``compare_dense: true``, one bar per value of a ``*.model`` axis (or per sweep), the
    mean over designs with the min–max range as whiskers.
    """
    bars: list[tuple[str, float, float, float, float]] = []  # label, value, lo, hi, bound
    for run in runs:
        c = run.doc.get("comparison")
        # A run without GEMM work (SpGEMM only) has no speedup bound: nothing to draw.
        if c and c.get("speedup") and c.get("amdahl_bound"):
            bars.append((f"{run.model}\n(run)", c["speedup"], c["speedup"], c["speedup"],
                         c["amdahl_bound"]))
    for sweep in sweeps:
        rows = [r for r in sweep.ok if "speedup" in r.metrics]
        if not rows:
            continue
        model_key = next((k for k, _ in sweep.axes if k.endswith(".model")), None)
        groups: dict[str, list[PointRow]] = defaultdict(list)
        for r in rows:
            groups[str(r.params[model_key]) if model_key else sweep.name].append(r)
        for label, g in groups.items():
            s = [r.metrics["speedup"] for r in g]
            bound = float(np.mean([r.metrics["amdahl_bound"] for r in g]))
            bars.append((f"{label}\n({len(g)} design{'s' * (len(g) > 1)})", float(np.mean(s)),
                         min(s), max(s), bound))
    if not bars:
        return None
    if len(bars) > 1:
        gmean = math.exp(np.mean([math.log(b[1]) for b in bars]))
        bars.append(("geomean", gmean, gmean, gmean, math.nan))
    fig = _figure(max(5.0, 1.5 + 0.9 * len(bars)), 4.2)
    ax = fig.add_subplot()
    x = np.arange(len(bars))
    vals = np.array([b[1] for b in bars])
    # No whisker (not even its caps) where there is no range to show.
    err = np.array([[b[1] - b[2] if b[3] > b[2] else np.nan for b in bars],
                    [b[3] - b[1] if b[3] > b[2] else np.nan for b in bars]])
    colors = [COLORS["bar"]] * (len(bars) - 1) + ["#55A868"] if len(bars) > 1 else [COLORS["bar"]]
    ax.bar(x, vals, 0.6, color=colors, yerr=err if np.isfinite(err).any() else None, capsize=4)
    for xi, b in zip(x, bars):
        # Inside the bar, where neither the whisker nor the bound tick can cover it.
        ax.text(xi, b[1] / 2, f"{b[1]:.2f}×", ha="center", va="center", fontsize=9,
                color="white", fontweight="bold")
    bounds = [(xi, b[4]) for xi, b in zip(x, bars) if not math.isnan(b[4])]
    if bounds:
        ax.scatter(*zip(*bounds), marker="_", s=400, color=COLORS["bound"], zorder=3,
                   label="MAC bound (time × dense / executed MACs)")
        ax.legend(fontsize=8, loc="upper left")
    ax.axhline(1.0, color="#999999", lw=0.8, ls="--")
    ax.set_xticks(x, [b[0] for b in bars], fontsize=9)
    ax.set_ylabel("speedup over dense")
    top = max([b[3] for b in bars] + [b[4] for b in bars if not math.isnan(b[4])])
    ax.set_ylim(0, top * 1.2)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("speedup of sparse (BDWP / N:M) over dense, per model", fontsize=10)
    return Plot("speedup", "speedup over dense", (
        "Cycles of the dense workload divided by cycles of the sparse one, on the same hardware. "
        "Whiskers: range over the designs of a sweep. Black ticks: the bound if every GEMM "
        "kept its dense efficiency."), fig)


# --------------------------------------------------------------------------------------------
# Optional results.json sections
# --------------------------------------------------------------------------------------------


def spgemm_plot(runs: list[RunData]) -> Plot | None:
    """SpGEMM dataflow comparison from the ``spgemm`` key of results.json, when present."""
    from reports.sections import spgemm_rows

    rows = [r for run in runs for r in spgemm_rows(run)]
    if not rows:
        return None
    matrices = list(dict.fromkeys(r["matrix"] for r in rows))
    flows = list(dict.fromkeys(r["dataflow"] for r in rows))
    palette = {"inner": "#4C72B0", "outer": "#DD8452", "gustavson": "#55A868", "hash": "#C44E52"}
    fig = _figure(max(7.0, 2.0 + 0.7 * len(matrices) * len(flows)), 4.6)
    axes = fig.subplots(1, 2)
    width = 0.8 / len(flows)
    x = np.arange(len(matrices))
    starred = False
    for k, flow in enumerate(flows):
        pos = x - 0.4 + width * (k + 0.5)
        found = [next((r for r in rows if r["matrix"] == m and r["dataflow"] == flow), None)
                 for m in matrices]
        for ax, key in zip(axes, ("cycles", "dram_bytes")):
            have = [(p, r[key]) for p, r in zip(pos, found) if r is not None]
            if have:
                ax.bar(*zip(*have), width * 0.9, label=flow, color=palette.get(flow))
        wins = [(p, r["cycles"]) for p, r in zip(pos, found) if r is not None and r["winner"]]
        if wins:
            axes[0].scatter([p for p, _ in wins], [c * 1.35 for _, c in wins], marker="*", s=70,
                            color="black", zorder=3, label=None if starred else "fewest cycles")
            starred = True
    for ax, label in zip(axes, ("cycles", "DRAM traffic (bytes)")):
        ax.set_xticks(x, matrices, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i] == "fewest cycles")
    axes[0].legend([handles[i] for i in order], [labels[i] for i in order], fontsize=8)
    fig.suptitle("SpGEMM dataflows: cycles and DRAM traffic per product", fontsize=11)
    return Plot("spgemm", "SpGEMM dataflow comparison", (
        "The dataflows each SpGEMM op requested (inner product, outer product, row-wise "
        "Gustavson, row-wise with a hash accumulator), from the 'spgemm' section of "
        "results.json, log scale; a star marks the fastest. Missing bars: not requested."), fig)


def _family(pattern: str) -> tuple[str, str]:
    """``"block-sparse 0.5"`` → (``"block-sparse"``, ``"0.5"``): a pattern family and its knob."""
    head, _, last = pattern.rpartition(" ")
    try:
        float(last)
    except ValueError:
        return pattern, ""
    return head, last


def attention_plot(runs: list[RunData]) -> Plot | None:
    """Attention sparsity against speedup from the ``attention`` key of results.json."""
    from reports.sections import attention_rows

    rows = [r for run in runs for r in attention_rows(run)]
    if not rows:
        return None
    fig = _figure(7.5, 4.6)
    ax = fig.add_subplot()
    families: dict[str, set] = defaultdict(set)
    for r in rows:  # layers of one model repeat the same point: keep it once
        fam, knob = _family(r["pattern"])
        families[fam].add((r["sparsity"], r["speedup"], knob))
    top = max(r["sparsity"] for r in rows)
    xs = np.linspace(0, min(top * 1.05, 0.97), 100)
    ax.plot(xs, 1 / (1 - xs), ":", color="#999999", label="ideal 1 / (1 − sparsity)")
    for fam, pts in families.items():
        pts = sorted(pts)
        style = dict(color="black", marker="s") if fam == "dense" else dict(marker="o")
        line = ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", ms=5, lw=1.2, label=fam,
                       **style)[0]
        for x, y, knob in pts:
            if knob:
                ax.annotate(knob, (x, y), xytext=(4, -10), textcoords="offset points",
                            fontsize=7, color=line.get_color())
    ax.set_xlabel("attention sparsity (1 − fraction of (query, key) pairs computed)")
    ax.set_ylabel("speedup over dense attention")
    ax.set_xlim(-0.02, 1.0)
    ax.set_ylim(0, max(r["speedup"] for r in rows) * 1.25)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("sparse attention: sparsity vs speedup (same hardware)", fontsize=10)
    return Plot("attention", "attention sparsity vs speedup", (
        "Each point is one attention layer: its speedup over dense attention of the same shape "
        "against the fraction of scores its pattern skips, from the 'attention' section of "
        "results.json; labels give the pattern's parameter (density, window, …). The dotted "
        "curve is the speedup if time fell in proportion to the work skipped."), fig)


# --------------------------------------------------------------------------------------------
# Serving (serve.json)
# --------------------------------------------------------------------------------------------


def _serve_panel(ax, steps: list[dict], first: int, title: str, mean_label: str | None) -> None:
    """Stacked bars of one phase's steps: linear layers, then attention."""
    x = np.arange(first, first + len(steps))
    linear = np.array([s["linear_cycles"] for s in steps], dtype=float)
    attention = np.array([s["attention_cycles"] for s in steps], dtype=float)
    ax.bar(x, linear, 0.8, color=COLORS["compute"], label="linear layers")
    ax.bar(x, attention, 0.8, bottom=linear, color=COLORS["dram"], label="attention")
    if mean_label:  # TPOT: the mean of the decode steps
        ax.axhline(float(np.mean([s["cycles"] for s in steps])), color=COLORS["bound"], lw=1,
                   ls="--", label=mean_label)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step (KV length at its end below)")
    ticks = x if len(x) <= 12 else x[:: -(-len(x) // 12)]
    ax.set_xticks(ticks, [f"{steps[t - first]['kv_len']:,}" for t in ticks], fontsize=7,
                  rotation=30)
    ax.yaxis.set_major_formatter(EngFormatter())
    ax.grid(axis="y", alpha=0.3)
    ax.set_ylim(0, max(s["cycles"] for s in steps) * 1.25)  # room for the legend above the bars
    ax.legend(fontsize=8, loc="upper left", ncols=3)


def serve_plot(serve: ServeData) -> Plot | None:
    """Cycles of every serving step, linear layers and attention stacked, prefill and decode on
    panels of their own (a decode step is orders of magnitude shorter than a chunk)."""
    steps = serve.doc["steps"]
    if not steps:
        return None
    prefill = [s for s in steps if s["phase"] == "prefill"]
    decode = [s for s in steps if s["phase"] != "prefill"]
    panels = [p for p in (prefill, decode) if p]
    fig = _figure(4.5 + 4.5 * len(panels), 4.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    if prefill:
        axes[0].set_ylabel("cycles")
        _serve_panel(axes[0], prefill, 0, f"prefill: {len(prefill)} chunks (TTFT = their sum)",
                     None)
    if decode:
        _serve_panel(axes[-1], decode, len(prefill), f"decode: {len(decode)} steps", "TPOT (mean)")
    title = f"{serve.name}: cycles per serving step"
    caption = ("Each bar is one step of the serving run: a prefill chunk (left) or a decode step "
               "of one token per sequence (right), split into the linear layers and attention. "
               "TTFT is the sum of the prefill bars, TPOT the mean of the decode bars (dashed); "
               "the tick labels give the tokens cached at the end of the step.")
    return Plot(f"{_slug(serve.name)}_serve_steps", title, caption, fig)
