"""Sweeps end to end on an in-process executor: strategies, constraints, resume rules."""

from __future__ import annotations

import pytest
from reports_support import EXAMPLES, write_sweep

from archsim import simulate
from reports.dse import best_designs, run_sweep
from reports.evaluate import dense_variant
from reports.store import PointRow, ResultStore, StoreError
from reports.sweep import load_sweep, override_args, point_hash
from workloads.load import load_workload


def _rows(out) -> dict[str, PointRow]:
    with ResultStore(out / "results.db", readonly=True) as store:
        return {r.hash: r for r in store.rows(layers=True)}


def test_grid_matches_direct_simulation(tmp_path, tiny_sweep_path, inline_backend):
    sweep = load_sweep(tiny_sweep_path, area_available=False)
    outcome = run_sweep(sweep, tmp_path, backend=inline_backend)
    rows = _rows(tmp_path)
    assert set(rows) == {point_hash(p) for p in sweep.grid()}
    # rows * cols <= 64 is checked before simulating: 8 x 16 never reaches the executor.
    infeasible = {h for h, r in rows.items() if r.status == "infeasible"}
    assert infeasible == {point_hash(p) for p in sweep.grid()
                          if p["hardware.array.rows"] * p["hardware.array.cols"] > 64}
    # Never simulated: no cycles (area metrics, when an area model fits this hardware, only).
    assert all("cycles" not in (rows[h].metrics or {}) for h in infeasible)
    assert outcome.simulated == inline_backend.submitted == 36 - len(infeasible) == 30
    assert outcome.statuses["ok"] == 30

    params = sweep.point(7)
    row = rows[point_hash(params)]
    workload = load_workload(EXAMPLES / "tiny_gemm.yaml", overrides=override_args(params))
    direct, dense = simulate(workload), simulate(dense_variant(workload))
    assert row.metrics["cycles"] == direct.total_cycles
    assert row.metrics["energy_pj"] == pytest.approx(direct.energy_pj["total"])
    assert row.metrics["speedup"] == pytest.approx(dense.total_cycles / direct.total_cycles)
    assert row.hardware["array"]["cols"] == params["hardware.array.cols"]
    assert sum(layer["cycles"] for layer in row.layers) == direct.total_cycles
    assert row.archsim_version and row.worker and row.wall_s > 0

    best = best_designs(list(rows.values()), list(sweep.objectives))
    cycles = [r.metrics["cycles"] for r in rows.values() if r.status == "ok"]
    assert best[0].metrics["cycles"] == min(cycles)


def test_resume_rules(tmp_path, tiny_sweep_path, inline_backend):
    sweep = load_sweep(tiny_sweep_path, area_available=False)
    run_sweep(sweep, tmp_path, backend=inline_backend)
    with pytest.raises(StoreError, match="already holds 36 design points; pass --resume"):
        run_sweep(sweep, tmp_path, backend=inline_backend)
    again = run_sweep(sweep, tmp_path, backend=inline_backend, resume=True)
    assert again.simulated == 0 and again.skipped == 36

    # Drop two finished points and turn one into an error: resume evaluates exactly those three.
    before = _rows(tmp_path)
    ok = sorted(h for h, r in before.items() if r.status == "ok")
    with ResultStore(tmp_path / "results.db") as store:
        store._db.execute("DELETE FROM points WHERE hash IN (?, ?)", (ok[0], ok[1]))
        store.record(PointRow(hash=ok[2], params=before[ok[2]].params, status="error",
                              message="worker died", finished_at=0.0, archsim_version="x"))
    third = run_sweep(sweep, tmp_path, backend=inline_backend, resume=True)
    assert third.simulated == 3 and third.skipped == 33
    after = _rows(tmp_path)
    assert set(after) == set(before)
    assert after[ok[2]].status == "ok"
    unchanged = [h for h in before if h not in ok[:3]]
    assert all(after[h].finished_at == before[h].finished_at for h in unchanged)


def test_a_store_of_another_base_is_refused(tmp_path, inline_backend):
    axes = "axes:\n  - {key: hardware.array.rows, values: [4, 8]}\nobjectives: [cycles]\n"
    first = load_sweep(write_sweep(tmp_path / "a.yaml", axes), area_available=False)
    run_sweep(first, tmp_path / "out", backend=inline_backend)
    other = load_sweep(write_sweep(tmp_path / "b.yaml", "overrides: {hardware.clock_mhz: 50}\n"
                                   + axes), area_available=False)
    with pytest.raises(StoreError, match="holds a sweep of another base workload"):
        run_sweep(other, tmp_path / "out", backend=inline_backend, resume=True)


def test_invalid_and_post_constraint_points_are_recorded(tmp_path, inline_backend):
    path = write_sweep(tmp_path / "s.yaml", (
        "axes:\n  - {key: hardware.array.rows, name: rows, values: [3, 4, 8]}\n"
        "constraints: [cycles < 700]\nobjectives: [cycles]\n"))
    run_sweep(load_sweep(path, area_available=False), tmp_path, backend=inline_backend)
    rows = {r.params["hardware.array.rows"]: r for r in _rows(tmp_path).values()}
    # rows=3 breaks the tiny preset's 2:4 pattern (rows must be a multiple of n).
    assert rows[3].status == "invalid" and "must be a multiple of n=2" in rows[3].message
    assert rows[4].status == "infeasible" and rows[4].message == "constraint failed: cycles < 700"
    assert rows[4].metrics["cycles"] >= 700  # simulated, then rejected: metrics are kept
    assert rows[8].status == "ok" and rows[8].metrics["cycles"] < 700


def test_a_constraint_that_cannot_be_evaluated_at_a_point_keeps_the_reason(tmp_path,
                                                                           inline_backend):
    """The point stays infeasible, and its message says why the constraint did not hold: it
    read 'constraint failed: TEXT', as if the design had simply missed the bound."""
    path = write_sweep(tmp_path / "s.yaml", (
        "axes:\n  - {key: hardware.array.rows, name: rows, values: [2, 4, 8]}\n"
        "constraints: [10 / (rows - 4) < 100, (rows ** 64) ** 6 > 0,"
        " cycles / (rows - 2) < 10**9]\nobjectives: [cycles]\n"))
    run_sweep(load_sweep(path, area_available=False), tmp_path, backend=inline_backend)
    rows = {r.params["hardware.array.rows"]: r for r in _rows(tmp_path).values()}
    assert {r.status for r in rows.values()} == {"infeasible"}
    assert rows[4].message == ("constraint failed: 10 / (rows - 4) < 100 "
                               "(could not be evaluated: division by zero)")
    assert rows[8].message.startswith(
        "constraint failed: (rows ** 64) ** 6 > 0 (could not be evaluated: ** would make an "
        "integer of about 1,153 bits; integers in a constraint stay below 2**1024")
    assert rows[2].message.startswith("constraint failed: cycles / (rows - 2) < 10**9 "
                                      "(could not be evaluated: ")
    assert "division by zero)" in rows[2].message
    assert rows[2].metrics["cycles"] > 0  # simulated, then rejected: metrics are kept


def test_random_is_seeded(tmp_path, inline_backend):
    axes = ("axes:\n  - {key: hardware.array.rows, values: [2, 4, 8, 16]}\n"
            "  - {key: hardware.array.cols, values: [2, 4, 8, 16]}\nobjectives: [cycles]\n")
    picks = []
    for seed in (1, 1, 2):
        path = write_sweep(tmp_path / f"r{len(picks)}.yaml",
                           axes + f"strategy: {{kind: random, samples: 5, seed: {seed}}}\n")
        run_sweep(load_sweep(path, area_available=False), tmp_path / f"o{len(picks)}",
                  backend=inline_backend)
        picks.append(set(_rows(tmp_path / f"o{len(picks)}")))
    assert len(picks[0]) == 5 and picks[0] == picks[1] and picks[0] != picks[2]


def test_nsga2_runs_and_resumes(tmp_path, inline_backend):
    body = ("axes:\n  - {key: hardware.array.rows, values: [2, 4, 8, 16]}\n"
            "  - {key: hardware.array.cols, values: [2, 4, 8, 16]}\n"
            "  - {key: hardware.dram.bandwidth_bytes_per_cycle, values: [2, 4, 8, 16]}\n"
            "objectives: [cycles, energy_pj]\n"
            "strategy: {kind: nsga2, trials: TRIALS, population: 4, seed: 5}\n")
    path = write_sweep(tmp_path / "n.yaml", body.replace("TRIALS", "12"))
    first = run_sweep(load_sweep(path, area_available=False), tmp_path, backend=inline_backend)
    rows = _rows(tmp_path)
    assert first.proposed == 12 and first.simulated == len(rows) == 12 - first.skipped
    assert max(r.trial for r in rows.values()) <= 11
    assert {r.generation for r in rows.values()} <= {0, 1, 2}

    write_sweep(path, body.replace("TRIALS", "20"))
    second = run_sweep(load_sweep(path, area_available=False), tmp_path, backend=inline_backend,
                       resume=True)
    after = _rows(tmp_path)
    # Eight more proposals (the budget counts the stored ones); earlier rows are untouched.
    assert second.proposed == 8
    assert len(after) == len(rows) + second.simulated
    assert all(after[h].finished_at == r.finished_at for h, r in rows.items())
    new = [r for h, r in after.items() if h not in rows]
    assert all(r.trial >= 12 - first.skipped for r in new)


def test_points_use_the_fast_engine_and_a_sample_is_checked_on_simpy(
        tmp_path, tiny_sweep_path, inline_backend, monkeypatch):
    import archsim.api

    engines = []
    real = archsim.api.simulate

    def counting(target, progress=None, engine="simpy", memo=None):
        engines.append(engine)
        return real(target, progress, engine, memo)

    monkeypatch.setattr(archsim.api, "simulate", counting)
    outcome = run_sweep(load_sweep(tiny_sweep_path, area_available=False), tmp_path,
                        backend=inline_backend)
    # Every point (and its dense variant) on the fast engine; the sampled ones on both.
    assert engines.count("fast") == 2 * outcome.simulated
    assert engines.count("simpy") == 2 * outcome.crosschecks >= 2
    assert outcome.crosschecks < outcome.simulated


def test_an_engine_mismatch_stops_the_sweep(tmp_path, tiny_sweep_path, inline_backend,
                                            monkeypatch):
    from dataclasses import replace

    import archsim.api
    from reports.dse import EngineMismatchError

    real = archsim.api.simulate

    def off_by_one(target, progress=None, engine="simpy", memo=None):
        result = real(target, progress, engine, memo)
        return replace(result, total_cycles=result.total_cycles + 1) if engine == "fast" else result

    monkeypatch.setattr(archsim.api, "simulate", off_by_one)
    with pytest.raises(EngineMismatchError, match=r"disagree on total_cycles.*defect in archsim"):
        run_sweep(load_sweep(tiny_sweep_path, area_available=False), tmp_path,
                  backend=inline_backend)
    # The mismatching point is stored as an error, and nothing is evaluated after it.
    rows = sorted(_rows(tmp_path).values(), key=lambda r: r.finished_at)
    assert [r.status for r in rows].count("error") == 1 and rows[-1].status == "error"
    assert "disagree on total_cycles" in rows[-1].message


def test_points_sharing_programs_are_dispatched_together(tmp_path):
    from reports.dse import grouped

    path = write_sweep(tmp_path / "grouping.yaml", """\
axes:
  - {key: hardware.dram.bandwidth_bytes_per_cycle, name: bw, values: [64, 16]}
  - {key: hardware.array.rows, name: rows, values: [4, 8]}
  - {key: schedule.interleave, name: inter, values: [true, false]}
  - {key: hardware.array.cols, name: cols, values: [8, 4]}
objectives: [latency_s]
strategy: {kind: grid}
""")
    sweep = load_sweep(path, area_available=False)
    points = list(sweep.grid())
    order = grouped(points, sweep)
    assert sorted(map(point_hash, order)) == sorted(map(point_hash, points))
    # The array (what programs depend on) changes 3 times, in the axes' value order; DRAM
    # bandwidth and interleave vary within each group, in grid order.
    arrays = [(p["hardware.array.rows"], p["hardware.array.cols"]) for p in order]
    assert [arrays[i] for i in range(0, 16, 4)] == [(4, 8), (4, 4), (8, 8), (8, 4)]
    assert all(arrays[i] == arrays[i - i % 4] for i in range(16))
    first = [(p["hardware.dram.bandwidth_bytes_per_cycle"], p["schedule.interleave"])
             for p in order[:4]]
    assert first == [(64, True), (64, False), (16, True), (16, False)]


def test_a_chunk_holds_the_points_sharing_their_programs(tmp_path):
    """Workers get whole runs of points that differ only in what programs do not depend on
    (or only through tilings), split evenly where runs are too few to keep every worker busy
    or longer than a chunk may be; every point once, in grouped order; a chunk size given
    by the user stands."""
    from reports.dse import MAX_PROGRAM_CHUNK, grouped, program_chunks

    path = write_sweep(tmp_path / "chunks.yaml", """\
axes:
  - {key: hardware.dram.bandwidth_bytes_per_cycle, name: bw, values: [64, 16, 32]}
  - {key: hardware.array.rows, name: rows, values: [4, 8]}
  - {key: schedule.interleave, name: inter, values: [true, false]}
  - {key: hardware.buffers.input_bytes, name: inb, values: [4096, 8192]}
  - {key: hardware.array.cols, name: cols, values: [8, 4, 16]}
objectives: [latency_s]
strategy: {kind: grid}
""")
    sweep = load_sweep(path, area_available=False)
    order = grouped(list(sweep.grid()), sweep)
    array = lambda p: (p["hardware.array.rows"], p["hardware.array.cols"])  # noqa: E731
    one = program_chunks(order, sweep, workers=1)  # 6 arrays, >= 4 runs a worker: whole runs
    assert [len(c) for c in one] == [12] * 6 and [p for c in one for p in c] == order
    assert all(len({array(p) for p in c}) == 1 for c in one)
    two = program_chunks(order, sweep, workers=2)  # 6 runs < 8: each split in two halves
    assert [len(c) for c in two] == [6] * 12 and [p for c in two for p in c] == order
    assert all(len({array(p) for p in c}) == 1 for c in two)
    long = program_chunks(grouped(order * 6, sweep), sweep, workers=1)  # runs of 72 points
    assert MAX_PROGRAM_CHUNK == 32 and [len(c) for c in long] == [24] * 18  # 3 pieces each
    assert [len(c) for c in program_chunks(order, sweep, 2, chunk_size=5)] == [5] * 14 + [2]
    assert program_chunks([], sweep, 2) == []


def test_a_memo_shared_by_points_changes_no_result():
    memo: dict = {}
    base = EXAMPLES / "resnet18_bdwp.yaml"
    sets = [["operations.0.batch=1", "operations.0.model=resnet18", f"schedule.interleave={i}",
             f"hardware.dram.bandwidth_bytes_per_cycle={bw}"]
            for bw in (64, 128) for i in ("true", "false")]
    for overrides in sets:
        workload = load_workload(base, overrides=overrides)
        assert simulate(workload, engine="fast", memo=memo) == simulate(workload, engine="fast")
    assert memo  # it was used


@pytest.mark.parametrize("option, value", [("workers", 0), ("chunk_size", 0), ("chunk_size", -3)])
def test_a_worker_or_chunk_count_below_one_is_refused_before_any_file(tmp_path, tiny_sweep_path,
                                                                      option, value):
    from reports.executors import ExecutorError

    flag = "--" + option.replace("_", "-")
    with pytest.raises(ExecutorError, match=f"^{flag} must be at least 1, got {value}$"):
        run_sweep(load_sweep(tiny_sweep_path), tmp_path / "out", **{option: value})
    assert not (tmp_path / "out").exists()
