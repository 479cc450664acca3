"""Issue 15 part 5: axis keys checked before any point runs; failed points grouped by reason."""

from __future__ import annotations

import contextlib

import pytest
from reports_support import write_sweep

from archsim.cli import main
from reports.dse import reason_groups, run_sweep
from reports.store import PointRow, ResultStore, StoreError
from reports.sweep import load_sweep
from workloads.errors import SpecError


@pytest.mark.parametrize("key, reason, hint", [
    ("hardware.array.rowz", r"array\.rowz: unknown key", "hardware.array.rows"),
    ("hardware.arary.rows", r"arary does not exist in .*tiny\.yaml", "hardware.array.rows"),
    ("operatons.0.m", r"operatons does not exist in .*tiny_gemm\.yaml", "operations.0.m"),
    ("operations.0.mm", r"operations\[0\]\.mm: unknown key", "operations.0.m"),
])
def test_misspelled_axis_key_is_refused_before_any_point(tmp_path, inline_backend, key, reason,
                                                         hint):
    path = write_sweep(tmp_path / "s.yaml", f"axes:\n  - {{key: {key}, name: x, values: [2, 4]}}"
                                            f"\nobjectives: [cycles]\n")
    sweep = load_sweep(path, area_available=False)
    with pytest.raises(SpecError, match=rf"s\.yaml:5: axes\[0\]\.key: '{key}' names no field of "
                                        rf"the workload \({reason}\); did you mean '{hint}'\?"):
        run_sweep(sweep, tmp_path / "out", backend=inline_backend)
    assert inline_backend.submitted == 0 and not (tmp_path / "out").exists()


def test_a_bad_axis_value_is_left_to_the_points(tmp_path, inline_backend):
    path = write_sweep(tmp_path / "s.yaml", "axes:\n  - {key: hardware.array.rows, values: "
                                            "[0, 4]}\nobjectives: [cycles]\n")
    outcome = run_sweep(load_sweep(path, area_available=False), tmp_path / "out",
                        backend=inline_backend)
    assert outcome.statuses == {"ok": 1, "invalid": 1}


def _row(h: str, status: str, message: str | None) -> PointRow:
    return PointRow(hash=h, params={}, status=status, message=message)


def test_reason_groups_merge_messages_that_differ_in_numbers():
    rows = [_row("a", "invalid", "SpecError: --set rows=0: rows: must be > 0, got 0"),
            _row("b", "invalid", "SpecError: --set rows=-1: rows: must be > 0, got -1"),
            _row("c", "ok", None),
            _row("d", "infeasible", "constraint failed: rows * cols <= 64"),
            _row("e", "invalid", "SpecError: --set rows=-2: rows: must be > 0, got -2"),
            _row("f", "error", None)]
    assert reason_groups(rows) == [
        ("invalid", 3, "SpecError: --set rows=0: rows: must be > 0, got 0"),
        ("error", 1, "(no message)"),
        ("infeasible", 1, "constraint failed: rows * cols <= 64"),
    ]


def test_sweep_where_no_point_succeeds_says_why_and_exits_2(tmp_path, capsys):
    path = write_sweep(tmp_path / "s.yaml", "axes:\n  - {key: hardware.array.rows, values: "
                                            "[0, -1, -2]}\nobjectives: [cycles]\n")
    code = main(["dse", str(path), "--out", str(tmp_path / "out"), "--workers", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "points that did not succeed, by reason:" in err
    assert "3 invalid: SpecError: --set hardware.array.rows=0: array.rows: Input should be " \
           "greater than 0, got 0 (2 more like it)" in err
    assert err.strip().splitlines()[-1] == ("archsim: error: no design point of the sweep "
                                            "succeeded (3 invalid); the reasons are listed above")
    assert (tmp_path / "out" / "results.db").is_file()  # the outcomes are kept all the same


def test_sweep_with_some_invalid_points_lists_them_and_exits_0(tmp_path, capsys):
    path = write_sweep(tmp_path / "s.yaml", "axes:\n  - {key: hardware.array.rows, values: "
                                            "[0, 4]}\nobjectives: [cycles]\n")
    code = main(["dse", str(path), "--out", str(tmp_path / "out"), "--workers", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 0
    assert "1 invalid: SpecError: --set hardware.array.rows=0" in err


def test_a_bad_key_inside_a_mapping_value_is_the_value_s_fault(tmp_path, inline_backend):
    # The loader says "operations[1].sparsity.mm: unknown key": a field of the value, not the key.
    path = write_sweep(tmp_path / "s.yaml", "axes:\n  - {key: operations.1.sparsity, name: sp, "
                                            "values: [{kind: nm, n: 2, mm: 4}, {kind: nm, n: 1, "
                                            "m: 4}]}\nobjectives: [cycles]\n")
    outcome = run_sweep(load_sweep(path, area_available=False), tmp_path / "out",
                        backend=inline_backend)
    assert outcome.statuses == {"ok": 1, "invalid": 1}


@pytest.mark.parametrize("strategy, where", [
    ("{kind: grid}", r"s\.yaml:\d+: axes: the grid has 100,000,000 points, above the 1,000,000"),
    ("{kind: random, samples: 10000000000}", r"strategy\.samples: 10,000,000,000 is above"),
])
def test_a_sweep_too_large_to_list_is_refused_before_expanding(tmp_path, strategy, where):
    path = write_sweep(tmp_path / "s.yaml", (
        "axes:\n"
        "  - {key: hardware.array.rows, range: {start: 1, stop: 10000, step: 1}}\n"
        "  - {key: hardware.array.cols, range: {start: 1, stop: 10000, step: 1}}\n"
        f"objectives: [cycles]\nstrategy: {strategy}\n"))
    with pytest.raises(SpecError, match=where):
        load_sweep(path, area_available=False)


def test_a_point_too_large_to_build_is_invalid_not_hours(tmp_path, inline_backend):
    path = write_sweep(tmp_path / "s.yaml", (
        "axes:\n  - {key: operations.0.m, values: [64, 1000000000]}\n"
        "objectives: [cycles]\nstrategy: {kind: grid}\n"))
    outcome = run_sweep(load_sweep(path, area_available=False), tmp_path / "o",
                        backend=inline_backend)
    assert outcome.statuses == {"ok": 1, "invalid": 1}


# --resume continues only the sweep the store holds.

BASE = ("axes:\n  - {key: hardware.array.rows, name: rows, values: [4, 8]}\n"
        "constraints: ['rows <= 8']\nobjectives: [cycles]\n")


def _content(db) -> tuple:
    """Every stored row and metadata value, to show a refused command changed nothing."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(db)) as con:
        return (con.execute("SELECT * FROM points ORDER BY hash").fetchall(),
                con.execute("SELECT * FROM meta ORDER BY key").fetchall())


@pytest.mark.parametrize("old, new, what", [
    ("values: [4, 8]", "values: [4, 16]", r"axes\[0\]: the store has .*\[4,8\]|axes\[0\]: .*"),
    ("key: hardware.array.rows", "key: hardware.array.cols", r"axes\[0\]: "),
    ("objectives: [cycles]", "objectives: [energy_pj]", "objectives: "),
    ("objectives: [cycles]", "objectives: [{metric: cycles, goal: max}]", "objectives: "),
    ("'rows <= 8'", "'rows <= 4'", "constraints: "),
    ("objectives: [cycles]", "objectives: [cycles]\ncompare_dense: true", "compare_dense: "),
    ("objectives: [cycles]", "objectives: [cycles]\nstrategy: {kind: random, samples: 2}",
     "strategy: "),
    ("objectives: [cycles]", "objectives: [cycles]\nstrategy: {kind: grid, screen: {keep: 0.5}}",
     "strategy: "),
])
def test_resume_refuses_a_changed_sweep_and_keeps_the_store(tmp_path, inline_backend, old, new,
                                                           what):
    path = write_sweep(tmp_path / "s.yaml", BASE)
    out = tmp_path / "out"
    run_sweep(load_sweep(path, area_available=False), out, backend=inline_backend)
    before = _content(out / "results.db")
    path.write_text(path.read_text().replace(old, new))
    with pytest.raises(StoreError, match=rf"results\.db holds 2 points of another sweep \({what}"
                                         rf".*\); --resume continues only the sweep it stored"):
        run_sweep(load_sweep(path, area_available=False), out, resume=True,
                  backend=inline_backend)
    assert _content(out / "results.db") == before


def test_resume_refuses_a_renamed_sweep(tmp_path, inline_backend):
    path = write_sweep(tmp_path / "s.yaml", BASE)
    run_sweep(load_sweep(path, area_available=False), tmp_path / "out", backend=inline_backend)
    path.write_text(path.read_text().replace("name: s", "name: other"))
    with pytest.raises(StoreError, match=r'\(name: the store has "s", the sweep file "other"\)'):
        run_sweep(load_sweep(path, area_available=False), tmp_path / "out", resume=True,
                  backend=inline_backend)


def test_resume_allows_renaming_an_axis(tmp_path, inline_backend):
    # An axis's name is a label: points are keyed by override key.
    body = BASE.replace("constraints: ['rows <= 8']\n", "")
    path = write_sweep(tmp_path / "s.yaml", body)
    run_sweep(load_sweep(path, area_available=False), tmp_path / "out", backend=inline_backend)
    path.write_text(path.read_text().replace("name: rows,", "name: pe_rows,"))
    outcome = run_sweep(load_sweep(path, area_available=False), tmp_path / "out", resume=True,
                        backend=inline_backend)
    assert (outcome.skipped, outcome.simulated) == (2, 0)


def test_resume_of_nsga2_may_raise_trials(tmp_path, inline_backend):
    body = ("axes:\n  - {key: hardware.array.rows, values: [4, 8]}\n"
            "  - {key: hardware.array.cols, values: [4, 8]}\nobjectives: [cycles, energy_pj]\n"
            "strategy: {kind: nsga2, trials: 2, population: 2}\n")
    path = write_sweep(tmp_path / "s.yaml", body)
    run_sweep(load_sweep(path, area_available=False), tmp_path / "out", backend=inline_backend)
    path.write_text(path.read_text().replace("trials: 2", "trials: 4"))
    outcome = run_sweep(load_sweep(path, area_available=False), tmp_path / "out", resume=True,
                        backend=inline_backend)
    assert outcome.proposed >= 2  # resumed, not refused
    path.write_text(path.read_text().replace("population: 2", "population: 4"))
    with pytest.raises(StoreError, match=r"strategy: "):
        run_sweep(load_sweep(path, area_available=False), tmp_path / "out", resume=True,
                  backend=inline_backend)


# Sweep-level did-you-mean and file:line.

@pytest.mark.parametrize("body, message", [
    ("hardware: tinyy\n" + BASE, r"s\.yaml:4: hardware: unknown hardware preset 'tinyy'; .*did "
                                 r"you mean 'tiny'\?"),
    ("hardware: hw/none.yaml\n" + BASE, r"s\.yaml:4: hardware: file not found: .*none\.yaml"),
    (BASE.replace("[cycles]", "[latency]"), r"objectives\[0\]\.metric: Input should be .*, got "
                                            r"'latency'; did you mean 'latency_s'\?"),
    (BASE + "strategy: {kind: grd}\n", r"strategy: .*'grd'.*; did you mean 'grid'\?"),
])
def test_sweep_hints_at_what_was_meant(tmp_path, body, message):
    with pytest.raises(SpecError, match=message):
        load_sweep(write_sweep(tmp_path / "s.yaml", body), area_available=False)


def test_a_bad_fixed_override_is_an_error_at_its_line(tmp_path, inline_backend):
    path = write_sweep(tmp_path / "s.yaml", "overrides:\n  schedule.interleave: false\n"
                                            "  limits.tile_steps: -1\n" + BASE)
    with pytest.raises(SpecError, match=r"^.*s\.yaml:6: overrides: limits\.tile_steps=-1: "
                                        r"limits\.tile_steps: Input should be greater than 0"):
        run_sweep(load_sweep(path, area_available=False), tmp_path / "out",
                  backend=inline_backend)
    assert not (tmp_path / "out").exists()


def test_axes_and_overrides_reach_sections_the_workload_omitted(tmp_path, inline_backend):
    path = write_sweep(tmp_path / "s.yaml", (
        "overrides:\n  schedule.interleave: false\n  limits.tile_steps: 100000\n"
        "axes:\n  - {key: hardware.energy.mac_pj, values: [0.5, 5.0]}\n"
        "objectives: [energy_pj]\n"))
    outcome = run_sweep(load_sweep(path, area_available=False), tmp_path / "out",
                        backend=inline_backend)
    assert outcome.statuses == {"ok": 2}
    with ResultStore(tmp_path / "out" / "results.db", readonly=True) as store:
        energy = {r.params["hardware.energy.mac_pj"]: r.metrics["energy_pj"] for r in store.rows()}
    assert energy[5.0] > energy[0.5]


def test_an_axis_on_a_hardware_field_at_the_top_is_pointed_there(tmp_path, inline_backend):
    path = write_sweep(tmp_path / "s.yaml", "axes:\n  - {key: acc_bits, values: [16, 32]}\n"
                                            "objectives: [cycles]\n")
    with pytest.raises(SpecError, match=r"s\.yaml:5: axes\[0\]\.key: 'acc_bits' names no field "
                                        r"of the workload .*; did you mean 'hardware\.acc_bits'\?"):
        run_sweep(load_sweep(path, area_available=False), tmp_path / "out",
                  backend=inline_backend)
