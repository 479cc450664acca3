"""Evaluating design points: the function every DSE worker runs.

Workers (local processes or Dask workers) receive validated :class:`~workloads.spec.WorkloadSpec`
objects, simulate them and return plain dicts. They never touch the results store: the process
driving the sweep is its only writer, which is what makes ``kill -9`` safe (reports.store).
"""

from __future__ import annotations

import contextlib
import gc
import os
import resource
import socket
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from workloads.errors import MappingError, SpecError

__all__ = ["PointTask", "evaluate_chunk", "evaluate_point", "simulation_metrics", "dense_variant",
           "MISMATCH"]

#: The status of a point whose fast-engine result differed from the SimPy model's.
MISMATCH = "engine-mismatch"


@dataclass(frozen=True)
class PointTask:
    """One design point to simulate: its hash and its fully resolved workload.

    Points are timed by the fast engine (``archsim.fast``); a ``crosscheck`` point is also run
    on the SimPy model, the reference, and the two results must be equal. An ``estimate``
    point is not simulated: its metrics are ``archsim.estimate``'s (the screening stage of a
    two-stage search; they are never stored).
    """

    hash: str
    workload: Any  # WorkloadSpec; Any keeps this module importable without pydantic models
    compare_dense: bool = False
    crosscheck: bool = False
    estimate: bool = False  # the screen of a two-stage search: analytic metrics, not simulated


#: This worker's segment statistics, shared by the points it evaluates (``simulate``'s memo;
#: the scheduler keeps its programs likewise). The sweep orders points so that those sharing
#: programs reach one worker together (``reports.dse``).
_MEMO: dict = {}


def _simulate(workload, crosscheck: bool):
    """The fast engine's result; with ``crosscheck``, raise unless SimPy's is the same."""
    from archsim.api import simulate

    result = simulate(workload, engine="fast", memo=_MEMO)
    if crosscheck:
        with _collecting():  # the SimPy model's processes and events hold reference cycles
            reference = simulate(workload, engine="simpy")
        if reference != result:
            fields = ", ".join(f for f in result.__dataclass_fields__
                               if getattr(result, f) != getattr(reference, f))
            raise _EngineMismatch(f"the fast engine and the SimPy model disagree on {fields}")
    return result


@contextlib.contextmanager
def _collecting() -> Iterator[None]:
    """Python's cycle collector on for the block, whatever it was (a settling worker pauses it
    for a point's fast path, :func:`evaluate_chunk`)."""
    paused = not gc.isenabled()
    gc.enable()
    try:
        yield
    finally:
        if paused:
            gc.disable()


class _EngineMismatch(Exception):
    """The fast engine's result differs from the SimPy model's (a defect in archsim)."""


def dense_variant(workload):
    """The same workload with all sparsity removed (the baseline of ``speedup``)."""
    from workloads.spec import DenseSparsity

    ops = tuple(op.model_copy(update={"sparsity": None}) for op in workload.operations)
    return workload.model_copy(update={"sparsity": DenseSparsity(), "operations": ops})


def simulation_metrics(result, hardware) -> dict[str, float]:
    """The simulation metrics of one point (names and meanings: reports.metrics)."""
    clock_hz = hardware.clock_mhz * 1e6
    energy_j = result.energy_pj["total"] * 1e-12
    pes = hardware.array.rows * hardware.array.cols
    busy, stall = result.unit_busy_cycles, result.unit_stall_cycles
    return {
        "cycles": result.total_cycles,
        "latency_s": result.seconds,
        "energy_pj": result.energy_pj["total"],
        "edp_j_s": energy_j * result.seconds,
        "throughput_gmacs": result.macs_dense_equivalent / result.seconds / 1e9
        if result.seconds else 0.0,
        "utilization": result.utilization,
        "effective_utilization": result.effective_utilization,
        "macs_executed": result.macs_executed,
        "macs_dense_equivalent": result.macs_dense_equivalent,
        "amdahl_bound": result.mac_bound or 0.0,
        "dram_read_bytes": result.dram_read_bytes,
        "dram_write_bytes": result.dram_write_bytes,
        "dram_bytes": result.dram_read_bytes + result.dram_write_bytes,
        "instructions": result.instructions,
        "pe_busy_cycles": busy["pe_array"],
        "pe_stall_cycles": stall["pe_array"],
        "dma_busy_cycles": busy["dma"],
        "dma_stall_cycles": stall["dma"],
        "vector_busy_cycles": busy["vector"],
        "vector_stall_cycles": stall["vector"],
        "energy_mac_pj": result.energy_pj["mac"],
        "energy_dram_pj": result.energy_pj["dram"],
        "energy_sram_pj": result.energy_pj["sram"],
        "energy_vector_pj": result.energy_pj["vector"],
        "pes": pes,
        "peak_gmacs": pes * clock_hz / 1e9,
        "dram_gbytes_per_s": hardware.dram.bandwidth_bytes_per_cycle * clock_hz / 1e9,
    }


def _peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def evaluate_point(task: PointTask) -> dict[str, Any]:
    """Simulate one point. Never raises for a bad point: the outcome says what happened.

    Returns
    -------
    dict
        ``hash``, ``status`` (``ok``, ``invalid`` for Spec/MappingError, ``error`` otherwise),
        ``message``, ``metrics``, ``layers``, ``wall_s``, ``cpu_s``, ``started_at``, ``worker`` and
        ``worker_rss_mib``.
    """
    started = time.time()
    t0, cpu0 = time.perf_counter(), time.process_time()
    out: dict[str, Any] = {"hash": task.hash, "status": "ok", "message": None,
                           "metrics": None, "layers": None, "started_at": started}
    try:
        from archsim.size import check_size

        if task.estimate:  # builds no program: no size to check
            from archsim.estimate import estimate_metrics

            out["metrics"] = estimate_metrics(task.workload)
            return _finished(out, t0, cpu0)
        # limits.tile_steps before any program is built: a huge point is invalid, not hours.
        check_size(task.workload, f"design point {task.hash}")
        result = _simulate(task.workload, task.crosscheck)
        metrics = simulation_metrics(result, task.workload.hardware)
        if task.compare_dense:
            dense = _simulate(dense_variant(task.workload), task.crosscheck)
            metrics["dense_cycles"] = dense.total_cycles
            metrics["speedup"] = dense.total_cycles / result.total_cycles
        out["metrics"] = metrics
        out["layers"] = [rec.as_dict() for rec in result.layers]
    except (SpecError, MappingError) as exc:
        out.update(status="invalid", message=f"{type(exc).__name__}: {exc}")
    except _EngineMismatch as exc:
        out.update(status=MISMATCH, message=str(exc))
    except Exception as exc:  # noqa: BLE001 - one bad point must not end a 500-point sweep
        last = traceback.extract_tb(exc.__traceback__)[-1]
        out.update(status="error", message=f"{type(exc).__name__}: {exc} "
                                           f"({os.path.basename(last.filename)}:{last.lineno})")
    out["crosschecked"] = task.crosscheck and out["status"] != MISMATCH and out["metrics"] is not None
    return _finished(out, t0, cpu0)


def _finished(out: dict[str, Any], t0: float, cpu0: float) -> dict[str, Any]:
    """``out`` with the evaluation's wall and CPU seconds and the worker's name and memory."""
    out["wall_s"] = time.perf_counter() - t0
    out["cpu_s"] = time.process_time() - cpu0
    out["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    out["worker_rss_mib"] = _peak_rss_mib()
    return out


def evaluate_chunk(tasks: list[PointTask], settle: bool = False) -> list[dict[str, Any]]:
    """Evaluate a chunk of points in one task (amortizes the executor's per-task overhead).

    ``settle``: after each point, hide what it left alive from Python's cycle collector
    (:func:`_settle`); only in a process that runs nothing but points (a local worker), since
    a frozen object is never examined for cycles again.
    """
    outcomes = []
    for task in tasks:
        if not settle:
            outcomes.append(evaluate_point(task))
            continue
        # No collection while the point runs (but its SimPy cross-check, :func:`_collecting`):
        # _settle collects once it is done. Otherwise the first allocation after the scheduler
        # resumes the collector (it pauses it while building) walks every object the point
        # created, which _settle walks again.
        gc.disable()
        try:
            outcomes.append(evaluate_point(task))
        finally:
            _settle()
            gc.enable()
    return outcomes


def _settle() -> None:
    """Collect the point's garbage, then freeze what is still alive (``gc.freeze``): the
    programs, statistics and specs the worker's caches keep for the next points. They hold no
    reference cycles (refcounting frees them when a cache drops them), but every full
    collection would walk them all again: about a tenth of a ResNet-18 sweep's CPU time."""
    gc.collect()
    gc.freeze()
