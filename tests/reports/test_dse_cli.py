"""archsim dse through main([...]): summary, exit codes, one-line errors."""

from __future__ import annotations

import pytest
from reports_support import write_sweep

from archsim.cli import main
from reports.dse import run_sweep
from reports.executors import ExecutorError
from reports.store import ResultStore
from reports.sweep import load_sweep


def test_dse_prints_best_designs_and_resumes(tmp_path, capsys):
    path = write_sweep(tmp_path / "cli.yaml", (
        "axes:\n  - {key: hardware.array.rows, name: rows, values: [4, 8]}\n"
        "  - {key: hardware.array.cols, name: cols, values: [4, 8]}\n"
        "objectives: [cycles, energy_pj]\n"))
    out = tmp_path / "out"
    assert main(["dse", str(path), "--out", str(out), "--workers", "1"]) == 0
    captured = capsys.readouterr()
    assert "best designs: Pareto front on min cycles, min energy_pj" in captured.out
    assert "store: 4 points (4 ok); this run: 4 simulated" in captured.out
    assert f"results: {out / 'results.db'}" in captured.out
    assert "points/s" in captured.err and "4/4" in captured.err  # the progress bar

    assert main(["dse", str(path), "--out", str(out), "--workers", "1"]) == 2
    assert "already holds 4 design points; pass --resume" in capsys.readouterr().err
    assert main(["dse", str(path), "--out", str(out), "--resume", "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("results: ")


def test_bad_sweep_is_one_line(tmp_path, capsys):
    path = write_sweep(tmp_path / "bad.yaml", "axes: []\nobjectives: [cycles]\n")
    assert main(["dse", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err == f"archsim: error: {path}:4: axes: List should have at least 1 item after " \
                  "validation, not 0, got []\n"
    assert not (tmp_path / "o").exists()


TWO_POINTS = "axes:\n  - {key: hardware.array.rows, name: rows, values: [4, 8]}\nobjectives: [cycles]\n"


@pytest.mark.parametrize("address", ["BADURL", "127.0.0.1:8786", "tcp://127.0.0.1",
                                     "tcp://127.0.0.1:0", "tcp://host:65536", "http://h:8786",
                                     "tcp://:8786", "tcp://a b:8786"])
def test_a_malformed_scheduler_is_refused_before_any_file(tmp_path, capsys, address):
    path = write_sweep(tmp_path / "s.yaml", TWO_POINTS)
    code = main(["dse", str(path), "--out", str(tmp_path / "o"), "--scheduler", address])
    assert code == 2
    assert capsys.readouterr().err == (
        f"archsim: error: --scheduler {address!r}: expected a Dask scheduler address "
        f"tcp://HOST:PORT with a port from 1 to 65535, e.g. tcp://127.0.0.1:8786\n")
    assert not (tmp_path / "o").exists()


def test_the_backend_is_reached_before_the_store_is_created(tmp_path, monkeypatch):
    # An unreachable Dask scheduler (20 s to find out) must leave no folder behind.
    import reports.dse

    def unreachable(workers, scheduler):
        raise ExecutorError(f"cannot reach the Dask scheduler at {scheduler}")

    monkeypatch.setattr(reports.dse, "make_backend", unreachable)
    path = write_sweep(tmp_path / "s.yaml", TWO_POINTS)
    with pytest.raises(ExecutorError, match="cannot reach"):
        run_sweep(load_sweep(path, area_available=False), tmp_path / "o",
                  scheduler="tcp://127.0.0.1:8786")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag, value", [("--top", "0"), ("--top", "-3"), ("--workers", "0"),
                                         ("--chunk-size", "0"), ("--chunk-size", "many")])
def test_counts_below_one_are_refused_while_parsing(tmp_path, capsys, flag, value):
    path = write_sweep(tmp_path / "s.yaml", TWO_POINTS)
    with pytest.raises(SystemExit) as exit_:
        main(["dse", str(path), "--out", str(tmp_path / "o"), flag, value])
    assert exit_.value.code == 2
    shown = value if value.lstrip("-").isdigit() else repr(value)
    assert capsys.readouterr().err.splitlines() == [
        f"archsim dse: error: argument {flag}: expected a whole number >= 1, got {shown} "
        f"(see 'archsim dse --help')"]
    assert not (tmp_path / "o").exists()


def test_resume_of_a_changed_sweep_is_one_line_and_keeps_every_point(tmp_path, capsys):
    path = write_sweep(tmp_path / "s.yaml", TWO_POINTS)
    out = tmp_path / "o"
    assert main(["dse", str(path), "--out", str(out), "--workers", "1", "--quiet"]) == 0
    capsys.readouterr()
    path.write_text(path.read_text().replace("[4, 8]", "[4, 16]"))
    assert main(["dse", str(path), "--out", str(out), "--resume", "--quiet"]) == 2
    assert capsys.readouterr().err == (
        f"archsim: error: {out / 'results.db'} holds 2 points of another sweep (axes[0]: the "
        f'store has {{"key": "hardware.array.rows", "values": [4, 8]}}, the sweep file '
        f'{{"key": "hardware.array.rows", "values": [4, 16]}}); --resume continues only the '
        f"sweep it stored: restore the sweep file, or choose another --out\n")
    with ResultStore(out / "results.db", readonly=True) as store:
        assert sorted(r.params["hardware.array.rows"] for r in store.rows()) == [4, 8]
        assert store.meta()["sweep"]["axes"][0]["values"] == [4, 8]


def test_the_summary_counts_in_the_singular_for_one():
    # "a lost worker process was replaced 1 times", "store: 1 points" read wrong
    from reports.cli import _counted

    assert _counted(1, "time") == "1 time"
    assert _counted(0, "point") == "0 points"
    assert _counted(1234, "finished point") == "1,234 finished points"
