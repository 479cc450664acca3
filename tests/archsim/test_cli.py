"""archsim run through main([...]): outputs, schema and exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from archsim import __version__
from archsim.cli import main
from workloads.version import install_hint


def test_run_writes_results_and_layers(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["run", "workloads/examples/tiny_gemm.yaml", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "total cycles" in printed and "735" in printed  # 917 before buffer-level tiles and requantized stores
    doc = json.loads((out / "results.json").read_text())
    assert doc["archsim_version"] == __version__
    assert doc["hardware"]["name"] == "tiny" and doc["workload"]["name"] == "tiny-gemm"
    summary = doc["summary"]
    for key in ("total_cycles", "seconds", "macs_dense_equivalent", "macs_executed", "utilization",
                "dram_read_bytes", "dram_write_bytes", "energy_pj"):
        assert key in summary
    assert summary["total_cycles"] == 735
    assert summary["macs_executed"] == 16 * 16 * 8 + 16 * 16 * 8 // 2 + 16 * 32 * 8 // 4
    names = [row["name"] for row in doc["layers"]]
    assert names == ["dense", "nm24", "nm28"]
    assert {"name", "phase", "cycles", "macs_executed", "macs_dense_equivalent"} <= set(doc["layers"][0])
    assert sum(row["cycles"] for row in doc["layers"]) == summary["total_cycles"]
    with (out / "layers.csv").open() as fh:
        assert [row["name"] for row in csv.DictReader(fh)] == names


def test_set_and_compare_dense(tmp_path, capsys):
    out = tmp_path / "o"
    argv = ["run", "workloads/examples/resnet18_bdwp.yaml", "--out", str(out), "--compare-dense",
            "--set", "operations.0.batch=2", "--quiet"]
    assert main(argv) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["workload"]["operations"][0]["batch"] == 2
    comparison = doc["comparison"]
    assert 1.0 < comparison["speedup"] <= comparison["amdahl_bound"]
    assert {row["phase"] for row in doc["layers"]} == {"pregen", "ff", "bp", "wg"}


def test_hardware_override_flag(tmp_path):
    out = tmp_path / "o"
    assert main(["run", "workloads/examples/tiny_gemm.yaml", "--hardware", "sat_vcu1525",
                 "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "results.json").read_text())["hardware"]["name"] == "sat_vcu1525"


def test_a_rerun_into_an_earlier_runs_folder_is_refused_unless_forced(tmp_path, capsys):
    """A second run into the same --out replaced the first run's results without a word (a
    run with another --hardware shares the default folder, so it happened unasked)."""
    out = tmp_path / "o"
    tiny = "workloads/examples/tiny_gemm.yaml"
    assert main(["run", tiny, "--out", str(out), "--quiet"]) == 0
    earlier = {name: (out / name).read_bytes() for name in ("results.json", "layers.csv")}
    capsys.readouterr()
    assert main(["run", tiny, "--hardware", "sat_vcu1525", "--out", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err == (
        f"archsim: error: {out} already holds the outputs of an earlier run (results.json, "
        f"layers.csv); pass --force to replace them, or choose another --out\n")
    assert {name: (out / name).read_bytes() for name in earlier} == earlier
    assert main(["run", tiny, "--hardware", "sat_vcu1525", "--out", str(out), "--quiet",
                 "--force"]) == 0
    assert json.loads((out / "results.json").read_text())["hardware"]["name"] == "sat_vcu1525"


def test_a_forced_rerun_leaves_no_earlier_attention_csv(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "attention.csv").write_text("from an earlier run with attention layers\n")
    assert main(["run", "workloads/examples/tiny_gemm.yaml", "--out", str(out), "--quiet"]) == 2
    assert (out / "attention.csv").exists()
    assert main(["run", "workloads/examples/tiny_gemm.yaml", "--out", str(out), "--quiet",
                 "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["layers.csv", "results.json"]


def test_a_run_leaves_other_files_in_its_folder_alone(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "serve.json").write_text("{}")  # archsim serve's output shares out/<name>
    assert main(["run", "workloads/examples/tiny_gemm.yaml", "--out", str(out), "--quiet"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "serve.json").read_text() == "{}"


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out.strip() == f"archsim {__version__}"


def test_unwritable_out_fails_before_simulating(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("user data")
    assert main(["run", "workloads/examples/tiny_gemm.yaml", "--out", str(blocker / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"archsim: error: --out {blocker / 'o'}: is inside {blocker}, a file; expected a folder"
    assert blocker.read_text() == "user data"


def test_an_empty_out_is_refused(tmp_path, capsys, monkeypatch):
    """``--out ''`` (a script's unset variable) wrote ``run``'s outputs to the default folder
    and read as the current folder elsewhere; it is refused before any work, and nothing is
    written."""
    monkeypatch.chdir(tmp_path)
    workload = str(Path(__file__).resolve().parents[2] / "workloads/examples/tiny_gemm.yaml")
    for argv, what in ((["run", workload], "folder"), (["dse", "example:sweep_tiny"], "folder"),
                       (["import", "model.onnx"], "file")):
        assert main([*argv, "--out", ""]) == 2
        tail = " (or leave --out out for the default)" if what == "folder" else ""
        assert capsys.readouterr().err.strip() == (
            f"archsim: error: --out '': the path is empty; name the {what} to write{tail}")
    assert list(tmp_path.iterdir()) == []


def test_missing_optional_package_names_the_extra(monkeypatch, capsys):
    import archsim.cli as cli

    def needs_amaranth(args):
        raise ModuleNotFoundError("No module named 'amaranth'", name="amaranth")

    monkeypatch.setattr(cli, "_cmd_run", needs_amaranth)
    assert cli.main(["run", "w.yaml"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"archsim: error: this needs the optional package 'amaranth': {install_hint('rtl')}")


def test_compare_dense_on_an_spgemm_only_workload(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "version: 1\nname: s\nhardware: tiny\noperations:\n"
        "  - {op: spgemm, name: a2, a: {source: uniform, params: {n_rows: 64, n_cols: 64, nnz: 300}}}\n"
    )
    assert main(["run", str(spec), "--out", str(tmp_path / "o"), "--compare-dense"]) == 0
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    assert doc["amdahl_bound"] is None and doc["comparison"]["speedup"] == 1.0
    with (tmp_path / "o" / "layers.csv").open() as fh:
        assert fh.readline().startswith("name,layer,phase,m,k,n,")


def test_compare_dense_on_a_dense_workload_simulates_once(tmp_path, capsys, monkeypatch):
    import archsim.cli as cli_module

    runs = []
    real = cli_module._simulate_with_progress
    monkeypatch.setattr(cli_module, "_simulate_with_progress",
                        lambda *a, **k: runs.append(a[0].name) or real(*a, **k))
    path = tmp_path / "d.yaml"
    path.write_text("version: 1\nname: d\nhardware: tiny\noperations:\n"
                    "  - {op: gemm, name: g, m: 8, k: 8, n: 8}\n")
    assert cli_module.main(["run", str(path), "--out", str(tmp_path / "o"), "--compare-dense",
                            "--quiet"]) == 0
    assert runs == ["d"]
    assert "already dense" in capsys.readouterr().err
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    assert doc["comparison"]["speedup"] == 1.0
