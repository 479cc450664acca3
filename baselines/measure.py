"""Measure a workload's GEMMs with torch kernels on CUDA or CPU: the real-hardware baseline.

The workload goes through the same front end as the simulator (``workloads.layers.expand`` then
``workloads.lowering.lower``), so a training workload measures the FF, BP and WG GEMM of every
layer, each with the shape and N:M pattern the accelerator is given. Every GEMM is run as
``C = A · Wᵀ`` with ``A[m, k]`` and the weight stored ``W[n, k]`` like ``nn.Linear``: the
operand the accelerator holds stationary (pruned N:M along ``k``) is ``W``, which is also the
layout 2:4 semi-structured sparsity needs (the sparse operand first, groups of 4 along its rows).

How an N:M op runs (:func:`choose_method`): on CUDA, through 2:4 semi-structured sparse kernels
(cuSPARSELt, else CUTLASS) when the pattern fits inside 2:4 and the backend takes the dtype and
shape; otherwise as a dense GEMM on the masked weight. The output says which, per op, and why.

Identical GEMMs (same shape, copies, pattern and method) are measured once; later ones reuse the
numbers and name the op they were measured for in ``reused_from``. Attention layers, which the
GEMM lowering leaves to ``dataflows.attention``, run through ``scaled_dot_product_attention`` or
compiled FlexAttention (:func:`attention_method`); ``spgemm`` operations run last, as CSR @ CSR
products of their own matrices (scipy on CPU, torch/cuSPARSE on CUDA). torch is imported only
inside :func:`measure`, so importing this module (or the CLI) stays cheap.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import typing
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from baselines.errors import BaselineError
from baselines.schema import (
    SCHEMA_VERSION,
    AttentionInfo,
    BaselineDoc,
    OpRow,
    Provenance,
    Totals,
    WorkloadRef,
)
from baselines.timing import l2_flush_bytes, summarize, time_cpu, time_cuda, time_cuda_graph
from workloads.layers import expand
from workloads.lowering import GemmTask, lower
from workloads.spec import AttentionPattern, WorkloadSpec
from workloads.version import ARCHSIM_VERSION

__all__ = [
    "DTYPE_BYTES",
    "SEMI_STRUCTURED_MIN_SHAPE",
    "MethodChoice",
    "max_nonzeros_per_4",
    "fits_2_4",
    "choose_method",
    "low_precision_cpu_warning",
    "busy_cpu_warning",
    "workload_tasks",
    "SpGEMMItem",
    "workload_spgemms",
    "spgemm_method",
    "AttentionItem",
    "workload_attention",
    "attention_method",
    "measure",
    "run_provenance",
    "semi_structured_backend",
]

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}

#: Smallest multiple (rows, cols) of the *sparse* operand each 2:4 backend accepts, per dtype.
#: Copied from ``_DTYPE_SHAPE_CONSTRAINTS`` in torch 2.13 ``torch/sparse/semi_structured.py``
#: (cuSPARSELt also takes int8/fp8, which this baseline does not measure). cuSPARSELt has no
#: fp32 kernel; the dense operand is padded by torch, so only the weight shape matters.
SEMI_STRUCTURED_MIN_SHAPE: dict[str, dict[str, tuple[int, int]]] = {
    "cusparselt": {"fp16": (16, 16), "bf16": (16, 16)},
    "cutlass": {"fp16": (32, 64), "bf16": (32, 64), "fp32": (32, 32)},
}

#: CPU flags that give native reduced-precision GEMM instructions (x86 /proc/cpuinfo names).
_NATIVE_FLAGS = {"bf16": ("avx512_bf16", "amx_bf16"), "fp16": ("avx512_fp16", "amx_fp16")}

Progress = Callable[[int, int, str], None]


# --------------------------------------------------------------------------------------------
# Method choice: pure functions, no torch
# --------------------------------------------------------------------------------------------


def max_nonzeros_per_4(n: int, m: int) -> int:
    """Most non-zeros an N:M mask can put in one aligned group of 4 along the pruned dimension.

    When 4 divides M, a group of 4 lies inside one group of M, which may put all of its N kept
    weights there (at most 4). When M divides 4, a group of 4 holds 4/M whole groups of M.
    """
    if not 0 < n <= m:
        raise ValueError(f"n must satisfy 0 < n <= m, got n={n}, m={m}")
    if m % 4 == 0:
        return min(n, 4)
    if 4 % m == 0:
        return n * (4 // m)
    raise ValueError(f"m must divide 4 or be a multiple of 4, got m={m}")


def fits_2_4(n: int, m: int) -> bool:
    """True when every N:M mask is also a valid 2:4 mask, so 2:4 kernels can run it unchanged.

    1:2, 1:4, 2:4, 1:8, 2:8, 1:16 and 2:16 fit (the spare slots of each group of 4 hold zeros,
    so they run at 2:4 speed); 3:4, 4:8 or 3:8 do not, since a group of 4 may hold 3 or 4 kept
    weights.
    """
    return max_nonzeros_per_4(n, m) <= 2


@dataclass(frozen=True, slots=True)
class MethodChoice:
    """How an op is measured (``dense``, ``semi_structured_2:4`` or ``masked_dense``) and why."""

    method: str
    note: str = ""


def choose_method(
    nm: tuple[int, int] | None,
    *,
    device: str,
    dtype: str,
    weight_shape: tuple[int, int],
    copies: int = 1,
    capability: tuple[int, int] | None = None,
    backend: str | None = None,
) -> MethodChoice:
    """Pick how to run a GEMM whose stationary operand is pruned ``nm`` along ``k``.

    Parameters
    ----------
    nm
        ``(n, m)`` of the weight's N:M pattern along the reduction dimension, or None (dense).
    device, dtype
        ``"cpu"``/``"cuda"`` and ``"fp32"``/``"fp16"``/``"bf16"``.
    weight_shape
        The sparse operand as stored, ``(n_out, k)``: groups of 4 lie along its last axis.
    copies
        Independent GEMMs run as one batched call (2:4 kernels are 2-D only).
    capability, backend
        The CUDA device's compute capability and the 2:4 backend torch offers
        (``"cusparselt"``, ``"cutlass"`` or None); ignored on CPU.
    """
    if nm is None:
        return MethodChoice("dense")
    n, m = nm
    if device != "cuda":
        return MethodChoice("masked_dense", "2:4 semi-structured kernels are CUDA-only")
    if not fits_2_4(n, m):
        worst = max_nonzeros_per_4(n, m)
        return MethodChoice(
            "masked_dense", f"{n}:{m} does not fit inside 2:4 (a group of 4 may hold {worst})"
        )
    if copies > 1:
        return MethodChoice("masked_dense", "2:4 kernels are 2-D only; this GEMM is batched")
    if capability is not None and capability < (8, 0):
        cc = f"{capability[0]}.{capability[1]}"
        return MethodChoice("masked_dense", f"2:4 kernels need compute capability 8.0+, got {cc}")
    if backend == "cutlass" and capability is not None and capability[0] != 8:
        return MethodChoice(
            "masked_dense", "cuSPARSELt is unavailable and the CUTLASS backend only runs on 8.x"
        )
    if backend not in SEMI_STRUCTURED_MIN_SHAPE:
        return MethodChoice("masked_dense", "this torch build has no 2:4 semi-structured backend")
    limits = SEMI_STRUCTURED_MIN_SHAPE[backend]
    if dtype not in limits:
        known = "/".join(limits)
        return MethodChoice(
            "masked_dense", f"{backend} has no {dtype} kernel (use --dtype {known})"
        )
    rows, cols = weight_shape
    min_rows, min_cols = limits[dtype]
    if rows % min_rows or cols % min_cols:
        return MethodChoice(
            "masked_dense",
            f"{backend} needs the weight [{rows}, {cols}] in multiples of [{min_rows}, {min_cols}]",
        )
    speed = "" if (n, m) == (2, 4) else ", runs at 2:4 speed"
    return MethodChoice("semi_structured_2:4", f"{n}:{m} stored as 2:4 ({backend}{speed})")


def low_precision_cpu_warning(dtype: str, cpu_flags: frozenset[str] | None) -> str | None:
    """A warning for fp16/bf16 on CPU, whose speed depends on the CPU's instruction set.

    ``cpu_flags`` is None when they cannot be read (not Linux): then the warning says so.
    """
    if dtype == "fp32":
        return None
    native = _NATIVE_FLAGS[dtype]
    have = sorted(set(native) & cpu_flags) if cpu_flags is not None else []
    if have:
        return (
            f"--dtype {dtype} on CPU: this CPU has native {dtype} instructions "
            f"({', '.join(have)}); "
            f"CPUs without them run {dtype} GEMMs many times slower than fp32, so compare CPU "
            f"baselines across machines in fp32"
        )
    why = "could not read the CPU flags" if cpu_flags is None else f"no {'/'.join(native)} flag"
    return (
        f"--dtype {dtype} on CPU without native {dtype} instructions ({why}): torch emulates it, "
        f"typically several times slower than fp32; use --dtype fp32 for a CPU reference"
    )


def busy_cpu_warning(load_1m: float | None, cpus: int, threads: int) -> str | None:
    """A warning when other work already occupies the cores a CPU measurement needs.

    On a shared machine the measuring threads then wait for time slices, and the times measure
    the contention (seen here: 2 threads on a busy 2-core machine turned 3 µs into 24 ms).
    """
    if load_1m is None or load_1m + threads <= cpus:
        return None
    return (
        f"the machine is busy (1-minute load average {load_1m:.1f} on {cpus} CPUs, measuring with "
        f"{threads} thread{'s' if threads > 1 else ''}): CPU times will be noisy; measure when it "
        f"is idle or with fewer --threads, and check p20/p80"
    )


def _load_1m() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on Windows
        return None


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may run on
    except AttributeError:
        return os.cpu_count() or 1


# --------------------------------------------------------------------------------------------
# Workload → tasks
# --------------------------------------------------------------------------------------------


def workload_tasks(workload: WorkloadSpec) -> list[GemmTask]:
    """The workload's GEMMs in the simulator's execution order (FF, then BP/WG in training)."""
    return [t for tasks in lower(expand(workload), workload.mode) for t in tasks]


# --------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------


def _cpu_info() -> tuple[str, frozenset[str] | None]:
    """CPU model name and flags from /proc/cpuinfo (Linux); a generic name elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine() or "unknown CPU", None
    name, flags = "", None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not name:
            name = value.strip()
        elif key in ("flags", "Features") and flags is None:
            flags = frozenset(value.split())
    return name or platform.machine() or "unknown CPU", flags


def _nvidia_smi(query: str) -> str | None:
    """The first GPU's ``nvidia-smi --query-gpu=QUERY`` line; None without nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def _driver_version() -> str | None:
    """NVIDIA driver version from nvidia-smi; torch exposes only the CUDA runtime version."""
    return _nvidia_smi("driver_version")


def _gpu_clocks() -> str | None:
    """SM and memory clocks as nvidia-smi reads them when the measurement ends (the GPU has
    just been busy, so these are its working clocks), with the SM clock's maximum."""
    line = _nvidia_smi("clocks.sm,clocks.max.sm,clocks.mem")
    if line is None:
        return None
    parts = [p.strip() for p in line.split(",")]
    if len(parts) != 3:
        return line
    return f"SM {parts[0]} (max {parts[1]}), memory {parts[2]}"


def semi_structured_backend(torch) -> str | None:
    # torch 2.13's to_sparse_semi_structured always picks cuSPARSELt unless a global flag forces
    # CUTLASS, so the backend is chosen here and its class called directly.
    if torch.backends.cusparselt.is_available():
        return "cusparselt"
    if torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 8:
        return "cutlass"
    return None


@dataclass(frozen=True, slots=True)
class _Setup:
    device: str
    dtype: str
    threads: int
    reps: int
    warmup: int
    min_sample_s: float
    seed: int
    flush_bytes: int
    capability: tuple[int, int] | None
    backend: str | None
    load_before: float | None
    flex_compile: bool = False


def _provenance(torch, setup: _Setup) -> Provenance:
    import numpy

    cpu_name, _ = _cpu_info()
    cuda = setup.device == "cuda"
    cc = setup.capability
    return Provenance(
        device=setup.device,
        device_name=torch.cuda.get_device_name() if cuda else cpu_name,
        compute_capability=f"{cc[0]}.{cc[1]}" if cc else None,
        cuda_runtime_version=torch.version.cuda if cuda else None,
        cuda_driver_version=_driver_version() if cuda else None,
        gpu_clocks=_gpu_clocks() if cuda else None,
        cusparselt_version=torch.backends.cusparselt.version() if cuda else None,
        semi_structured_backend=setup.backend,
        cpu_capability=str(torch.backends.cpu.get_cpu_capability()),
        torch_version=str(torch.__version__),
        numpy_version=numpy.__version__,
        python_version=platform.python_version(),
        archsim_version=ARCHSIM_VERSION,
        # platform.platform() names the OS and architecture, never the host.
        platform=platform.platform(terse=True),
        dtype=setup.dtype,
        threads=setup.threads,
        timer="cuda_events" if cuda else "perf_counter_ns",
        l2_flush_bytes=setup.flush_bytes,
        reps=setup.reps,
        warmup=setup.warmup,
        min_sample_s=setup.min_sample_s if not cuda else 0.0,
        seed=setup.seed,
        flex_compile=setup.flex_compile,
        cpus=_cpus(),
        load_avg_1m_before=setup.load_before,
        load_avg_1m_after=_load_1m(),
        date_utc=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def run_provenance(torch, *, device: str, dtype: str, reps: int, warmup: int, seed: int,
                   flush_bytes: int = 0) -> Provenance:
    """The provenance of a measurement made beside :func:`measure` (the training-step comparison
    of ``baselines.train_step``), recorded in the same terms on the same device."""
    cuda = device == "cuda"
    setup = _Setup(
        device, dtype, torch.get_num_threads(), reps, warmup, 0.0, seed, flush_bytes,
        tuple(torch.cuda.get_device_capability()) if cuda else None,
        semi_structured_backend(torch) if cuda else None, _load_1m(),
    )
    return _provenance(torch, setup)


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def _nm_mask(torch, rows: int, k: int, n: int, m: int, gen) -> object:
    """A random N:M mask along the last axis of a [rows, k] weight (a tail of k % m stays dense)."""
    groups = k // m
    scores = torch.rand(rows, groups, m, generator=gen)
    keep = scores.topk(n, dim=-1).indices
    mask = torch.zeros(rows, groups, m, dtype=torch.bool).scatter_(-1, keep, True)
    tail = torch.ones(rows, k - groups * m, dtype=torch.bool)
    return torch.cat([mask.reshape(rows, groups * m), tail], dim=1)


def _stored_bytes(weight) -> int:
    parts = [getattr(weight, "packed", None), getattr(weight, "meta", None)]
    stored = [p for p in parts if p is not None]
    if stored:  # a semi-structured weight: values plus metadata as the kernel reads them
        return sum(p.numel() * p.element_size() for p in stored)
    return weight.numel() * weight.element_size()


def _build(torch, task: GemmTask, choice: MethodChoice, setup: _Setup, gen):
    """Inputs for one GEMM and the call to time.

    Returns ``(call, bytes moved once, method)``: the method is ``choice`` unless torch refuses
    to compress the weight to 2:4 for a reason :func:`choose_method` does not know, in which case
    the GEMM runs masked-dense and the note carries torch's reason.
    """
    dt = getattr(torch, TORCH_DTYPES[setup.dtype])
    lead = (task.copies,) if task.copies > 1 else ()
    a = torch.randn(*lead, task.m, task.k, generator=gen)
    w = torch.randn(*lead, task.n, task.k, generator=gen)
    if task.nm is not None:  # zeros where the pruned weights are, for every method
        w = w * _nm_mask(torch, w.numel() // task.k, task.k, *task.nm, gen).reshape(w.shape)
    a = a.to(device=setup.device, dtype=dt)
    w = w.to(device=setup.device, dtype=dt)
    if choice.method == "semi_structured_2:4":
        cls = (
            torch.sparse.SparseSemiStructuredTensorCUSPARSELT
            if setup.backend == "cusparselt"
            else torch.sparse.SparseSemiStructuredTensorCUTLASS
        )
        try:
            w = cls.from_dense(w)
        except (RuntimeError, NotImplementedError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            choice = MethodChoice("masked_dense", f"torch refused the 2:4 weight: {reason}")
    if task.copies > 1:
        wt = w.mT  # a transposed view: bmm reads it in place, like nn.Linear's weight

        def call():
            return torch.matmul(a, wt)
    else:
        linear = torch.nn.functional.linear

        def call():
            return linear(a, w)

    out_bytes = task.copies * task.m * task.n * DTYPE_BYTES[setup.dtype]
    return call, a.numel() * a.element_size() + _stored_bytes(w) + out_bytes, choice


def _time(torch, call, setup: _Setup, flush) -> tuple[list[float], int]:
    if setup.device == "cuda":
        times = time_cuda(call, reps=setup.reps, warmup=setup.warmup, flush=flush, torch=torch)
        return times, 1
    return time_cpu(call, reps=setup.reps, warmup=setup.warmup, min_sample_s=setup.min_sample_s)


def _check_options(device: str, dtype: str, reps: int, warmup: int, threads: int | None) -> None:
    if device not in ("cpu", "cuda"):
        raise BaselineError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if dtype not in DTYPE_BYTES:
        raise BaselineError(f"dtype must be one of {', '.join(DTYPE_BYTES)}, got {dtype!r}")
    if reps < 1:
        raise BaselineError(f"reps must be at least 1, got {reps}")
    if warmup < 0:
        raise BaselineError(f"warmup must be at least 0, got {warmup}")
    if threads is not None and threads < 1:
        raise BaselineError(f"threads must be at least 1, got {threads}")


def measure(
    workload: WorkloadSpec,
    *,
    device: str,
    dtype: str | None = None,
    reps: int = 20,
    warmup: int = 3,
    threads: int | None = None,
    min_sample_s: float = 1e-3,
    seed: int = 0,
    flex_compile: bool = False,
    progress: Progress | None = None,
) -> BaselineDoc:
    """Measure every GEMM (and SpGEMM) of ``workload`` and return the baseline document.

    Parameters
    ----------
    device
        ``"cuda"`` (CUDA events, L2 flushed between reps) or ``"cpu"`` (``perf_counter_ns``).
    dtype
        ``"fp32"``, ``"fp16"`` or ``"bf16"``; default fp16 on CUDA (tensor cores, and the dtype
        2:4 kernels take) and fp32 on CPU.
    reps, warmup
        Timed samples per distinct GEMM, and untimed calls before them.
    threads
        CPU threads for torch (default: torch's current setting); recorded in the provenance.
    min_sample_s
        CPU only: each sample repeats the call until it lasts this long (see ``time_cpu``).
    seed
        Seeds the random operands and N:M masks.
    flex_compile
        Run attention ops with a block pattern through ``torch.compile(flex_attention)``, which
        skips empty blocks, instead of SDPA with a boolean mask (see :func:`attention_method`).
    progress
        Called as ``progress(done, total, name)`` after each distinct GEMM.

    Raises
    ------
    BaselineError
        Bad options, or ``device="cuda"`` without a usable CUDA device.
    """
    dtype = dtype or ("fp16" if device == "cuda" else "fp32")
    _check_options(device, dtype, reps, warmup, threads)
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
        raise BaselineError(
            f"--device cuda: no CUDA device is available ({build}); use --device cpu"
        )
    old_threads = torch.get_num_threads()
    threads = threads or old_threads
    load = _load_1m()
    warnings = []
    if device == "cpu":
        found = (low_precision_cpu_warning(dtype, _cpu_info()[1]),
                 busy_cpu_warning(load, _cpus(), threads))
        warnings.extend(w for w in found if w)
    flex_ops = [a for a in workload_attention(workload) if a.op.pattern.kind in BLOCK_PATTERNS]
    if flex_compile and not flex_ops:
        warnings.append("--flex-compile has no effect: no attention op has a block pattern "
                        "(any pattern but dense and N:M on the scores)")
    elif flex_compile and device == "cpu":
        warnings.append("--flex-compile on CPU: the first compile of each attention shape takes "
                        "about a minute (it runs in the warm-up, untimed)")
    setup = _Setup(device, dtype, threads, reps, warmup, min_sample_s, seed, 0, None, None, load,
                   flex_compile)
    torch.set_num_threads(threads)
    try:
        return _measure(torch, workload, setup, progress, warnings)
    finally:
        torch.set_num_threads(old_threads)


def _measure(torch, workload, setup: _Setup, progress, warnings) -> BaselineDoc:
    if setup.device == "cuda":
        setup = replace(
            setup, capability=tuple(torch.cuda.get_device_capability()),
            flush_bytes=l2_flush_bytes(torch.cuda.get_device_properties().L2_cache_size),
            backend=semi_structured_backend(torch),
        )
        flush_buf = torch.empty(setup.flush_bytes, dtype=torch.uint8, device="cuda")

    def flush():
        flush_buf.zero_()

    tasks, spgemms = workload_tasks(workload), workload_spgemms(workload)
    attention = workload_attention(workload)
    more = len(_attention_keys(attention)) + len(spgemms)
    rows, distinct = _measure_gemms(torch, tasks, setup, flush, progress, more)
    attention_rows, measured = _measure_attention_layers(
        torch, attention, setup, flush, progress, distinct, distinct + more)
    rows += attention_rows
    distinct += measured
    for done, item in enumerate(spgemms, start=distinct + 1):
        rows.append(_measure_spgemm(torch, item, setup, flush))
        if progress is not None:
            progress(done, distinct + len(spgemms), item.name)
    seconds = sum(r.total_s for r in rows)
    flops = sum(r.flops * r.repeat for r in rows)
    return BaselineDoc(
        schema_version=SCHEMA_VERSION,
        kind="archsim-baseline",
        workload=WorkloadRef(name=workload.name, mode=workload.mode),
        provenance=_provenance(torch, setup),
        warnings=tuple(warnings),
        ops=tuple(rows),
        totals=Totals(ops=len(rows), measured_shapes=distinct + len(spgemms), seconds=seconds,
                      flops=flops, flop_per_s=flops / seconds),
    )


def _measure_gemms(torch, tasks: list[GemmTask], setup: _Setup, flush, progress,
                   more: int) -> tuple[list[OpRow], int]:
    """Rows of the GEMM tasks, each distinct one measured once; also the count measured."""
    choices = [
        choose_method(t.nm, device=setup.device, dtype=setup.dtype, weight_shape=(t.n, t.k),
                      copies=t.copies, capability=setup.capability, backend=setup.backend)
        for t in tasks
    ]
    keys = [(t.m, t.k, t.n, t.copies, t.nm, c.method) for t, c in zip(tasks, choices)]
    distinct = len(set(keys))
    gen = torch.Generator().manual_seed(setup.seed)
    measured: dict[tuple, tuple] = {}
    rows = []
    for task, key in zip(tasks, keys):
        fresh = key not in measured
        if fresh:
            call, moved, used = _build(torch, task, choices[len(rows)], setup, gen)
            times, calls = _time(torch, call, setup, flush)
            graph = _graph_time(torch, call, setup, flush)
            if graph[1]:
                used = MethodChoice(used.method, "; ".join(filter(None, (used.note, graph[1]))))
            measured[key] = (task.name, summarize(times), calls, moved, used, graph[0])
            del call  # free this GEMM's operands before the next one allocates
            if progress is not None:
                progress(len(measured), distinct + more, task.name)
        rows.append(_gemm_row(task, *measured[key], fresh=fresh))
    return rows, distinct


def _graph_time(torch, call, setup: _Setup, flush) -> tuple[object, str]:
    """CUDA only: the GEMM replayed from a CUDA graph (``graph_*_s``), or None and why not."""
    if setup.device != "cuda":
        return None, ""
    times, note = time_cuda_graph(call, reps=setup.reps, warmup=setup.warmup, flush=flush,
                                  torch=torch)
    return (summarize(times) if times else None), note


def _gemm_row(task: GemmTask, first: str, stats, calls: int, moved: int, choice: MethodChoice,
              graph, *, fresh: bool) -> OpRow:
    flops = 2 * task.m * task.k * task.n * task.copies
    return OpRow(
        name=task.name, layer=task.layer, phase=task.phase, m=task.m, k=task.k, n=task.n,
        copies=task.copies, repeat=task.repeat,
        nm=f"{task.nm[0]}:{task.nm[1]}" if task.nm else None,
        method=choice.method, method_note=choice.note, median_s=stats.median_s,
        p20_s=stats.p20_s, p80_s=stats.p80_s, samples=stats.samples, calls_per_sample=calls,
        flops=flops, bytes=moved, flop_per_s=flops / stats.median_s,
        bytes_per_s=moved / stats.median_s, total_s=stats.median_s * task.repeat,
        reused_from=None if fresh else first,
        graph_median_s=graph.median_s if graph else None,
        graph_p20_s=graph.p20_s if graph else None,
        graph_p80_s=graph.p80_s if graph else None,
    )


# --------------------------------------------------------------------------------------------
# SpGEMM
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpGEMMItem:
    """One ``spgemm`` op: ``C[m, n] = A[m, k] · B[k, n]``, CSR operands with int64 values."""

    name: str
    m: int
    k: int
    n: int
    nnz_a: int
    nnz_b: int
    a: object
    b: object


def workload_spgemms(workload: WorkloadSpec) -> list[SpGEMMItem]:
    """The workload's ``spgemm`` operations, in order (the GEMM front end skips them)."""
    items = []
    for op in workload.operations:
        if getattr(op, "op", None) != "spgemm":
            continue
        a, b = (named.matrix for named in op.operands())
        items.append(SpGEMMItem(op.name, a.shape[0], a.shape[1], b.shape[1], int(a.nnz),
                                int(b.nnz), a, b))
    return items


def spgemm_method(device: str) -> MethodChoice:
    """SpGEMM runs as CSR @ CSR: scipy on CPU (faster than torch CSR there), cuSPARSE on CUDA."""
    if device == "cuda":
        return MethodChoice("spgemm_torch_csr", "torch CSR @ CSR (cuSPARSE SpGEMM), fp32 values")
    return MethodChoice("spgemm_scipy_csr", "scipy.sparse CSR @ CSR (one thread), fp32 values")


def _csr_bytes(indptr, indices, values) -> int:
    return sum(int(x.nbytes) if hasattr(x, "nbytes") else x.numel() * x.element_size()
               for x in (indptr, indices, values))


def _measure_spgemm(torch, item: SpGEMMItem, setup: _Setup, flush) -> OpRow:
    """Time one SpGEMM in fp32 (cuSPARSE SpGEMM and scipy have no fp16/bf16 path)."""
    import numpy as np

    a, b = (x.astype(np.float32) for x in (item.a, item.b))
    # Each stored a_ik meets every nonzero of row k of B once: the scalar multiplies.
    multiplies = int(np.diff(b.indptr)[a.indices].sum())
    choice = spgemm_method(setup.device)
    if setup.device == "cuda":
        def to_torch(x):
            return torch.sparse_csr_tensor(
                torch.from_numpy(x.indptr.astype(np.int64)),
                torch.from_numpy(x.indices.astype(np.int64)), torch.from_numpy(x.data),
                size=x.shape, device="cuda")

        ta, tb = to_torch(a), to_torch(b)

        def call():
            return ta @ tb

        c = call()
        nnz_c, c_bytes = int(c._nnz()), _csr_bytes(c.crow_indices(), c.col_indices(), c.values())
        in_bytes = sum(_csr_bytes(t.crow_indices(), t.col_indices(), t.values()) for t in (ta, tb))
    else:
        def call():
            return a @ b

        c = call()
        nnz_c, c_bytes = int(c.nnz), _csr_bytes(c.indptr, c.indices, c.data)
        in_bytes = sum(_csr_bytes(x.indptr, x.indices, x.data) for x in (a, b))
    del c
    times, calls = _time(torch, call, setup, flush)
    stats = summarize(times)
    moved, flops = in_bytes + c_bytes, max(2 * multiplies, 1)
    return OpRow(
        name=item.name, layer=item.name, phase="spgemm", m=item.m, k=item.k, n=item.n, copies=1,
        repeat=1, nm=None, method=choice.method, method_note=choice.note,
        median_s=stats.median_s, p20_s=stats.p20_s, p80_s=stats.p80_s, samples=stats.samples,
        calls_per_sample=calls, flops=flops, bytes=moved, flop_per_s=flops / stats.median_s,
        bytes_per_s=moved / stats.median_s, total_s=stats.median_s, reused_from=None,
        nnz_a=item.nnz_a, nnz_b=item.nnz_b, nnz_c=nnz_c,
    )


# --------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------

def _pattern_kinds() -> tuple[str, ...]:
    """Every ``kind`` of the spec's attention patterns, in the order the spec declares them."""
    union = typing.get_args(AttentionPattern)[0]
    return tuple(typing.get_args(cls.model_fields["kind"].annotation)[0]
                 for cls in typing.get_args(union))


#: Attention patterns given by a mask, which FlexAttention can skip block by block: every pattern
#: but dense attention and N:M on the scores (derived from the spec, so a new pattern is covered).
BLOCK_PATTERNS = tuple(k for k in _pattern_kinds() if k not in ("dense", "nm"))


@dataclass(frozen=True, slots=True)
class AttentionItem:
    """One attention layer: an ``op: attention``, or a transformer block given a pattern."""

    name: str
    op: object  # workloads.spec.AttentionOp
    repeat: int


def workload_attention(workload: WorkloadSpec) -> list[AttentionItem]:
    """The workload's attention layers, in order (the GEMM lowering leaves them out)."""
    return [
        AttentionItem(layer.name, layer.attention, layer.repeat)
        for layer in expand(workload)
        if layer.kind == "attention" and getattr(layer, "attention", None) is not None
    ]


def attention_method(kind: str, causal: bool, flex_compile: bool) -> MethodChoice:
    """How an attention op with pattern ``kind`` runs in torch.

    Dense and causal attention use ``scaled_dot_product_attention`` (causal aligned to the
    bottom right: query ``i`` sits at key position ``kv_len − q_len + i``). Block patterns use
    SDPA with the pattern as a boolean mask, which computes every score and so does dense work,
    or with ``flex_compile`` compiled FlexAttention on the op's BlockMask, which skips empty
    blocks. N:M on the scores has no torch kernel: its scores are computed dense.
    """
    if kind in BLOCK_PATTERNS:
        if flex_compile:
            return MethodChoice(
                "flex_attention_compiled",
                "compiled FlexAttention on the op's block mask (skips empty blocks)",
            )
        return MethodChoice("sdpa_bool_mask", "SDPA with the pattern as a boolean mask: every "
                                              "score is computed (--flex-compile skips blocks)")
    if kind not in ("dense", "nm"):
        raise ValueError(f"unknown attention pattern {kind!r}")
    notes = ["N:M on the scores has no torch kernel: scores computed dense"] if kind == "nm" else []
    if causal:
        return MethodChoice("sdpa_causal", "; ".join(["causal aligned bottom-right", *notes]))
    return MethodChoice("sdpa_dense", "; ".join(notes))


def _attention_key(op) -> str:
    # Identical attention layers (a model's blocks) differ only in name and repeat count.
    return op.model_dump_json(exclude={"name", "repeat"})


def _attention_keys(items: list[AttentionItem]) -> set[str]:
    return {_attention_key(item.op) for item in items}


def _flex_block_mask(torch, mask, device: str):
    """The op's mask as a FlexAttention BlockMask on ``device``; also the bytes it holds."""
    from torch.nn.attention.flex_attention import BlockMask

    lists = {k: torch.from_numpy(v).to(device) for k, v in mask.to_flex().items()}
    dense = torch.from_numpy(mask.dense()).to(device)

    def mask_mod(b, h, q_idx, kv_idx):  # read only inside partial blocks
        return dense[b, h, q_idx, kv_idx]

    block_mask = BlockMask.from_kv_blocks(
        lists["kv_num_blocks"], lists["kv_indices"], lists["full_kv_num_blocks"],
        lists["full_kv_indices"], BLOCK_SIZE=mask.block, mask_mod=mask_mod,
        seq_lengths=(mask.q_len, mask.kv_len),
    )
    return block_mask, dense.numel() + sum(t.numel() * t.element_size() for t in lists.values())


def _attention_call(torch, op, mask, choice: MethodChoice, setup: _Setup, gen):
    """Inputs for one attention op and the call to time; returns (call, bytes moved once)."""
    from torch.nn.attention.bias import causal_lower_right

    sdpa = torch.nn.functional.scaled_dot_product_attention
    dt = getattr(torch, TORCH_DTYPES[setup.dtype])
    q, k, v = (
        torch.randn(op.batch, heads, length, op.head_dim, generator=gen).to(setup.device, dt)
        for heads, length in ((op.heads, op.queries), (op.groups, op.kv_len),
                              (op.groups, op.kv_len))
    )
    gqa = op.groups != op.heads  # grouped K/V heads are broadcast, not copied
    kwargs, extra = {"enable_gqa": gqa}, 0
    if choice.method == "sdpa_causal" and op.queries == op.kv_len:
        kwargs["is_causal"] = True
    elif choice.method == "sdpa_causal":
        kwargs["attn_mask"] = causal_lower_right(op.queries, op.kv_len)
    elif choice.method == "sdpa_bool_mask":
        kwargs["attn_mask"] = torch.from_numpy(mask.dense()).to(setup.device)
        extra = kwargs["attn_mask"].numel()
    if choice.method == "flex_attention_compiled":
        from torch.nn.attention.flex_attention import flex_attention

        block_mask, extra = _flex_block_mask(torch, mask, setup.device)
        compiled = torch.compile(flex_attention)

        def call():
            return compiled(q, k, v, block_mask=block_mask, enable_gqa=gqa)
    else:
        def call():
            return sdpa(q, k, v, **kwargs)

    out_bytes = q.numel() * q.element_size()  # O has Q's shape
    moved = sum(t.numel() * t.element_size() for t in (q, k, v)) + out_bytes + extra
    return call, moved


def _measure_attention_layers(torch, items: list[AttentionItem], setup: _Setup, flush, progress,
                              done: int, total: int) -> tuple[list[OpRow], int]:
    """Rows of the attention layers, identical ones measured once; also the count measured."""
    from workloads.generators.attention import build_mask

    gen = torch.Generator().manual_seed(setup.seed)
    measured: dict[str, tuple] = {}
    rows = []
    for item in items:
        op, key = item.op, _attention_key(item.op)
        fresh = key not in measured
        if fresh:
            mask = build_mask(op)
            choice = attention_method(op.pattern.kind, op.causal, setup.flex_compile)
            call, moved = _attention_call(torch, op, mask, choice, setup, gen)
            times, calls = _time(torch, call, setup, flush)
            measured[key] = (item.name, summarize(times), calls, moved, choice, mask.density)
            del call
            if progress is not None:
                progress(done + len(measured), total, item.name)
        first, stats, calls, moved, choice, density = measured[key]
        flops = 4 * op.batch * op.heads * op.queries * op.kv_len * op.head_dim  # QKᵀ and PV
        rows.append(OpRow(
            name=item.name, layer=item.name, phase=op.phase, m=op.queries, k=op.head_dim,
            n=op.kv_len, copies=op.batch * op.heads, repeat=item.repeat, nm=None,
            method=choice.method, method_note=choice.note, median_s=stats.median_s,
            p20_s=stats.p20_s, p80_s=stats.p80_s, samples=stats.samples, calls_per_sample=calls,
            flops=flops, bytes=moved, flop_per_s=flops / stats.median_s,
            bytes_per_s=moved / stats.median_s, total_s=stats.median_s * item.repeat,
            reused_from=None if fresh else first,
            attention=AttentionInfo(pattern=op.pattern.kind, causal=op.causal,
                                    kv_heads=op.groups, density=density),
        ))
    return rows, len(measured)
