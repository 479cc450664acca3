"""The dispatch loop: chunks, lanes of chunks kept on one worker, per-worker process pools that
lose workers, a point that kills them."""

from __future__ import annotations

import os
import signal
from collections import Counter
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

import pytest
from reports_support import EXAMPLES, time_limit, write_sweep

from reports.dse import grouped, program_chunks, program_lanes, run_sweep
from reports.evaluate import PointTask
from reports.executors import (
    Backend,
    ExecutorError,
    LocalBackend,
    dispatch,
    each_alone,
    fixed_chunks,
)
from reports.store import ResultStore
from reports.sweep import load_sweep, point_hash
from workloads.load import load_workload


def _tasks(n: int) -> list[PointTask]:
    # Distinct hashes, one small workload: enough work that chunks are in flight when killed.
    w = load_workload(EXAMPLES / "tiny_gemm.yaml", overrides=["operations.2.m=256"])
    return [PointTask(f"p{i}", w) for i in range(n)]


def test_pool_is_recreated_when_workers_are_killed():
    tasks = _tasks(10)
    seen: Counter[str] = Counter()
    with LocalBackend(2) as backend:

        def on_outcome(out):
            seen[out["hash"]] += 1
            assert out["status"] == "ok", out["message"]
            if sum(seen.values()) == 1:  # first result: kill every worker
                for proc in backend.processes():
                    os.kill(proc.pid, signal.SIGKILL)

        dispatch(backend, each_alone(fixed_chunks(tasks, 1)), on_outcome)
        assert backend.restarts >= 1
    assert seen == Counter({t.hash: 1 for t in tasks})


def test_a_killed_worker_is_replaced_while_the_others_run_on():
    """Each worker has its own pool: kill -9 of one loses none of its chunks (they run again
    on its replacement) and neither stops nor replaces the other worker."""
    tasks = _tasks(12)
    seen: Counter[str] = Counter()
    pids: list[str] = []
    with LocalBackend(2) as backend:

        def on_outcome(out):
            assert out["status"] == "ok", out["message"]
            seen[out["hash"]] += 1
            pids.append(out["worker"].rpartition(":")[2])
            if len(pids) == 1:  # first result: kill the worker that sent it (it has more)
                os.kill(int(pids[0]), signal.SIGKILL)

        lanes = [[[t] for t in tasks[:6]], [[t] for t in tasks[6:]]]
        with time_limit(120):
            dispatch(backend, lanes, on_outcome)
        assert backend.restarts == 1
    assert seen == Counter({t.hash: 1 for t in tasks})
    assert len(set(pids)) == 3  # the killed worker, its replacement, and the same other one


class _RecordingBackend(Backend):
    """Finishes each chunk as it is submitted, noting the worker dispatch chose for it."""

    description = "recording test backend"

    def __init__(self, workers: int) -> None:
        self.workers, self.placed = workers, []

    def submit(self, chunk, worker) -> Future:
        self.placed.append((worker, [t.hash for t in chunk]))
        fut: Future = Future()
        fut.set_result([{"hash": t.hash, "status": "ok", "worker": f"w{worker}"} for t in chunk])
        return fut

    def lost_worker(self, exc: BaseException) -> bool:
        return False

    def close(self) -> None:
        pass


def _lane(name: str, chunks: int) -> list[list[PointTask]]:
    return [[PointTask(f"{name}{i}", None)] for i in range(chunks)]


def test_each_worker_works_through_its_lane_and_steals_from_the_longest_at_the_end():
    """One lane much longer than the others: worker 0 takes it front to back; worker 1 does
    the short lanes, then takes the long lane's chunks from its end; every chunk once."""
    backend = _RecordingBackend(2)
    lanes = [_lane("a", 10), _lane("b", 1), _lane("c", 1)]
    outcomes: list[dict] = []
    dispatch(backend, iter(lanes), outcomes.append)
    assert Counter(o["hash"] for o in outcomes) == Counter(
        t.hash for lane in lanes for chunk in lane for t in chunk)
    by_worker = {w: [h for x, hashes in backend.placed if x == w for h in hashes] for w in (0, 1)}
    assert by_worker[0] == [f"a{i}" for i in range(6)]
    assert by_worker[1] == ["b0", "c0", "a9", "a8", "a7", "a6"]


def test_fewer_lanes_than_workers_still_uses_every_worker():
    backend = _RecordingBackend(3)
    outcomes: list[dict] = []
    dispatch(backend, [_lane("a", 7)], outcomes.append)
    assert sorted(o["hash"] for o in outcomes) == sorted(f"a{i}" for i in range(7))
    workers = [w for w, _ in backend.placed]
    assert set(workers) == {0, 1, 2}
    # Worker 0 from the front, the others from the end.
    assert [h for w, hashes in backend.placed if w == 0 for h in hashes] == ["a0", "a1", "a2"]


def test_chunks_are_prepared_as_they_are_submitted():
    """``prepare`` runs at submission, in order (a chunk it leaves empty is skipped)."""
    backend = _RecordingBackend(1)
    prepared: list[str] = []

    def prepare(names):
        # Each chunk is prepared once the one before it is submitted, not earlier.
        assert len([n for n in prepared if n != "skip"]) == len(backend.placed)
        prepared.append(names)
        return [PointTask(n, None) for n in names.split() if n != "skip"]

    dispatch(backend, [["p0 p1", "skip", "p2"], ["p3"]], lambda out: None, prepare)
    assert prepared == ["p0 p1", "skip", "p2", "p3"]
    assert backend.placed == [(0, ["p0", "p1"]), (0, ["p2"]), (0, ["p3"])]


LANES_SWEEP = """overrides: {operations.2.m: 256}
axes:
  - {key: schedule.double_buffering, values: [true, false]}
  - {key: hardware.array.rows, values: [4, 8]}
  - {key: hardware.dram.bandwidth_bytes_per_cycle, values: [4, 16]}
  - {key: hardware.array.cols, values: [4, 8]}
objectives: [cycles]
"""


def test_a_lanes_chunks_run_in_one_worker_process(tmp_path):
    """Four lanes (one per array) of four one-point chunks, two workers: each lane runs in
    one process, except that a worker done before the other takes the end of the other's
    last lane; both workers are used, every point is stored once."""
    sweep = load_sweep(write_sweep(tmp_path / "lanes.yaml", LANES_SWEEP), area_available=False)
    with time_limit(120):
        outcome = run_sweep(sweep, tmp_path / "out", workers=2, chunk_size=1)
    with ResultStore(tmp_path / "out" / "results.db", readonly=True) as store:
        worker = {r.hash: r.worker for r in store.rows()}
    assert outcome.simulated == len(worker) == 16 and outcome.pool_restarts == 0
    chunks = program_chunks(grouped(list(sweep.grid()), sweep), sweep, 2, chunk_size=1)
    lanes = program_lanes(chunks, sweep)
    arrays = [{(p["hardware.array.rows"], p["hardware.array.cols"]) for c in lane for p in c}
              for lane in lanes]
    assert len(lanes) == 4 and all(len(a) == 1 for a in arrays) and len(set.union(*arrays)) == 4
    runs = [[worker[point_hash(c[0])] for c in lane] for lane in lanes]
    changes = [sum(a != b for a, b in zip(run, run[1:])) for run in runs]
    assert sorted(changes) in ([0, 0, 0, 0], [0, 0, 0, 1]), runs  # a stolen end, at most
    assert len(set(worker.values())) == 2


class _PoisonBackend(Backend):
    """Fails every chunk holding the poison point as a dying worker would."""

    workers = 2
    description = "poison test backend"

    def __init__(self, poison: str, exc: Exception | None = None) -> None:
        self.poison, self.exc, self.recoveries, self.sizes = poison, exc, 0, []

    def submit(self, chunk, worker) -> Future:
        self.sizes.append(len(chunk))
        fut: Future = Future()
        if any(t.hash == self.poison for t in chunk):
            fut.set_exception(self.exc or BrokenProcessPool("a worker died"))
        else:
            fut.set_result([{"hash": t.hash, "status": "ok", "metrics": {}, "layers": None,
                             "message": None, "wall_s": 0.0, "started_at": 0.0,
                             "worker": "w", "worker_rss_mib": 1.0} for t in chunk])
        return fut

    def lost_worker(self, exc: BaseException) -> bool:
        return isinstance(exc, BrokenProcessPool)

    def recover(self, worker) -> None:
        self.recoveries += 1

    def close(self) -> None:
        pass


def test_a_point_that_kills_its_worker_is_isolated_and_recorded():
    tasks = [PointTask(f"p{i}", None) for i in range(13)]
    backend = _PoisonBackend("p5")
    outcomes: list[dict] = []
    dispatch(backend, each_alone(fixed_chunks(tasks, 4)), outcomes.append)
    by_hash = Counter(o["hash"] for o in outcomes)
    assert by_hash == Counter({t.hash: 1 for t in tasks})
    status = {o["hash"]: o["status"] for o in outcomes}
    assert status.pop("p5") == "error" and set(status.values()) == {"ok"}
    assert "even when it ran alone" in next(o for o in outcomes if o["hash"] == "p5")["message"]
    # Lost twice in a chunk, then split, then run alone once more.
    assert backend.recoveries == 3 and backend.sizes[-1] == 1


def test_other_failures_abort_the_sweep():
    backend = _PoisonBackend("p0", exc=RuntimeError("scheduler gone"))
    with pytest.raises(ExecutorError, match="poison test backend: evaluation failed: "
                                            "RuntimeError: scheduler gone"):
        dispatch(backend, each_alone(fixed_chunks([PointTask("p0", None)], 4)), lambda o: None)


def _sigint_blocked(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as fh:
        mask = next(line for line in fh if line.startswith("SigBlk:")).split()[1]
    return bool(int(mask, 16) & (1 << (signal.SIGINT - 1)))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc")
def test_the_forkserver_starts_with_ctrl_c_blocked():
    """The forkserver is a fresh interpreter in the sweep's process group that ignores SIGINT
    only once its modules are loaded: a Ctrl-C before was its own traceback beside the
    driver's one line. It starts with SIGINT blocked, and so do the workers it forks."""
    from multiprocessing import forkserver

    with LocalBackend(1) as backend:
        assert backend.submit([], 0).result(timeout=60) == []
        assert _sigint_blocked(forkserver._forkserver._forkserver_pid)
        assert all(_sigint_blocked(proc.pid) for proc in backend.processes())
    assert not _sigint_blocked(os.getpid())  # the driver's own mask is as it was


def test_ctrl_c_while_a_pool_starts_its_process_acts_once_the_process_is_listed():
    """A press part way through a pool's first submit left its process started but unknown to
    abort(), which then could not kill it: it printed a traceback after the driver had gone."""
    backend = LocalBackend(1)
    pool = backend._pools[0]
    real_submit = pool.submit
    listed: list[int] = []

    def submit_pressed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # the press, in the middle of starting the process
        future = real_submit(*args, **kwargs)
        listed.extend(proc.pid for proc in backend.processes())
        return future

    pool.submit = submit_pressed
    try:
        with pytest.raises(KeyboardInterrupt):
            backend.submit([], 0)
        assert listed, "Ctrl-C acted before the pool had listed its process"
    finally:
        processes = backend.processes()
        backend.abort()
    assert processes and not any(proc.is_alive() for proc in processes)


def test_one_operations_n_m_pattern_is_a_lane_shared_axis(tmp_path):
    """An axis over one operation's N:M pattern (``operations.1.sparsity.n``) changes only
    that operation's sparse programs, like the workload's ``sparsity.``: its points go in
    one lane per array, varying faster than the array."""
    sweep = load_sweep(write_sweep(tmp_path / "per_op.yaml", """axes:
  - {key: operations.1.sparsity.n, values: [1, 2]}
  - {key: hardware.array.rows, values: [4, 8]}
objectives: [cycles]
"""), area_available=False)
    points = grouped(list(sweep.grid()), sweep)
    assert [p["hardware.array.rows"] for p in points] == [4, 4, 8, 8]
    lanes = program_lanes(program_chunks(points, sweep, 2, chunk_size=1), sweep)
    assert [[c[0]["operations.1.sparsity.n"] for c in lane] for lane in lanes] == [[1, 2], [1, 2]]
