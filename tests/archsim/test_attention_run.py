"""archsim run with attention: results.json "attention", attention.csv and the printed table."""

from __future__ import annotations

import csv
import json

from archsim.cli import main


def test_model_with_sparse_attention_reports_per_layer(tmp_path, capsys):
    out = tmp_path / "o"
    argv = [
        "run",
        "workloads/examples/attention_model.yaml",
        "--out",
        str(out),
        "--set",
        "operations.0.seq_len=512",
        "--set",
        "operations.0.layers=2",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "attention layers vs dense attention" in printed and "speedup" in printed
    doc = json.loads((out / "results.json").read_text())
    rows = doc["attention"]
    assert [r["layer"] for r in rows] == ["decoder.blocks.0.attn", "decoder.blocks.1.attn"]
    for r in rows:
        assert r["blocks_executed"] + r["blocks_skipped"] == r["blocks_total"]
        assert r["macs_executed"] < r["macs_dense"] and r["speedup"] > 1
        assert sum(r["phase_cycles"].values()) == r["cycles"]
        assert set(r["bound"]) == {"estimate", "qk", "softmax", "pv", "output"}
        assert r["bound"]["qk"] in {"pe_array", "dram"} and r["bound"]["softmax"] in {
            "vector",
            "dram",
        }
    # The attention layers are rows of the layer table too, so the rows still add up.
    layers = doc["layers"]
    assert sum(row["cycles"] for row in layers) == doc["summary"]["total_cycles"]
    names = [row["name"] for row in layers]
    assert names.index("decoder.blocks.0.attn") == names.index("decoder.blocks.0.attn.qkv") + 1
    with (out / "attention.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [r["layer"] for r in table] == [r["layer"] for r in rows]
    assert {"density", "kv_bytes", "speedup", "bound_pv", "cycles_qk"} <= set(table[0])


def test_runs_without_attention_write_no_attention_csv(tmp_path):
    out = tmp_path / "o"
    assert main(["run", "workloads/examples/tiny_gemm.yaml", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "results.json").read_text())["attention"] == []
    assert not (out / "attention.csv").exists()
