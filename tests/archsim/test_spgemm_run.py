"""archsim run with SpGEMM ops: side-by-side table, results.json "spgemm", summary totals."""

from __future__ import annotations

import json

from archsim.api import simulate
from archsim.cli import main
from workloads.load import load_workload

WORKLOAD = """\
version: 1
name: mixed
hardware: tiny
operations:
  - {op: gemm, name: g, m: 16, k: 16, n: 8}
  - op: spgemm
    name: sq
    a: {source: rmat, params: {n: 96, nnz: 500}, seed: 2}
  - op: spgemm
    name: ab
    a: {source: uniform, params: {n_rows: 40, n_cols: 60, density: 0.1}, seed: 3}
    b: {source: "lookalike:wiki-Vote"}
    dataflows: [hash, gustavson]
"""


def test_run_reports_spgemm_side_by_side(tmp_path, capsys):
    path = tmp_path / "w.yaml"
    path.write_text(WORKLOAD.replace('{source: "lookalike:wiki-Vote"}',
                                     "{source: uniform, params: {n_rows: 60, n_cols: 30, "
                                     "density: 0.2}, seed: 4}"))
    out = tmp_path / "o"
    assert main(["run", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "SpGEMM sq" in printed and "(winner)" in printed and "DRAM partial" in printed
    doc = json.loads((out / "results.json").read_text())
    ops = doc["spgemm"]
    assert [op["name"] for op in ops] == ["sq", "ab"]
    assert list(ops[0]["dataflows"]) == ["inner", "outer", "gustavson", "hash"]
    assert list(ops[1]["dataflows"]) == ["hash", "gustavson"]
    for op in ops:
        best = min(op["dataflows"].values(), key=lambda d: d["cycles"])
        assert op["winner"] == best["dataflow"] and op["cycles"] == best["cycles"]
        assert set(best["dram_bytes"]) == {"a", "b", "c", "partial"}
        assert best["functional_check"] == "passed"
        assert op["matrix_stats"]["multiplies"] == best["multiplies"]
    summary = doc["summary"]
    gemm_cycles = sum(row["cycles"] for row in doc["layers"])
    assert summary["spgemm_cycles"] == sum(op["cycles"] for op in ops)
    assert summary["total_cycles"] == gemm_cycles + summary["spgemm_cycles"]


def test_simulate_workload_includes_spgemm_and_schedule_alone_does_not(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(WORKLOAD.split("  - op: spgemm\n    name: ab")[0])
    workload = load_workload(path)
    with_sp = simulate(workload)
    from dataflows.scheduler import schedule

    gemm_only = simulate(schedule(workload))
    assert gemm_only.spgemm == ()
    assert with_sp.total_cycles == gemm_only.total_cycles + with_sp.spgemm[0].best.cycles
    assert with_sp.dram_read_bytes > gemm_only.dram_read_bytes


def test_spgemm_value_too_wide_is_a_one_line_error(tmp_path, capsys):
    mtx = tmp_path / "big.mtx"
    mtx.write_text("%%MatrixMarket matrix coordinate integer general\n2 2 2\n1 1 1000\n2 2 1\n")
    path = tmp_path / "w.yaml"
    path.write_text("version: 1\nname: w\nhardware: tiny\noperations:\n"
                    "  - {op: spgemm, name: x, a: {source: big.mtx}}\n")
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "outside the 8-bit operands" in err and err.count("\n") == 1
