"""The dispatch loop: chunks, a process pool that loses workers, a point that kills them."""

from __future__ import annotations

import os
import signal
from collections import Counter
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

import pytest
from reports_support import EXAMPLES

from reports.evaluate import PointTask
from reports.executors import Backend, ExecutorError, LocalBackend, dispatch, fixed_chunks
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
            if sum(seen.values()) == 1:  # first result: kill every worker of the current pool
                for pid in list(backend._pool._processes):
                    os.kill(pid, signal.SIGKILL)

        dispatch(backend, fixed_chunks(tasks, 1), on_outcome)
        assert backend.restarts >= 1
    assert seen == Counter({t.hash: 1 for t in tasks})


class _PoisonBackend(Backend):
    """Fails every chunk holding the poison point as a dying worker would."""

    workers = 2
    description = "poison test backend"

    def __init__(self, poison: str, exc: Exception | None = None) -> None:
        self.poison, self.exc, self.recoveries, self.sizes = poison, exc, 0, []

    def submit(self, chunk) -> Future:
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

    def recover(self) -> None:
        self.recoveries += 1

    def close(self) -> None:
        pass


def test_a_point_that_kills_its_worker_is_isolated_and_recorded():
    tasks = [PointTask(f"p{i}", None) for i in range(13)]
    backend = _PoisonBackend("p5")
    outcomes: list[dict] = []
    dispatch(backend, fixed_chunks(tasks, 4), outcomes.append)
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
        dispatch(backend, fixed_chunks([PointTask("p0", None)], 4), lambda o: None)
