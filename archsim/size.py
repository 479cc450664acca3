"""How large a workload's tile programs are, known before the scheduler builds them.

The scheduler builds one program per distinct GEMM (identical GEMMs share one), with one step (a
COMPUTE and the loads it needs) per tile. Building and simulating a step costs about 1 KiB and
100 µs, so a GEMM with m = 10⁹ would take hours and tens of gigabytes. :func:`check_size` counts the
steps from the tilings alone (cheap: no program is built) and refuses a workload above its
``limits.tile_steps`` (docs/workloads.md, "Limits").
"""

from __future__ import annotations

from dataclasses import dataclass

from workloads.arith import ceil_div
from workloads.errors import SpecError
from workloads.spec import WorkloadSpec

__all__ = ["ProgramSize", "program_size", "check_size", "SECONDS_PER_STEP", "NOTICE_STEPS"]

#: Measured on the CI machine (schedule + simulate, tiny preset); used only for the estimate.
SECONDS_PER_STEP = 100e-6
#: Above this many steps (about 20 s) the CLI says up front that the run is large.
NOTICE_STEPS = 200_000


@dataclass(frozen=True, slots=True)
class ProgramSize:
    """Tile steps of all distinct programs, and the GEMM or attention op with the most."""

    steps: int
    largest: str
    largest_steps: int

    @property
    def seconds(self) -> float:
        return self.steps * SECONDS_PER_STEP


def program_size(workload: WorkloadSpec) -> ProgramSize:
    """Count the tile steps the scheduler would build for ``workload``: GEMM tiles, plus one per
    (query block, key block) pair of each attention head (two in training: the backward)."""
    from dataflows.scheduler import canonical_hardware, compressed_in_dram, tiling_for
    from workloads.layers import expand
    from workloads.lowering import lower

    hw, passes = canonical_hardware(workload.hardware), workload.schedule
    compressed = compressed_in_dram(workload)
    steps: dict[tuple, tuple[str, int]] = {}
    for group in lower(expand(workload), workload.mode):
        for task in group:
            tiling = tiling_for(task, hw, passes, compressed)
            key = (task.m, task.k, task.n, task.nm, task.copies, tiling)
            if key not in steps:
                m, k, n = tiling.dims(task)
                count = task.copies * ceil_div(m, tiling.tm) * ceil_div(k, tiling.tk)
                steps[key] = (task.name, count * ceil_div(n, tiling.tn))
    for layer in expand(workload):
        if layer.attention is not None:  # one step per (query block, key block) of each head
            op = layer.attention
            blocks = ceil_div(op.queries, op.block_size) * ceil_div(op.kv_len, op.block_size)
            passes = 2 if workload.mode == "training" else 1  # the backward visits them again
            steps[("attention", op)] = (op.name, passes * op.batch * op.heads * blocks)
    if not steps:
        return ProgramSize(0, "", 0)
    largest, most = max(steps.values(), key=lambda item: item[1])
    return ProgramSize(sum(count for _, count in steps.values()), largest, most)


def check_size(workload: WorkloadSpec, source: str) -> ProgramSize:
    """``workload``'s size, or a SpecError naming the limit and how to raise it."""
    size = program_size(workload)
    limit = workload.limits.tile_steps
    if size.steps > limit:
        raise SpecError(
            f"{source}: the tile programs would have {size.steps:,} tile steps ({size.largest}: "
            f"{size.largest_steps:,}), above limits.tile_steps = {limit:,} (about "
            f"{_duration(size.seconds)} and {size.steps >> 20 or '<1'} GiB); shrink the "
            f"workload or raise 'limits: {{tile_steps: ...}}' in it"
        )
    return size


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"
