"""Where design points are evaluated: local worker processes, or a Dask cluster.

Both are used through the ``concurrent.futures`` interface (Dask through
``Client.get_executor``), and :func:`dispatch` drives either one: it submits points in chunks,
keeps a bounded number in flight, and survives workers that die.

- Local: one single-process :class:`~concurrent.futures.ProcessPoolExecutor` per worker, so
  that :func:`dispatch` chooses the worker of each chunk: a worker keeps the programs it built,
  and chunks that share programs (a *lane*, ``reports.dse.program_lanes``) go to one worker.
  A worker killed (OOM killer, ``kill -9``) breaks its pool (REFERENCE.md section 5), so that
  pool is recreated and the chunks that were in flight on it are submitted again; the other
  workers go on.
- Dask: the scheduler places tasks itself (lanes do not reach it) and already reschedules the
  tasks of a dead worker; a task that killed workers repeatedly comes back as ``KilledWorker``.

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
import importlib
import itertools
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from reports.evaluate import PointTask, evaluate_chunk
from workloads.errors import ArchsimError
from workloads.files import sigint_deferred

__all__ = ["Backend", "LocalBackend", "DaskBackend", "ExecutorError", "dispatch", "each_alone",
           "fixed_chunks", "make_backend"]

#: Losses of a chunk after which its points are isolated (see the module docstring).
_ISOLATE_AFTER = 2


class ExecutorError(ArchsimError):
    """The execution backend failed as a whole (unreachable scheduler, workers without archsim)."""


class Backend:
    """A ``concurrent.futures`` executor plus what :func:`dispatch` needs to recover from it."""

    workers: int = 1
    description: str = ""

    def submit(self, chunk: list[PointTask], worker: int) -> Future:
        """Evaluate ``chunk``, on worker ``worker`` (``0 <= worker < workers``) where the
        backend can choose; a backend that places tasks itself ignores it."""
        raise NotImplementedError

    def lost_worker(self, exc: BaseException) -> bool:
        """True when ``exc`` means a worker died while running the chunk."""
        raise NotImplementedError

    def recover(self, worker: int) -> None:
        """Make ``worker`` usable again after :meth:`lost_worker` (no-op where not needed)."""

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
    # Import the simulator once per worker process, not inside the first timed point (the
    # forkserver has usually imported it already: _start_forkserver).
    for module in WORKER_MODULES:
        importlib.import_module(module)


#: What a worker imports before its first point.
WORKER_MODULES = ("archsim.api", "dataflows.scheduler")


def _start_forkserver() -> None:
    """Start the forkserver that forks the workers (if it is not running) with SIGINT blocked.

    It is a fresh interpreter in the driver's process group, and it ignores SIGINT only once
    it has imported its modules: a Ctrl-C while it loaded was its own traceback ("Fatal Python
    error: init_import_site", KeyboardInterrupt) beside the driver's one line. Blocked here,
    SIGINT stays blocked in the forkserver and in the workers it forks (until
    :func:`_init_worker` ignores it), and a press now reaches the driver when this returns.
    """
    from multiprocessing import forkserver, resource_tracker

    # The forkserver starts the resource tracker first, which blocks SIGINT for its own start
    # and then unblocks it: started first, it leaves the block below in place.
    resource_tracker.ensure_running()
    # The forkserver imports the simulator once, and every worker forked from it starts with
    # it imported (copy-on-write) instead of importing it again (about 0.6 CPU-s each).
    forkserver.set_forkserver_preload(list(WORKER_MODULES))
    if not hasattr(signal, "pthread_sigmask"):  # Windows has no forkserver anyway
        forkserver.ensure_running()
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class LocalBackend(Backend):
    """``workers`` local worker processes (default: the CPUs this process may use), each its
    own single-process pool, so that a chunk goes to the worker :func:`dispatch` chose.

    Workers start from a ``forkserver``: forking the sweep process itself would copy the
    progress bar's thread state, which can deadlock a child.
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = len(os.sched_getaffinity(0)) if workers is None else workers
        if self.workers < 1:
            raise ExecutorError(f"--workers must be at least 1, got {self.workers}")
        self.description = f"{self.workers} local worker process{'es' * (self.workers > 1)}"
        self.restarts = 0
        self._pools = [self._new_pool() for _ in range(self.workers)]

    def _new_pool(self) -> ProcessPoolExecutor:
        ctx = multiprocessing.get_context("forkserver")
        _start_forkserver()  # here, not at the pool's first chunk: see its docstring
        return ProcessPoolExecutor(1, mp_context=ctx, initializer=_init_worker,
                                   initargs=(os.getpid(),))

    def submit(self, chunk: list[PointTask], worker: int) -> Future:
        # A pool starts its process in its first submit. A Ctrl-C part way through left that
        # process started but not yet listed, so abort() could not kill it, and it printed a
        # traceback once the driver had gone: the press acts once the process is listed.
        with sigint_deferred():
            return self._submit(chunk, worker)

    def _submit(self, chunk: list[PointTask], worker: int) -> Future:
        try:
            return self._pools[worker].submit(evaluate_chunk, chunk, True)  # only points run there
        except BrokenProcessPool as exc:
            # The pool may notice a dead worker before this submit rather than in a future:
            # hand the break back as the chunk's outcome, so it is recovered like any other.
            lost: Future = Future()
            lost.set_exception(exc)
            return lost

    def lost_worker(self, exc: BaseException) -> bool:
        return isinstance(exc, BrokenProcessPool)

    def recover(self, worker: int) -> None:
        self._pools[worker].shutdown(wait=False, cancel_futures=True)
        self._pools[worker] = self._new_pool()
        self.restarts += 1

    def processes(self) -> list[multiprocessing.Process]:
        """The worker processes started so far (a pool starts its process at its first chunk)."""
        # The pool has no public way to reach its processes; they are listed here.
        return [proc for pool in self._pools for proc in (pool._processes or {}).values()]

    def close(self) -> None:
        for pool in self._pools:
            pool.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        processes = self.processes()  # before shutdown forgets them
        for pool in self._pools:
            pool.shutdown(wait=False, cancel_futures=True)
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

    def submit(self, chunk: list[PointTask], worker: int) -> Future:
        return self._executor.submit(evaluate_chunk, chunk)  # Dask picks the worker

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


#: A chunk before :func:`dispatch` prepares its tasks (see ``prepare``).
Chunk = TypeVar("Chunk")


def each_alone(chunks: Iterable[Chunk]) -> Iterator[list[Chunk]]:
    """Every chunk its own lane (for :func:`dispatch`): chunks that share nothing a worker
    would keep, handed to whichever worker is free."""
    for chunk in chunks:
        yield [chunk]


def _lost_outcome(task: PointTask) -> dict[str, Any]:
    return {"hash": task.hash, "status": "error", "metrics": None, "layers": None,
            "message": "the worker process died while evaluating this point, even when it "
                       "ran alone (out of memory?)", "wall_s": None, "started_at": None,
            "worker": None, "worker_rss_mib": None}


#: Marks that a worker found no chunk left to take.
_NONE_LEFT = object()


class _Lanes:
    """Which chunk each worker takes next (the policy of :func:`dispatch`), and the chunks
    lost on a worker, which that worker takes first."""

    def __init__(self, lanes: Iterable[Sequence[Chunk]],
                 prepare: Callable[[Chunk], list[PointTask]], workers: int) -> None:
        self._unopened = iter(lanes)
        self._open: list[deque[Chunk]] = []
        self._current: list[deque[Chunk]] = [deque() for _ in range(workers)]
        self._prepare = prepare
        self.retry: list[deque[list[PointTask]]] = [deque() for _ in range(workers)]

    def take(self, worker: int) -> list[PointTask] | None:
        """The next tasks for ``worker`` (chunks left with no task are skipped), or None."""
        if self.retry[worker]:
            return self.retry[worker].popleft()
        while (chunk := self._next_chunk(worker)) is not _NONE_LEFT:
            tasks = self._prepare(chunk)
            if tasks:
                return tasks
        return None

    def _next_chunk(self, worker: int) -> Any:
        if self._current[worker]:  # its own lane, front to back
            return self._current[worker].popleft()
        for lane in self._unopened:  # the next lane nobody has started
            if lane:
                self._current[worker] = deque(lane)
                self._open.append(self._current[worker])
                return self._current[worker].popleft()
        # None left to start: from the end of the lane with the most chunks left, whose
        # worker would otherwise still be busy when every other worker is done.
        self._open = [lane for lane in self._open if lane]
        longest = max(self._open, key=len, default=None)
        return longest.pop() if longest else _NONE_LEFT


def dispatch(
    backend: Backend,
    lanes: Iterable[Sequence[Chunk]],
    on_outcome: Callable[[dict[str, Any]], None],
    prepare: Callable[[Chunk], list[PointTask]] = list,
) -> None:
    """Evaluate the chunks of ``lanes`` on ``backend`` (one chunk per submission, so a worker
    reuses what its chunk's points share), calling ``on_outcome`` once per task as results
    arrive.

    A lane holds chunks that share more than their points do among themselves (their biggest
    programs: ``reports.dse.program_lanes``), so one worker takes a lane's chunks: each works
    through one lane at a time, front to back; a worker whose lane is done starts the next
    lane nobody has started; when none is left, it takes chunks from the end of the lane with
    the most chunks left, so every worker stays busy to the end. ``each_alone(chunks)``: every
    chunk its own lane. Each chunk becomes its tasks through ``prepare`` when it is submitted
    (none: it is skipped).

    ``lanes`` is consumed lazily, with at most two chunks per worker in flight, so a huge grid
    is never materialized and ``on_outcome`` (which commits to the store) runs while the
    workers keep busy.

    Raises
    ------
    ExecutorError
        When a chunk fails for a reason other than a dead worker (the backend itself broke).
    """
    queue = _Lanes(lanes, prepare, backend.workers)
    isolated: list[PointTask] = []
    losses: Counter[str] = Counter()
    inflight: dict[Future, tuple[int, list[PointTask]]] = {}
    busy = [0] * backend.workers  # chunks in flight per worker
    alone = False  # the final phase: set-aside points run one at a time

    def refill() -> None:
        for worker in range(1 if alone else backend.workers):
            while busy[worker] < (1 if alone else 2) and (chunk := queue.take(worker)):
                inflight[backend.submit(chunk, worker)] = (worker, chunk)
                busy[worker] += 1

    def settle(fut: Future) -> None:
        """Report ``fut``'s outcomes, or count its chunk lost (another failure: raise)."""
        worker, chunk = inflight.pop(fut)
        busy[worker] -= 1
        try:
            outcomes = fut.result()
        except Exception as exc:
            if not backend.lost_worker(exc):
                raise ExecutorError(f"{backend.description}: evaluation failed: "
                                    f"{type(exc).__name__}: {exc}") from exc
            if isinstance(exc, BrokenProcessPool):
                broken.add(worker)
            lost(worker, chunk)
            return
        for outcome in outcomes:
            on_outcome(outcome)

    def lost(worker: int, chunk: list[PointTask]) -> None:
        for t in chunk:
            losses[t.hash] += 1
        if alone:  # it ran by itself, so it is the culprit
            on_outcome(_lost_outcome(chunk[0]))
        elif any(losses[t.hash] >= _ISOLATE_AFTER for t in chunk):
            isolated.extend(t for t in chunk if losses[t.hash] >= _ISOLATE_AFTER)
            queue.retry[worker].extend([t] for t in chunk if losses[t.hash] < _ISOLATE_AFTER)
        else:
            queue.retry[worker].append(chunk)

    broken: set[int] = set()  # workers whose pool broke
    refill()
    while inflight or isolated:
        if not inflight:
            alone = True
            queue.retry[0].extend([t] for t in isolated)
            isolated.clear()
            refill()
            continue
        done, _ = wait(inflight, return_when=FIRST_COMPLETED)
        for fut in done:
            settle(fut)
        while broken:
            worker = broken.pop()
            # Its other chunk in flight died with its pool: collect it before recovering. The
            # other workers' pools are whole: their chunks run on.
            for fut in [f for f, (w, _) in inflight.items() if w == worker]:
                settle(fut)
            broken.discard(worker)
            backend.recover(worker)
        refill()
