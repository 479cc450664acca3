"""Statistics objects: explicit, passed into the units, never global.

``SegmentStats`` collects one program run; ``SimResult`` is the frozen, aggregated answer of
``archsim.simulate``: totals, per-unit busy/stall cycles, per-GEMM rows and energy.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from dataflows.isa import Unit
from workloads.arith import ceil_div, index_bits
from workloads.spec import EnergySpec

if TYPE_CHECKING:
    from dataflows.tiling import Tiling
    from workloads.lowering import GemmTask

__all__ = [
    "SegmentStats", "TaskStats", "LayerRecord", "SimResult", "energy_pj", "UNIT_NAMES",
    "bound_unit", "compressed_weight_bytes", "compulsory_bytes",
]

UNIT_NAMES = {Unit.DMA: "dma", Unit.PE: "pe_array", Unit.VEC: "vector"}


@dataclass
class TaskStats:
    """What one GEMM (one tag of a program) did."""

    macs: int = 0
    dram_read_bytes: int = 0
    dram_write_bytes: int = 0
    pe_busy_cycles: int = 0
    dma_busy_cycles: int = 0
    vec_busy_cycles: int = 0
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
        else:
            task.vec_busy_cycles += cycles
        task.first_start = start if task.first_start is None else min(task.first_start, start)
        task.last_end = max(task.last_end, end)
        if self.trace is not None:
            self.trace[index] = (start, end)

    def record_timeline(self, queues: dict, tags: list[int], starts: tuple[list[int], ...],
                        ends: tuple[list[int], ...]) -> None:
        """:meth:`record` of every instruction of a program at once, from its timeline
        (``cost.timeline``: per unit, in queue order, when each instruction starts and ends;
        ``queues``: the program's ``per_unit()``, instruction ``i`` serving ``tags[i]``),
        summed with numpy: the same counters, for the fast engine's hundreds of thousands of
        instructions. An instruction is ready when its unit's previous one ends (the first at
        cycle 0), so a unit's stall is its starts less the ends before them."""
        if not tags:
            return
        tag_of = np.asarray(tags, np.int64)
        tag_ids = np.unique(tag_of)
        per_unit = np.zeros((len(tag_ids), 3), np.int64)  # busy cycles by tag and unit
        first = np.full(len(tag_ids), np.iinfo(np.int64).max)
        last = np.zeros(len(tag_ids), np.int64)
        for u in Unit:
            if not queues[u]:
                continue
            begin, end = np.asarray(starts[u], np.int64), np.asarray(ends[u], np.int64)
            busy = end - begin
            tag = np.searchsorted(tag_ids, tag_of[queues[u]])
            np.add.at(per_unit[:, u], tag, busy)
            np.minimum.at(first, tag, begin)
            np.maximum.at(last, tag, end)
            self.busy[u] += int(busy.sum())
            self.stall[u] += int(begin.sum() - end[:-1].sum())
            self.cycles = max(self.cycles, int(end[-1]))  # a unit's ends never decrease
            if self.trace is not None:
                for i, s, e in zip(queues[u], starts[u], ends[u]):
                    self.trace[i] = (s, e)
        for i, t in enumerate(tag_ids.tolist()):
            task = self.tasks[t]
            task.dma_busy_cycles += int(per_unit[i, Unit.DMA])
            task.pe_busy_cycles += int(per_unit[i, Unit.PE])
            task.vec_busy_cycles += int(per_unit[i, Unit.VEC])
            s0 = int(first[i])
            task.first_start = s0 if task.first_start is None else min(task.first_start, s0)
            task.last_end = max(task.last_end, int(last[i]))

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
    The fields after ``tiling`` judge the mapping (docs/results.md): the compulsory DRAM
    traffic (``compulsory_bytes``), the busy cycles of the other units (``bound`` names the
    busiest), the cycles of the GEMM's own dense mapping for an N:M GEMM the array runs
    sparse or falls back from, and a ``note`` saying why a row is unusual.
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
    compulsory_read_bytes: int = 0
    compulsory_write_bytes: int = 0
    dma_busy_cycles: int = 0
    vector_busy_cycles: int = 0
    dense_cycles: int | None = None
    note: str = ""
    # MACs of a block-diagonal GEMM's zero blocks (a grouped convolution's): part of
    # ``macs_executed`` in this run and in the dense one alike, never dense-equivalent work.
    macs_zero_blocks: int = 0
    # MACs this row executes in the dense run (``--compare-dense``'s) where that is not
    # dense-equivalent + zero blocks: a causal attention's dense run skips the blocks after
    # the diagonal, so it executes fewer MACs than dense (non-causal) attention.
    macs_dense_run: int | None = None

    #: Derived columns, computed from the fields (``as_dict`` and ``layers.csv`` carry them).
    DERIVED = ("read_ratio", "write_ratio", "bound", "sparse_speedup")

    @property
    def read_ratio(self) -> float | None:
        """DRAM bytes read / compulsory bytes read (None without compulsory reads)."""
        return _ratio(self.dram_read_bytes, self.compulsory_read_bytes)

    @property
    def write_ratio(self) -> float | None:
        return _ratio(self.dram_write_bytes, self.compulsory_write_bytes)

    @property
    def bound(self) -> str:
        """The unit with the most busy cycles (``dma``, ``pe_array``, ``vector``); "" if none."""
        return bound_unit({"dma": self.dma_busy_cycles, "pe_array": self.pe_busy_cycles,
                           "vector": self.vector_busy_cycles})

    @property
    def dense_run_macs(self) -> int:
        """MACs the dense run executes for this row: pre-generation rows have none there, a
        GEMM executes its dense-equivalent MACs plus its zero blocks, attention
        ``macs_dense_run``."""
        if self.phase == "pregen":
            return 0
        if self.macs_dense_run is not None:
            return self.macs_dense_run
        return self.macs_dense_equivalent + self.macs_zero_blocks

    @property
    def sparse_speedup(self) -> float | None:
        """Own dense mapping's cycles / this row's cycles (N:M rows the array can run sparse)."""
        return _ratio(self.dense_cycles or 0, self.cycles) if self.dense_cycles else None

    @classmethod
    def columns(cls) -> list[str]:
        return [*cls.__slots__, *cls.DERIVED]

    def as_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.columns()}


def _pattern(label: str) -> tuple[int, int]:
    """(N, M) of a ``sparsity`` label that starts with ``N:M``."""
    n, m = label.split(" ", 1)[0].split(":")
    return int(n), int(m)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def bound_unit(busy: dict[str, int]) -> str:
    """The key with the most busy cycles (the first on a tie); "" when nothing was busy."""
    top = max(busy, key=busy.get, default="")
    return top if top and busy[top] else ""


def compressed_weight_bytes(k: int, n: int, nm: tuple[int, int], data_bytes: int) -> int:
    """DRAM bytes of a ``k``×``n`` weight pruned N:M along ``k`` and stored compressed.

    The format of ``isa.row_bytes``: each of the k·N/M kept rows holds ``n`` values and ``n``
    packed ⌈log2 M⌉-bit indices, rounded up to whole bytes per row; no tile padding.
    """
    n_keep, m = nm
    return k // m * n_keep * (n * data_bytes + ceil_div(n * index_bits(m), 8))


def compulsory_bytes(task: GemmTask, tiling: Tiling | None, data_bytes: int) -> tuple[int, int]:
    """(read, written) DRAM bytes any mapping of one copy of ``task`` must move.

    A and B are read once, C is written once at operand width; a convolution's im2col-expanded
    matrix counts its feature map (``GemmTask.distinct_elems``); a weight the tiling loads
    compressed (pruned N:M, pre-generated or deployed compressed) counts its compressed size.
    """
    a, b, c = task.distinct_elems()
    if tiling is not None and tiling.sparse and tiling.compressed_in_dram:
        b_bytes = compressed_weight_bytes(task.k, task.n, task.nm, data_bytes)
    else:
        b_bytes = b * data_bytes
    return a * data_bytes + b_bytes, c * data_bytes


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
            "mac_bound": self.mac_bound,
            "time_bound": self.time_bound,
            **self.traffic(),
            "bound": self.bound,
            "phase_bounds": self.phase_bounds(),
        }

    def traffic(self) -> dict:
        """DRAM traffic of the ``layers`` rows against their compulsory traffic (docs/results.md).

        SpGEMM ops are excluded (their traffic is in ``spgemm[]``), so the ratios compare like
        with like.
        """
        read = sum(r.dram_read_bytes for r in self.layers)
        written = sum(r.dram_write_bytes for r in self.layers)
        c_read = sum(r.compulsory_read_bytes for r in self.layers)
        c_written = sum(r.compulsory_write_bytes for r in self.layers)
        return {
            "compulsory_read_bytes": c_read,
            "compulsory_write_bytes": c_written,
            "dram_read_ratio": _ratio(read, c_read),
            "dram_write_ratio": _ratio(written, c_written),
        }

    @property
    def bound(self) -> str:
        """The unit with the most busy cycles over the whole run (SpGEMM engine excluded)."""
        return bound_unit(self.unit_busy_cycles)

    def phase_bounds(self) -> dict[str, dict]:
        """Per phase (``ff``, ``bp``, ``wg``, ``inference``, ``attention``, ``pregen``): the
        busy cycles of each unit summed over the phase's rows, and the busiest (``bound``)."""
        out: dict[str, dict] = {}
        for r in self.layers:
            phase = "attention" if r.phase in ("prefill", "decode") else r.phase
            busy = out.setdefault(phase, {"dma": 0, "pe_array": 0, "vector": 0})
            busy["dma"] += r.dma_busy_cycles
            busy["pe_array"] += r.pe_busy_cycles
            busy["vector"] += r.vector_busy_cycles
        return {p: {"bound": bound_unit(b), **b} for p, b in out.items()}

    @property
    def mac_bound(self) -> float | None:
        """The speedup over dense if no GEMM ran faster than its MACs shrank: each row's
        cycles scaled by the MACs the dense run executes for it over the MACs this run
        executes (``LayerRecord.dense_run_macs``: a grouped convolution's zero blocks count in
        both runs, a causal attention's dense run skips the blocks after the diagonal too) or,
        where larger, the cycles of its own dense mapping (``dense_cycles``: rows "over M/N"
        beat their MACs because that mapping is slow); summed, over this run's cycles. Cycles
        outside the rows (SpGEMM) count once on each side, pre-generation rows only here.

        Weighting by cycles, not MACs, keeps it an upper bound: an attention layer that runs at
        a lower utilization than the GEMMs beside it gains more time than its MACs suggest (a
        plain MAC ratio put BERT with 2:4 scores at 1.026x, below its speedup of 1.053x). It is
        1 for any dense workload. None without GEMM work, or when a row executed no MACs but
        its dense run does. (Formerly ``amdahl_bound``.)"""
        if not self.macs_executed or not self.total_cycles:
            return None
        dense_cycles = self.total_cycles
        for r in self.layers:
            if r.phase == "pregen":  # the dense run compresses no weights
                dense_cycles -= r.cycles
                continue
            scaled = r.cycles  # the same MACs on both sides: the same cycles, exactly
            if r.dense_run_macs != r.macs_executed:
                if not r.macs_executed:
                    return None
                scaled = r.cycles * r.dense_run_macs / r.macs_executed
            dense_cycles += max(scaled, r.dense_cycles or 0) - r.cycles
        return dense_cycles / self.total_cycles

    @property
    def time_bound(self) -> float | None:
        """The speedup over dense if every N:M GEMM took exactly N/M of its own dense cycles.

        Over the ``layers`` rows: an N:M row the array can run sparse (one with
        ``dense_cycles``, fallbacks included) counts ``dense_cycles`` on the dense side and
        ``dense_cycles``·N/M on the sparse side; any other row (dense GEMMs, attention) its own
        ``cycles`` on both; pre-generation rows neither (the dense run has none). None without
        an N:M row.
        """
        dense = ideal = 0.0
        sparse = False
        for r in self.layers:
            if r.phase == "pregen":
                continue
            if r.dense_cycles is None:
                dense, ideal = dense + r.cycles, ideal + r.cycles
                continue
            n, m = _pattern(r.sparsity)
            sparse = True
            dense, ideal = dense + r.dense_cycles, ideal + r.dense_cycles * n / m
        return dense / ideal if sparse and ideal else None

    @property
    def effective_utilization(self) -> float:
        """Dense-equivalent MACs per PE per cycle; above 1 when N:M skipping pays off."""
        if not self.total_cycles:
            return 0.0
        return self.utilization * self.macs_dense_equivalent / max(self.macs_executed, 1)
