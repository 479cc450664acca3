"""Where design points are evaluated: a local process pool, or a Dask cluster.

Both are used through the ``concurrent.futures`` interface (Dask through
``Client.get_executor``), and :func:`dispatch` drives either one: it submits points in chunks,
keeps a bounded number in flight, and survives workers that die.

- Local: a :class:`~concurrent.futures.ProcessPoolExecutor`. One worker killed (OOM killer,
  ``kill -9``) breaks the whole pool (REFERENCE.md section 5), so the pool is recreated and every
  chunk that was in flight is submitted again.
- Dask: the scheduler already reschedules the tasks of a dead worker; a task that killed
  workers repeatedly comes back as ``KilledWorker``.

Either way a point whose chunk was lost twice is set aside and finally run alone: if its worker
dies then too, the point itself is the cause and it is recorded as an ``error``.

Stopping: local workers ignore SIGINT (a Ctrl-C reaches the whole process group, and it is the
driver's to act on); the driver stops a sweep with :meth:`Backend.abort`, which kills the
workers at once instead of waiting for their chunks. Workers also die with their driver,
whatever kills it: on Linux through ``PR_SET_PDEATHSIG`` (the forkserver that forked them exits
when the driver does), elsewhere through a thread that watches the parent.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from reports.evaluate import PointTask, evaluate_chunk
from workloads.errors import ArchsimError

__all__ = ["Backend", "LocalBackend", "DaskBackend", "ExecutorError", "dispatch", "fixed_chunks", "make_backend"]

#: Losses of a chunk after which its points are isolated (see the module docstring).
_ISOLATE_AFTER = 2


class ExecutorError(ArchsimError):
    """The execution backend failed as a whole (unreachable scheduler, workers without archsim)."""


class Backend:
    """A ``concurrent.futures`` executor plus what :func:`dispatch` needs to recover from it."""

    workers: int = 1
    description: str = ""

    def submit(self, chunk: list[PointTask]) -> Future:
        raise NotImplementedError

    def lost_worker(self, exc: BaseException) -> bool:
        """True when ``exc`` means a worker died while running the chunk."""
        raise NotImplementedError

    def recover(self) -> None:
        """Make the backend usable again after :meth:`lost_worker` (no-op where not needed)."""

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """Stop now (Ctrl-C): drop queued work and end running work without waiting for it."""
        self.close()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: prctl option that delivers a signal to a process when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1
#: How often a worker checks that its driver is still there (where prctl is not available).
_WATCH_PARENT_S = 0.5


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:  # no procfs: the signal test is all there is
        return True


def _die_with_driver(driver: int) -> None:
    """Make this worker exit when the sweep's driver exits (see the module docstring)."""
    from multiprocessing import forkserver

    parent = os.getppid()
    # The forkserver hands every child the write end of its "driver alive" pipe, which kept
    # the forkserver (and so every worker) alive after a kill -9 of the driver. Closed here,
    # the forkserver exits with the driver, and PR_SET_PDEATHSIG takes the workers with it.
    alive_fd = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_alive_fd", None)
    if isinstance(alive_fd, int) and parent != driver:
        with contextlib.suppress(OSError):
            os.close(alive_fd)
        forkserver._forkserver._forkserver_alive_fd = None
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watcher below still works

    def watch() -> None:
        while os.getppid() == parent and _alive(driver):
            time.sleep(_WATCH_PARENT_S)
        os._exit(1)  # the driver is gone: nobody will read a result

    threading.Thread(target=watch, name="archsim-driver-watch", daemon=True).start()


def _init_worker(driver: int) -> None:
    # Ctrl-C in a terminal signals the whole process group; the driver decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_driver(driver)
    # Import the simulator once per worker process, not inside the first timed point.
    import archsim.api  # noqa: F401
    import dataflows.scheduler  # noqa: F401


class LocalBackend(Backend):
    """A local process pool of ``workers`` processes (default: the CPUs this process may use).

    Workers start from a ``forkserver``: forking the sweep process itself would copy the
    progress bar's thread state, which can deadlock a child.
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = len(os.sched_getaffinity(0)) if workers is None else workers
        if self.workers < 1:
            raise ExecutorError(f"--workers must be at least 1, got {self.workers}")
        self.description = f"{self.workers} local worker process{'es' * (self.workers > 1)}"
        self.restarts = 0
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        ctx = multiprocessing.get_context("forkserver")
        return ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                   initargs=(os.getpid(),))

    def submit(self, chunk: list[PointTask]) -> Future:
        try:
            return self._pool.submit(evaluate_chunk, chunk, True)  # workers run only points
        except BrokenProcessPool as exc:
            # The pool may notice a dead worker before this submit rather than in a future:
            # hand the break back as the chunk's outcome, so it is recovered like any other.
            lost: Future = Future()
            lost.set_exception(exc)
            return lost

    def lost_worker(self, exc: BaseException) -> bool:
        return isinstance(exc, BrokenProcessPool)

    def recover(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()
        self.restarts += 1

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        # The pool has no public way to stop running calls; its processes are listed here.
        processes = list((self._pool._processes or {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for proc in processes:
            proc.kill()
        for proc in processes:
            proc.join(timeout=2)


def _archsim_version() -> str:
    # Imported here, on the worker, so that the worker's installed version is the one read.
    from workloads.version import ARCHSIM_VERSION

    return ARCHSIM_VERSION


class DaskBackend(Backend):
    """A Dask ``distributed`` cluster reached at ``address`` (``tcp://127.0.0.1:8786``).

    Raises
    ------
    ExecutorError
        When the scheduler cannot be reached, has no workers, or its workers run another
        archsim version (or none).
    """

    def __init__(self, address: str, timeout_s: float = 20) -> None:
        try:
            from distributed import Client
        except ImportError:
            from workloads.version import install_hint

            raise ExecutorError(f"--scheduler needs Dask: {install_hint('dist')}") from None
        try:
            self._client = Client(address, timeout=f"{timeout_s}s", set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ExecutorError(
                f"cannot reach the Dask scheduler at {address}: {exc}; start one with "
                f"'dask scheduler --host 127.0.0.1' (docs/dse.md)"
            ) from None
        try:
            try:
                self._client.wait_for_workers(1, timeout=timeout_s)
            except TimeoutError:
                raise ExecutorError(f"the Dask scheduler at {address} has no workers after "
                                    f"{timeout_s:g} s; start some with 'dask worker {address}' "
                                    f"(docs/dse.md)") from None
            self._check_versions()
        except Exception:
            self._client.close()
            raise
        self.workers = sum(self._client.nthreads().values())
        self.description = f"Dask at {address} ({self.workers} worker threads)"
        self._executor: Executor = self._client.get_executor(pure=False)

    def _check_versions(self) -> None:
        from workloads.version import ARCHSIM_VERSION as __version__

        try:
            seen = self._client.run(_archsim_version)
        except ImportError as exc:
            raise ExecutorError(f"a Dask worker cannot import archsim ({exc}); install it in "
                                f"the workers' environment") from None
        other = {w: v for w, v in seen.items() if v != __version__}
        if other:
            raise ExecutorError(f"Dask workers run another archsim version than this one "
                                f"({__version__}): {other}")

    def submit(self, chunk: list[PointTask]) -> Future:
        return self._executor.submit(evaluate_chunk, chunk)

    def lost_worker(self, exc: BaseException) -> bool:
        from distributed import KilledWorker

        return isinstance(exc, KilledWorker)

    def close(self) -> None:
        self._client.close()

    def abort(self) -> None:
        self._executor.shutdown(wait=False)  # cancels what has not started
        self._client.close(timeout=2)


def make_backend(workers: int | None = None, scheduler: str | None = None) -> Backend:
    """The Dask backend when ``scheduler`` is given, else a local process pool."""
    if scheduler:
        return DaskBackend(scheduler)
    return LocalBackend(workers)


def fixed_chunks(tasks: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """``tasks`` (or points) in chunks of ``size`` (the last one shorter), lazily."""
    tasks = iter(tasks)
    while chunk := list(itertools.islice(tasks, size)):
        yield chunk


def _lost_outcome(task: PointTask) -> dict[str, Any]:
    return {"hash": task.hash, "status": "error", "metrics": None, "layers": None,
            "message": "the worker process died while evaluating this point, even when it "
                       "ran alone (out of memory?)", "wall_s": None, "started_at": None,
            "worker": None, "worker_rss_mib": None}


def dispatch(
    backend: Backend,
    chunks: Iterator[list[PointTask]],
    on_outcome: Callable[[dict[str, Any]], None],
) -> None:
    """Evaluate ``chunks`` of tasks on ``backend`` (one chunk per submission, so a worker
    reuses what its chunk's points share), calling ``on_outcome`` once per task as results
    arrive.

    ``chunks`` is consumed lazily, with at most two chunks per worker in flight, so a huge grid
    is never materialized and ``on_outcome`` (which commits to the store) runs while the
    workers keep busy.

    Raises
    ------
    ExecutorError
        When a chunk fails for a reason other than a dead worker (the backend itself broke).
    """
    chunks = iter(chunks)
    retry: deque[list[PointTask]] = deque()
    isolated: list[PointTask] = []
    losses: Counter[str] = Counter()
    inflight: dict[Future, list[PointTask]] = {}
    alone = False  # the final phase: set-aside points run one at a time

    def refill() -> None:
        limit = 1 if alone else 2 * backend.workers
        while len(inflight) < limit:
            chunk = retry.popleft() if retry else next(chunks, None)
            if chunk is None:
                return
            inflight[backend.submit(chunk)] = chunk

    def lost(chunk: list[PointTask]) -> None:
        for t in chunk:
            losses[t.hash] += 1
        if alone:  # it ran by itself, so it is the culprit
            on_outcome(_lost_outcome(chunk[0]))
        elif any(losses[t.hash] >= _ISOLATE_AFTER for t in chunk):
            isolated.extend(t for t in chunk if losses[t.hash] >= _ISOLATE_AFTER)
            retry.extend([t] for t in chunk if losses[t.hash] < _ISOLATE_AFTER)
        else:
            retry.append(chunk)

    refill()
    while inflight or isolated:
        if not inflight:
            alone = True
            retry.extend([t] for t in isolated)
            isolated.clear()
            refill()
            continue
        done, _ = wait(inflight, return_when=FIRST_COMPLETED)
        broken = False
        for fut in done:
            chunk = inflight.pop(fut)
            try:
                outcomes = fut.result()
            except Exception as exc:
                if not backend.lost_worker(exc):
                    raise ExecutorError(f"{backend.description}: evaluation failed: "
                                        f"{type(exc).__name__}: {exc}") from exc
                broken = broken or isinstance(exc, BrokenProcessPool)
                lost(chunk)
                continue
            for outcome in outcomes:
                on_outcome(outcome)
        if broken:
            # Every other chunk in flight died with the pool: collect them before recovering.
            for fut, chunk in list(inflight.items()):
                try:
                    for outcome in fut.result():
                        on_outcome(outcome)
                except BrokenProcessPool:
                    lost(chunk)
                del inflight[fut]
            backend.recover()
        refill()
