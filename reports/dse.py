"""Design-space exploration: run a sweep into the results store, then summarize the best designs.

``run_sweep`` is what ``archsim dse`` calls. The process that runs it is the only writer of the
store: it resolves each point (validating the workload with the axis overrides, applying the
area model and the constraints that need no simulation), ships the rest to the executor, and
commits every outcome as it arrives. Strategies and executors: reports.search, reports.executors.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import itertools
import json
import math
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reports.area import AreaModel, AreaModelError, load_area_model, over_capacity
from reports.evaluate import MISMATCH, PointTask
from reports.executors import (
    Backend,
    ExecutorError,
    dispatch,
    each_alone,
    fixed_chunks,
    make_backend,
)
from reports.expr import ExpressionError
from reports.metrics import AREA_METRICS
from reports.pareto import pareto_layers, pareto_mask
from reports.store import PointRow, ResultStore, StoreError, inspect_store
from reports.sweep import NSGA2Strategy, Sweep, Value, override_args, point_hash
from workloads.errors import ArchsimError, SpecError
from workloads.files import sigint_deferred

__all__ = ["run_sweep", "SweepOutcome", "SweepError", "EngineMismatchError", "best_designs", "check_axis_keys",
           "reason_groups", "check_run_options", "RESULTS_FILE"]

RESULTS_FILE = "results.db"
Progress = Callable[[int, int], None]


@dataclass
class SweepOutcome:
    """What one ``run_sweep`` call did.

    Attributes
    ----------
    proposed
        Points the strategy proposed (NSGA-II: proposals, repeats included).
    skipped
        Proposals answered from the store without evaluating (``--resume``, NSGA-II repeats).
    statuses
        Outcomes of the points resolved in this call, by status.
    simulated
        Points sent to the executor.
    simulate_s, simulate_cpu_s
        Simulation seconds the workers spent, summed: wall clock, and CPU time (the figure to
        compare on a shared machine).
    worker_rss_mib
        The largest peak resident memory any worker process reported.
    pool_restarts
        How often a local worker was replaced after it died (each has its own pool).
    crosschecks
        Points whose fast-engine result was checked equal to the SimPy model's.
    estimated, screened_out, estimate_cpu_s
        A two-stage search (``strategy.screen``): points estimated analytically, those the
        screen left unsimulated (never stored), and the CPU seconds the estimates took.
    """

    store_path: Path
    backend: str
    proposed: int = 0
    skipped: int = 0
    simulated: int = 0
    statuses: Counter = field(default_factory=Counter)
    wall_s: float = 0.0
    simulate_s: float = 0.0
    simulate_cpu_s: float = 0.0
    worker_rss_mib: float | None = None
    pool_restarts: int = 0
    crosschecks: int = 0
    estimated: int = 0
    screened_out: int = 0
    estimate_cpu_s: float = 0.0

    @property
    def points_per_s(self) -> float:
        return self.simulated / self.wall_s if self.wall_s else 0.0


class SweepError(ArchsimError):
    """The sweep ran, but not one of its design points succeeded."""


class EngineMismatchError(ArchsimError):
    """A design point's fast-engine result differed from the SimPy model's: the sweep stops."""


#: Points are timed by the fast engine; about one in this many (chosen by point hash, plus the
#: first point of every run) is also run on the SimPy model, and the two must be equal.
CROSSCHECK_EVERY = 16


#: Loader messages about walking an override key's path (the value is not walked yet).
_PATH_ERRORS = ("does not exist in", "is not a mapping or list", "out of range")


def _names_bad_key(text: str, key: str) -> bool:
    """Whether the loader's ``--set key=value`` error blames the key rather than the value."""
    prefix = f"--set {key}="
    if not text.startswith(prefix):
        return False
    if any(k in text for k in _PATH_ERRORS):
        return True
    # "--set k=v: array.rowz: unknown key": the key's own last field, not one inside a mapping
    # value (sparsity={kind: nm, nn: 2} reports sparsity.nn).
    field, sep, _ = text.rpartition(": unknown key")
    if not sep:
        return False
    where = re.sub(r"\[(\d+)\]", r".\1", field.rpartition(": ")[2])
    return key == where or key.endswith("." + where)


def _closest_key(key: str, data: Any) -> str:
    """``; did you mean 'a.b.c'?`` for the first part of ``key`` that ``data`` lacks."""
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            known = list(node) if isinstance(node, dict) else []
            hint = difflib.get_close_matches(part, known, n=1)
            return f"; did you mean {'.'.join([*parts[:i], hint[0], *parts[i + 1:]])!r}?" \
                if hint else ""
    return ""


def check_axis_keys(sweep: Sweep, base) -> None:
    """Refuse an axis whose key names no field of the base workload, before any point runs.

    Each axis's first value is applied alone to the base workload: a bad *value* is left to
    the points (it may be the only bad one), a bad *key* would make every point invalid.

    Raises
    ------
    SpecError
        ``sweep.yaml:line: axes[i].key: 'hardware.array.rowz' names no field of the workload
        (...); did you mean 'hardware.array.rows'?``
    """
    from workloads.load import load_workload

    data = base.model_dump(mode="json")
    for i, (axis, values) in enumerate(sweep.axes):
        try:
            load_workload(sweep.workload_path, hardware=sweep.hardware,
                          overrides=[*sweep.fixed, *override_args({axis.key: values[0]})])
        except SpecError as exc:
            text = str(exc)
            if not _names_bad_key(text, axis.key):
                continue
            where = sweep.axis_lines[i] if i < len(sweep.axis_lines) else str(sweep.path)
            reason, _, hint = text.split(": ", 1)[1].partition("; did you mean")
            hint = _closest_key(axis.key, data) or (f"; did you mean{hint}" if hint else "")
            raise SpecError(f"{where}: axes[{i}].key: {axis.key!r} names no field of the "
                            f"workload ({reason}){hint}") from None


def reason_groups(rows: Iterable[PointRow]) -> list[tuple[str, int, str]]:
    """``(status, count, first message)`` for the points that did not succeed, grouped by
    reason: messages that differ only in numbers (the swept values) are one reason. Most
    frequent first."""
    groups: dict[tuple[str, str], list] = {}
    for row in rows:
        if row.status == "ok":
            continue
        message = row.message or "(no message)"
        key = (row.status, re.sub(r"-?\d+(\.\d+)?(e[+-]?\d+)?", "#", message))
        groups.setdefault(key, [0, message])[0] += 1
    ordered = sorted(groups.items(), key=lambda kv: (-kv[1][0], kv[0]))
    return [(status, count, message) for (status, _), (count, message) in ordered]


def _identity(workload) -> str:
    """What a store's points were computed from. Only fields that differ from their defaults
    count, so that a newer archsim adding an optional field does not orphan a stored sweep."""
    text = workload.model_dump_json(exclude_defaults=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class _Runner:
    """Resolves points into tasks and turns outcomes into stored rows."""

    def __init__(self, sweep: Sweep, store: ResultStore, area: AreaModel | None,
                 outcome: SweepOutcome, advance: Callable[[], None]) -> None:
        from workloads.version import ARCHSIM_VERSION as __version__

        self.sweep, self.store, self.area, self.outcome = sweep, store, area, outcome
        self.advance = advance
        self.version = __version__
        self.area_needed = any(m in AREA_METRICS for m, _ in sweep.objectives) or any(
            n in AREA_METRICS for c in sweep.constraints for n in c.expression.names
        )
        self.pending: dict[str, dict[str, Any]] = {}
        self.checked_first = False

    def _crosscheck(self, h: str) -> bool:
        first, self.checked_first = not self.checked_first, True
        return first or int(h[:8], 16) % CROSSCHECK_EVERY == 0

    def _record(self, h: str, status: str, **fields: Any) -> PointRow:
        info = self.pending.pop(h)
        row = PointRow(hash=h, params=info["params"], status=status, hardware=info.get("hardware"),
                       trial=info.get("trial"), generation=info.get("generation"),
                       finished_at=time.time(), archsim_version=self.version, **fields)
        with sigint_deferred():  # a finished point is stored whole, then Ctrl-C acts
            self.store.record(row)
        self.outcome.statuses[status] += 1
        self.advance()
        return row

    def prepare(self, params: dict[str, Value], trial: int | None = None,
                generation: int | None = None) -> PointTask | None:
        """A task for the executor, or None when the point was settled here (and recorded)."""
        h = point_hash(params)
        self.pending[h] = {"params": params, "trial": trial, "generation": generation}
        workload, hardware, area, settled = self.resolve(params)
        self.pending[h].update(hardware=hardware, area=area)
        if settled is not None:
            status, message = settled
            self._record(h, status, message=message, metrics=area or None)
            return None
        return PointTask(h, workload, self.sweep.spec.compare_dense, self._crosscheck(h))

    def resolve(self, params: dict[str, Value]) -> tuple[Any, dict | None, dict[str, float],
                                                          tuple[str, str] | None]:
        """(workload, hardware, area, settled) of a point, recording nothing. ``settled`` is the
        (status, message) of a point decided without simulating it: an invalid workload, a
        design over the device, a failed parameter constraint (None: simulate it)."""
        from workloads.load import load_workload

        sweep = self.sweep
        try:
            workload = load_workload(sweep.workload_path, hardware=sweep.hardware,
                                     overrides=[*sweep.fixed, *override_args(params)])
        except SpecError as exc:
            return None, None, {}, ("invalid", f"SpecError: {exc}")
        hw = workload.hardware.model_dump(mode="json")
        area: dict[str, float] = {}
        if self.area is not None:
            try:
                area = self.area.resources(hw)
            except AreaModelError as exc:
                if self.area_needed:
                    return workload, hw, {}, ("invalid", f"AreaModelError: {exc}")
        too_big = area and over_capacity(area, self.area.errors(hw))
        if too_big:
            return workload, hw, area, ("infeasible", too_big)
        env = {**sweep.names(params), **area}
        for c in sweep.constraints:
            failure = c.stage == "pre" and self._failure(c, env)
            if failure:
                return workload, hw, area, ("infeasible", failure)
        return workload, hw, area, None

    @staticmethod
    def _holds(constraint, env: dict[str, Any]) -> bool:
        return _Runner._failure(constraint, env) is None

    @staticmethod
    def _failure(constraint, env: dict[str, Any]) -> str | None:
        """None if ``constraint`` holds at ``env``; else the point's infeasible message. One
        that cannot be evaluated there (a division by zero, a bound of reports.expr) cannot
        hold either, and the message keeps why, which the stored point would otherwise lose."""
        try:
            if constraint.expression.evaluate(env):
                return None
        except ExpressionError as exc:
            reason = str(exc).removeprefix(f"{constraint.expression.quoted}: ")
            return f"constraint failed: {constraint.text} (could not be evaluated: {reason})"
        return f"constraint failed: {constraint.text}"

    def finish(self, out: dict[str, Any]) -> None:
        """Record an executor outcome (called in the driving process as results arrive)."""
        h = out["hash"]
        info = self.pending[h]
        metrics = out["metrics"]
        status, message = out["status"], out["message"]
        if metrics is not None:
            metrics = {**metrics, **info.get("area", {})}
            metrics.update(_derived(metrics))
            env = {**self.sweep.names(info["params"]), **metrics}
            for c in self.sweep.constraints:
                failure = c.stage == "post" and self._failure(c, env)
                if failure:
                    status, message = "infeasible", failure
                    break
        if status == MISMATCH:
            self._record(h, "error", message=message, wall_s=out["wall_s"])
            raise EngineMismatchError(f"design point {h} ({info['params']}): {message}; this is "
                                      f"a defect in archsim, not in the sweep: please report it")
        self.outcome.crosschecks += bool(out.get("crosschecked"))
        if out["wall_s"] is not None:
            self.outcome.simulate_s += out["wall_s"]
            self.outcome.simulate_cpu_s += out.get("cpu_s") or 0.0
        rss = out.get("worker_rss_mib")
        if rss is not None:
            self.outcome.worker_rss_mib = max(self.outcome.worker_rss_mib or 0.0, rss)
        self._record(h, status, message=message, metrics=metrics, layers=out["layers"],
                     wall_s=out["wall_s"], started_at=out["started_at"], worker=out["worker"],
                     worker_rss_mib=rss)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _sigint_ignored():
    """Ignore SIGINT for the block: stopping must not be interrupted by a second Ctrl-C."""
    if not _in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _base_workload(sweep: Sweep):
    """The sweep's base workload, its axis keys checked on it (before any file is written)."""
    from workloads.load import load_workload

    try:
        base = load_workload(sweep.workload_path, hardware=sweep.hardware, overrides=sweep.fixed)
    except SpecError as exc:
        raise SpecError(sweep.blame_override(str(exc))) from None
    check_axis_keys(sweep, base)
    return base


def _refuse_reuse(store: ResultStore, sweep: Sweep, resume: bool, base) -> None:
    """Refuse a store that holds points this sweep must not mix with, changing nothing."""
    meta = store.meta()
    held = store.count()
    if held and not resume:
        raise StoreError(f"{store.path} already holds {held} design points; pass --resume to "
                         f"continue that sweep, or choose another --out")
    if "base_identity" in meta and meta["base_identity"] != _identity(base):
        raise StoreError(f"{store.path} holds a sweep of another base workload or hardware "
                         f"({meta.get('sweep', {}).get('workload')}); choose another --out")
    change = sweep.change_from(meta.get("sweep")) if held else None
    if change:
        raise StoreError(f"{store.path} holds {held} points of another sweep ({change}); "
                         f"--resume continues only the sweep it stored: restore the sweep "
                         f"file, or choose another --out")


def _check_store(sweep: Sweep, out: Path, resume: bool, base) -> None:
    """The refusals of :func:`_open_store`, read-only: before a worker starts or a Dask
    scheduler is reached (which can take 20 s), and before the store is locked or changed."""
    path = out / RESULTS_FILE
    inspect_store(path)
    if not path.is_file() or path.stat().st_size == 0:
        return
    with ResultStore(path, readonly=True) as store:
        if store.has_tables():
            _refuse_reuse(store, sweep, resume, base)


def _open_store(sweep: Sweep, out: Path, resume: bool, base) -> ResultStore:
    from workloads.version import ARCHSIM_VERSION as __version__

    store = ResultStore(out / RESULTS_FILE)
    try:
        _refuse_reuse(store, sweep, resume, base)  # again: another sweep may have written it
        store.set_meta(base_identity=_identity(base), sweep=sweep.describe(),
                       base_workload=base.name, archsim_version=__version__)
    except Exception:
        store.close()
        raise
    return store


def _start(sweep: Sweep, out: Path, resume: bool,
           backend: Backend | tuple[int | None, str | None]) -> tuple[ResultStore, Backend]:
    """The open store and backend of a sweep (``backend``: one already open, or the
    ``(workers, scheduler)`` to make one from). Every refusal comes first, read-only, then the
    backend, then the store: an unreachable scheduler leaves no folder behind."""
    base = _base_workload(sweep)
    _check_store(sweep, out, resume, base)
    own = isinstance(backend, tuple)
    if own:
        backend = make_backend(*backend)
    try:
        return _open_store(sweep, out, resume, base), backend
    except BaseException:
        if own:
            backend.close()
        raise


#: What ``--scheduler`` takes: a Dask scheduler's TCP address (IPv6 hosts in brackets).
_SCHEDULER = re.compile(r"tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
                        r":(\d{1,5})")


def check_run_options(workers: int | None, scheduler: str | None,
                      chunk_size: int | None) -> None:
    """Refuse bad executor options before any file is written or any worker started.

    Raises
    ------
    ExecutorError
        A count below 1, or a scheduler address that is not ``tcp://HOST:PORT`` (Dask would
        try it for tens of seconds and then fail with a traceback).
    """
    if scheduler is None and workers is not None and workers < 1:
        raise ExecutorError(f"--workers must be at least 1, got {workers}")
    if chunk_size is not None and chunk_size < 1:
        raise ExecutorError(f"--chunk-size must be at least 1, got {chunk_size}")
    if scheduler is None:
        return
    found = _SCHEDULER.fullmatch(scheduler)
    if not found or not 0 < int(found.group(2)) < 65536:
        raise ExecutorError(f"--scheduler {scheduler!r}: expected a Dask scheduler address "
                            f"tcp://HOST:PORT with a port from 1 to 65535, e.g. "
                            f"tcp://127.0.0.1:8786")


def run_sweep(
    sweep: Sweep,
    out: str | Path,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    resume: bool = False,
    chunk_size: int | None = None,
    progress: Progress | None = None,
    backend: Backend | None = None,
) -> SweepOutcome:
    """Evaluate a sweep into ``out/results.db``.

    Parameters
    ----------
    sweep
        From :func:`reports.sweep.load_sweep`.
    out
        Output directory (created).
    workers, scheduler
        Local worker processes, or a Dask scheduler address (then ``workers`` is ignored).
    resume
        Continue a sweep stored in ``out``: finished points are skipped (``error`` points are
        evaluated again). Without it, a non-empty store is an error.
    chunk_size
        Points per executor task (default: each run of points sharing their programs, at
        most 32: :func:`program_chunks`; estimates and NSGA-II generations: about four tasks
        per worker, at most 16 points).
    progress
        Called as ``progress(done, total)`` after each resolved point.
    backend
        An already open backend (tests); by default one is made from ``workers``/``scheduler``.

    Raises
    ------
    SpecError, StoreError, ExecutorError
        Bad base workload, a store of another sweep, or a failed executor. Finished points stay
        in the store either way.
    EngineMismatchError
        A cross-checked point's fast and SimPy results differ (the workers are stopped).
    KeyboardInterrupt
        On Ctrl-C, once the workers are stopped (killed, not waited for) and the store closed
        with every finished point in it; ``resume=True`` continues.
    """
    out = Path(out)
    started = time.perf_counter()
    own_backend = backend is None
    if own_backend:
        check_run_options(workers, scheduler, chunk_size)
    else:
        check_run_options(None, None, chunk_size)
    store, backend = _start(sweep, out, resume, backend or (workers, scheduler))
    try:
        area = load_area_model()
    except AreaModelError:
        area = None
    outcome = SweepOutcome(store_path=store.path, backend=backend.description)
    done_count = [0]
    total = [0]

    def advance() -> None:
        done_count[0] += 1
        if progress is not None:
            progress(done_count[0], total[0])

    runner = _Runner(sweep, store, area, outcome, advance)
    try:
        if isinstance(sweep.spec.strategy, NSGA2Strategy):
            _run_nsga2(sweep, store, runner, backend, outcome, total, advance, chunk_size)
        else:
            _run_fixed(sweep, store, runner, backend, outcome, total, advance, chunk_size)
        outcome.pool_restarts = getattr(backend, "restarts", 0)
    except (KeyboardInterrupt, EngineMismatchError):
        with _sigint_ignored():
            if own_backend:
                backend.abort()
                own_backend = False  # aborted: nothing left to close
            store.close()
        raise
    finally:
        if own_backend:
            backend.close()
        store.close()
    outcome.wall_s = time.perf_counter() - started
    return outcome


#: Override keys that never change a GEMM program, only how long it takes or what it costs (or,
#: for ``interleave``, which of the programs built either way run): points that differ only
#: in them share their programs (``dataflows.scheduler.program_hardware``).
PROGRAM_FREE_KEYS = ("hardware.dram.", "hardware.energy.", "hardware.clock_mhz",
                     "schedule.interleave")


#: Override keys that change a GEMM program only through its tiling, which often stays (the
#: buffer sizes): points that differ only in them share many programs
#: (``dataflows.scheduler.timing_hardware``).
TILING_ONLY_KEYS = ("hardware.buffers.",)


#: Override keys that change some of a point's programs but not its biggest ones: the N:M
#: pattern (the workload's or one operation's, :func:`_under`) and the scheduler passes change
#: the sparse FF and BP GEMMs and what the passes add, while the dense weight-gradient GEMMs
#: and the dense mappings depend on the workload's shapes, the array and the buffers only.
#: Chunks whose points differ only in these keys (and in :data:`PROGRAM_FREE_KEYS`,
#: :data:`TILING_ONLY_KEYS`) share those programs, so they form one lane, which a local worker
#: works through alone (:func:`program_lanes`; ResNet-18 sweep, its 24 chunks on two processes:
#: 37–38 CPU-s with the lanes kept whole, 41–46 alternating).
LANE_SHARED_KEYS = ("sparsity.", "schedule.")


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    """Whether override ``key`` starts with one of ``prefixes``, for the whole workload or for
    one of its operations (``operations.2.sparsity.n`` is under ``sparsity.``)."""
    if key.startswith(prefixes):
        return True
    head, _, rest = key.partition(".")
    index, _, rest = rest.partition(".")
    return head == "operations" and index.isdigit() and rest.startswith(prefixes)


def _axes_key(sweep: Sweep, shared: tuple[str, ...]) -> Callable[[dict[str, Value]], tuple]:
    """A point's values on the axes whose keys are not in ``shared`` (prefixes, :func:`_under`):
    points that differ only in ``shared`` axes have the same key."""
    keys = [axis.key for axis, _ in sweep.axes if not _under(axis.key, shared)]
    return lambda p: tuple(json.dumps(p.get(k)) for k in keys)


def grouped(points: list[dict[str, Value]], sweep: Sweep) -> list[dict[str, Value]]:
    """``points`` reordered so that those sharing their programs are adjacent: the axes of
    :data:`PROGRAM_FREE_KEYS` vary fastest, then those of :data:`TILING_ONLY_KEYS`, then those
    of :data:`LANE_SHARED_KEYS` (otherwise grid order, the sort is stable): a chunk of points
    then goes to one worker, which builds their programs once, and the chunks of a lane
    (:func:`program_lanes`) are adjacent."""
    def rank(key: str) -> int:
        return 2 if _under(key, TILING_ONLY_KEYS) else int(_under(key, LANE_SHARED_KEYS))

    program_axes = [(axis.key, {json.dumps(v): i for i, v in enumerate(values)})
                    for axis, values in sweep.axes if not _under(axis.key, PROGRAM_FREE_KEYS)]
    program_axes.sort(key=lambda item: rank(item[0]))  # stable
    return sorted(points, key=lambda p: tuple(index.get(json.dumps(p.get(key)), -1)
                                              for key, index in program_axes))


def _chunk(chunk_size: int | None, n: int, workers: int) -> int:
    return chunk_size or max(1, min(16, n // (4 * max(workers, 1))))


#: A chunk of points sharing their programs holds at most this many (a longer run is split
#: evenly): a chunk's results reach the store together, when it ends.
MAX_PROGRAM_CHUNK = 32


def program_chunks(points: list[dict[str, Value]], sweep: Sweep, workers: int,
                   chunk_size: int | None = None) -> list[list[dict[str, Value]]]:
    """``points`` (in :func:`grouped` order) cut into the chunks the workers evaluate.

    Each run of points that differ only in :data:`PROGRAM_FREE_KEYS` and
    :data:`TILING_ONLY_KEYS` stays in one chunk, so one worker builds its programs (cut at a
    fixed size, a run straddled two chunks and two workers built it: 0.087 CPU-s a point on
    the ResNet-18 sweep against 0.070 with one worker). Runs are split evenly where there are
    fewer than four per worker (every worker stays busy to the end) or where one is longer
    than :data:`MAX_PROGRAM_CHUNK`. ``chunk_size``: fixed chunks of that size instead.
    """
    if chunk_size:
        return list(fixed_chunks(points, chunk_size))
    key = _axes_key(sweep, PROGRAM_FREE_KEYS + TILING_ONLY_KEYS)
    runs = [list(run) for _, run in itertools.groupby(points, key=key)]
    pieces = math.ceil(4 * max(workers, 1) / max(len(runs), 1))
    chunks = []
    for run in runs:
        size = math.ceil(len(run) / max(pieces, math.ceil(len(run) / MAX_PROGRAM_CHUNK)))
        chunks.extend(run[i:i + size] for i in range(0, len(run), size))
    return chunks


def _tasks(runner: _Runner, points: Iterable[tuple[dict, int | None, int | None]],
           outcome: SweepOutcome) -> Iterator[PointTask]:
    for params, trial, generation in points:
        task = runner.prepare(params, trial, generation)
        if task is not None:
            outcome.simulated += 1
            yield task


def program_lanes(chunks: list[list[dict[str, Value]]],
                  sweep: Sweep) -> list[list[list[dict[str, Value]]]]:
    """``chunks`` (from :func:`program_chunks`) grouped into lanes for
    ``reports.executors.dispatch``: each run of adjacent chunks whose points differ only in
    :data:`LANE_SHARED_KEYS`, :data:`PROGRAM_FREE_KEYS` and :data:`TILING_ONLY_KEYS` (a chunk
    counts by its first point) is one lane, whose chunks one worker evaluates."""
    key = _axes_key(sweep, PROGRAM_FREE_KEYS + TILING_ONLY_KEYS + LANE_SHARED_KEYS)
    return [list(lane) for _, lane in itertools.groupby(chunks, key=lambda c: key(c[0]))]


def _chunk_tasks(runner: _Runner, chunk: list[dict[str, Value]],
                 outcome: SweepOutcome) -> list[PointTask]:
    """The tasks of a chunk of points, prepared when the executor takes it (points settled
    without simulating are recorded then; none left: the chunk is skipped)."""
    return list(_tasks(runner, ((p, None, None) for p in chunk), outcome))


def _run_fixed(sweep, store, runner, backend, outcome, total, advance, chunk_size) -> None:
    from reports.search import candidate_points

    finished = {h for h, s in store.statuses().items() if s != "error"}
    points = list(candidate_points(sweep))
    outcome.proposed = len(points)
    screen = getattr(sweep.spec.strategy, "screen", None)
    estimated = 0
    if screen is not None:  # the progress counts the estimates, then the simulations
        points, estimated = _screened(sweep, points, runner, backend, outcome, chunk_size,
                                      screen.keep, (total, advance))
    pending = grouped([p for p in points if point_hash(p) not in finished], sweep)
    outcome.skipped = len(points) - len(pending)
    total[0] = estimated + len(pending)
    chunks = program_chunks(pending, sweep, backend.workers, chunk_size)
    dispatch(backend, program_lanes(chunks, sweep), runner.finish,
             prepare=lambda chunk: _chunk_tasks(runner, chunk, outcome))


def _screened(sweep: Sweep, points: list[dict[str, Value]], runner: _Runner, backend: Backend,
              outcome: SweepOutcome, chunk_size: int | None, keep: float,
              progress: tuple[list[int], Callable[[], None]]) -> tuple[list[dict], int]:
    """The first stage of a two-stage search: estimate every point analytically on the
    workers, and return those to simulate exactly — the points settled without simulating
    (stored as such by the second stage) and the ``keep`` fraction of the others that the
    estimates rank best (:func:`screen_ranking`) — with the number of estimates made. Nothing
    is stored here, so a resumed sweep screens again, the same way."""
    tasks, settled, area = [], [], {}
    for p in grouped(points, sweep):
        workload, _, resources, decided = runner.resolve(p)
        if decided is not None:
            settled.append(p)
        else:
            h = point_hash(p)
            area[h] = resources
            tasks.append(PointTask(h, workload, estimate=True))
    if tasks:
        _check_screenable(sweep, tasks[0].workload)
    estimates: dict[str, dict[str, float]] = {}
    kept = kept_points(keep, len(tasks))
    total, advance = progress
    total[0] = len(tasks) + len(settled) + kept  # at most: some may be stored already

    def collect(out: dict[str, Any]) -> None:
        advance()
        outcome.estimate_cpu_s += out.get("cpu_s") or 0.0
        if out["status"] == "ok":
            outcome.estimated += 1
            h = out["hash"]
            estimates[h] = {**out["metrics"], **area[h], **sweep.names(by_hash[h])}

    by_hash = {point_hash(p): p for p in points}
    size = _chunk(chunk_size, len(tasks), backend.workers)
    dispatch(backend, each_alone(fixed_chunks(tasks, size)), collect)
    unestimated = [by_hash[t.hash] for t in tasks if t.hash not in estimates]
    # In the points' order, not the order the workers finished in: ties rank the same way
    # in every run, so a resumed sweep keeps the same points.
    ranked = screen_ranking({t.hash: estimates[t.hash] for t in tasks if t.hash in estimates},
                            sweep, kept)
    chosen = [by_hash[h] for h in ranked[:kept]]
    outcome.screened_out = len(tasks) - len(chosen) - len(unestimated)
    return settled + unestimated + chosen, len(tasks)


def kept_points(keep: float, n: int) -> int:
    """How many of ``n`` estimated points a screen keeping the fraction ``keep`` simulates:
    ⌈keep · n⌉, the product rounded first (0.07 · 100 is 7.000000000000001 in floating point)."""
    return math.ceil(round(keep * n, 9))


def _check_screenable(sweep: Sweep, workload) -> None:
    """A SpecError on the sweep's ``strategy`` line if the analytic estimate does not cover the
    workload (attention layers, SpGEMM ops): screening it would simulate every point anyway."""
    from archsim.estimate import EstimateError, check_covered

    try:
        check_covered(workload)
    except EstimateError as exc:
        raise SpecError(f"{sweep.strategy_line}: strategy.screen: {exc}, so this workload "
                        f"cannot be screened; remove 'screen' (docs/dse.md)") from None


def screen_ranking(estimates: dict[str, dict[str, Any]], sweep: Sweep,
                   enough: int | None = None) -> list[str]:
    """Point hashes, best first by their estimated metrics (with the point's area and axis
    names, which constraints read): Pareto layer after Pareto layer of the objectives
    (``reports.pareto.pareto_layers``; within a layer by the first objective, ties in the
    order of ``estimates``), the points whose estimate fails a metric constraint after all the
    others. With ``enough``, only the first that many need be in order."""
    objectives = sweep.objectives
    env = [(h, {**m, **_derived(m)}) for h, m in estimates.items()]
    failed = [not all(_Runner._holds(c, e) for c in sweep.constraints
                      if c.stage == "post" and c.expression.names <= e.keys()) for _, e in env]
    values = np.array([[e[m] for m, _ in objectives] for _, e in env], dtype=float)
    layers = pareto_layers(values, [g for _, g in objectives], enough)
    metric, goal = objectives[0]
    first = values[:, 0] * (-1.0 if goal == "max" else 1.0) if len(env) else values
    first = np.where(np.isfinite(first), first, np.inf)
    order = sorted(range(len(env)), key=lambda i: (failed[i], layers[i], first[i], i))
    return [env[i][0] for i in order]


def _derived(metrics: dict[str, float]) -> dict[str, float]:
    """The throughput-per-area metrics of an estimate with an area (as ``_Runner.finish``)."""
    if "lut" not in metrics:
        return {}
    return {"gmacs_per_klut": metrics["throughput_gmacs"] / max(metrics["lut"], 1) * 1e3,
            "gmacs_per_dsp": metrics["throughput_gmacs"] / max(metrics["dsp"], 1)}


def _run_nsga2(sweep, store, runner, backend, outcome, total, advance, chunk_size) -> None:
    from reports.search import NSGA2Search

    history = [r for r in store.rows() if r.status != "error"]
    search = NSGA2Search(sweep, history)
    total[0] = search.remaining
    size = _chunk(chunk_size, sweep.spec.strategy.population, backend.workers)
    while search.remaining:
        first = search.asked
        batch = search.ask_generation()
        statuses = store.statuses()
        fresh: dict[str, tuple[dict, int, int]] = {}
        for i, (_, params, h, generation) in enumerate(batch):
            if statuses.get(h, "error") != "error" or h in fresh:
                outcome.skipped += 1
                advance()
            else:
                fresh[h] = (params, first + i, generation)
        outcome.proposed += len(batch)
        dispatch(backend, each_alone(fixed_chunks(_tasks(runner, fresh.values(), outcome), size)),
                 runner.finish)
        for trial, _, h, _ in batch:
            search.tell(trial, store.get(h))


def best_designs(rows: list[PointRow], objectives: list[tuple[str, str]]) -> list[PointRow]:
    """The Pareto-optimal ``ok`` rows, sorted by the first objective (best first)."""
    ok = [r for r in rows if r.status == "ok" and r.metrics
          and all(m in r.metrics for m, _ in objectives)]
    if not ok:
        return []
    values = np.array([[r.metrics[m] for m, _ in objectives] for r in ok], dtype=float)
    mask = pareto_mask(values, [g for _, g in objectives])
    front = [r for r, keep in zip(ok, mask) if keep]
    metric, goal = objectives[0]
    return sorted(front, key=lambda r: r.metrics[metric], reverse=goal == "max")

