"""A Dask scheduler and two workers on localhost give the same results as local processes.

The cluster is started with the ``dask`` command line exactly as docs/dse.md describes, bound to
127.0.0.1, and torn down in ``finally`` (plus ``--idle-timeout``/``--death-timeout`` in case the
test process itself dies), so it always stops by itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from reports_support import time_limit, write_sweep

from reports.dse import run_sweep
from reports.store import ResultStore
from reports.sweep import load_sweep

pytest.importorskip("distributed", reason="Dask distributed is not installed (archsim[dist])")

SWEEP = """compare_dense: true
axes:
  - {key: hardware.array.rows, values: [4, 8]}
  - {key: hardware.array.cols, values: [4, 8, 16]}
  - {key: hardware.dram.bandwidth_bytes_per_cycle, values: [4, 16]}
constraints: [utilization > 0.1]
objectives: [cycles, energy_pj]
"""
DASK = [str(Path(sys.executable).parent / "dask")]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(DASK + args, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


def _wait_for_scheduler(proc: subprocess.Popen, info: Path, log: Path) -> str:
    deadline = time.monotonic() + 60
    while not info.exists():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the scheduler did not start within 60 s"
        time.sleep(0.1)
    address = json.loads(info.read_text())["address"]
    assert address.startswith("tcp://127.0.0.1:")  # listening on localhost only
    return address


def _metrics(db: Path) -> dict:
    with ResultStore(db, readonly=True) as store:
        return {r.hash: (r.status, r.metrics) for r in store.rows()}


def test_dask_cluster_matches_local_processes(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path / "d.yaml", SWEEP), area_available=False)
    local = run_sweep(sweep, tmp_path / "local", workers=2)

    info = tmp_path / "scheduler.json"
    with time_limit(180):
        procs = [_start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                         "--scheduler-file", str(info), "--idle-timeout", "120s"],
                        tmp_path / "scheduler.log")]
        try:
            address = _wait_for_scheduler(procs[0], info, tmp_path / "scheduler.log")
            for i in range(2):
                procs.append(_start(["worker", address, "--nthreads", "1", "--nworkers", "1",
                                     "--host", "127.0.0.1", "--no-dashboard", "--memory-limit",
                                     "1GiB", "--death-timeout", "60s", "--name", f"w{i}"],
                                    tmp_path / f"worker{i}.log"))
            from distributed import Client

            with Client(address, timeout="60s") as client:
                client.wait_for_workers(2, timeout=60)
            dask = run_sweep(sweep, tmp_path / "dask", scheduler=address)
        finally:
            _stop(procs)
    assert dask.backend.startswith(f"Dask at {address} (2 worker threads)")
    assert dask.simulated == local.simulated == sweep.size
    assert _metrics(tmp_path / "dask" / "results.db") == _metrics(tmp_path / "local" / "results.db")
    with ResultStore(tmp_path / "dask" / "results.db", readonly=True) as store:
        workers = {r.worker.split(":")[-1] for r in store.rows()}
    assert os.getpid() not in {int(w) for w in workers}  # evaluated in the workers, not here


def test_unreachable_scheduler_is_one_line_error():
    from reports.executors import DaskBackend, ExecutorError

    with pytest.raises(ExecutorError, match=r"cannot reach the Dask scheduler at "
                                            r"tcp://127\.0\.0\.1:9.*dask scheduler --host"):
        DaskBackend("tcp://127.0.0.1:9", timeout_s=1)
