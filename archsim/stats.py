"""Statistics objects: explicit, passed into the units, never global.

``SegmentStats`` collects one program run; ``SimResult`` is the frozen, aggregated answer of
``archsim.simulate``: totals, per-unit busy/stall cycles, per-GEMM rows and energy.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from dataflows.isa import Unit
from workloads.spec import EnergySpec

__all__ = ["SegmentStats", "TaskStats", "LayerRecord", "SimResult", "energy_pj", "UNIT_NAMES"]

UNIT_NAMES = {Unit.DMA: "dma", Unit.PE: "pe_array", Unit.VEC: "vector"}


@dataclass
class TaskStats:
    """What one GEMM (one tag of a program) did."""

    macs: int = 0
    dram_read_bytes: int = 0
    dram_write_bytes: int = 0
    pe_busy_cycles: int = 0
    dma_busy_cycles: int = 0
    first_start: int | None = None
    last_end: int = 0


class SegmentStats:
    """Counters of one program execution. ``trace`` keeps per-instruction (start, end) cycles."""

    def __init__(self, n_instrs: int, trace: bool = False) -> None:
        self.busy = [0, 0, 0]
        self.stall = [0, 0, 0]
        self.tasks: dict[int, TaskStats] = defaultdict(TaskStats)
        self.sram_read_bytes: dict[str, int] = defaultdict(int)
        self.sram_write_bytes: dict[str, int] = defaultdict(int)
        self.vector_groups = 0
        self.cycles = 0
        self.trace: list[tuple[int, int]] | None = [(0, 0)] * n_instrs if trace else None

    def record(self, unit: Unit, index: int, tag: int, ready: int, start: int, cycles: int) -> None:
        end = start + cycles
        self.busy[unit] += cycles
        self.stall[unit] += start - ready
        self.cycles = max(self.cycles, end)
        task = self.tasks[tag]
        if unit == Unit.PE:
            task.pe_busy_cycles += cycles
        elif unit == Unit.DMA:
            task.dma_busy_cycles += cycles
        task.first_start = start if task.first_start is None else min(task.first_start, start)
        task.last_end = max(task.last_end, end)
        if self.trace is not None:
            self.trace[index] = (start, end)

    def add_macs(self, tag: int, macs: int) -> None:
        self.tasks[tag].macs += macs

    def add_dram(self, tag: int, read: int = 0, written: int = 0) -> None:
        self.tasks[tag].dram_read_bytes += read
        self.tasks[tag].dram_write_bytes += written


@dataclass(frozen=True, slots=True)
class LayerRecord:
    """One GEMM of the workload (all copies and repeats included).

    ``cycles`` is the GEMM's share of its segment's cycles: the whole segment when it runs
    alone; when GEMMs are interleaved, split in proportion to their PE-array busy cycles.
    """

    name: str
    layer: str
    phase: str
    m: int
    k: int
    n: int
    sparsity: str
    repeat: int
    cycles: int
    macs_executed: int
    macs_dense_equivalent: int
    dram_read_bytes: int
    dram_write_bytes: int
    pe_busy_cycles: int
    tiling: str

    def as_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.__slots__}


def energy_pj(energy: EnergySpec, macs: int, dram_read: int, dram_write: int, sram_read: int,
              sram_write: int, vector_groups: int) -> dict[str, float]:
    """Energy per component from the per-action table (docs/energy.md)."""
    parts = {
        "mac": macs * energy.mac_pj,
        "dram": dram_read * energy.dram_read_pj_per_byte + dram_write * energy.dram_write_pj_per_byte,
        "sram": sram_read * energy.sram_read_pj_per_byte + sram_write * energy.sram_write_pj_per_byte,
        "vector": vector_groups * energy.vector_group_pj,
    }
    parts["total"] = sum(parts.values())
    return parts


@dataclass(frozen=True)
class SimResult:
    """The outcome of simulating a schedule. Cycles are integers; ``seconds`` uses the clock."""

    total_cycles: int
    seconds: float
    macs_executed: int
    macs_dense_equivalent: int
    utilization: float
    dram_read_bytes: int
    dram_write_bytes: int
    sram_read_bytes: dict[str, int]
    sram_write_bytes: dict[str, int]
    unit_busy_cycles: dict[str, int]
    unit_stall_cycles: dict[str, int]
    energy_pj: dict[str, float]
    instructions: int
    instructions_simulated: int
    segments: int
    interleaved_segments: int = 0
    layers: tuple[LayerRecord, ...] = field(default=())
    # One archsim.spgemm.SpGEMMOpResult per `op: spgemm`; its best dataflow is in the totals.
    spgemm: tuple = field(default=())
    # One archsim.attention.AttentionRecord per attention layer (docs/attention.md).
    attention: tuple = field(default=())

    def summary(self) -> dict:
        return {
            "total_cycles": self.total_cycles,
            "seconds": self.seconds,
            "macs_dense_equivalent": self.macs_dense_equivalent,
            "macs_executed": self.macs_executed,
            "utilization": self.utilization,
            "effective_utilization": self.effective_utilization,
            "dram_read_bytes": self.dram_read_bytes,
            "dram_write_bytes": self.dram_write_bytes,
            "energy_pj": self.energy_pj["total"],
            "energy_breakdown_pj": dict(self.energy_pj),
            "unit_busy_cycles": dict(self.unit_busy_cycles),
            "unit_stall_cycles": dict(self.unit_stall_cycles),
            "sram_read_bytes": dict(self.sram_read_bytes),
            "sram_write_bytes": dict(self.sram_write_bytes),
            "instructions": self.instructions,
            "segments": self.segments,
            "interleaved_segments": self.interleaved_segments,
            "spgemm_cycles": sum(op.best.cycles for op in self.spgemm),
        }

    @property
    def effective_utilization(self) -> float:
        """Dense-equivalent MACs per PE per cycle; above 1 when N:M skipping pays off."""
        if not self.total_cycles:
            return 0.0
        return self.utilization * self.macs_dense_equivalent / max(self.macs_executed, 1)
