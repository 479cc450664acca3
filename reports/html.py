"""``archsim report``: one self-contained HTML page plus PNG/SVG figures and CSV tables.

The HTML embeds every figure as a base64 PNG and its CSS inline, so the single file can be
mailed or archived and still shows everything; the PNG/SVG files next to it are for papers and
slides, the CSV files for spreadsheets.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reports.inputs import RunData, ServeData, SweepData, read_inputs
from reports.metrics import METRICS
from reports.plots import (
    Plot,
    attention_plot,
    run_plots,
    serve_plot,
    speedup_plot,
    spgemm_plot,
    sweep_plots,
)

__all__ = ["build_report", "Written", "sweep_table", "runs_table"]

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1.5em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
.meta { color: #666; font-size: .9em; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; max-width: 900px; }
table { border-collapse: collapse; font-size: .85em; margin: .8em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
"""


@dataclass
class Written:
    """Files one report produced."""

    html: Path
    figures: list[Path] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {x}" for k, x in v.items())
    return str(v)


def sweep_table(sweep: SweepData) -> tuple[list[str], list[dict[str, Any]]]:
    """Every stored point: hash, status, message, parameters by axis name, then all metrics."""
    metric_names = list(dict.fromkeys(
        [m for m in METRICS if any(r.metrics and m in r.metrics for r in sweep.rows)]
        + [m for r in sweep.rows if r.metrics for m in r.metrics]
    ))
    columns = (["hash", "status", "message"] + [n for _, n in sweep.axes] + metric_names
               + ["wall_s", "worker", "worker_rss_mib", "archsim_version"])
    rows = []
    for r in sweep.rows:
        row: dict[str, Any] = {"hash": r.hash, "status": r.status, "message": r.message or ""}
        for key, name in sweep.axes:
            v = r.params.get(key)
            row[name] = _fmt(v) if isinstance(v, dict) else v
        for m in metric_names:
            row[m] = (r.metrics or {}).get(m)
        row.update(wall_s=r.wall_s, worker=r.worker, worker_rss_mib=r.worker_rss_mib,
                   archsim_version=r.archsim_version)
        rows.append(row)
    return columns, rows


def runs_table(runs: list[RunData]) -> tuple[list[str], list[dict[str, Any]]]:
    """One row per run: what ran where, and its headline numbers."""
    columns = ["file", "workload", "hardware", "mode", "total_cycles", "seconds", "energy_pj",
               "utilization", "effective_utilization", "dram_read_bytes", "dram_write_bytes",
               "speedup", "dense_cycles", "amdahl_bound"]
    rows = []
    for run in runs:
        s, c = run.doc["summary"], run.doc.get("comparison") or {}
        rows.append({
            "file": str(run.path), "workload": run.name, "hardware": run.doc["hardware"]["name"],
            "mode": run.doc["workload"].get("mode"), "total_cycles": s.get("total_cycles"),
            "seconds": s.get("seconds"), "energy_pj": s.get("energy_pj"),
            "utilization": s.get("utilization"),
            "effective_utilization": s.get("effective_utilization"),
            "dram_read_bytes": s.get("dram_read_bytes"),
            "dram_write_bytes": s.get("dram_write_bytes"), "speedup": c.get("speedup"),
            "dense_cycles": c.get("dense_cycles"), "amdahl_bound": run.doc.get("amdahl_bound"),
        })
    return columns, rows


def _slug(name: str) -> str:
    """``name`` as a file stem."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _csv_path(out: Path, stem: str, written: Written) -> Path:
    """``out/<stem>.csv``, numbered where this report wrote one of that name already (two
    inputs of one name, such as serving runs of one workload with other --set overrides)."""
    path, n = out / f"{stem}.csv", 2
    while path in written.tables:
        path, n = out / f"{stem}_{n}.csv", n + 1
    return path


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _html_table(columns: list[str], rows: list[dict[str, Any]],
                left: set[str] = frozenset()) -> str:
    head = "".join(f'<th class="{"l" if c in left else ""}">{html.escape(c)}</th>'
                   for c in columns)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="{"l" if c in left else ""}">{html.escape(_fmt(row.get(c)))}</td>'
            for c in columns
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class _Figures:
    """Saves figures as PNG + SVG and renders them as embedded <figure> blocks."""

    def __init__(self, out: Path, written: Written) -> None:
        self.dir = out / "figures"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.written = written
        self.names: set[str] = set()

    def render(self, plot: Plot) -> str:
        name = plot.name
        n = 2
        while name in self.names:
            name, n = f"{plot.name}_{n}", n + 1
        self.names.add(name)
        png = io.BytesIO()
        plot.figure.savefig(png, format="png", dpi=110)
        (self.dir / f"{name}.png").write_bytes(png.getvalue())
        plot.figure.savefig(self.dir / f"{name}.svg", format="svg")
        self.written.figures += [self.dir / f"{name}.png", self.dir / f"{name}.svg"]
        data = base64.b64encode(png.getvalue()).decode("ascii")
        return (f'<figure id="{html.escape(name)}"><img alt="{html.escape(plot.title)}" '
                f'src="data:image/png;base64,{data}"><figcaption><b>{html.escape(plot.title)}.'
                f'</b> {html.escape(plot.caption)} (<a href="figures/{name}.svg">SVG</a>, '
                f'<a href="figures/{name}.png">PNG</a>)</figcaption></figure>')


def _sweep_section(sweep: SweepData, figs: _Figures, out: Path, written: Written) -> str:
    from reports.dse import best_designs

    columns, rows = sweep_table(sweep)
    slug = _slug(sweep.name)
    csv_path = _write_csv(_csv_path(out, f"{slug}_points", written), columns, rows)
    written.tables.append(csv_path)
    counts = {s: sum(r.status == s for r in sweep.rows) for s in ("ok", "infeasible", "invalid",
                                                                   "error")}
    objectives = sweep.objectives
    best = best_designs(sweep.rows, objectives) if objectives else []
    axes = ", ".join(f"{n} ({k}: {len(a['values'])} values)"
                     for (k, n), a in zip(sweep.axes, sweep.sweep.get("axes", [])))
    parts = [
        f"<h2>Sweep {html.escape(sweep.name)}</h2>",
        f'<p class="meta">{html.escape(str(sweep.path))}: {len(sweep.rows):,} points ('
        + ", ".join(f"{n:,} {s}" for s, n in counts.items() if n) + ")<br>"
        f"workload {html.escape(str(sweep.sweep.get('workload', '?')))}; axes: "
        f"{html.escape(axes)}<br>objectives: "
        + html.escape(", ".join(f"{g} {m}" for m, g in objectives))
        + (f"; constraints: {html.escape('; '.join(sweep.sweep.get('constraints', [])))}"
           if sweep.sweep.get("constraints") else "")
        + (f"<br>{html.escape(sweep.screened)}" if sweep.screened else "") + "</p>",
    ]
    if best:
        show = [m for m, _ in objectives] + [m for m in ("cycles", "energy_pj", "utilization",
                                                         "speedup") if m not in dict(objectives)]
        show = [m for m in show if m in best[0].metrics]
        by_hash = {r["hash"]: r for r in rows}
        table_rows = [{**{n: by_hash[b.hash][n] for _, n in sweep.axes},
                       **{m: b.metrics.get(m) for m in show}} for b in best[:20]]
        parts.append(f"<p>Pareto-optimal designs ({len(best)}; best {min(20, len(best))} on "
                     f"{html.escape(objectives[0][0])} shown):</p>")
        parts.append(_html_table([n for _, n in sweep.axes] + show, table_rows))
    parts.append(f'<p>All points with every metric: <a href="{csv_path.name}">{csv_path.name}</a>'
                 f"</p>")
    errors = [r for r in sweep.rows if r.status in ("error", "invalid")][:5]
    if errors:
        parts.append("<p>Points that could not be evaluated (first 5):</p>" + _html_table(
            ["hash", "status", "message"],
            [{"hash": r.hash, "status": r.status, "message": r.message} for r in errors],
            left={"message"}))
    parts += [figs.render(p) for p in sweep_plots(sweep)]
    return "\n".join(parts)


def _runs_section(runs: list[RunData], figs: _Figures, out: Path, written: Written) -> str:
    columns, rows = runs_table(runs)
    csv_path = _write_csv(out / "runs.csv", columns, rows)
    written.tables.append(csv_path)
    shown = [c for c in columns if c != "file" and any(r.get(c) is not None for r in rows)]
    parts = ["<h2>Runs</h2>", _html_table(shown, rows, left={"workload", "hardware", "mode"}),
             f'<p>Table as CSV: <a href="{csv_path.name}">{csv_path.name}</a></p>']
    parts += [figs.render(p) for p in run_plots(runs)]
    return "\n".join(parts)


#: Steps of a serving run shown in the page; the CSV holds all of them.
_SHOWN_STEPS = 40


def _serve_section(serves: list[ServeData], figs: _Figures, out: Path, written: Written) -> str:
    from reports.serving import serving_table, steps_table

    columns, rows = serving_table(serves)
    written.tables.append(_write_csv(out / "serving.csv", columns, rows))
    alike = len({r["workload"] for r in rows}) < len(rows)  # the file tells them apart
    shown = [c for c in columns if (c != "file" or alike) and any(r.get(c) is not None
                                                                  for r in rows)]
    parts = ["<h2>Serving</h2>",
             "<p>Time to first token (TTFT: the whole chunked prefill), time per output token "
             "(TPOT: the mean decode step), throughput in tokens per second (prefill: prompt "
             "tokens of all sequences over TTFT; decode: one token per sequence over TPOT; "
             "end to end: every output token over the whole run) and the unit that bounds each "
             "phase (docs/serving.md).</p>",
             _html_table(shown, rows, left={"workload", "hardware", "model", "prefill_bound",
                                            "decode_bound", "file"}),
             '<p>Table as CSV: <a href="serving.csv">serving.csv</a></p>']
    for serve in serves:
        columns, steps = steps_table(serve)
        csv_path = _write_csv(_csv_path(out, f"{_slug(serve.name)}_serve_steps", written),
                              columns, steps)
        written.tables.append(csv_path)
        cut = len(steps) > _SHOWN_STEPS
        half = _SHOWN_STEPS // 2
        parts += [f"<h3>{html.escape(serve.name)}: steps</h3>",
                  f'<p class="meta">{html.escape(str(serve.path))}: {len(steps):,} steps'
                  + (f"; the first and last {half} shown" if cut else "") + "</p>",
                  _html_table(columns, steps[:half] + steps[-half:] if cut else steps,
                              left={"phase", "bound"}),
                  f'<p>Every step as CSV: <a href="{csv_path.name}">{csv_path.name}</a></p>']
        plot = serve_plot(serve)
        if plot is not None:
            parts.append(figs.render(plot))
    return "\n".join(parts)


def _area_section() -> str:
    from reports.area import AreaModelError, load_area_model

    try:
        model = load_area_model()
    except AreaModelError as exc:
        return f"<h2>Area model</h2><p>{html.escape(str(exc))}</p>"
    if model is None:
        return ("<h2>Area model</h2><p>No synthesis samples yet "
                "(reports/data/area_samples.json): area metrics are not reported.</p>")
    rows = [{"family": d["family"], "resource": d["resource"], "samples": d["samples"],
             "model": " + ".join(f"{c:.4g}·{f}" for f, c in d["coef"].items()),
             "max in-sample error": f"{d['max_rel_error']:.1%}",
             "leave-one-out error": "" if d["loo_rel_error"] is None
             else f"{d['loo_rel_error']:.1%}"} for d in model.describe()]
    source = model.provenance.get("tool", "")
    return ("<h2>Area model</h2><p>Fitted to yosys synthesis results"
            f"{' (' + html.escape(source) + ')' if source else ''}; see docs/dse.md.</p>"
            + _html_table(list(rows[0]), rows, left={"family", "resource", "model"}))


def build_report(inputs: list[Path], out: str | Path, title: str | None = None) -> Written:
    """Write ``out/report.html``, ``out/figures/*.{png,svg}`` and CSV tables.

    They are built in a hidden sibling of ``out`` and moved in once complete (``report.html``
    last), so an interrupted report leaves ``out`` as it was, an earlier report included.

    Raises
    ------
    ReportError
        When an input is missing or not an archsim results file.
    """
    from workloads.files import staged_folder

    sweeps, runs, serves = read_inputs([Path(p) for p in inputs])
    out = Path(out)
    with staged_folder(out, last="report.html") as staging:
        written = _write_report(staging, (sweeps, runs, serves), inputs, title)

    def moved(path: Path) -> Path:  # where the file went, out of the staging folder
        return out / path.relative_to(staging)

    return Written(moved(written.html), figures=[moved(p) for p in written.figures],
                   tables=[moved(p) for p in written.tables])


def _write_report(out: Path, data: tuple[list[SweepData], list[RunData], list[ServeData]],
                  inputs: list[Path], title: str | None) -> Written:
    from workloads.version import ARCHSIM_VERSION as __version__

    sweeps, runs, serves = data
    written = Written(out / "report.html")
    figs = _Figures(out, written)
    body = []
    special = [p for p in (speedup_plot(sweeps, runs), spgemm_plot(runs), attention_plot(runs))
               if p is not None]
    if special:
        body.append("<h2>Comparisons</h2>")
        body += [figs.render(p) for p in special]
    for sweep in sweeps:
        body.append(_sweep_section(sweep, figs, out, written))
    if runs:
        body.append(_runs_section(runs, figs, out, written))
    if serves:
        body.append(_serve_section(serves, figs, out, written))
    if sweeps:
        body.append(_area_section())
    names = [s.name for s in sweeps] + [r.name for r in runs] + [s.name for s in serves]
    title = title or "archsim report: " + ", ".join(names)
    stamp = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    doc = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
           f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
           f"<h1>{html.escape(title)}</h1>"
           f'<p class="meta">archsim {__version__}, generated {stamp} from '
           + ", ".join(html.escape(str(p)) for p in inputs) + "</p>\n"
           + "\n".join(body) + "\n</body></html>\n")
    written.html.write_text(doc)
    return written
