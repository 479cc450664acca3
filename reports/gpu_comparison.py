"""The simulated accelerator beside a measured GPU: tables and figures from a GPU suite's files.

``python -m reports.gpu_comparison baselines/results/nvidia-h200 --out docs`` reads the files
``python -m baselines.gpu_suite`` wrote for one device, simulates each example it measured (with
the same overrides), and writes:

- ``<out>/gpu_<device>.md``: per example, simulated and measured totals; per sparse GEMM shape,
  what 2:4 bought on the GPU (kernel time from CUDA-graph replays, and eager time as torch code
  runs it) next to the accelerator's N:M speedup for the same GEMM; the training step;
- ``<out>/figures/gpu_<device>_nm_speedup.png``: those per-shape speedups;
- ``<out>/figures/gpu_<device>_ops.png``: simulated against measured seconds, op by op.

Every number in the page comes from the result files and the simulator; nothing is typed in.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Comparison", "compare_suite", "nm_shapes", "write_page", "main"]

#: (sparse part, dense part) pairs whose GEMMs give the per-shape 2:4 table.
_SPARSE_DENSE = (("resnet18_bdwp_2of4", "resnet18_dense"), ("resnet18_bdwp", "resnet18_dense"),
                 ("bert_inference_nm", "bert_inference_dense"))


@dataclass(frozen=True)
class Comparison:
    """One measured part beside its simulation (``baseline_comparison`` of results.json)."""

    part: str
    workload: str
    rows: list[dict]
    totals: dict
    clock_mhz: float
    graph_s: dict[str, float]  # GEMM name → GPU-only seconds (CUDA graph), repeats included


def _simulate(part, path: Path, results: dict) -> Comparison:
    """``results`` holds each (example, overrides) simulated so far: a ``*_flex`` part measures
    the same workload as its example, so it reuses that simulation."""
    from archsim.api import simulate
    from baselines.compare import compare, load_baseline_for
    from workloads.load import load_workload

    workload = load_workload(part.source, overrides=list(part.overrides))
    doc = load_baseline_for(path, workload)
    key = (part.source, part.overrides)
    if key not in results:  # the fast engine equals SimPy (tests); this is many runs
        results[key] = simulate(workload, engine="fast")
    result = results[key]
    cmp = compare(doc, workload, result, path)
    graph = {op.name: op.graph_median_s * op.repeat for op in doc.ops if op.graph_median_s}
    return Comparison(part.name, workload.name, cmp["ops"], cmp["totals"],
                      workload.hardware.clock_mhz, graph)


def compare_suite(results: Path, log=print) -> dict[str, Comparison]:
    """Every baseline part of the suite that has a result file in ``results``, simulated."""
    from baselines.gpu_suite import plan

    out, simulated = {}, {}
    for part in plan():
        path = results / f"{part.name}.json"
        if part.kind == "baseline" and path.is_file():
            log(f"simulating {part.name} …")
            out[part.name] = _simulate(part, path, simulated)
    return out


def nm_shapes(parts: dict[str, Comparison]) -> list[dict]:
    """One row per distinct sparse GEMM shape of each (sparse, dense) pair of parts: the GPU's
    dense and 2:4 times and the accelerator's dense and N:M cycles for that very GEMM."""
    rows = []
    for sparse_name, dense_name in _SPARSE_DENSE:
        sparse, dense = parts.get(sparse_name), parts.get(dense_name)
        if sparse is None or dense is None:
            continue
        by_name = {r["name"]: r for r in dense.rows}
        seen = set()
        for r in sparse.rows:
            d = by_name.get(r["name"])
            shape = (r["m"], r["k"], r["n"])
            if d is None or not r["sparsity"] or r["sparsity"] == "dense" or shape in seen:
                continue
            if r["method"] not in ("semi_structured_2:4", "masked_dense") or not r["cycles"]:
                continue
            seen.add(shape)
            rows.append(_shape_row(sparse, dense, r, d))
    return rows


def _shape_row(sparse: Comparison, dense: Comparison, r: dict, d: dict) -> dict:
    g_sparse, g_dense = sparse.graph_s.get(r["name"]), dense.graph_s.get(d["name"])
    return {
        "workload": sparse.part, "name": r["name"], "m": r["m"], "k": r["k"], "n": r["n"],
        # The label starts with N:M; a fallback or masked row says so after it.
        "sparsity": r["sparsity"].split(" ", 1)[0], "note": r["sparsity"], "method": r["method"],
        "gpu_dense_s": g_dense, "gpu_sparse_s": g_sparse,
        "gpu_dense_eager_s": d["measured_s"], "gpu_sparse_eager_s": r["measured_s"],
        "gpu_kernel_speedup": g_dense / g_sparse if g_dense and g_sparse else None,
        "gpu_eager_speedup": d["measured_s"] / r["measured_s"],
        "accel_dense_cycles": d["cycles"], "accel_sparse_cycles": r["cycles"],
        "accel_speedup": d["cycles"] / r["cycles"],
    }


def _us(s: float | None) -> str:
    return "–" if s is None else f"{s * 1e6:,.1f}"


def _x(v: float | None) -> str:
    return "–" if v is None else (f"{v:.2f}×" if v >= 0.1 else f"{v:.2g}×")


def _totals_table(parts: dict[str, Comparison]) -> list[str]:
    lines = ["| part | workload | simulated (accelerator) | measured GPU | GPU-only (CUDA graph) "
             "| measured / simulated |", "|---|---|---:|---:|---:|---:|"]
    for name, c in parts.items():
        t = c.totals
        measured = [r for r in c.rows if r["measured_s"] is not None]
        graphed = all(r["name"] in c.graph_s for r in measured)  # GEMMs only: not attention
        graph = sum(c.graph_s[r["name"]] for r in measured) if measured and graphed else None
        graph_text = "–" if graph is None else f"{graph * 1e3:.3f} ms"
        lines.append(f"| `{name}` | {c.workload} | {t['simulated_s'] * 1e3:.3f} ms "
                     f"| {t['measured_s'] * 1e3:.3f} ms | {graph_text} | {_x(t['speedup'])} |")
    return lines


def _shapes_table(shapes: list[dict]) -> list[str]:
    lines = ["| part | GEMM (first of its shape) | m×k×n | N:M | GPU dense µs | GPU 2:4 µs "
             "| GPU 2:4 eager µs | GPU 2:4 speedup (kernel / eager) | accelerator speedup |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for s in shapes:
        lines.append(
            f"| `{s['workload']}` | {s['name']} | {s['m']}×{s['k']}×{s['n']} "
            f"| {s['sparsity']} | {_us(s['gpu_dense_s'])} | {_us(s['gpu_sparse_s'])} "
            f"| {_us(s['gpu_sparse_eager_s'])} | {_x(s['gpu_kernel_speedup'])} / "
            f"{_x(s['gpu_eager_speedup'])} | {_x(s['accel_speedup'])} |")
    return lines


def _step_table(step: dict) -> list[str]:
    lines = ["| variant | median ms | p20–p80 ms | GEMMs left dense (why) |", "|---|---:|---:|---|"]
    for v in step["variants"]:
        why = "; ".join(f"{g['layer']}.{g['gemm']}: {g['reason'][:70]}" for g in v["dense_gemms"])
        lines.append(f"| `{v['variant']}` | {v['median_s'] * 1e3:.2f} "
                     f"| {v['p20_s'] * 1e3:.2f}–{v['p80_s'] * 1e3:.2f} | {why or '–'} |")
    return lines


def _nm_figure(shapes: list[dict]):
    from matplotlib.figure import Figure

    parts = list(dict.fromkeys(s["workload"] for s in shapes))
    fig = Figure(figsize=(11, 3.4 * len(parts)), layout="constrained")
    axes = fig.subplots(len(parts), 1, squeeze=False)[:, 0]
    series = (("gpu_kernel_speedup", "GPU 2:4, kernel (CUDA graph)", "o", "#4C72B0"),
              ("gpu_eager_speedup", "GPU 2:4, eager torch call", "v", "#A5A5A5"),
              ("accel_speedup", "accelerator N:M (simulated)", "s", "#C44E52"))
    for ax, part in zip(axes, parts):
        rows = [s for s in shapes if s["workload"] == part]
        x = range(len(rows))
        for key, label, marker, color in series:
            ax.scatter(x, [r[key] or float("nan") for r in rows], marker=marker, color=color,
                       label=label, zorder=3)
        n, m = (int(v) for v in rows[0]["sparsity"].split(":"))
        ax.axhline(1.0, color="#222222", lw=0.8)
        if n:
            ax.axhline(m / n, color="#C44E52", lw=0.8, ls="--", label=f"ideal M/N = {m / n:g}")
        ax.set_yscale("log")
        ax.set_xticks(list(x), [f"{r['m']}×{r['k']}×{r['n']}" for r in rows], rotation=60,
                      ha="right", fontsize=7)
        ax.set_ylabel("speedup over dense")
        ax.set_title(f"{part}: sparse GEMM shapes ({rows[0]['sparsity']})", fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    return fig


def _ops_figure(parts: dict[str, Comparison]):
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.subplots()
    lo, hi = float("inf"), 0.0
    palette = colormaps["tab20"]
    for i, (name, c) in enumerate(parts.items()):
        pts = [(r["simulated_s"], r["measured_s"]) for r in c.rows
               if r["simulated_s"] and r["measured_s"]]
        if not pts:
            continue
        xs, ys = zip(*pts)
        ax.scatter(xs, ys, s=12, label=name, alpha=0.75, color=palette(i % 20),
                   marker="^" if name.endswith("_flex") else "o")
        lo, hi = min(lo, *xs, *ys), max(hi, *xs, *ys)
    ax.plot([lo, hi], [lo, hi], color="#222222", lw=0.8, label="equal time")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("simulated accelerator, seconds per op")
    ax.set_ylabel("measured GPU, seconds per op")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(which="both", alpha=0.3)
    return fig


def write_page(results: Path, out: Path, parts: dict[str, Comparison]) -> Path:
    """Write the markdown page and its two figures; return the page's path."""
    device = results.name
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    shapes = nm_shapes(parts)
    nm_png, ops_png = f"gpu_{device}_nm_speedup.png", f"gpu_{device}_ops.png"
    if shapes:  # only when a sparse part and its dense twin were both measured
        _nm_figure(shapes).savefig(figures / nm_png, dpi=110)
    _ops_figure(parts).savefig(figures / ops_png, dpi=110)
    any_doc = json.loads(next(results.glob("tiny_gemm.json")).read_text())["provenance"]
    lines = [
        f"# Measured GPU beside the simulated accelerator: {any_doc['device_name']}",
        "",
        f"Generated by `python -m reports.gpu_comparison {results}` from the files of "
        f"`python -m baselines.gpu_suite` (torch {any_doc['torch_version']}, CUDA "
        f"{any_doc['cuda_runtime_version']}, driver {any_doc['cuda_driver_version']}, "
        f"cuSPARSELt {any_doc['cusparselt_version']}, {any_doc['dtype']}, clocks "
        f"{any_doc.get('gpu_clocks')}, measured {any_doc['date_utc']}). docs/baselines.md "
        "explains the method and what the numbers mean.",
        "",
        "## Per example", "", *_totals_table(parts), "",
        *(["## What 2:4 bought, per sparse GEMM shape", "",
            f"![speedup over dense per GEMM shape](figures/{nm_png})", "",
            *_shapes_table(shapes), ""] if shapes else []),
        "## Simulated against measured, op by op", "", f"![ops](figures/{ops_png})", "",
    ]
    step = results / "resnet18_training_step.json"
    if step.is_file():
        doc = json.loads(step.read_text())
        lines += ["## ResNet-18 training step (batch "
                  f"{doc['batch']}, {doc['image']}², BDWP {doc['nm']})", "", *_step_table(doc),
                  "", "Gradient check against an fp32 step: "
                  + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in doc.get("check", {}).items()), ""]
    page = out / f"gpu_{device}.md"
    page.write_text("\n".join(lines))
    return page


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", help="one device's folder, e.g. baselines/results/nvidia-h200")
    p.add_argument("--out", default="docs", help="folder for the page (figures/ beside it)")
    args = p.parse_args(argv)
    results = Path(args.results)
    if not (results / "tiny_gemm.json").is_file():
        print(f"archsim: error: {results}: not a GPU suite's results folder (no tiny_gemm.json)",
              file=sys.stderr)
        return 2
    parts = compare_suite(results, log=lambda s: print(s, file=sys.stderr))
    print(f"wrote {write_page(results, Path(args.out), parts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
