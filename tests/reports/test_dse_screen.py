"""The two-stage search (``strategy.screen``): the analytic estimate, the screen's ranking, what
a screened sweep simulates and stores, resume, and the errors of a sweep it cannot screen."""

from __future__ import annotations

import math

import pytest
from reports_support import EXAMPLES, write_sweep

from archsim import simulate
from archsim.estimate import ESTIMATED_METRICS, EstimateError, estimate_metrics
from reports.dse import best_designs, kept_points, run_sweep, screen_ranking
from reports.store import ResultStore
from reports.sweep import load_sweep, override_args, point_hash
from workloads.errors import SpecError
from workloads.load import load_workload

AXES = """axes:
  - {key: hardware.array.rows, name: rows, values: [4, 8]}
  - {key: hardware.array.cols, name: cols, values: [4, 8, 16]}
  - {key: hardware.dram.bandwidth_bytes_per_cycle, name: dram_bw, values: [4, 16]}
  - {key: hardware.buffers.input_bytes, name: input_bytes, values: [2048, 4096]}
constraints:
  - rows * cols <= 64
"""


def _sweep(tmp_path, keep: float | None, objectives: str = "[cycles, energy_pj]"):
    screen = f", screen: {{keep: {keep}}}" if keep is not None else ""
    return write_sweep(tmp_path / f"screen_{keep}.yaml",
                       AXES + f"objectives: {objectives}\nstrategy: {{kind: grid{screen}}}\n")


def _rows(out):
    with ResultStore(out / "results.db", readonly=True) as store:
        return {r.hash: r for r in store.rows()}


@pytest.mark.parametrize("example, overrides", [
    ("tiny_gemm.yaml", []),
    ("tiny_cnn_bdwp.yaml", []),
    ("resnet18_bdwp.yaml", ["operations.0.batch=1", "schedule.pregenerate_sparse_weights=false"]),
    ("resnet18_bdwp.yaml", ["operations.0.batch=2", "hardware.array.rows=16"]),
    ("tiny_cnn_bdwp.yaml", ["hardware.array.dataflow=output_stationary"]),
    ("bert_inference_nm.yaml", []),
])
def test_estimate_is_close_to_the_exact_result(example, overrides):
    workload = load_workload(EXAMPLES / example, overrides=overrides)
    estimate, exact = estimate_metrics(workload), simulate(workload)
    assert set(estimate) == set(ESTIMATED_METRICS)
    # A ranking, not a result (archsim.estimate): close, within the docs' ±15 %.
    assert estimate["cycles"] == pytest.approx(exact.total_cycles, rel=0.15)
    assert estimate["energy_pj"] == pytest.approx(exact.energy_pj["total"], rel=0.15)
    assert estimate["dram_read_bytes"] == pytest.approx(exact.dram_read_bytes, rel=0.15)
    # Executed MACs follow the mapping chosen (sparse, or the dense fallback), which the
    # estimate may judge differently for a GEMM near the tie; the dense MACs are the workload's.
    assert estimate["macs_executed"] == pytest.approx(exact.macs_executed, rel=0.05)
    assert estimate["macs_dense_equivalent"] == exact.macs_dense_equivalent


@pytest.mark.parametrize("example", ["attention_patterns.yaml", "spgemm_pyamg.yaml"])
def test_estimate_refuses_what_it_does_not_cover(example):
    with pytest.raises(EstimateError, match="has no analytic estimate"):
        estimate_metrics(load_workload(EXAMPLES / example))


def test_ranking_takes_pareto_layers_and_puts_failed_constraints_last(tmp_path):
    path = write_sweep(tmp_path / "rank.yaml", AXES + "  - utilization > 0.5\n"
                       "objectives: [cycles, energy_pj]\nstrategy: {kind: grid, screen: {keep: 1}}\n")
    sweep = load_sweep(path, area_available=False)
    estimates = {
        "a": {"cycles": 10, "energy_pj": 5, "utilization": 0.9},   # front
        "b": {"cycles": 5, "energy_pj": 10, "utilization": 0.9},   # front, fewer cycles
        "c": {"cycles": 11, "energy_pj": 11, "utilization": 0.9},  # second layer
        "d": {"cycles": 1, "energy_pj": 1, "utilization": 0.1},    # best, but fails the constraint
    }
    assert screen_ranking(estimates, sweep) == ["b", "a", "c", "d"]


def test_ranking_puts_points_without_finite_estimates_last(tmp_path):
    sweep = load_sweep(_sweep(tmp_path, 0.5), area_available=False)
    estimates = {"a": {"cycles": float("nan"), "energy_pj": 1.0},
                 "b": {"cycles": 3.0, "energy_pj": 3.0}, "c": {"cycles": 2.0, "energy_pj": 9.0}}
    assert screen_ranking(estimates, sweep) == ["c", "b", "a"]


def test_keep_counts_points_exactly():
    assert kept_points(0.07, 100) == 7  # 7.000000000000001 in floating point
    assert kept_points(0.25, 20) == 5 and kept_points(0.3, 20) == 6 and kept_points(0.01, 3) == 1
    assert kept_points(1, 17) == 17


def test_a_workload_without_an_estimate_is_refused_on_the_strategy_line(tmp_path, inline_backend):
    path = tmp_path / "attention.yaml"
    path.write_text(f"version: 1\nname: att\nworkload: {EXAMPLES / 'attention_patterns.yaml'}\n"
                    "axes:\n  - {key: hardware.dram.bandwidth_bytes_per_cycle, values: [8, 16]}\n"
                    "objectives: [cycles]\nstrategy: {kind: grid, screen: {keep: 0.5}}\n")
    sweep = load_sweep(path, area_available=False)
    with pytest.raises(SpecError, match=r"attention\.yaml:7: strategy\.screen: attention layer") as err:
        run_sweep(sweep, tmp_path / "out", backend=inline_backend)
    assert "\n" not in str(err.value)


def test_screened_sweep_simulates_and_stores_only_the_best_estimates(tmp_path, inline_backend):
    sweep = load_sweep(_sweep(tmp_path, 0.25), area_available=False)
    outcome = run_sweep(sweep, tmp_path / "out", backend=inline_backend)
    rows = _rows(tmp_path / "out")
    feasible = [p for p in sweep.grid() if p["hardware.array.rows"] * p["hardware.array.cols"] <= 64]
    keep = math.ceil(0.25 * len(feasible))
    assert outcome.estimated == len(feasible) == 20
    assert outcome.simulated == keep and outcome.screened_out == len(feasible) - keep
    assert sum(r.status == "ok" for r in rows.values()) == keep
    assert sum(r.status == "infeasible" for r in rows.values()) == 4  # settled, as ever
    # What is stored is exact: the same as simulating the point directly.
    row = next(r for r in rows.values() if r.status == "ok")
    workload = load_workload(EXAMPLES / "tiny_gemm.yaml", overrides=override_args(row.params))
    assert row.metrics["cycles"] == simulate(workload).total_cycles
    # The kept points are the estimate's best: on this space, the exact front is among them.
    full = load_sweep(_sweep(tmp_path, None), area_available=False)
    run_sweep(full, tmp_path / "full", backend=inline_backend)
    objectives = list(sweep.objectives)
    front = {r.hash for r in best_designs(list(_rows(tmp_path / "full").values()), objectives)}
    assert front <= set(rows)
    # Resuming screens again, the same way: nothing left to simulate.
    again = run_sweep(sweep, tmp_path / "out", backend=inline_backend, resume=True)
    assert again.simulated == 0 and again.skipped == keep + 4


def test_keep_one_simulates_every_point(tmp_path, inline_backend):
    sweep = load_sweep(_sweep(tmp_path, 1), area_available=False)
    outcome = run_sweep(sweep, tmp_path / "out", backend=inline_backend)
    assert outcome.simulated == 20 and outcome.screened_out == 0
    assert {point_hash(p) for p in sweep.grid()} == set(_rows(tmp_path / "out"))


@pytest.mark.parametrize("body, message", [
    ("objectives: [instructions]\nstrategy: {kind: grid, screen: {keep: 0.5}}\n",
     "objectives"),
    ("objectives: [speedup]\ncompare_dense: true\nstrategy: {kind: grid, screen: {keep: 0.5}}\n",
     "'speedup' has no analytic estimate, so strategy.screen cannot rank by it"),
    ("objectives: [cycles]\nstrategy: {kind: grid, screen: {keep: 0}}\n", "keep"),
    ("objectives: [cycles]\nstrategy: {kind: grid, screen: {keep: 1.5}}\n", "keep"),
    ("objectives: [cycles]\nstrategy: {kind: grid, screen: {keep: true}}\n", "boolean"),
    ("objectives: [cycles]\nstrategy: {kind: nsga2, trials: 4, screen: {keep: 0.5}}\n",
     "screen"),
])
def test_sweeps_the_screen_cannot_take_fail_on_their_line(tmp_path, body, message):
    path = write_sweep(tmp_path / "bad.yaml", AXES + body)
    with pytest.raises(SpecError, match=message) as err:
        load_sweep(path, area_available=False)
    assert str(err.value).startswith(f"{path}:")
    assert "\n" not in str(err.value)


def test_the_report_says_a_sweep_was_screened(tmp_path, inline_backend):
    from reports.inputs import read_inputs

    run_sweep(load_sweep(_sweep(tmp_path, 0.25), area_available=False), tmp_path / "s",
              backend=inline_backend)
    run_sweep(load_sweep(_sweep(tmp_path, None), area_available=False), tmp_path / "f",
              backend=inline_backend)
    (screened,), _, _ = read_inputs([tmp_path / "s" / "results.db"])
    (full,), _, _ = read_inputs([tmp_path / "f" / "results.db"])
    assert screened.screened == ("screened: only the 25% the analytic estimate ranked best "
                                 "were simulated")
    assert full.screened == ""
