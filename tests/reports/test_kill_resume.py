"""kill -9 in the middle of a sweep, then --resume: every point exactly once, none lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from reports_support import stored_points, time_limit, write_sweep

from reports.dse import run_sweep
from reports.store import ResultStore
from reports.sweep import load_sweep, point_hash

SWEEP = """overrides: {operations.2.m: 256}
axes:
  - {key: hardware.array.rows, values: [2, 4, 8]}
  - {key: hardware.array.cols, values: [2, 4, 8, 16]}
  - {key: hardware.dram.bandwidth_bytes_per_cycle, values: [2, 4, 8, 16]}
  - {key: hardware.buffers.input_bytes, values: [2048, 4096]}
objectives: [cycles, energy_pj]
"""


def _rows(db: Path) -> dict:
    with ResultStore(db, readonly=True) as store:
        return {r.hash: r for r in store.rows()}


def test_sigkill_mid_sweep_then_resume(tmp_path):
    path = write_sweep(tmp_path / "kill.yaml", SWEEP)
    sweep = load_sweep(path, area_available=False)
    expected = {point_hash(p) for p in sweep.grid()}
    out, db = tmp_path / "out", tmp_path / "out" / "results.db"
    cmd = [sys.executable, "-m", "archsim.cli", "dse", str(path), "--out", str(out),
           "--workers", "2", "--chunk-size", "2", "--quiet"]
    # Its own session, so that one killpg takes the driver, its forkserver and workers at once.
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while stored_points(db) < 6:
            assert proc.poll() is None, f"sweep ended before the kill: {proc.communicate()}"
            assert time.monotonic() < deadline, "the sweep stored nothing within 60 s"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    before = _rows(db)
    assert 6 <= len(before) < len(expected), "the kill must land mid-sweep"
    assert set(before) <= expected and {r.status for r in before.values()} == {"ok"}

    with time_limit(120):
        outcome = run_sweep(sweep, out, workers=2, resume=True)
    after = _rows(db)
    assert set(after) == expected and len(after) == len(expected) == 96
    assert {r.status for r in after.values()} == {"ok"}
    # Only the missing points ran again; the ones stored before the kill were kept as they were.
    assert outcome.simulated == len(expected) - len(before)
    assert all(after[h].finished_at == r.finished_at for h, r in before.items())
