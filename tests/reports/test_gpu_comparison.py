"""The GPU comparison page: built from a GPU suite's files and the simulator, nothing typed in."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from baselines.gpu_suite import main as suite_main  # noqa: E402
from reports.gpu_comparison import Comparison, main, nm_shapes  # noqa: E402


def _cmp(part: str, rows: list[dict], graph: dict) -> Comparison:
    return Comparison(part, part, rows, {}, 200.0, graph)


def _row(name, sparsity, cycles, measured, method):
    return {"name": name, "m": 64, "k": 128, "n": 32, "sparsity": sparsity, "cycles": cycles,
            "measured_s": measured, "method": method, "simulated_s": cycles / 2e8}


def test_nm_shapes_pairs_each_sparse_gemm_with_its_dense_twin():
    dense = _cmp("resnet18_dense", [_row("a", "dense", 400, 2e-5, "dense"),
                                    _row("b", "dense", 400, 2e-5, "dense")],
                 {"a": 1e-5, "b": 1e-5})
    sparse = _cmp("resnet18_bdwp_2of4",
                  [_row("a", "2:4", 200, 4e-4, "semi_structured_2:4"),
                   _row("b", "2:4", 200, 4e-4, "semi_structured_2:4"),  # same shape: one row
                   _row("c", "dense", 100, 1e-5, "dense")],
                  {"a": 2e-5, "b": 2e-5})
    rows = nm_shapes({"resnet18_bdwp_2of4": sparse, "resnet18_dense": dense})
    assert len(rows) == 1
    r = rows[0]
    assert r["name"] == "a" and r["sparsity"] == "2:4"
    assert r["gpu_kernel_speedup"] == pytest.approx(0.5)
    assert r["gpu_eager_speedup"] == pytest.approx(0.05)
    assert r["accel_speedup"] == pytest.approx(2.0)


def test_page_from_a_cpu_suite_run(tmp_path):
    assert suite_main(["--device", "cpu", "--out", str(tmp_path / "res"), "--reps", "2",
                       "--warmup", "0", "--only", "tiny_gemm"]) == 0
    docs = tmp_path / "docs"
    assert main([str(tmp_path / "res" / "cpu"), "--out", str(docs)]) == 0
    page = (docs / "gpu_cpu.md").read_text()
    assert "| `tiny_gemm` | tiny-gemm |" in page
    assert (docs / "figures" / "gpu_cpu_ops.png").stat().st_size > 1000


def test_not_a_results_folder_exits_2(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "not a GPU suite's results folder" in capsys.readouterr().err
