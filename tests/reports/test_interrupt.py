"""Issue 15 part 7: Ctrl-C stops a sweep at once and keeps what finished; a killed driver takes
its workers with it; either way a resumed sweep ends with exactly the full set of points."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from reports_support import stored_points, time_limit, write_sweep

from reports.dse import run_sweep
from reports.store import ResultStore
from reports.sweep import load_sweep, point_hash

# Large enough that a point takes a noticeable time: since programs are cached across points,
# a small GEMM's 24 points finish before a Ctrl-C could arrive.
SWEEP = """overrides: {operations.2.m: 65536}
axes:
  - {key: hardware.array.rows, values: [2, 4, 8]}
  - {key: hardware.array.cols, values: [2, 4, 8, 16]}
  - {key: hardware.dram.bandwidth_bytes_per_cycle, values: [4, 16]}
objectives: [cycles]
"""


def _group(pgid: int) -> list[str]:
    """Processes still in the sweep's process group (driver, forkserver, workers)."""
    found = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True)
    return found.stdout.split()


def _start(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path, Path]:
    path = write_sweep(tmp_path / "stop.yaml", SWEEP)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "archsim.cli", "dse", str(path), "--out", str(out),
           "--workers", "2", "--chunk-size", "1", *extra]
    # Its own session, as a terminal's foreground job is: Ctrl-C signals the whole group.
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    db = out / "results.db"
    deadline = time.monotonic() + 60
    while stored_points(db) < 3:
        assert proc.poll() is None, f"sweep ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "the sweep stored nothing within 60 s"
        time.sleep(0.01)
    assert len(_group(proc.pid)) >= 3, "expected the driver, its forkserver and workers"
    return proc, path, db


def _no_process_left(pgid: int, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while _group(pgid):
        assert time.monotonic() < deadline, f"still alive after {within_s} s: {_group(pgid)}"
        time.sleep(0.1)


def _resume_gives_every_point_once(path: Path, db: Path) -> None:
    sweep = load_sweep(path, area_available=False)
    with ResultStore(db, readonly=True) as store:
        before = {r.hash: r.finished_at for r in store.rows()}
    with time_limit(120):
        outcome = run_sweep(sweep, db.parent, workers=2, resume=True)
    with ResultStore(db, readonly=True) as store:
        after = {r.hash: r for r in store.rows()}
    expected = {point_hash(p) for p in sweep.grid()}
    assert set(after) == expected and len(expected) == 24
    assert {r.status for r in after.values()} == {"ok"}
    assert outcome.simulated == len(expected) - len(before)
    assert all(after[h].finished_at == t for h, t in before.items())


def test_sigkill_of_the_driver_leaves_no_worker_and_resume_completes(tmp_path):
    proc, path, db = _start(tmp_path, "--quiet")
    try:
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone: its workers must notice
        proc.wait(timeout=10)
        _no_process_left(proc.pid, within_s=5)
    finally:
        if _group(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    assert 3 <= stored_points(db) < 24
    _resume_gives_every_point_once(path, db)


@pytest.mark.parametrize("send", [os.killpg, os.kill], ids=["terminal", "kill-INT-driver"])
def test_ctrl_c_stops_the_sweep_keeps_points_and_a_second_press_does_not_hang(tmp_path, send):
    proc, path, db = _start(tmp_path)  # with the progress bar, as a person would run it
    try:
        pressed = time.monotonic()
        for _ in range(3):  # impatient presses: none may hang or dump a traceback
            send(proc.pid, signal.SIGINT)
            time.sleep(0.1)
        _, err = proc.communicate(timeout=10)
        took = time.monotonic() - pressed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert took < 2.5, f"Ctrl-C took {took:.1f} s"
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    held = stored_points(db)
    kept = "1 finished point is" if held == 1 else f"{held} finished points are"
    assert last.startswith(f"archsim: interrupted; {kept} kept in {db}; "
                           f"continue with: archsim dse {path} --out {db.parent} --resume"), err
    assert [line for line in err.splitlines() if line.startswith("archsim:")] == [last]
    _no_process_left(proc.pid, within_s=5)
    _resume_gives_every_point_once(path, db)



def test_ctrl_c_during_a_commit_acts_after_it():
    from workloads.files import sigint_deferred

    done = []
    with pytest.raises(KeyboardInterrupt):
        with sigint_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler has run by now: it only noted the press
            done.append("committed")
    assert done == ["committed"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
