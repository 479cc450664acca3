"""Attention statistics: per attention layer, what its segments did and what bounds each phase.

``archsim.simulate`` hands every attention segment (an ``AttentionWork``) and its
:class:`~archsim.stats.SegmentStats` to an :class:`AttentionTally`; the tally sums them per layer
(segments stand for ``repeat`` identical work items), simulates the layer's dense-attention
baseline for the speedup (cheaply: its work items are nearly all alike), and returns one
:class:`AttentionRecord` per layer plus a :class:`~archsim.stats.LayerRecord` for the layer table.

Phases (``dataflows.attention.PHASE_TAGS``) and the resources they use:

========  =====================================  ============================
phase     compute                                DRAM traffic (DMA port)
========  =====================================  ============================
estimate  PE array and vector unit: the pattern's  Q, K (or pooled / label-cache
          scores (``attention_estimate``)         copies), stored scores
qk        PE array: Sᵀ = K·Qᵀ                     Qᵀ tiles, K rows
softmax   vector unit: ROWMAX/RESCALE/EXP/NORM    element masks of partial blocks
pv        PE array: Oᵀ += Vᵀ·Pᵀ                   Vᵀ rows
output    —                                      Oᵀ stores
========  =====================================  ============================

A layer's backward (training; ``dataflows.attention_backward``) is a record of its own,
``<layer>.backward`` with phase ``backward``, on the same phases: ``qk`` the recompute of S,
``softmax`` the statistics, P, dS and the D pass, ``pv`` the gradient GEMMs (dP, dV, dK, dQ),
``output`` the dK/dV stores and dQ adds; its speedup is over a dense backward.

A phase is *bound* by the resource with the most busy cycles in it: ``pe_array`` or ``vector``
(compute) or ``dram`` (the DMA port, i.e. Q/K/V/mask bandwidth and latency); ``none`` for a
phase with no work (the estimate of a static pattern). The estimate runs
in segments of its own, so ``phase_cycles["estimate"]`` is their exact cycles; the other phases
overlap in time, so the rest of the layer's cycles is split in proportion to each phase's
bounding busy cycles; the split adds up to ``cycles``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from archsim.stats import LayerRecord, SegmentStats
from dataflows.attention import (
    TAG_EST,
    TAG_K,
    TAG_OUT,
    TAG_Q,
    TAG_SOFTMAX,
    TAG_V,
    attention_macs,
    attention_segments,
    dense_reference,
    plan_attention,
)
from dataflows.attention_backward import backward_macs, backward_segments
from dataflows.isa import Unit
from workloads.spec import AttentionOp, DenseAttention, HardwareSpec

__all__ = ["AttentionRecord", "AttentionTally", "PHASES", "write_csv", "attention_table"]

PHASES = ("estimate", "qk", "softmax", "pv", "output")


@dataclass(frozen=True, slots=True)
class AttentionRecord:
    """One attention layer (all work items, repeats included).

    Attributes
    ----------
    density, block_density
        Attending (query, key) pairs and non-empty mask blocks, as fractions of all.
    blocks_total, blocks_executed, blocks_skipped, blocks_partial
        Key-block visits of the work items: of the dense grid (every work item × every key
        block), those executed, those skipped, and the executed ones that loaded a mask.
    macs_executed, macs_dense
        PE-array MACs of the attention itself (QKᵀ and PV of the visited blocks), and those of
        dense attention (every query × every key).
    macs_estimate, estimate_bytes
        PE-array MACs and DRAM bytes (read and written) of the pattern's estimation work
        (0 for static patterns), reported apart from ``macs_executed``.
    kv_bytes, q_bytes, mask_bytes, out_bytes
        DRAM bytes: K and V rows read, Qᵀ tiles read, element masks read, Oᵀ written. A
        backward row counts under ``kv_bytes`` every load of its recompute and gradient GEMMs
        but the Q rows (Kᵀ, Vᵀ and K tiles, dO, dOᵀ and Qᵀ rows), under ``mask_bytes`` also the
        statistics and the D pass's loads, and under ``out_bytes`` dKᵀ, dVᵀ and the dQ adds
        (read and written back).
    cycles, dense_cycles, speedup
        This layer's cycles, those of dense (non-causal, unmasked) attention of the same shape
        on the same hardware, and their ratio.
    busy
        ``{phase: {resource: busy cycles}}`` with resources ``pe_array``, ``vector``, ``dram``.
    bound
        ``{phase: resource}``: the resource with the most busy cycles in each phase.
    bound_overall
        The resource with the most busy cycles over the whole layer.
    phase_cycles
        ``cycles`` split over the phases: the estimate's segments exactly, the rest in
        proportion to the other phases' bounding busy cycles.
    """

    layer: str
    phase: str
    pattern: str
    batch: int
    heads: int
    kv_heads: int
    q_len: int
    kv_len: int
    head_dim: int
    block_size: int
    density: float
    block_density: float
    blocks_total: int
    blocks_executed: int
    blocks_skipped: int
    blocks_partial: int
    macs_executed: int
    macs_dense: int
    macs_estimate: int
    estimate_bytes: int
    kv_bytes: int
    q_bytes: int
    mask_bytes: int
    out_bytes: int
    cycles: int
    dense_cycles: int
    speedup: float
    busy: dict[str, dict[str, int]]
    bound: dict[str, str]
    bound_overall: str
    phase_cycles: dict[str, int]

    def as_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.__slots__}

    def flat(self) -> dict:
        """One CSV row: nested maps flattened to ``busy_<phase>_<resource>`` etc."""
        row = {k: v for k, v in self.as_dict().items() if not isinstance(v, dict)}
        for phase, units in self.busy.items():
            for unit, cycles in units.items():
                row[f"busy_{phase}_{unit}"] = cycles
        row.update({f"bound_{p}": r for p, r in self.bound.items()})
        row.update({f"cycles_{p}": c for p, c in self.phase_cycles.items()})
        return row


@dataclass
class _Layer:
    """Running sums of one attention layer's segments."""

    op: AttentionOp
    pattern: str
    density: float
    block_density: float
    position: int
    backward: bool = False
    cycles: int = 0
    blocks: int = 0
    skipped: int = 0
    partial: int = 0
    macs: int = 0
    macs_dense: int = 0
    macs_est: int = 0
    reads: dict[int, int] = field(default_factory=lambda: dict.fromkeys(range(6), 0))
    writes: dict[int, int] = field(default_factory=lambda: dict.fromkeys(range(6), 0))
    pe: dict[int, int] = field(default_factory=lambda: dict.fromkeys(range(6), 0))
    dma: dict[int, int] = field(default_factory=lambda: dict.fromkeys(range(6), 0))
    vec: int = 0
    vec_est: int = 0
    est_cycles: int = 0
    units: list[int] = field(default_factory=lambda: [0, 0, 0])


def _busy(layer: _Layer) -> dict[str, dict[str, int]]:
    pe, dma = layer.pe, layer.dma
    return {
        "estimate": {"pe_array": pe[TAG_EST], "vector": layer.vec_est, "dram": dma[TAG_EST]},
        "qk": {"pe_array": pe[TAG_K], "dram": dma[TAG_Q] + dma[TAG_K]},
        "softmax": {"vector": layer.vec, "dram": dma[TAG_SOFTMAX]},
        "pv": {"pe_array": pe[TAG_V], "dram": dma[TAG_V]},
        "output": {"dram": dma[TAG_OUT]},
    }


def _split(total: int, weights: dict[str, int]) -> dict[str, int]:
    """``total`` split in proportion to ``weights`` (integers adding up to ``total``)."""
    mass = sum(weights.values())
    if not mass:
        return dict.fromkeys(weights, 0)
    out = {k: total * w // mass for k, w in weights.items()}
    top = max(weights, key=weights.get)
    out[top] += total - sum(out.values())
    return out


def _phase_cycles(layer: _Layer, busy: dict[str, dict[str, int]]) -> dict[str, int]:
    """The estimate's own segments' cycles, then the rest split over the attention phases."""
    rest = {p: max(units.values()) for p, units in busy.items() if p != "estimate"}
    return {"estimate": layer.est_cycles, **_split(layer.cycles - layer.est_cycles, rest)}


class AttentionTally:
    """Collects attention segments during ``simulate`` and turns them into records.

    Parameters
    ----------
    hw
        The hardware (for the dense baselines).
    run
        ``run(segment) -> SegmentStats``: simulates a segment, with the caller's cache.
    """

    def __init__(self, hw: HardwareSpec, run: Callable[[object], SegmentStats]) -> None:
        self.hw, self.run = hw, run
        self.layers: dict[str, _Layer] = {}
        self._dense: dict[AttentionOp, int] = {}
        self._programs: dict = {}

    def add(self, segment, stats: SegmentStats, position: int) -> None:
        """Count one segment (run ``segment.repeat`` times); ``position`` orders the layer rows."""
        work, r = segment.work, segment.repeat
        layer = self.layers.get(work.layer)
        if layer is None:
            layer = self.layers[work.layer] = _Layer(
                work.op, work.pattern, work.density, work.block_density, position, work.backward
            )
        layer.cycles += stats.cycles * r
        layer.blocks += work.blocks * r
        layer.skipped += work.skipped_blocks * r
        layer.partial += work.partial_blocks * r
        layer.macs_dense += work.macs_dense * r
        for tag, ts in stats.tasks.items():
            if tag == TAG_EST:
                layer.macs_est += ts.macs * r
            else:
                layer.macs += ts.macs * r
            layer.reads[tag] += ts.dram_read_bytes * r
            layer.writes[tag] += ts.dram_write_bytes * r
            layer.pe[tag] += ts.pe_busy_cycles * r
            layer.dma[tag] += ts.dma_busy_cycles * r
        if work.estimate:
            layer.vec_est += stats.busy[Unit.VEC] * r
            layer.est_cycles += stats.cycles * r
        else:
            layer.vec += stats.busy[Unit.VEC] * r
        for u in Unit:
            layer.units[u] += stats.busy[u] * r

    def _dense_cycles(self, op: AttentionOp, backward: bool) -> int:
        """Cycles of dense attention of ``op``'s shape: its forward, or its backward."""
        ref = dense_reference(op).model_copy(update={"name": "dense"})
        if (ref, backward) not in self._dense:
            if backward:
                plan = plan_attention(ref, self.hw)
                segments = backward_segments("dense", plan, self.hw, self._programs)
            else:
                segments = attention_segments("dense", ref, self.hw, self._programs)
            self._dense[ref, backward] = sum(self.run(s).cycles * s.repeat for s in segments)
        return self._dense[ref, backward]

    def _dense_run_macs(self, layer: _Layer) -> int:
        """MACs the layer executes in the dense run (``--compare-dense``: the pattern removed,
        ``causal`` kept), for ``SimResult.mac_bound``."""
        op = layer.op
        if isinstance(op.pattern, DenseAttention):
            return layer.macs + layer.macs_est  # the dense run is this run
        if not op.causal:
            return layer.macs_dense  # every query × every key, as the dense run executes
        # Causal: the dense run visits the blocks up to the diagonal, whole.
        plan = plan_attention(op.model_copy(update={"pattern": DenseAttention()}), self.hw)
        if layer.backward:
            return backward_macs(plan)
        per_visits: dict[int, int] = {}  # work items of one query block share their visits
        total = 0
        for item in plan.items:
            rows = per_visits.get(id(item.blocks))
            if rows is None:
                rows = per_visits[id(item.blocks)] = int(item.blocks.rows.sum())
            total += attention_macs(rows, op.head_dim, item.cols, None)
        return total * op.repeat

    def records(self) -> tuple[AttentionRecord, ...]:
        out = []
        for name, layer in self.layers.items():
            op = layer.op
            busy = _busy(layer)
            bound = {phase: max(units, key=units.get) if any(units.values()) else "none"
                     for phase, units in busy.items()}
            names = ("dram", "pe_array", "vector")
            overall = names[max(range(3), key=lambda u: layer.units[u])]
            dense = self._dense_cycles(op, layer.backward)  # its segments count op.repeat
            out.append(
                AttentionRecord(
                    layer=name,
                    phase="backward" if layer.backward else op.phase,
                    pattern=layer.pattern,
                    batch=op.batch,
                    heads=op.heads,
                    kv_heads=op.groups,
                    q_len=op.queries,
                    kv_len=op.kv_len,
                    head_dim=op.head_dim,
                    block_size=op.block_size,
                    density=layer.density,
                    block_density=layer.block_density,
                    blocks_total=layer.blocks + layer.skipped,
                    blocks_executed=layer.blocks,
                    blocks_skipped=layer.skipped,
                    blocks_partial=layer.partial,
                    macs_executed=layer.macs,
                    macs_dense=layer.macs_dense,
                    macs_estimate=layer.macs_est,
                    estimate_bytes=layer.reads[TAG_EST] + layer.writes[TAG_EST],
                    kv_bytes=layer.reads[TAG_K] + layer.reads[TAG_V],
                    q_bytes=layer.reads[TAG_Q],
                    mask_bytes=layer.reads[TAG_SOFTMAX],
                    out_bytes=layer.writes[TAG_OUT] + layer.reads[TAG_OUT],
                    cycles=layer.cycles,
                    dense_cycles=dense,
                    speedup=dense / layer.cycles if layer.cycles else 0.0,
                    busy=busy,
                    bound=bound,
                    bound_overall=overall,
                    phase_cycles=_phase_cycles(layer, busy),
                )
            )
        return tuple(out)

    def layer_records(self, records: list[LayerRecord]) -> list[LayerRecord]:
        """``records`` with one row per attention layer inserted where its first segment ran."""
        rows = []
        for name, layer in self.layers.items():
            op = layer.op
            rows.append(
                (
                    layer.position,
                    LayerRecord(
                        name=name,
                        layer=name,
                        phase="backward" if layer.backward else op.phase,
                        m=op.queries,
                        k=op.head_dim,
                        n=op.kv_len,
                        sparsity=f"attention: {layer.pattern}",
                        repeat=op.repeat,
                        cycles=layer.cycles,
                        macs_executed=layer.macs + layer.macs_est,
                        macs_dense_equivalent=layer.macs_dense,
                        dram_read_bytes=sum(layer.reads.values()),
                        dram_write_bytes=sum(layer.writes.values()),
                        pe_busy_cycles=layer.pe[TAG_K] + layer.pe[TAG_V] + layer.pe[TAG_EST],
                        tiling=f"{op.block_size}-key blocks",
                        macs_dense_run=self._dense_run_macs(layer),
                    ),
                )
            )
        out = list(records)
        for position, _, row in sorted(((p, i, r) for i, (p, r) in enumerate(rows)), reverse=True):
            out.insert(position, row)
        return out


def write_csv(fh, records: tuple[AttentionRecord, ...]) -> None:
    """``attention.csv``: one flat row per attention layer (sparsity vs speedup, for plots)."""
    import csv

    rows = [rec.flat() for rec in records]
    writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["layer"])
    writer.writeheader()
    writer.writerows(rows)


def attention_table(records: tuple[AttentionRecord, ...]):
    """A rich table of the attention layers: sparsity, work, traffic, cycles, bounds, speedup."""
    from rich import box
    from rich.table import Table

    table = Table(
        title="attention layers vs dense attention of the same shape",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        caption="skip: key blocks skipped; split/bound per phase estimate·QKᵀ·softmax·PV (D = "
        "DRAM port, P = PE array, V = vector unit, - = no work); full numbers in results.json / "
        "attention.csv",
    )
    letter = {"dram": "D", "pe_array": "P", "vector": "V", "none": "-"}
    rows = []
    for r in records:
        split = "/".join(f"{100 * r.phase_cycles[p] / max(r.cycles, 1):.0f}" for p in PHASES[:4])
        rows.append(
            (
                r.layer,
                r.pattern + (f" ({r.phase})" if r.phase in ("decode", "backward") else ""),
                f"{r.density:.1%}",
                f"{r.blocks_skipped / max(r.blocks_total, 1):.0%}",
                _bytes(r.kv_bytes),
                _count(r.cycles),
                split,
                "".join(letter[r.bound[p]] for p in PHASES[:4]),
                f"{r.speedup:.2f}x",
            )
        )
    heads = ("layer", "pattern", "dens.", "skip", "KV", "cycles", "split %", "bound", "speedup")
    for i, col in enumerate(heads):
        if i < 2:  # names wrap; the numbers keep their full width
            table.add_column(col, overflow="fold", ratio=1)
        else:
            width = max([len(col)] + [len(row[i]) for row in rows])
            table.add_column(col, justify="right", no_wrap=True, min_width=width)
    for row in rows:
        table.add_row(*row)
    return table


def _count(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


def _bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n}B"
