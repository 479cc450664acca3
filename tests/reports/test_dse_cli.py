"""archsim dse through main([...]): summary, exit codes, one-line errors."""

from __future__ import annotations

import pytest
from reports_support import write_sweep

from archsim.cli import main


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


@pytest.mark.parametrize("flag, value", [("--top", "0"), ("--top", "-3"), ("--workers", "0"),
                                         ("--chunk-size", "0"), ("--chunk-size", "many")])
def test_counts_below_one_are_refused_while_parsing(tmp_path, capsys, flag, value):
    path = write_sweep(tmp_path / "s.yaml", TWO_POINTS)
    with pytest.raises(SystemExit) as exit_:
        main(["dse", str(path), "--out", str(tmp_path / "o"), flag, value])
    assert exit_.value.code == 2
    shown = value if value.lstrip("-").isdigit() else repr(value)
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"archsim dse: error: argument {flag}: expected a whole number >= 1, got {shown}")
    assert not (tmp_path / "o").exists()
