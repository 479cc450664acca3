"""archsim report: figures, embedded images, CSV tables, optional sections, bad inputs."""

from __future__ import annotations

import base64
import csv
import importlib.util
import json
import re

import pytest

from archsim.cli import main
from reports.html import build_report

# The sections archsim.spgemm and archsim.attention write (their ``as_dict``), trimmed to what
# the plots read; a test below runs the real models when they are installed.
SPGEMM = [{"name": "rmat-squared", "winner": "gustavson", "cycles": 362451, "dataflows": {
    "inner": {"dataflow": "inner", "cycles": 13939578,
              "dram_bytes": {"a": 256384, "b": 256384, "c": 17247514, "partial": 0}},
    "gustavson": {"dataflow": "gustavson", "cycles": 362451,
                  "dram_bytes": {"a": 256384, "b": 3000000, "c": 17247514, "partial": 0}}}}]
ATTENTION = [
    {"layer": "dense", "pattern": "dense", "density": 1.0, "speedup": 1.0},
    {"layer": "bs50", "pattern": "block-sparse 0.5", "density": 0.5, "speedup": 1.67},
    {"layer": "bs25", "pattern": "block-sparse 0.25", "density": 0.25, "speedup": 2.97},
]


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def test_report_from_a_sweep_and_a_run(full_report):
    written = full_report
    out = written.html.parent
    html = written.html.read_text()
    names = {p.stem for p in written.figures}
    assert names == {"speedup", "tiny-grid_pareto", "tiny-grid_utilization", "tiny-grid_roofline",
                     "tiny-grid_best_layers", "tiny-gemm_layers", "tiny-gemm_roofline",
                     "runs_utilization"}
    for name in names:
        assert (out / "figures" / f"{name}.png").stat().st_size > 5000
        assert (out / "figures" / f"{name}.svg").read_text().startswith("<?xml")
    images = _images(html)
    assert len(images) == len(names) == html.count("<img ")
    assert all(img.startswith(b"\x89PNG\r\n\x1a\n") for img in images)
    assert "<script" not in html and 'src="figures/' not in html  # self-contained
    assert "Pareto-optimal designs" in html and "<h2>Area model</h2>" in html

    with (out / "tiny-grid_points.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 36
    assert {"hash", "status", "rows", "cols", "dram_bw", "cycles", "energy_pj",
            "speedup"} <= set(rows[0])
    assert sum(r["status"] == "infeasible" for r in rows) == 6
    with (out / "runs.csv").open() as fh:
        runs = list(csv.DictReader(fh))
    assert [r["workload"] for r in runs] == ["tiny-gemm"] and float(runs[0]["speedup"]) > 1


def test_optional_sections_are_plotted_when_present(report_inputs, tmp_path):
    doc = json.loads(report_inputs[1].read_text())
    # Without GEMM rows and a dense comparison, only the optional sections have figures.
    doc.update(spgemm=SPGEMM, attention=ATTENTION, layers=[], comparison=None)
    with_sections = tmp_path / "with" / "results.json"
    with_sections.parent.mkdir()
    with_sections.write_text(json.dumps(doc))
    names = {p.stem for p in build_report([with_sections], tmp_path / "rep").figures}
    assert names == {"spgemm", "attention"}
    for key in ("spgemm", "attention"):  # older results.json files have no such keys at all
        del doc[key]
    with_sections.write_text(json.dumps(doc))
    assert build_report([with_sections], tmp_path / "rep2").figures == []


@pytest.mark.skipif(not (importlib.util.find_spec("archsim.spgemm")
                         and importlib.util.find_spec("archsim.attention")),
                    reason="the SpGEMM and attention models are not part of this checkout")
def test_real_spgemm_and_attention_sections(tmp_path):
    workload = tmp_path / "mixed.yaml"
    workload.write_text("""version: 1
name: mixed-tiny
hardware: tiny
operations:
  - {op: attention, name: dense, heads: 2, kv_len: 64, head_dim: 8, block_size: 16}
  - {op: attention, name: bs, heads: 2, kv_len: 64, head_dim: 8, block_size: 16,
     pattern: {kind: block_sparse, density: 0.5}}
  - {op: spgemm, name: rmat, a: {source: rmat, params: {n: 64, nnz: 300}, seed: 1}}
""")
    assert main(["run", str(workload), "--quiet", "--out", str(tmp_path / "run")]) == 0
    names = {p.stem for p in build_report([tmp_path / "run" / "results.json"],
                                          tmp_path / "rep").figures}
    assert {"spgemm", "attention"} <= names


def test_cli_and_bad_inputs(report_inputs, tmp_path, capsys):
    doc = json.loads(report_inputs[1].read_text())
    doc.update(layers=[], comparison=None)  # a table only: nothing slow to draw
    run = tmp_path / "s" / "results.json"
    run.parent.mkdir()
    run.write_text(json.dumps(doc))
    assert main(["report", str(run)]) == 0  # default --out: report/ beside the input
    assert (tmp_path / "s" / "report" / "report.html").is_file()
    assert "0 figures as PNG and SVG, 1 CSV table)" in capsys.readouterr().out
    (tmp_path / "s" / "report" / "report.html").unlink()
    assert main(["report", str(run.parent)]) == 0  # the folder archsim run wrote
    assert (tmp_path / "s" / "report" / "report.html").is_file()
    capsys.readouterr()

    (tmp_path / "empty").mkdir()
    (tmp_path / "x.json").write_text('{"a": 1}')
    (tmp_path / "x.db").write_text("not sqlite" * 200)
    for path, message in [(tmp_path / "missing.json", "no such file"),
                          (tmp_path / "empty", "a folder without results.json"),
                          (tmp_path / "x.json", "not a results.json of 'archsim run'"),
                          (tmp_path / "x.db", "not an archsim results store")]:
        assert main(["report", str(path), "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err
