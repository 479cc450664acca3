"""``simulate()``: a schedule (or a workload) in, a frozen :class:`SimResult` out. Never prints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from archsim.attention import AttentionTally
from archsim.fast import run_program_fast
from archsim.model import run_program
from archsim.stats import (
    UNIT_NAMES,
    LayerRecord,
    SegmentStats,
    SimResult,
    compressed_weight_bytes,
    compulsory_bytes,
    energy_pj,
)
from dataflows.attention import AttentionWork
from dataflows.isa import Unit
from dataflows.program import Schedule, Segment
from dataflows.scheduler import DenseMapping, GemmWork, PregenWork, timing_hardware
from dataflows.scheduler import schedule as make_schedule
from dataflows.tiling import Tiling
from workloads.lowering import GemmTask
from workloads.spec import HardwareSpec, WorkloadSpec

__all__ = ["ENGINES", "simulate", "with_spgemm"]

Progress = Callable[[int, int], None]

#: Timing engines: the SimPy model (the reference) and the fast evaluation of the same rule.
ENGINES = {"simpy": run_program, "fast": run_program_fast}

#: The on-chip buffers in the order the results list them.
_BUFFERS = ("input", "weight", "accumulator")


#: A sparse GEMM may beat its own dense mapping by up to this factor × M/N before it is flagged.
FAIRNESS_TOLERANCE = 1.02

#: The documented reasons a sparse row may beat M/N (docs/results.md, "Fairness").
DENSE_DMA_BOUND = "dense mapping DMA-bound"
DENSE_SHORT_STREAMS = "dense mapping's tiles use the array less efficiently"


def _sparsity_label(task: GemmTask, tiling: Tiling | None, hw: HardwareSpec) -> str:
    if task.nm is None:
        return "dense"
    n, m = task.nm
    if not task.sparse_on(hw):
        return f"{n}:{m} (masked dense: not supported by the array)"
    if tiling is not None and not tiling.sparse:
        return f"{n}:{m} (dense fallback: sparse mapping slower)"
    return f"{n}:{m}"


def _judge(rec: LayerRecord, task: GemmTask, dense: DenseMapping | None) -> LayerRecord:
    """``rec`` with its dense mapping's cycles and, where the row is unusual, a ``note``.

    Notes (docs/results.md): the dense fallback, and a sparse row that beats its own dense
    mapping by more than ``FAIRNESS_TOLERANCE`` × M/N, with the reason where it is a
    documented one: the dense mapping is DMA-bound and keeps the DMA busy more than
    ``FAIRNESS_TOLERANCE`` × M/N times as long as the sparse one, or its tiles keep the PE array
    itself busy that much longer.
    """
    if dense is None:
        return rec
    r = rec.repeat
    note = ""
    if dense.fallback:
        note = (f"dense fallback: the sparse mapping takes {dense.sparse_cycles:,} cycles, "
                f"the dense one {dense.cycles:,}")
    else:
        n, m = task.nm
        speedup = dense.cycles * r / rec.cycles if rec.cycles else 0.0
        limit = FAIRNESS_TOLERANCE * m / n
        if speedup > limit:
            dma = dense.dma_busy_cycles * r / max(rec.dma_busy_cycles, 1)
            moved = dense.dram_bytes * r / max(rec.dram_read_bytes + rec.dram_write_bytes, 1)
            pe = dense.pe_busy_cycles * r / max(rec.pe_busy_cycles, 1)
            why = "unexplained"
            if dense.dma_busy_cycles >= dense.pe_busy_cycles and dma > limit:
                why = (f"{DENSE_DMA_BOUND}: {dma:.2f}x the DMA busy cycles, {moved:.2f}x the "
                       f"DRAM bytes")
            elif pe > limit:
                why = (f"{DENSE_SHORT_STREAMS}: {pe:.2f}x the PE-array busy cycles for "
                       f"{m / n:g}x the MACs (shorter streams per COMPUTE; the search keeps "
                       f"DRAM reads minimal first)")
            note = f"over M/N: {speedup:.2f}x its dense mapping; {why}"
    return replace(rec, dense_cycles=dense.cycles * r, note=note)


def _tiling_label(tiling: Tiling | None) -> str:
    if tiling is None:
        return ""
    swap = ",swap" if tiling.swap else ""
    # A buffer tile of several array tiles: kb along k, nb along n (docs/scheduler.md).
    buffer = f",buffer {tiling.kb}x{tiling.nb}" if tiling.kb * tiling.nb > 1 else ""
    # A rows (or, for a weight gradient, B rows) generated from the feature map (convolution
    # address mode, docs/scheduler.md).
    conv = (",conv" if tiling.conv else ",conv-b" if tiling.conv_b
            else ",conv-t" if tiling.conv_t else "")
    return f"{tiling.tm}x{tiling.tk}x{tiling.tn},{tiling.order}{swap}{buffer}{conv}"


def _layer_records(segment: Segment[GemmWork], stats: SegmentStats, hw: HardwareSpec) -> list[LayerRecord]:
    work = segment.work
    pe_total = sum(stats.tasks[i].pe_busy_cycles for i in range(len(work.tasks))) or 1
    records = []
    for i, (task, tiling) in enumerate(zip(work.tasks, work.tilings)):
        ts = stats.tasks[i]
        share = stats.cycles if len(work.tasks) == 1 else stats.cycles * ts.pe_busy_cycles // pe_total
        r = segment.repeat
        c_read, c_write = compulsory_bytes(task, tiling, hw.data_bytes)
        records.append(LayerRecord(
            name=task.name, layer=task.layer, phase=task.phase, m=task.m, k=task.k, n=task.n,
            sparsity=_sparsity_label(task, tiling, hw), repeat=r, cycles=share * r,
            macs_executed=ts.macs * r, macs_dense_equivalent=task.macs_dense * task.copies * r,
            dram_read_bytes=ts.dram_read_bytes * r, dram_write_bytes=ts.dram_write_bytes * r,
            pe_busy_cycles=ts.pe_busy_cycles * r, tiling=_tiling_label(tiling),
            compulsory_read_bytes=c_read * task.copies * r,
            compulsory_write_bytes=c_write * task.copies * r,
            dma_busy_cycles=ts.dma_busy_cycles * r, vector_busy_cycles=ts.vec_busy_cycles * r,
            macs_zero_blocks=(task.m * task.k * task.n - task.macs_dense) * task.copies * r,
        ))
    if work.dense:
        records = [_judge(rec, task, d) for rec, task, d in zip(records, work.tasks, work.dense)]
    if len(work.tasks) > 1:  # give the rounding remainder to the first GEMM: rows sum to the total
        rest = stats.cycles * segment.repeat - sum(rec.cycles for rec in records)
        records[0] = replace(records[0], cycles=records[0].cycles + rest)
    return records


def _pregen_record(segment: Segment[PregenWork], stats: SegmentStats, hw: HardwareSpec) -> LayerRecord:
    (task,), r = segment.work.tasks, segment.repeat
    ts = stats.tasks[0]
    db = hw.data_bytes  # compulsory: read the dense weight once, write it compressed once
    compressed = compressed_weight_bytes(task.k, task.n, task.nm, db)
    return LayerRecord(
        name=f"{task.weight}.pregen", layer=task.layer, phase="pregen", m=0, k=task.k, n=task.n,
        sparsity=f"{task.nm[0]}:{task.nm[1]}", repeat=r, cycles=stats.cycles * r, macs_executed=0,
        macs_dense_equivalent=0, dram_read_bytes=ts.dram_read_bytes * r,
        dram_write_bytes=ts.dram_write_bytes * r, pe_busy_cycles=0, tiling="",
        compulsory_read_bytes=task.k * task.n * db * r, compulsory_write_bytes=compressed * r,
        dma_busy_cycles=ts.dma_busy_cycles * r, vector_busy_cycles=ts.vec_busy_cycles * r,
    )


def _attention_rows(records: list[LayerRecord], attention: AttentionTally,
                    hw: HardwareSpec) -> list[LayerRecord]:
    """``records`` with each attention row's busy cycles and compulsory traffic filled in:
    Q, K and V read once, O written once, at operand width (element masks excluded)."""
    out = []
    for rec in records:
        attn = rec.phase in ("prefill", "decode", "backward")
        layer = attention.layers.get(rec.name) if attn else None
        if layer is None:
            out.append(rec)
            continue
        op, db = layer.op, hw.data_bytes
        q = op.batch * op.heads * op.queries * op.head_dim * db * op.repeat
        kv = 2 * op.batch * op.groups * op.kv_len * op.head_dim * db * op.repeat
        # The backward reads Q, K, V, O and dO and writes dQ, dK and dV at accumulator width.
        reads, writes = (3 * q + kv, (q + kv) * hw.acc_bytes // db) if layer.backward else (q + kv, q)
        out.append(replace(
            rec, compulsory_read_bytes=reads, compulsory_write_bytes=writes,
            dma_busy_cycles=layer.units[Unit.DMA], vector_busy_cycles=layer.units[Unit.VEC],
        ))
    return out


def simulate(target: Schedule | WorkloadSpec, progress: Progress | None = None,
             engine: str = "simpy", memo: dict | None = None) -> SimResult:
    """Simulate every segment of a schedule and aggregate the statistics.

    Segments with the same key have the same program and start from an idle accelerator, so
    their timing is identical: each distinct segment is simulated once and counted as often as
    it occurs (``SimResult.instructions_simulated`` tells how much was actually run).
    ``engine`` is a key of :data:`ENGINES`; both give identical results.

    ``memo`` (optional, the caller's dict) carries GEMM and pre-generation segment statistics
    from one call to the next, keyed by engine, segment key and the hardware they depend on
    (``dataflows.scheduler.timing_hardware``: not the buffer sizes, clock or energy): the
    points of a design-space sweep that share programs and that hardware (they differ in a
    scheduler pass, or in a buffer size their GEMMs' tilings ignore) simulate each once. The
    result is the same with or without it.
    """
    sched = make_schedule(target) if isinstance(target, WorkloadSpec) else target
    hw = sched.hardware
    timing_hw = timing_hardware(hw)  # what a remembered segment's statistics depend on
    run_program_with = ENGINES[engine]
    cache: dict[tuple, SegmentStats] = {}
    totals = {"cycles": 0, "instrs": 0, "simulated": 0, "groups": 0}
    busy, stall = [0, 0, 0], [0, 0, 0]
    sram_r: dict[str, int] = {}
    sram_w: dict[str, int] = {}
    records: list[LayerRecord] = []

    def run(segment) -> SegmentStats:
        """One segment's statistics, simulated the first time its key is seen.

        The dense-attention baselines of the attention tally share this cache and count.
        """
        if segment.key not in cache:
            cache[segment.key] = _remembered(memo, (engine, segment.key, timing_hw), segment,
                                             lambda: run_program_with(segment.program, hw))
            totals["simulated"] += len(segment.program.instrs)
        return cache[segment.key]

    attention = AttentionTally(hw, run)
    for done, segment in enumerate(sched.segments, start=1):
        stats = run(segment)
        r = segment.repeat
        totals["cycles"] += stats.cycles * r
        totals["instrs"] += len(segment.program.instrs) * r
        totals["groups"] += stats.vector_groups * r
        for u in Unit:
            busy[u] += stats.busy[u] * r
            stall[u] += stats.stall[u] * r
        for name, v in stats.sram_read_bytes.items():
            sram_r[name] = sram_r.get(name, 0) + v * r
        for name, v in stats.sram_write_bytes.items():
            sram_w[name] = sram_w.get(name, 0) + v * r
        if isinstance(segment.work, PregenWork):
            records.append(_pregen_record(segment, stats, hw))
        elif isinstance(segment.work, AttentionWork):
            attention.add(segment, stats, len(records))
        else:
            records.extend(_layer_records(segment, stats, hw))
        if progress is not None:
            progress(done, len(sched.segments))
    records = _attention_rows(attention.layer_records(records), attention, hw)
    macs = sum(rec.macs_executed for rec in records)
    dense = sum(rec.macs_dense_equivalent for rec in records)
    d_read = sum(rec.dram_read_bytes for rec in records)
    d_write = sum(rec.dram_write_bytes for rec in records)
    cycles = totals["cycles"]
    pes = hw.array.rows * hw.array.cols
    result = SimResult(
        total_cycles=cycles,
        seconds=cycles / (hw.clock_mhz * 1e6),
        macs_executed=macs,
        macs_dense_equivalent=dense,
        utilization=macs / (cycles * pes) if cycles else 0.0,
        dram_read_bytes=d_read,
        dram_write_bytes=d_write,
        sram_read_bytes={b: sram_r[b] for b in _BUFFERS if b in sram_r},
        sram_write_bytes={b: sram_w[b] for b in _BUFFERS if b in sram_w},
        unit_busy_cycles={UNIT_NAMES[u]: busy[u] for u in Unit},
        unit_stall_cycles={UNIT_NAMES[u]: stall[u] for u in Unit},
        energy_pj=energy_pj(hw.energy, macs, d_read, d_write, sum(sram_r.values()), sum(sram_w.values()), totals["groups"]),
        instructions=totals["instrs"],
        instructions_simulated=totals["simulated"],
        segments=len(sched.segments),
        interleaved_segments=sum(1 for s in sched.of(GemmWork) if len(s.work.tasks) > 1),
        layers=tuple(records),
        attention=attention.records(),
    )
    # A schedule holds only the GEMMs; a workload also brings its SpGEMM ops.
    return (with_spgemm(result, target, run_program_with) if isinstance(target, WorkloadSpec)
            else result)


#: Segment statistics a caller's ``simulate(memo=...)`` holds at most (then it starts afresh).
MAX_MEMO = 4096


def _remembered(memo: dict | None, key: tuple, segment: Segment,
                run: Callable[[], SegmentStats]) -> SegmentStats:
    """``run()``, or what ``memo`` holds for ``key``. Only GEMM and pre-generation segments
    are remembered: their key and the hardware determine their program (attention keys are
    shared only within one schedule)."""
    if memo is None or not isinstance(segment.work, (GemmWork, PregenWork)):
        return run()
    if key not in memo:
        if len(memo) >= MAX_MEMO:
            memo.clear()
        memo[key] = run()
    return memo[key]


def with_spgemm(result: SimResult, workload: WorkloadSpec,
                run: Callable[..., SegmentStats] = run_program) -> SimResult:
    """``result`` plus the workload's ``op: spgemm`` operations (docs/spgemm.md), their
    programs executed by ``run`` (a value of :data:`ENGINES`).

    Each op is simulated with every dataflow it lists; the fastest one counts in the totals
    (cycles, seconds, DRAM bytes, energy of its multiplies and DRAM traffic). SpGEMM runs on
    its own engine after the GEMMs: PE-array MACs stay those of the array, and utilization is
    the array's over the whole run, SpGEMM cycles included (the array idles while they run).
    """
    from archsim.spgemm import simulate_spgemm
    from workloads.spec import SpGEMMOp

    ops = [op for op in workload.operations if isinstance(op, SpGEMMOp)]
    if not ops:
        return result
    hw = workload.hardware
    ran = tuple(simulate_spgemm(op, hw, run) for op in ops)
    best = [op.best for op in ran]
    cycles = result.total_cycles + sum(b.cycles for b in best)
    read = result.dram_read_bytes + sum(b.dram_read_bytes for b in best)
    write = result.dram_write_bytes + sum(b.dram_write_bytes for b in best)
    extra = energy_pj(hw.energy, sum(b.multiplies for b in best), read - result.dram_read_bytes,
                      write - result.dram_write_bytes, 0, 0, 0)
    pes = hw.array.rows * hw.array.cols
    return replace(
        result,
        total_cycles=cycles,
        seconds=cycles / (hw.clock_mhz * 1e6),
        utilization=result.macs_executed / (cycles * pes) if cycles else 0.0,
        dram_read_bytes=read,
        dram_write_bytes=write,
        energy_pj={k: v + extra.get(k, 0.0) for k, v in result.energy_pj.items()},
        spgemm=result.spgemm + ran,
    )
