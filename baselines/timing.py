"""Kernel timers: CUDA events with an L2 flush between reps on GPU, ``perf_counter_ns`` on CPU.

Both timers run ``warmup`` untimed calls first (allocator, kernel selection, cuSPARSELt plans and
cold instruction caches all settle there) and return one time per rep, per call, in seconds;
:func:`summarize` turns them into the median and the 20th/80th percentiles. The median is used
instead of the mean because a shared machine produces rare, large outliers, and p20/p80 show the
spread without being dominated by them.

torch is imported by the caller; this module only receives callables and tensors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Summary", "summarize", "time_cpu", "time_cuda", "time_cuda_graph", "l2_flush_bytes"]

#: Smallest flush buffer: larger than the L2 of any current GPU even if the driver reports none.
_MIN_FLUSH_BYTES = 256 * 2**20


@dataclass(frozen=True, slots=True)
class Summary:
    """Median and 20th/80th percentiles of per-call times in seconds."""

    median_s: float
    p20_s: float
    p80_s: float
    samples: int


def summarize(times_s: Sequence[float]) -> Summary:
    """Median, p20 and p80 (linear interpolation between samples) of per-call times."""
    if not times_s:
        raise ValueError("summarize() needs at least one sample")
    arr = np.asarray(times_s, dtype=np.float64)
    p20, median, p80 = np.percentile(arr, [20, 50, 80])
    return Summary(float(median), float(p20), float(p80), len(arr))


def l2_flush_bytes(l2_cache_bytes: int) -> int:
    """Size of the buffer overwritten between reps: twice the L2, at least 256 MiB.

    Overwriting more than the L2 evicts every operand, so each rep reads its inputs from HBM as a
    GEMM inside a real network would (its inputs were just written by another layer and its
    weights were evicted by the other layers' weights).
    """
    return max(2 * l2_cache_bytes, _MIN_FLUSH_BYTES)


def time_cpu(
    fn: Callable[[], object], *, reps: int, warmup: int, min_sample_s: float
) -> tuple[list[float], int]:
    """Per-call seconds of ``fn`` over ``reps`` samples, timed with ``time.perf_counter_ns``.

    A sample runs ``fn`` back to back ``calls`` times, with ``calls`` chosen during warm-up so
    that one sample lasts at least ``min_sample_s``: a 16×16 GEMM takes about a microsecond,
    close to the timer's own overhead, so timing single calls would measure the timer. The
    caller sets and records the thread count (``torch.set_num_threads``).

    Returns
    -------
    (times, calls)
        Per-call seconds of each sample, and the calls per sample.
    """
    for _ in range(warmup):
        fn()
    calls = 1
    while True:  # double the calls until one sample is long enough (one call for large GEMMs)
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        elapsed = (time.perf_counter_ns() - t0) * 1e-9
        if elapsed >= min_sample_s or calls >= 1 << 20:
            break
        calls *= 2
    times = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter_ns() - t0) * 1e-9 / calls)
    return times, calls


def time_cuda(
    fn: Callable[[], object], *, reps: int, warmup: int, flush: Callable[[], object], torch
) -> list[float]:
    """Per-call seconds of ``fn`` on the current CUDA stream, one CUDA-event pair per rep.

    ``flush`` (overwriting a buffer larger than the L2) is enqueued before each start event, so
    it is not timed, and it keeps the GPU busy while the CPU enqueues the timed kernel: the
    events then bracket the kernel itself, not the kernel-launch latency of the host.
    """
    for _ in range(warmup):
        flush()
        fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for start, end in zip(starts, ends):
        flush()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) * 1e-3 for start, end in zip(starts, ends)]  # ms → s


def time_cuda_graph(
    fn: Callable[[], object], *, reps: int, warmup: int, flush: Callable[[], object], torch
) -> tuple[list[float] | None, str]:
    """Per-call seconds of ``fn`` captured once into a CUDA graph and replayed: the GPU's time
    alone, without the host work of the call.

    :func:`time_cuda` times a call as eager torch code runs it; when the host spends longer
    preparing a call than the flush keeps the GPU busy (torch 2.11 builds cuSPARSELt's matmul
    plan afresh on every 2:4 call, about a millisecond), that host time shows in the events. A
    replay runs only the recorded kernels, so eager minus graph is the call's host overhead.

    Returns
    -------
    (times, note)
        The times, or None and the reason when ``fn`` cannot be captured.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up off the default stream, as capture requires
        for _ in range(max(warmup, 1)):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            fn()
    except RuntimeError as exc:
        torch.cuda.synchronize()
        return None, "not capturable in a CUDA graph: " + (str(exc).splitlines() or ["?"])[0]
    return time_cuda(graph.replay, reps=reps, warmup=1, flush=flush, torch=torch), ""
