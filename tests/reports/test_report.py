"""archsim report: figures, embedded images, CSV tables, optional sections, bad inputs."""

from __future__ import annotations

import base64
import csv
import importlib.util
import json
import re
from pathlib import Path

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
    report_doc = json.loads(report_inputs[1].read_text())
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

    for edit, message in [  # hand-edited results: one line naming the field, no traceback
            (lambda d: d["hardware"].pop("name"), "hardware.name: Field required"),
            (lambda d: d.update(workload=[]), "workload: Input should be a valid dictionary"),
            (lambda d: d.update(layers=[{**report_doc["layers"][0], "cycles": "x"}]),
             "layers[0].cycles: Input should be a number, got 'x' (docs/results.md)")]:
        bad = json.loads(report_inputs[1].read_text())
        edit(bad)
        run.write_text(json.dumps(bad))
        assert main(["report", str(run), "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert f"{run}: {message}" in err and err.count("\n") == 1, err

    (tmp_path / "empty").mkdir()
    (tmp_path / "x.json").write_text('{"a": 1}')
    (tmp_path / "x.db").write_text("not sqlite" * 200)
    for path, message in [(tmp_path / "missing.json", "no such file"),
                          (Path("/dev/null"), "/dev/null: not a regular file; expected"),
                          (tmp_path / "empty", "a folder without results.json"),
                          (tmp_path / "x.json", "not a results.json of 'archsim run'"),
                          (tmp_path / "x.db", "not an archsim results store")]:
        assert main(["report", str(path), "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err


SERVE_WORKLOAD = """version: 1
name: serve-tiny
hardware: sat_vcu1525
mode: inference
serve: {prompt_tokens: 512, chunk_tokens: 256, output_tokens: 3}
operations:
  - {op: model, model: decoder, batch: 2, layers: 1, hidden: 256, heads: 4, kv_heads: 4}
"""


def test_report_of_a_serving_run(tmp_path, capsys):
    """archsim report reads the folder archsim serve wrote: TTFT, TPOT, throughput and the
    steps as tables (HTML and CSV) and a per-step figure."""
    (tmp_path / "w.yaml").write_text(SERVE_WORKLOAD)
    assert main(["serve", str(tmp_path / "w.yaml"), "--quiet", "--out", str(tmp_path / "s")]) == 0
    doc = json.loads((tmp_path / "s" / "serve.json").read_text())
    assert (doc["workload"], doc["hardware"], doc["clock_mhz"]) == ("serve-tiny", "sat_vcu1525",
                                                                     200.0)
    assert main(["report", str(tmp_path / "s")]) == 0  # the folder: report/ beside serve.json
    assert "1 figure as PNG and SVG, 2 CSV tables)" in capsys.readouterr().out
    rep = tmp_path / "s" / "report"
    html = (rep / "report.html").read_text()
    assert "<h2>Serving</h2>" in html and "ttft_ms" in html and "decode_tokens_per_s" in html
    assert len(_images(html)) == 1 and (rep / "figures" / "serve-tiny_serve_steps.svg").is_file()
    with (rep / "serving.csv").open() as fh:
        (row,) = list(csv.DictReader(fh))
    assert int(row["ttft_cycles"]) == doc["ttft_cycles"]
    assert float(row["tpot_ms"]) == pytest.approx(doc["tpot_ms"])
    seconds = doc["tpot_cycles"] / 200e6
    assert float(row["decode_tokens_per_s"]) == pytest.approx(2 / seconds)  # batch 2
    total = sum(s["cycles"] for s in doc["steps"]) / 200e6
    assert float(row["end_to_end_tokens_per_s"]) == pytest.approx(2 * 3 / total)
    assert (row["prefill_bound"], row["decode_bound"]) == (doc["prefill_bound"],
                                                           doc["decode_bound"])
    with (rep / "serve-tiny_serve_steps.csv").open() as fh:
        steps = list(csv.DictReader(fh))
    assert [s["phase"] for s in steps] == ["prefill", "prefill", "decode", "decode"]
    assert [int(s["kv_len"]) for s in steps] == [256, 512, 513, 514]
    assert [int(s["cycles"]) for s in steps] == [s["cycles"] for s in doc["steps"]]


def test_report_reads_an_older_serve_json_and_refuses_a_broken_one(tmp_path, capsys):
    old = {"model": "decoder", "batch": 1, "prompt_tokens": 8, "chunk_tokens": 8,
           "output_tokens": 1, "ttft_cycles": 1000, "ttft_ms": 0.005, "tpot_cycles": 0.0,
           "tpot_ms": 0.0, "prefill_bound": "pe_array", "decode_bound": "none",
           "steps": [{"phase": "prefill", "q_len": 8, "kv_len": 8, "cycles": 1000,
                      "linear_cycles": 600, "attention_cycles": 400, "kv_bytes": 64,
                      "kv_blocks": 1, "unit_busy_cycles": {"dma": 10, "pe_array": 900}}]}
    path = tmp_path / "old" / "serve.json"  # before the workload, hardware and clock were in it
    path.parent.mkdir()
    path.write_text(json.dumps(old))
    assert main(["report", str(path), "--out", str(tmp_path / "r")]) == 0
    with (tmp_path / "r" / "serving.csv").open() as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["workload"] == "old" and float(row["clock_mhz"]) == pytest.approx(200.0)
    assert row["tpot_ms"] == "" and row["decode_bound"] == ""  # one token: no decode step
    capsys.readouterr()
    for broken, message in [({**old, "steps": "x"}, "steps: Input should be a valid list"),
                            ({**old, "steps": [{"phase": "prefill"}]},
                             "steps[0].q_len: Field required (docs/serving.md)"),
                            ({**old, "batch": "2"}, "batch: Input should be a valid integer, got "
                                                    "'2' (docs/serving.md)"),
                            ({"ttft_cycles": 5}, "not a serve.json of 'archsim serve' (missing")]:
        path.write_text(json.dumps(broken))
        assert main(["report", str(path.parent), "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_inputs_of_one_name_keep_a_table_each(report_inputs, tmp_path):
    """Two serving runs of one workload (other --set overrides) or two sweeps of one name wrote
    their tables to one CSV name: the second overwrote the first."""
    doc = {"workload": "w", "model": "decoder", "batch": 1, "prompt_tokens": 8,
           "chunk_tokens": 8, "output_tokens": 2, "clock_mhz": 100.0, "ttft_cycles": 1000,
           "ttft_ms": 0.01, "tpot_cycles": 10.0, "tpot_ms": 0.0001, "prefill_bound": "pe_array",
           "decode_bound": "dma", "steps": [
               {"phase": "prefill", "q_len": 8, "kv_len": 8, "cycles": 1000,
                "linear_cycles": 600, "attention_cycles": 400},
               {"phase": "decode", "q_len": 1, "kv_len": 9, "cycles": 10, "linear_cycles": 6,
                "attention_cycles": 4}]}
    paths = []
    for folder, cycles in (("a", 10), ("b", 20)):
        path = tmp_path / folder / "serve.json"
        path.parent.mkdir()
        doc["steps"][1]["cycles"] = cycles
        path.write_text(json.dumps(doc))
        paths.append(path)
    written = build_report([*paths, report_inputs[0], report_inputs[0]], tmp_path / "rep")
    names = sorted(p.name for p in written.tables)
    assert names == ["serving.csv", "tiny-grid_points.csv", "tiny-grid_points_2.csv",
                     "w_serve_steps.csv", "w_serve_steps_2.csv"]
    for name, cycles in (("w_serve_steps.csv", "10"), ("w_serve_steps_2.csv", "20")):
        with (tmp_path / "rep" / name).open() as fh:
            assert list(csv.DictReader(fh))[1]["cycles"] == cycles
    assert str(paths[1]) in written.html.read_text()  # the summary names each file


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _interrupt_after_first_figure(monkeypatch) -> None:
    from reports import html

    render = html._Figures.render

    def render_then_stop(self, plot):
        if self.names:
            raise KeyboardInterrupt
        return render(self, plot)

    monkeypatch.setattr(html._Figures, "render", render_then_stop)


def test_an_interrupted_report_leaves_no_partial_folder(report_inputs, tmp_path, capsys,
                                                        monkeypatch):
    """Ctrl-C part way left figures/ and CSV tables in --out: a folder that looked finished."""
    _interrupt_after_first_figure(monkeypatch)
    out = tmp_path / "deep" / "rep"
    assert main(["report", *map(str, report_inputs), "--out", str(out)]) == 130
    assert capsys.readouterr().err == f"archsim: interrupted; nothing written to {out}\n"
    assert not (tmp_path / "deep").exists()  # nor a hidden .rep.incomplete-* beside it


def test_an_interrupted_report_keeps_the_earlier_one_whole(report_inputs, tmp_path, capsys,
                                                           monkeypatch):
    """The earlier report.html stayed beside the new report's first figures and tables."""
    out = tmp_path / "rep"
    assert main(["report", *map(str, report_inputs), "--out", str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    earlier = _tree(out)
    _interrupt_after_first_figure(monkeypatch)
    assert main(["report", str(report_inputs[1]), "--out", str(out), "--title", "new"]) == 130
    assert _tree(out) == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]
    monkeypatch.undo()  # a complete report replaces the earlier one's files, nothing else
    assert main(["report", str(report_inputs[1]), "--out", str(out), "--title", "new"]) == 0
    assert "<title>new</title>" in (out / "report.html").read_text()
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]


def test_a_file_in_the_default_report_folders_place_is_one_line(report_inputs, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_bytes(report_inputs[1].read_bytes())
    (run / "report").write_text("mine")
    assert main(["report", str(run / "results.json")]) == 2
    # Named as the default, with the way out: no --out was given (it read '--out DIR: ...').
    assert capsys.readouterr().err == (
        f"archsim: error: {run / 'report'} (the default output folder; choose another with "
        f"--out): is a file; expected a folder\n")
    assert (run / "report").read_text() == "mine"
