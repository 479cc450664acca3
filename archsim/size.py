"""How large a workload's tile programs are, known before the scheduler builds them.

The scheduler builds one program per distinct GEMM (identical GEMMs share one), with one step (a
COMPUTE and the loads it needs) per tile. Building and simulating a step costs about 1 KiB and
50 µs, so a GEMM with m = 10⁹ would take hours and tens of gigabytes. :func:`check_size` counts the
steps from the tilings alone (cheap: no program is built) and refuses a workload above its
``limits.tile_steps`` (docs/workloads.md, "Limits").
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from workloads.arith import ceil_div
from workloads.errors import SpecError
from workloads.spec import WorkloadSpec

__all__ = ["ProgramSize", "SizeError", "program_size", "least_size", "check_size", "SECONDS_PER_STEP",
           "NOTICE_STEPS"]

#: Schedule + SimPy simulation per step, used only for the estimate: 43-59 µs measured for
#: ResNet-18, ResNet-50 and VGG-16 BDWP training at batch 32 (2026-12, one core).
SECONDS_PER_STEP = 50e-6
#: Above this many steps (about 20 s) the CLI says up front that the run is large.
NOTICE_STEPS = 400_000


@dataclass(frozen=True, slots=True)
class ProgramSize:
    """Tile steps of all distinct programs, and the GEMM or attention op with the most."""

    steps: int
    largest: str
    largest_steps: int
    exact: bool = True  # False: a lower bound (least_size of a workload with GEMMs)

    @property
    def seconds(self) -> float:
        return self.steps * SECONDS_PER_STEP


def least_size(workload: WorkloadSpec, lowered: tuple | None = None) -> ProgramSize:
    """A lower bound on :func:`program_size`'s steps from the GEMM shapes alone, without the
    tiling search (whose estimates walk every m-tile: minutes for a convolution at batch
    100,000). An array tile multiplies at most ``tm × tk × tn`` (``tm`` within one
    accumulator slot and :data:`~dataflows.tiling.MAX_TILE_ROWS`, ``tk`` the array's rows
    times M/N where it skips pruned weights, ``tn`` its columns), in either orientation;
    identical GEMMs count once, as they share a program. ``lowered``: :func:`_lowered`'s, when
    the caller has it."""
    from dataflows.tiling import MAX_TILE_ROWS, accumulator_slot_rows

    layers, groups = lowered or _lowered(workload)
    hw = workload.hardware
    tm = max(1, min(MAX_TILE_ROWS, accumulator_slot_rows(hw)))
    steps: dict[tuple, tuple[str, int]] = {}
    for group in groups:
        for task in group:
            tk = hw.array.rows // task.nm[0] * task.nm[1] if task.sparse_on(hw) else hw.array.rows
            per_tile = tm * max(tk, hw.array.rows) * hw.array.cols
            steps.setdefault((task.m, task.k, task.n, task.nm, task.copies), (
                task.name, task.copies * ceil_div(task.m * task.k * task.n, per_tile)))
    gemms = bool(steps)
    steps.update(_attention_steps(workload, layers))
    return replace(_size_of(steps), exact=not gemms)


def program_size(workload: WorkloadSpec, lowered: tuple | None = None) -> ProgramSize:
    """Count the tile steps the scheduler would build for ``workload``: GEMM tiles, plus one per
    (query block, key block) pair of each attention head (two in training: the backward)."""
    from dataflows.scheduler import canonical_hardware, compressed_in_dram, tiling_for

    layers, groups = lowered or _lowered(workload)

    hw, passes = canonical_hardware(workload.hardware), workload.schedule
    compressed = compressed_in_dram(workload)
    steps: dict[tuple, tuple[str, int]] = {}
    for group in groups:
        for task in group:
            tiling = tiling_for(task, hw, passes, compressed)
            key = (task.m, task.k, task.n, task.nm, task.copies, tiling)
            if key not in steps:
                m, k, n = tiling.dims(task)
                count = task.copies * ceil_div(m, tiling.tm) * ceil_div(k, tiling.tk)
                steps[key] = (task.name, count * ceil_div(n, tiling.tn))
    steps.update(_attention_steps(workload, layers))
    return _size_of(steps)


def _lowered(workload: WorkloadSpec) -> tuple[list, list]:
    """The workload's layers and their GEMM groups (both sizes read them)."""
    from workloads.layers import expand
    from workloads.lowering import lower

    layers = expand(workload)
    return layers, lower(layers, workload.mode)


def _attention_steps(workload: WorkloadSpec, layers: list) -> dict[tuple, tuple[str, int]]:
    """One step per (query block, key block) of each attention head (two in training)."""
    steps = {}
    for layer in layers:
        if layer.attention is not None:
            op = layer.attention
            blocks = ceil_div(op.queries, op.block_size) * ceil_div(op.kv_len, op.block_size)
            passes = 2 if workload.mode == "training" else 1  # the backward visits them again
            steps[("attention", op)] = (op.name, passes * op.batch * op.heads * blocks)
    return steps


def _size_of(steps: dict[tuple, tuple[str, int]]) -> ProgramSize:
    if not steps:
        return ProgramSize(0, "", 0)
    largest, most = max(steps.values(), key=lambda item: item[1])
    return ProgramSize(sum(count for _, count in steps.values()), largest, most)


def check_size(workload: WorkloadSpec, source: str) -> ProgramSize:
    """``workload``'s size, or a SpecError naming the limit and how to raise it. A workload
    whose :func:`least_size` is already above the limit is refused without the tiling search
    (its message says "at least")."""
    limit, lowered = workload.limits.tile_steps, _lowered(workload)
    floor = least_size(workload, lowered)
    if floor.steps > limit:
        raise _too_large(source, floor, limit)
    size = program_size(workload, lowered)
    if size.steps > limit:
        raise _too_large(source, size, limit)
    return size


class SizeError(SpecError):
    """A workload above ``limits.tile_steps``; ``largest`` names its largest layer (the CLI
    points at the operation that holds it)."""

    def __init__(self, message: str, largest: str) -> None:
        super().__init__(message)
        self.largest = largest


def _too_large(source: str, size: ProgramSize, limit: int) -> SizeError:
    least, about = ("", "about") if size.exact else ("at least ", "at least")
    return SizeError(
        f"{source}: the tile programs would have {least}{size.steps:,} tile steps "
        f"({size.largest}: {least}{size.largest_steps:,}), above limits.tile_steps = {limit:,} "
        f"({about} {_duration(size.seconds)} and {size.steps >> 20 or '<1'} GiB); "
        f"shrink the workload or raise 'limits: {{tile_steps: ...}}' in it", size.largest
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"
