"""The dataflow scheduler: a workload becomes a sequence of tile programs (segments).

Pipeline: layers (``workloads.layers.expand``) → GEMM tasks per phase (``lowering``) → tiling per
task (``tiling``) → segments, each a :class:`~dataflows.program.Segment` of a
:class:`~dataflows.program.Program`. Segments run one after the
other with a barrier between them (a layer needs the previous layer's output); inside a segment
the three units overlap as the instructions' completion-count dependencies allow.

SAT's dataflow optimizations are switchable passes (``WorkloadSpec.schedule``):

* ``interleave`` — a layer's independent backward GEMMs (BP and WG) share one segment, their
  tiles merged in proportion to their lengths, so one GEMM's DMA hides behind the other's compute
  and the pipeline fills and drains once instead of twice. Sharing the ping-pong slots can also
  cost (two GEMMs in flight hold both accumulator slots), so the pass keeps the interleaved
  program only where its exact cycle count (``cost.program_cycles``) beats running them apart.
* ``pregenerate_sparse_weights`` — a first segment compresses every pruned weight copy (FF and BP
  masks) once per iteration on the vector unit and writes it back compressed; GEMMs then load
  compressed tiles. Off, each use loads dense weights and compresses them on chip.
* ``offline_tiling`` — tile sizes, loop order and operand orientation come from a cost-model
  search (``tiling.search_tiling``) instead of the largest-tile heuristic.
* ``double_buffering`` — two slots per buffer and stores deferred by one tile step, so loads of
  the next tile overlap the current compute.

Identical segments (same shapes, sparsity and tiling) are built once and shared, which is what
keeps a ResNet-50 training iteration fast to simulate.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from fractions import Fraction
from functools import lru_cache
from math import lcm
from operator import attrgetter

from dataflows.attention_estimate import attention_layer_segments
from dataflows.cost import (
    OTHER_UNITS,
    latencies,
    latency,
    program_cycles,
    shape_counts,
    shape_index,
    shape_of,
    timeline,
    transfer_bytes,
)
from dataflows.isa import SLOTS_PER_BUFFER, ConvAddress, Instr, Op, Unit
from dataflows.program import Emitter, Program, Schedule, Segment
from dataflows.tiling import (
    Tiling,
    b_patches,
    bands_per_image,
    chunked,
    conv_chunk,
    conv_group,
    conv_k_per_chunk,
    default_tiling,
    estimate,
    m_tiles,
    m_widths,
    patch_lines,
    pe_cycles,
    search_tilings,
)
from workloads.arith import ceil_div, index_bits
from workloads.layers import expand
from workloads.lowering import GemmTask, lower, lower_layer
from workloads.spec import (
    BufferSpec,
    DramSpec,
    EnergySpec,
    HardwareSpec,
    SchedulePasses,
    SpGEMMEngineSpec,
    WorkloadSpec,
)

__all__ = [
    "DenseMapping",
    "GemmWork",
    "PregenWork",
    "schedule",
    "build_segment",
    "gemm_program",
    "pregen_program",
    "compressed_tile_geometry",
    "tiling_for",
    "ranked_tiling",
    "buffer_slots",
    "compressed_in_dram",
    "canonical_hardware",
    "program_hardware",
    "timing_hardware",
]


@dataclass(frozen=True, slots=True)
class DenseMapping:
    """An N:M GEMM's own dense (masked) mapping, timed exactly when the workload is scheduled.

    The scheduler runs the GEMM dense where this is faster than its sparse mapping (the dense
    fallback, docs/scheduler.md); the results judge the sparse mapping against it
    (docs/results.md). ``cycles``, ``dram_bytes``, ``dma_busy_cycles`` and ``pe_busy_cycles``:
    one run of the dense program; ``sparse_cycles``: one run of the sparse program, plus
    pre-generating its weight when that pass is on (a GEMM that runs dense needs no
    compressed copy).
    """

    cycles: int
    dram_bytes: int
    dma_busy_cycles: int
    pe_busy_cycles: int
    sparse_cycles: int

    @property
    def fallback(self) -> bool:
        return self.cycles < self.sparse_cycles


@dataclass(frozen=True, slots=True)
class GemmWork:
    """What a GEMM segment computes: one or more GEMMs (more than one: their tiles interleave).

    ``program.tags`` index ``tasks`` (and ``tilings``). ``dense`` holds, per task, its
    :class:`DenseMapping` where the task is N:M and the array supports the pattern (else None;
    empty when the caller did not time them).
    """

    tasks: tuple[GemmTask, ...]
    tilings: tuple[Tiling, ...]
    dense: tuple[DenseMapping | None, ...] = ()

    @property
    def tag_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)


@dataclass(frozen=True, slots=True)
class PregenWork:
    """What a pre-generation segment computes: the compressed copies of the pruned weights of
    ``tasks`` (the GEMMs that use them, with their tilings). ``program.tags`` index ``tasks``."""

    tasks: tuple[GemmTask, ...]
    tilings: tuple[Tiling, ...]

    @property
    def tag_names(self) -> tuple[str, ...]:
        return tuple(t.weight for t in self.tasks)


def compressed_tile_geometry(tiling: Tiling, nm: tuple[int, int], hw: HardwareSpec) -> tuple[int, int]:
    """(compressed rows, bytes per row) of one full pre-compressed weight tile in DRAM.

    Tiles are padded to the full array width so every compressed row has the same layout.
    """
    n, m = nm
    cols = hw.array.cols
    return tiling.tk // m * n, cols * hw.data_bytes + ceil_div(cols * index_bits(m), 8)


def _tile_counts(task: GemmTask, tiling: Tiling) -> tuple[int, int, int]:
    """Array tiles along (m, k, n) as executed."""
    m, k, n = tiling.dims(task)
    nmt = len(m_tiles(task, tiling)) if tiling.conv else ceil_div(m, tiling.tm)
    return nmt, ceil_div(k, tiling.tk), ceil_div(n, tiling.tn)


def _buffer_counts(task: GemmTask, tiling: Tiling) -> tuple[int, int, int]:
    """Buffer tiles along (m, k, n): ``kb`` and ``nb`` array tiles each along k and n."""
    nmt, nk, nn = _tile_counts(task, tiling)
    return nmt, ceil_div(nk, tiling.kb), ceil_div(nn, tiling.nb)


def _extent(i: int, tile: int, total: int) -> tuple[int, int]:
    """(first index, length) of tile ``i`` of ``tile`` along a dimension of ``total``."""
    start = i * tile
    return start, min(tile, total - start)


@dataclass(slots=True)  # not frozen: one per tile step, and frozen fields cost 3x to set
class _Step:
    """One buffer tile (mi, ni, ki) of one copy of one task: its loads and its COMPUTEs."""

    tag: int
    copy: int
    mi: int
    ni: int
    ki: int
    last_k: bool


def _same_steps(task: GemmTask, a: Tiling, b: Tiling) -> bool:
    """Whether ``a`` and ``b`` write the same program for ``task``: they differ at most in loop
    order, and one of m and n has a single buffer tile, so both orders visit the same tiles in
    the same sequence (the writers read the order nowhere else)."""
    if replace(a, order=b.order) != b:
        return False
    nmt, _, nnb = _buffer_counts(task, a)
    return a.order == b.order or nmt == 1 or nnb == 1


def _steps(tag: int, task: GemmTask, tiling: Tiling) -> Iterator[_Step]:
    nmt, nk, nn = _buffer_counts(task, tiling)
    for copy in range(task.copies):
        outer = ((mi, ni) for mi in range(nmt) for ni in range(nn)) if tiling.order == "mnk" else (
            (mi, ni) for ni in range(nn) for mi in range(nmt))
        for mi, ni in outer:
            for ki in range(nk):
                yield _Step(tag, copy, mi, ni, ki, ki == nk - 1)


class _GemmWriter:
    """Emits the instructions of one task's buffer tiles through a shared emitter.

    A buffer tile's A is ``kb`` k-chunks of ``tm`` rows (chunk ``c`` from slot row ``c·tm``),
    its B ``kb × nb`` sub-tiles (sub-tile ``(c, j)`` from slot row ``(c·nb + j)·b_rows``) and
    its outputs ``nb`` n-chunks of ``tm`` accumulator rows (chunk ``j`` from row ``j·tm``).
    """

    def __init__(self, em: Emitter, stores: _DeferredStore, tag: int, task: GemmTask,
                 tiling: Tiling, hw: HardwareSpec) -> None:
        self.em, self.stores, self.tag, self.task, self.t, self.hw = em, stores, tag, task, tiling, hw
        self.m, self.k, self.n = tiling.dims(task)
        _, self.nk, self.nn = _tile_counts(task, tiling)
        self.nm = task.nm if tiling.sparse else (0, 0)
        db, copies = hw.data_bytes, task.copies
        self.db = db
        # (first index, length) of every array tile along k and n, computed once.
        self.k_ext = [_extent(i, tiling.tk, self.k) for i in range(self.nk)]
        self.n_ext = [_extent(i, tiling.tn, self.n) for i in range(self.nn)]
        self.m_ext = m_tiles(task, tiling)
        self.a = self._alloc_a()
        # Outputs are final (no partial sum is ever read back): they leave requantized, at
        # operand width (docs/isa.md, "Requantizing stores").
        self.c = em.dram.alloc(f"{task.name}.C", self.m * copies, self.n, db)
        self.b_rows = tiling.tk
        if tiling.sparse and tiling.compressed_in_dram:
            kc, self.row_bytes = compressed_tile_geometry(tiling, task.nm, hw)
            self.b_rows = kc
            tiles = self.nk * self.nn * copies
            self.b = em.dram.alloc(f"{task.name}.B", kc * tiles, hw.array.cols, db, "nm_tiles",
                                   tiles * kc * self.row_bytes)
        else:
            self.b = self._alloc_b()

    def _alloc_b(self):
        return self.em.dram.alloc(f"{self.task.name}.B", self.k * self.task.copies, self.n, self.db)

    def _alloc_a(self):
        return self.em.dram.alloc(f"{self.task.name}.A", self.m * self.task.copies, self.k, self.db)

    def _a_operand(self, s: _Step, c: int, kc: int) -> tuple[tuple, dict]:
        """The A part a COMPUTE of local k-chunk ``c`` (array tile ``kc``) reads, and its A
        fields: k-chunk ``c`` of ``tm`` rows from slot row ``c·tm``."""
        return (c,), {"a_row": c * self.t.tm}

    def _chunks(self, first: int, span: int, total: int) -> range:
        """Array-tile indices of buffer tile ``first`` (``span`` per buffer tile)."""
        return range(first * span, min((first + 1) * span, total))

    def load_a(self, s: _Step, ks: range, b_loads) -> tuple[int, bool]:
        """The A tile's slot and whether it was resident; on a miss its chunks are loaded, each
        followed by ``b_loads(c)`` (so the first COMPUTE waits for its own operands only, and a
        one-tile program loads A, then B)."""
        db, t = self.db, self.t
        m0, tm = self.m_ext[s.mi]
        key = (self.tag, s.copy, s.mi, s.ki)
        buf = self.em.buffers["A"]
        slot_i, hit = buf.find_or_claim(key)
        if not hit:
            buf.place(slot_i)
            for c, kc in enumerate(ks):
                k0, tk = self.k_ext[kc]
                pitch = t.tk if len(ks) > 1 and tk < t.tk else 0
                self.em.emit_transfer(
                    Op.LOAD_A, self.tag, (), (buf.part(slot_i, (c,)),), slot=slot_i,
                    addr=self.a.addr + ((s.copy * self.m + m0) * self.k + k0) * db,
                    stride=self.k * db, rows=tm, cols=tk, k=pitch, a_row=c * t.tm)
                b_loads(c)
            buf.slots[slot_i].resident = key
        return slot_i, hit

    def claim_b(self, s: _Step) -> tuple[int, bool]:
        buf = self.em.buffers["B"]
        key = (self.tag, s.copy, s.ki, s.ni)
        slot_i, hit = buf.find_or_claim(key)
        if not hit:
            buf.place(slot_i)
            buf.slots[slot_i].resident = key
        return slot_i, hit

    def _b_operand(self, s: _Step, c: int, kc: int, j: int, nj: int) -> tuple[tuple, dict]:
        """The B part a COMPUTE of sub-tile (c, j) reads, and its B fields."""
        return (c, j), {"b_row": (c * self.t.nb + j) * self.b_rows}

    def load_b(self, s: _Step, slot_i: int, c: int, kc: int, ns: range) -> None:
        """Sub-tiles (c, j) of the B tile in ``slot_i``: array tiles (kc, nj) for nj in ``ns``."""
        part = self.em.buffers["B"].part
        for j, nj in enumerate(ns):
            res = part(slot_i, (c, j))
            b_row = (c * self.t.nb + j) * self.b_rows
            if self.t.sparse and self.t.compressed_in_dram:
                self._load_compressed(s.copy, kc, nj, slot_i, res, b_row)
            else:
                self._load_dense(s.copy, kc, nj, slot_i, res, b_row)

    def _load_compressed(self, copy: int, kc: int, nj: int, slot_i: int, res, b_row: int) -> None:
        nm_n, nm_m = self.nm
        _, tk = self.k_ext[kc]
        tile = (copy * self.nk + kc) * self.nn + nj
        self.em.emit_transfer(Op.LOAD_B, self.tag, (), (res,), slot=slot_i,
                              addr=self.b.addr + tile * self.b_rows * self.row_bytes,
                              stride=self.row_bytes, rows=tk // nm_m * nm_n,
                              cols=self.hw.array.cols, nm_n=nm_n, nm_m=nm_m, b_row=b_row)

    def _load_dense(self, copy: int, kc: int, nj: int, slot_i: int, res, b_row: int) -> None:
        """Dense weights; in N:M mode compressed on chip before use (one sub-tile, at row 0)."""
        db = self.db
        k0, tk = self.k_ext[kc]
        n0, tn = self.n_ext[nj]
        row0 = copy * self.k + k0
        self.em.emit_transfer(Op.LOAD_B, self.tag, (), (res,), slot=slot_i,
                              addr=self.b.addr + (row0 * self.n + n0) * db, stride=self.n * db,
                              rows=tk, cols=tn, b_row=b_row)
        if self.t.sparse:
            nm_n, nm_m = self.nm
            self.em.emit(Op.COMPRESS, self.tag, reads=(res,), writes=(res,), slot=slot_i,
                         rows=tk, cols=tn, nm_n=nm_n, nm_m=nm_m)

    def compute(self, s: _Step, a_slot: int, b_slot: int, ks: range, ns: range) -> None:
        em, t = self.em, self.t
        m0, tm = self.m_ext[s.mi]
        key = ("acc", self.tag, s.copy, s.mi, s.ni)
        acc_buf = em.buffers["C"]
        if s.ki == 0:
            c_slot = acc_buf.claim_free()
            acc_buf.place(c_slot)
        else:
            c_slot = acc_buf.holding(key)
        acc_buf.slots[c_slot].resident = key
        if chunked(t, self.hw):
            self._chunked_computes(s, (a_slot, b_slot, c_slot), ks, ns)
        else:
            self._computes(s, (a_slot, b_slot, c_slot), ks, ns)
        if s.last_k:
            row0, db = s.copy * self.m + m0, self.hw.data_bytes
            # A STORE_C and a COMPUTE never use one accumulator slot at once (they share its
            # read port, docs/isa.md): each store reads, so waits for, every part of the tile.
            # Outputs are final: they leave requantized, at operand width ("Requantizing stores").
            parts = tuple(acc_buf.part(c_slot, (j,)) for j in range(len(ns)))
            for j, nj in enumerate(ns):
                n0, tn = self.n_ext[nj]
                self.stores.defer(self.tag, c_slot, parts, dict(
                    addr=self.c.addr + (row0 * self.n + n0) * db, stride=self.n * db, rows=tm,
                    cols=tn, c_row=j * t.tm, requant=True, shift=self.hw.requant_shift))

    def _b_chunk_rows(self) -> int:
        """Weight slot rows from a chunk's B sub-tile to the next one's (same n-chunk)."""
        return self.t.nb * self.b_rows

    def _steps_of(self, kc: int) -> int:
        """PE steps of array tile ``kc`` along k: its rows, compressed in N:M mode."""
        nm_n, nm_m = self.nm
        _, tk = self.k_ext[kc]
        return tk // nm_m * nm_n if nm_m else tk

    def _computes(self, s: _Step, slots: tuple[int, int, int], ks: range, ns: range) -> None:
        """One COMPUTE per array tile (k-chunk ``c``, n-chunk ``j``) of the buffer tile."""
        em, (a_slot, b_slot, c_slot), tag, t_tm = self.em, slots, self.tag, self.t.tm
        _, tm = self.m_ext[s.mi]
        a_part, b_part, acc_part = (em.buffers[b].part for b in "ABC")
        # What every k-chunk's COMPUTEs share, looked up once (this is the scheduler's innermost
        # loop): the accumulator part and width of each n-chunk. A part made before its first
        # COMPUTE inherits the same slot hazards: COMPUTEs update parts, never the slot.
        nm_n, nm_m = self.nm
        accs = [acc_part(c_slot, (j,)) for j in range(len(ns))]
        widths = [self.n_ext[nj][1] for nj in ns]
        for c, kc in enumerate(ks):
            a_key, a_fields = self._a_operand(s, c, kc)
            a_res = a_part(a_slot, a_key)
            a_row, a_conv = a_fields["a_row"], a_fields.get("conv")
            accumulate, k = s.ki > 0 or c > 0, self._steps_of(kc)
            for j, nj in enumerate(ns):
                acc = accs[j]
                b_key, b_fields = self._b_operand(s, c, kc, j, nj)
                b_res = b_part(b_slot, b_key)
                reads = (a_res, b_res, acc) if accumulate else (a_res, b_res)
                # The weight side's address mode, where it has one, overrides the input's.
                conv = b_fields.get("conv", a_conv)
                em.emit_compute(tag, reads, acc, a_slot, b_slot, c_slot, accumulate, tm,
                                widths[j], k, nm_n, nm_m, a_row, b_fields["b_row"], j * t_tm,
                                conv)

    def _chunked_computes(self, s: _Step, slots: tuple[int, int, int], ks: range,
                          ns: range) -> None:
        """Output-stationary (``tiling.chunked``): one COMPUTE per n-chunk ``j`` covering all
        the buffer tile's k-chunks, which sit ``tm`` input rows and ``nb`` weight sub-tiles
        apart; only the GEMM's last k-chunk may be narrower (``k_last``)."""
        em, (a_slot, b_slot, c_slot) = self.em, slots
        _, tm = self.m_ext[s.mi]
        a_part, b_part, acc_part = (em.buffers[b].part for b in "ABC")
        steps = [self._steps_of(kc) for kc in ks]
        a_keys, a_fields = self._chunked_a(s, ks)
        a_reads = tuple(a_part(a_slot, key) for key in a_keys)
        for j, nj in enumerate(ns):
            acc = acc_part(c_slot, (j,))
            b_ops = [self._b_operand(s, c, kc, j, nj) for c, kc in enumerate(ks)]
            reads = a_reads + tuple(b_part(b_slot, key) for key, _ in b_ops) + (
                (acc,) if s.ki > 0 else ())
            em.emit(Op.COMPUTE, self.tag, reads=reads, writes=(acc,), slot=a_slot, b_slot=b_slot,
                    c_slot=c_slot, accumulate=s.ki > 0, rows=tm, cols=self.n_ext[nj][1],
                    k=steps[0], m=tm, nm_n=self.nm[0], nm_m=self.nm[1], c_row=j * self.t.tm,
                    chunks=len(ks), b_chunk_rows=self._b_chunk_rows(),
                    k_last=steps[-1] if steps[-1] != steps[0] else 0,
                    **a_fields, **b_ops[0][1])

    def _chunked_a(self, s: _Step, ks: range) -> tuple[tuple, dict]:
        """The A parts a chunked COMPUTE reads (one per chunk, in order) and its A fields: the
        chunks sit ``tm`` slot rows apart."""
        ops = [self._a_operand(s, c, kc) for c, kc in enumerate(ks)]
        keys = tuple(dict.fromkeys(key for key, _ in ops))
        return keys, {**ops[0][1], "a_chunk_rows": self.t.tm}

    #: The dimensions along which a buffer tile's loads, COMPUTEs and stores are the previous
    #: one's with their DRAM addresses a fixed stride on, for every full tile but the first and
    #: last (:meth:`write_alone`). A convolution writer's address modes and patches follow
    #: the feature map's lines and images along its pixels, not one stride.
    linear_along = frozenset("kmn")

    def _repeats_along(self, dim: str) -> int | None:
        """Buffer tiles along ``dim`` after which this writer's loads, COMPUTEs and stores repeat
        with their DRAM addresses a fixed stride on (1: from each tile to the next, along
        :attr:`linear_along`); None: they do not."""
        return 1 if dim in self.linear_along else None

    def _moves_per_tile(self, dim: str, buffer: str) -> Fraction:
        """How far the index of a resident tile of ``buffer`` (:data:`_RESIDENT_INDEX`) moves
        per buffer tile along ``dim``: one, where the resident tile is a buffer tile."""
        return Fraction(1)

    def write_alone(self, steps: Iterator[_Step]) -> None:
        """Write ``steps``, this task being its program's only one (so its steps follow each
        other). A long run of k-steps of one output tile — or, where those are few, of output
        tiles along m or n — repeats itself every period of k-steps or tiles (the slots' turn,
        and the writer's own pattern along the dimension) with its addresses and waits a fixed
        amount on each time: once the emitter's state has settled into the period (a few
        periods, built step by step), ``Emitter.repeat`` checks that it repeats and appends the
        rest of the run by arithmetic — the very instructions a step-by-step build emits, at a
        fraction of the cost (docs/scheduler.md, "What scheduling costs"). Stores held back
        (:class:`_DeferredStore`) must repeat too."""
        run = self._run()
        if run is None:
            for s in steps:
                self.step(s)
            return
        em, period = self.em, run.period
        for s in steps:
            self.step(s)
            index = run.index_of(s)
            if index == 0:
                starts = []  # (emitter state, stores held back) at the start of each period
            if (index is None or index < run.first or (index - run.first) % period
                    or index + period > run.last):
                continue
            if len(starts) >= 2:
                times = (run.last - index) // period
                strides = self.stores.strides(starts[-1][1])
                if strides is not None and em.repeat(starts[-2][0], starts[-1][0], times,
                                                     run.moved):
                    self.stores.move(strides, times)
                    for _ in range(times * period * run.steps):
                        next(steps)
                    continue
            if len(starts) < _SETTLING_PERIODS:
                starts.append((em.state(), self.stores.state()))

    def _run(self) -> _Run | None:
        """The run :meth:`write_alone` appends (None if no run is long enough to pay).

        Along k the index is the k-step, up to the last but one (the last may be narrower, and
        stores). Along output tiles it is the m- or n-tile — the inner one of the order, else
        the outer — at the tile's first k-step (the inner one's first, for the outer), up to
        the last tile but one (the last may be narrower)."""
        nmt, nkb, nnb = _buffer_counts(self.task, self.t)
        along_k = self._periodic("k", nkb)
        if along_k is not None:
            return _Run(lambda s: s.ki, nkb - 2, 1, *along_k)
        inner, outer = ((nnb, "n", "ni"), (nmt, "m", "mi")) if self.t.order == "mnk" else (
            (nmt, "m", "mi"), (nnb, "n", "ni"))
        along_inner = self._periodic(inner[1], inner[0])
        if along_inner is not None:
            at = attrgetter(inner[2])
            return _Run(lambda s: None if s.ki else at(s), inner[0] - 2, nkb, *along_inner)
        along_outer = self._periodic(outer[1], outer[0])
        if along_outer is not None:
            at, first = attrgetter(outer[2]), attrgetter(inner[2])
            return _Run(lambda s: None if s.ki or first(s) else at(s), outer[0] - 2,
                        nkb * inner[0], *along_outer)
        return None

    def _periodic(self, dim: str, tiles: int) -> tuple[int, int, Callable] | None:
        """``(period, first, moved)`` of a run along ``dim`` of ``tiles`` buffer tiles (see
        :class:`_Run`): its period is a whole number of the slots' turns and of the writer's
        own pattern (:meth:`_repeats_along`). None where the writer does not repeat along
        ``dim``, or the run is too short to settle and pay: a period of one turn needs
        :data:`_SETTLING_PERIODS` of them; a longer one needs three, from the first start of
        the writer's pattern two turns in (settled, mostly: a slot's hazards fold in those of
        the tile it held before, so the state holds the tiles before the run until every slot
        has been refilled in it, and then the next start is tried)."""
        pattern, turn = self._repeats_along(dim), self.em.nslots
        if pattern is None:
            return None
        period = lcm(turn, pattern)
        first = 0 if period == turn else ceil_div(2 * turn, pattern) * pattern
        if tiles - 2 < max(_SETTLING_PERIODS * turn, first + 3 * period):
            return None
        moves = {buffer: (at, int(period * self._moves_per_tile(dim, buffer)))
                 for buffer, at in _RESIDENT_INDEX[dim].items()}
        return period, first, self._moved_along(moves)

    @staticmethod
    def _moved_along(moves: dict[str, tuple[int, int]]) -> Callable:
        """``moved`` for a run whose resident tiles' index at ``moves[buffer][0]`` moves by
        ``moves[buffer][1]`` a period (:data:`_RESIDENT_INDEX`); other buffers' tiles stay."""
        def moved(buffer: str, tile: tuple, periods: int) -> tuple:
            at, step = moves.get(buffer, (None, 0))
            if at is None:
                return tile
            return (*tile[:at], tile[at] + periods * step, *tile[at + 1:])
        return moved

    def step(self, s: _Step) -> None:
        ks = self._chunks(s.ki, self.t.kb, self.nk)
        ns = self._chunks(s.ni, self.t.nb, self.nn)
        b_slot, b_hit = self.claim_b(s)

        def b_loads(c: int) -> None:
            if not b_hit:
                self.load_b(s, b_slot, c, ks[c], ns)

        a_slot, a_hit = self.load_a(s, ks, b_loads)
        if a_hit:
            for c in range(len(ks)):
                b_loads(c)
        self.stores.flush()  # the previous tile's stores go after this tile's loads
        self.compute(s, a_slot, b_slot, ks, ns)
        if self.em.nslots == 1:
            self.stores.flush()


#: Periods of a run built step by step at most while the emitter's state settles (its slots
#: still hold the hazards of the tiles before the run) before it is left stepped; a run
#: shorter than this many periods is not tried.
_SETTLING_PERIODS = 4


@dataclass(frozen=True, slots=True)
class _Run:
    """A run of tile steps :meth:`_GemmWriter.write_alone` appends by arithmetic.

    ``index_of(step)`` is a step's index in the run where a period may start after it (None:
    not there), ``last`` the last index a period may end at and ``steps`` the steps an index
    spans. Periods of ``period`` indices start at ``first`` and every ``period`` on;
    ``moved(buffer, tile, periods)`` is a resident tile ``periods`` periods on."""

    index_of: Callable
    last: int
    steps: int
    period: int
    first: int
    moved: Callable


#: Where a run's index sits in each buffer's resident tiles, by the dimension it runs along
#: (A: (tag, copy, mi, ki); B: (tag, copy, ki, ni); C: ("acc", tag, copy, mi, ni); a
#: convolution writer's patches: its chunk in place of ki or ni); other buffers' tiles stay.
_RESIDENT_INDEX = {"k": {"A": 3, "B": 2}, "m": {"A": 2, "C": 3}, "n": {"B": 3, "C": 4}}


class _ConvWriter(_GemmWriter):
    """A convolution whose A rows are generated on chip (``Tiling.conv``, docs/scheduler.md).

    A is the feature map, NHWC: ``batch·in_h·in_w`` rows of ``channels`` operands. Array tile
    ``kc`` along k is channel chunk ``kc // (kh·kw)`` (``tk`` channels) at kernel offset
    ``kc % (kh·kw)`` (row-major (kh, kw)), so B's rows are ordered (chunk, kh, kw, channel).
    A buffer tile's A is, per channel chunk, the patch of whole input lines its m-tile reads
    (one slot row per pixel), loaded once; each kernel offset's COMPUTE reads it through the
    convolution address mode, which also supplies the zero rows of the padding.
    """

    # Along n only the weights move (plain rows); the patches and address modes follow the
    # m-tile's band and the k-step's kernel offsets.
    linear_along = frozenset("n")

    def _repeats_along(self, dim: str) -> int | None:
        """Along m, every image has the same bands of output lines (``tiling.m_tiles``), so
        the patches, address modes and rows repeat image after image, a feature map on in
        DRAM: after an image's bands, or from tile to tile where a tile is whole images."""
        if dim != "m":
            return super()._repeats_along(dim)
        return bands_per_image(self.task.conv, self.t.tm) or 1

    def _alloc_a(self):
        c = self.task.conv
        return self.em.dram.alloc(f"{self.task.name}.A", c.batch * c.in_h * c.in_w, c.channels,
                                  self.db)

    def _patch(self, mi: int) -> tuple[int, int, int]:
        """(first image, first input line in it, slot rows) of m-tile ``mi``'s patch."""
        n0, lo, lines = patch_lines(self.task, *self.m_ext[mi])
        return n0, lo, lines * self.task.conv.in_w

    def load_a(self, s: _Step, ks: range, b_loads) -> tuple[int, bool]:
        """The patches of the buffer tile's channel chunks, each followed by the B sub-tiles of
        its kernel offsets (see :meth:`_GemmWriter.load_a`). A buffer tile of some kernel
        offsets of one chunk finds the chunk's patch resident when the previous one loaded it."""
        conv, t, kk = self.task.conv, self.t, conv_k_per_chunk(self.task, self.t.tk)
        width = conv_chunk(self.task, t.tk)[1]
        chunks = range(ks[0] // kk, ks[-1] // kk + 1)
        key = (self.tag, s.copy, s.mi, chunks[0])
        buf = self.em.buffers["A"]
        slot_i, hit = buf.find_or_claim(key)
        if not hit:
            buf.place(slot_i)
            n0, lo, rows = self._patch(s.mi)
            for j, chunk in enumerate(chunks):
                self.em.emit_transfer(
                    Op.LOAD_A, self.tag, (), (buf.part(slot_i, (j,)),), slot=slot_i,
                    addr=self.a.addr + ((n0 * conv.in_h + lo) * conv.in_w * conv.channels
                                        + chunk * width) * self.db,
                    stride=conv.channels * self.db, rows=rows, cols=width, a_row=j * rows)
                for c, kc in enumerate(ks):
                    if kc // kk == chunk:
                        b_loads(c)
            buf.slots[slot_i].resident = key
        return slot_i, hit

    def _a_operand(self, s: _Step, c: int, kc: int) -> tuple[tuple, dict]:
        conv, kk = self.task.conv, conv_k_per_chunk(self.task, self.t.tk)
        _, lo, rows = self._patch(s.mi)
        m0, _ = self.m_ext[s.mi]
        j = kc // kk - s.ki * self.t.kb // kk  # the chunk's place among the tile's patches
        # Several kernel offsets per COMPUTE where the channels are fewer than tk (g > 1).
        g = conv_group(self.task, self.t.tk)
        first = kc % kk * g
        dh, dw = divmod(first, conv.kw)
        grouped = {} if g == 1 else dict(group=min(g, conv.kh * conv.kw - first), kw=conv.kw,
                                         kw0=dw)
        address = ConvAddress(conv.stride, conv.in_h, conv.in_w, conv.out_h, conv.out_w,
                              (m0 // conv.out_w) % conv.out_h, lo, dh - conv.padding,
                              dw - conv.padding, **grouped)
        return (j,), {"a_row": j * rows, "conv": address}


    def _chunked_a(self, s: _Step, ks: range) -> tuple[tuple, dict]:
        """Output-stationary: the chunks are the groups of kernel offsets (and channel chunks)
        one after the other from the first chunk's, which the address mode walks itself
        (``isa.os_conv_chunks``): each channel chunk's patch ``rows`` slot rows further."""
        conv, tk = self.task.conv, self.t.tk
        ops = [self._a_operand(s, c, kc) for c, kc in enumerate(ks)]
        keys, fields = tuple(dict.fromkeys(key for key, _ in ops)), ops[0][1]
        g = conv_group(self.task, tk)
        first = ks[0] % conv_k_per_chunk(self.task, tk) * g
        walk = replace(fields["conv"], kh=conv.kh, kw=conv.kw, kh0=first // conv.kw,
                       kw0=first % conv.kw, group=g, chunk_rows=self._patch(s.mi)[2])
        return keys, {**fields, "conv": walk}


class _WgConvWriter(_GemmWriter):
    """A weight-gradient GEMM ``dW = dYᵀ · im2col(X)`` whose B is generated on chip
    (``Tiling.conv_b``, docs/scheduler.md).

    B is X, NHWC. Array tile ``nj`` along n is channel chunk ``nj // (kh·kw)`` (``tn``
    channels) at kernel offset ``nj % (kh·kw)``; along k, array tile ``kc`` is ``tk``
    consecutive output pixels. A buffer tile's B is, per channel chunk, the patch of input
    lines its ``kb·tk`` pixels read, in the weight slot; each COMPUTE preloads its ``tk``
    weight rows from it through the address mode (zero rows for the padding).
    """

    # Along m only dY's rows move (plain); the pixels' patches and address modes follow k, and
    # along n the channel chunks and kernel offsets.
    linear_along = frozenset("m")

    def _repeats_along(self, dim: str) -> int | None:
        """Along n, the buffer tiles walk each channel chunk's kh·kw kernel offsets (``nb`` of
        them a tile, ``nb`` a divisor or a multiple of kh·kw): the address modes and slot
        rows repeat chunk after chunk, the chunk's patch ``tn`` channels on in DRAM."""
        if dim != "n":
            return super()._repeats_along(dim)
        offsets = self.task.conv.kh * self.task.conv.kw
        return offsets // self.t.nb if self.t.nb < offsets else 1

    def _moves_per_tile(self, dim: str, buffer: str) -> Fraction:
        """The resident patches are a tile's first channel chunk's: ``nb`` kernel offsets on
        a tile, a chunk per kh·kw of them."""
        if dim == "n" and buffer == "B":
            return Fraction(self.t.nb, self.task.conv.kh * self.task.conv.kw)
        return super()._moves_per_tile(dim, buffer)

    def _alloc_b(self):
        c = self.task.conv
        return self.em.dram.alloc(f"{self.task.name}.B", c.batch * c.in_h * c.in_w, c.channels,
                                  self.db)

    def _b_chunk_rows(self) -> int:
        return 0  # the address mode's pixels continue from one chunk to the next

    def _chunks_of(self, ni: int) -> range:
        kk, ns = self.task.conv.kh * self.task.conv.kw, self._chunks(ni, self.t.nb, self.nn)
        return range(ns[0] // kk, ns[-1] // kk + 1)

    def claim_b(self, s: _Step) -> tuple[int, bool]:
        buf = self.em.buffers["B"]
        key = (self.tag, s.copy, s.ki, self._chunks_of(s.ni)[0])
        slot_i, hit = buf.find_or_claim(key)
        if not hit:
            buf.place(slot_i)
            buf.slots[slot_i].resident = key
        return slot_i, hit

    def load_b(self, s: _Step, slot_i: int, c: int, kc: int, ns: range) -> None:
        """The patches of the tile's channel chunks, all with the first k-chunk's loads."""
        if c:
            return
        conv, t = self.task.conv, self.t
        n0, lo, rows = b_patches(self.task, t)[s.ki]
        for j, chunk in enumerate(self._chunks_of(s.ni)):
            self.em.emit_transfer(
                Op.LOAD_B, self.tag, (), (self.em.buffers["B"].part(slot_i, (j,)),), slot=slot_i,
                addr=self.b.addr + ((n0 * conv.in_h + lo) * conv.in_w * conv.channels
                                    + chunk * t.tn) * self.db,
                stride=conv.channels * self.db, rows=rows, cols=t.tn, b_row=j * rows)

    def _b_operand(self, s: _Step, c: int, kc: int, j: int, nj: int) -> tuple[tuple, dict]:
        conv, kk = self.task.conv, self.task.conv.kh * self.task.conv.kw
        n0, lo, rows = b_patches(self.task, self.t)[s.ki]
        part = nj // kk - self._chunks_of(s.ni)[0]
        base, address = _pixels_address(conv, self.k_ext[kc][0], n0, lo, nj % kk, b=True)
        return (part,), {"b_row": part * rows + base, "conv": address}


def _pixels_address(conv, p0: int, n0: int, lo: int, offset: int, **mode
                    ) -> tuple[int, ConvAddress]:
    """(slot row offset, address) of the consecutive output pixels from ``p0`` at kernel
    offset ``offset`` (row-major), read from a patch of input lines from line ``lo`` of image
    ``n0`` (:func:`dataflows.tiling.b_patches`); ``mode``: the address's other fields (built
    in, not replaced after: a COMPUTE each)."""
    line, ow0 = divmod(p0, conv.out_w)
    image, oh0 = divmod(line, conv.out_h)
    # The rule counts images from the first pixel's: a later image starts its patch rows
    # (image - n0)·in_h lines after the patch's first line (lo of image n0).
    base = ((image - n0) * conv.in_h - lo) * conv.in_w if image > n0 else 0
    dh, dw = divmod(offset, conv.kw)
    return base, ConvAddress(conv.stride, conv.in_h, conv.in_w, conv.out_h, conv.out_w, oh0,
                             lo if image == n0 else 0, dh - conv.padding, dw - conv.padding, ow0,
                             **mode)


class _WgTransposeWriter(_GemmWriter):
    """A weight-gradient GEMM run swapped, ``dWᵀ = im2col(X)ᵀ · dY``, whose A is generated on
    chip by the transposing read (``Tiling.conv_t``, docs/scheduler.md).

    A is X, NHWC; B is dY (pixels × C_out), loaded plainly. Along m, rows are ordered (channel
    chunk of ``tk``, kh, kw, channel), an m-tile whole chunks; along k, array tile ``kc`` is
    ``tk`` consecutive output pixels. A buffer tile's A is, per channel chunk of its m-tile,
    the patch of input lines its ``kb·tk`` pixels read (one part: every COMPUTE walks all
    its chunks); each COMPUTE streams the transposed blocks of its pixels.
    """

    # Along m the channel chunks' patches move by whole chunks, along n dY's columns (plain);
    # the pixels' patches and address modes follow k.
    linear_along = frozenset("mn")

    def _alloc_a(self):
        c = self.task.conv
        return self.em.dram.alloc(f"{self.task.name}.A", c.batch * c.in_h * c.in_w, c.channels,
                                  self.db)

    def _chunks_of(self, mi: int) -> range:
        m0, tm = self.m_ext[mi]
        per = self.task.conv.kh * self.task.conv.kw * self.t.tk
        return range(m0 // per, (m0 + tm) // per)

    def load_a(self, s: _Step, ks: range, b_loads) -> tuple[int, bool]:
        """The patches of the m-tile's channel chunks, then the tile's B sub-tiles."""
        conv, t, db = self.task.conv, self.t, self.db
        key = (self.tag, s.copy, s.mi, s.ki)
        buf = self.em.buffers["A"]
        slot_i, hit = buf.find_or_claim(key)
        if not hit:
            buf.place(slot_i)
            n0, lo, rows = b_patches(self.task, t)[s.ki]
            for j, chunk in enumerate(self._chunks_of(s.mi)):
                self.em.emit_transfer(
                    Op.LOAD_A, self.tag, (), (buf.part(slot_i, (0,)),), slot=slot_i,
                    addr=self.a.addr + ((n0 * conv.in_h + lo) * conv.in_w * conv.channels
                                        + chunk * t.tk) * db,
                    stride=conv.channels * db, rows=rows, cols=t.tk, a_row=j * rows)
            for c in range(len(ks)):
                b_loads(c)
            buf.slots[slot_i].resident = key
        return slot_i, hit

    def _a_operand(self, s: _Step, c: int, kc: int) -> tuple[tuple, dict]:
        conv = self.task.conv
        n0, lo, rows = b_patches(self.task, self.t)[s.ki]
        base, address = _pixels_address(conv, self.k_ext[kc][0], n0, lo, 0, t=True, kh=conv.kh,
                                        kw=conv.kw, chunk_rows=rows)
        return (0,), {"a_row": base, "conv": address}


class _DeferredStore:
    """The STORE_Cs of the last finished output tile, held back until the next tile's loads are
    issued (so they are not queued behind them on the DMA); then the accumulator slot is free."""

    def __init__(self, em: Emitter) -> None:
        self.em = em
        self.pending: list = []

    def defer(self, tag: int, c_slot: int, parts: tuple, fields: dict) -> None:
        self.pending.append((Op.STORE_C, tag, parts, dict(slot=c_slot, **fields)))

    def state(self) -> tuple:
        """The stores held back as values (their accumulator parts by slot and key) but their
        DRAM addresses, which are the second element (``_GemmWriter.write_alone``)."""
        held = tuple((op, tag, self._part_keys(fields["slot"], reads), {**fields, "addr": None})
                     for op, tag, reads, fields in self.pending)
        return held, tuple(fields["addr"] for *_, fields in self.pending)

    def _part_keys(self, slot: int, reads: tuple) -> tuple:
        """The keys of accumulator parts ``reads`` of ``slot``."""
        parts = self.em.buffers["C"].parts[slot]
        return tuple(next(key for key, r in parts.items() if r is part) for part in reads)

    def strides(self, before: tuple) -> list[int] | None:
        """Each held store's address stride since :meth:`state` ``before``, if they are
        otherwise the same stores (None if not)."""
        now = self.state()
        if now[0] != before[0]:
            return None
        return [a - b for a, b in zip(now[1], before[1])]

    def move(self, strides: list[int], times: int) -> None:
        """The stores held back as ``times`` periods on (their addresses; their parts are the
        emitter's, which ``Emitter.repeat`` moved)."""
        for (_, _, _, fields), stride in zip(self.pending, strides):
            fields["addr"] += stride * times

    def flush(self) -> None:
        slots = {fields["slot"] for _, _, _, fields in self.pending}
        while self.pending:
            op, tag, reads, fields = self.pending.pop(0)
            self.em.emit_transfer(op, tag, reads, (), **fields)
        for s in slots:
            self.em.buffers["C"].slots[s].resident = None


def _writer(tiling: Tiling) -> type[_GemmWriter]:
    if tiling.conv_t:
        return _WgTransposeWriter
    return _ConvWriter if tiling.conv else _WgConvWriter if tiling.conv_b else _GemmWriter


def _proportional(streams: list[Iterator[_Step]], totals: list[int]) -> Iterator[_Step]:
    """Merge step streams so each advances in proportion to its length.

    The GEMM with fewer steps is spread evenly over the longer one, so its transfers hide behind
    the other's computes along the whole segment instead of only at its start.
    """
    if len(streams) == 1:  # nothing to merge (most programs): no choice to make per step
        return streams[0]
    return _merged(streams, totals)


def _merged(streams: list[Iterator[_Step]], totals: list[int]) -> Iterator[_Step]:
    done = [0] * len(streams)
    live = set(range(len(streams)))
    while live:
        i = min(live, key=lambda j: ((done[j] + 1) / totals[j], j))
        step = next(streams[i], None)
        if step is None:
            live.discard(i)
            continue
        done[i] += 1
        yield step


def _step_count(task: GemmTask, tiling: Tiling) -> int:
    nmt, nk, nn = _buffer_counts(task, tiling)
    return task.copies * nmt * nk * nn


def gemm_program(tasks: tuple[GemmTask, ...], tilings: tuple[Tiling, ...], hw: HardwareSpec,
                 double_buffering: bool = True) -> Program:
    """The tile program of one or more GEMMs (more than one: their tiles interleave)."""
    em = Emitter(buffer_slots(double_buffering))
    _write_gemms(em, tasks, tilings, hw)
    return em.program


def _write_gemms(em: Emitter, tasks: tuple[GemmTask, ...], tilings: tuple[Tiling, ...],
                 hw: HardwareSpec) -> None:
    steps, writers, stores = _gemm_steps(em, tasks, tilings, hw)
    if len(writers) == 1:
        writers[0].write_alone(steps)
    else:
        for s in steps:
            writers[s.tag].step(s)
    stores.flush()


def _gemm_steps(em: Emitter, tasks: tuple[GemmTask, ...], tilings: tuple[Tiling, ...],
                hw: HardwareSpec) -> tuple[Iterator[_Step], list, _DeferredStore]:
    """The GEMMs' steps in program order, their writers (by tag) and the deferred stores (to
    flush after the last step)."""
    stores = _DeferredStore(em)
    work = list(enumerate(zip(tasks, tilings)))
    writers = [_writer(tiling)(em, stores, tag, task, tiling, hw) for tag, (task, tiling) in work]
    streams = [_steps(tag, task, tiling) for tag, (task, tiling) in work]
    totals = [_step_count(task, tiling) for task, tiling in zip(tasks, tilings)]
    return _proportional(streams, totals), writers, stores


def _pe_cycles(tasks: tuple[GemmTask, ...], tilings: tuple[Tiling, ...], hw: HardwareSpec) -> int:
    """PE-array busy cycles of the GEMMs' program, however their tiles interleave: every
    COMPUTE's latency (``tiling.pe_cycles``) per copy."""
    total = 0
    for task, tiling in zip(tasks, tilings):
        _, nk, nn = _tile_counts(task, tiling)
        ms = m_widths(task, tiling, tiling.dims(task)[0])
        total += task.copies * pe_cycles(ms, nk, nn, tiling, hw)
    return total


_PE = int(Unit.PE)


class _TimedEmitter(Emitter):
    """An emitter that times the program as it grows (``cost.timeline``'s rule, one instruction at
    a time): the emitter's waits only name instructions already emitted, so each instruction's
    start is known as it is emitted. ``end`` is the program so far's exact cycle count;
    :attr:`least_cycles` is a lower bound on the finished program's (:class:`_Build`)."""

    def __init__(self, nslots: int, hw: HardwareSpec, pe_cycles: int) -> None:
        super().__init__(nslots)
        self._start_timing(hw, pe_cycles)

    def _start_timing(self, hw: HardwareSpec, pe_cycles: int) -> None:
        self.hw, self.pe_left, self.end = hw, pe_cycles, 0
        self.ends: tuple[list[int], ...] = ([], [], [])  # per unit, end of each instruction
        self.latency: dict[tuple, int] = {}  # by instruction shape

    def append(self, instr: Instr, tag: int, unit: int, reads: tuple, writes: tuple
               ) -> tuple[Unit, int]:
        out = super().append(instr, tag, unit, reads, writes)
        self._time(instr, unit)
        return out

    def _time(self, instr: Instr, unit: int) -> None:
        shape = shape_of(instr)
        cycles = self.latency.get(shape)
        if cycles is None:
            cycles = self.latency[shape] = latency(instr, self.hw)
        ends, wait = self.ends, instr.wait
        mine = ends[unit]
        start = mine[-1] if mine else 0
        for other in OTHER_UNITS[unit]:  # a wait on its own unit is always 0 (program order)
            need = wait[other]
            if need and ends[other][need - 1] > start:
                start = ends[other][need - 1]
        end = start + cycles
        mine.append(end)
        if end > self.end:
            self.end = end
        if unit == _PE:
            self.pe_left -= cycles

    def retime(self, hw: HardwareSpec, pe_cycles: int) -> None:
        """Time the instructions emitted so far on ``hw`` instead (another DRAM)."""
        self._start_timing(hw, pe_cycles)
        cycles = latencies(self.program, hw)
        _, self.ends = timeline(self.program, cycles)
        self.end = max((ends[-1] for ends in self.ends if ends), default=0)
        self.pe_left -= sum(cycles[i] for i in self.program.per_unit()[Unit.PE])

    @property
    def least_cycles(self) -> int:
        """The finished program cannot end before its last COMPUTE does: the PE array's time so
        far plus the COMPUTE cycles still to come (the same COMPUTEs however the GEMMs'
        tiles interleave, :func:`_pe_cycles`). It never decreases as the program grows (a
        COMPUTE starts no earlier than the one before ends)."""
        pe = self.ends[Unit.PE]
        return (pe[-1] if pe else 0) + self.pe_left


class _Build:
    """A GEMM program built step by step while it can still beat a bound, and resumable.

    :meth:`run` stops (None) once the program provably takes at least ``bound`` cycles
    (:attr:`_TimedEmitter.least_cycles`): an interleaving that loses is dropped a fraction of
    the way in instead of built in full. A stopped build keeps its instructions (which do not
    depend on DRAM): a design point with another DRAM re-times them (cheap) and builds on from
    there only if they do not already lose, so a sweep over DRAM builds each once.
    ``instrs`` sizes it in the program cache.
    """

    def __init__(self, tasks: tuple[GemmTask, ...], tilings: tuple[Tiling, ...], hw: HardwareSpec,
                 double_buffering: bool) -> None:
        self.tasks, self.tilings = tasks, tilings
        self.em = _TimedEmitter(buffer_slots(double_buffering), hw,
                                _pe_cycles(tasks, tilings, hw))
        self.instrs = self.em.program.instrs
        self.steps, self.writers, self.stores = _gemm_steps(self.em, tasks, tilings, hw)

    def run(self, hw: HardwareSpec, bound: int) -> Program | None:
        """The finished program if it can take fewer than ``bound`` cycles on ``hw``, else None
        (``em.end``: its cycles on ``hw``)."""
        em = self.em
        if timing_hardware(hw) != timing_hardware(em.hw):
            em.retime(hw, _pe_cycles(self.tasks, self.tilings, hw))
        while em.least_cycles < bound:
            s = next(self.steps, None)
            if s is None:
                self.stores.flush()
                return em.program
            self.writers[s.tag].step(s)
        return None


class _PregenWriter:
    """Compresses one pruned weight copy tile by tile: LOAD_B (dense) → COMPRESS → STORE_B.

    The STORE_B of a tile is deferred past the next tile's load (double buffering), so the DMA
    loads the next tile while the vector unit compresses this one.
    """

    def __init__(self, em: Emitter, tag: int, task: GemmTask, tiling: Tiling, hw: HardwareSpec) -> None:
        self.em, self.tag, self.task, self.t, self.hw = em, tag, task, tiling, hw
        _, k, n = tiling.dims(task)
        self.k, self.n = k, n
        _, self.nk, self.nn = _tile_counts(task, tiling)
        self.kc, self.row_bytes = compressed_tile_geometry(tiling, task.nm, hw)
        tiles = self.nk * self.nn
        self.dense = em.dram.alloc(f"{task.weight}.dense", k, n, hw.data_bytes)
        self.comp = em.dram.alloc(f"{task.weight}.nm", self.kc * tiles, hw.array.cols,
                                  hw.data_bytes, "nm_tiles", self.kc * self.row_bytes * tiles)

    def tile(self, ki: int, ni: int, pending: list) -> None:
        """Emit tile (ki, ni); ``pending`` holds the deferred STORE_B (emitted after the load)."""
        em, db, (nm_n, nm_m) = self.em, self.hw.data_bytes, self.task.nm
        k0, tk = _extent(ki, self.t.tk, self.k)
        n0, tn = _extent(ni, self.t.tn, self.n)
        s = em.buffers["B"].claim()
        slot = em.slot("B", s)
        em.emit_transfer(Op.LOAD_B, self.tag, (), (slot,), slot=s,
                         addr=self.dense.addr + (k0 * self.n + n0) * db, stride=self.n * db,
                         rows=tk, cols=tn)
        _emit_pending(em, pending)
        em.emit(Op.COMPRESS, self.tag, reads=(slot,), writes=(slot,), slot=s, rows=tk, cols=tn,
                nm_n=nm_n, nm_m=nm_m)
        pending.append((Op.STORE_B, self.tag, (slot,), dict(
            slot=s, addr=self.comp.addr + (ki * self.nn + ni) * self.kc * self.row_bytes,
            stride=self.row_bytes, rows=tk // nm_m * nm_n, cols=self.hw.array.cols,
            nm_n=nm_n, nm_m=nm_m)))
        if em.nslots == 1:
            _emit_pending(em, pending)


def _emit_pending(em: Emitter, pending: list) -> None:
    """Emit the deferred store in ``pending`` (if any): ``(op, tag, reads, fields)``."""
    if pending:
        op, tag, reads, fields = pending.pop()
        em.emit_transfer(op, tag, reads, (), **fields)


def pregen_program(tasks: tuple[GemmTask, ...], tilings: tuple[Tiling, ...], hw: HardwareSpec,
                   double_buffering: bool = True) -> Program:
    """Compress each pruned weight copy once: load dense tile → COMPRESS → store compressed tile."""
    em = Emitter(buffer_slots(double_buffering))
    pending: list = []
    for tag, (task, tiling) in enumerate(zip(tasks, tilings)):
        writer = _PregenWriter(em, tag, task, tiling, hw)
        for ki in range(writer.nk):
            for ni in range(writer.nn):
                writer.tile(ki, ni, pending)
    _emit_pending(em, pending)
    return em.program


# --------------------------------------------------------------------------------------------
# Whole workloads
# --------------------------------------------------------------------------------------------


def tiling_for(task: GemmTask, hw: HardwareSpec, passes: SchedulePasses, compressed: bool) -> Tiling:
    """The tiling the scheduler uses for ``task`` under ``passes`` (search or heuristic).

    The search ranks candidates analytically (``tiling.search_tilings``: least DRAM reads, then
    estimated cycles) and times the best few exactly (``cost.program_cycles``); the fastest wins.
    """
    # A tile must fit one slot, and a slot is always half a buffer: the ISA addresses slots with
    # one bit and the RTL's halves are fixed. Single buffering uses one slot; it does not get a
    # bigger one (found by verification: whole-buffer tiles overwrote their own first rows).
    if not passes.offline_tiling:
        return default_tiling(task, hw, compressed)
    slots = buffer_slots(passes.double_buffering)
    key = (task.m, task.k, task.n, task.nm, task.copies, compressed, slots, hw, task.conv)
    tiling = _TIMED.get(key)  # one lookup: a hit compares the hardware in its key
    if tiling is None:
        if len(_TIMED) > 4096:
            _TIMED.clear()
        tiling = _TIMED[key] = _fastest(task, hw, compressed, slots, passes.double_buffering)
    return tiling


def ranked_tiling(task: GemmTask, hw: HardwareSpec, passes: SchedulePasses,
                  compressed: bool) -> Tiling:
    """The tiling the analytic search ranks first (:func:`tiling_for` before it times near
    ties exactly): what an estimate without programs assumes (``archsim.estimate``)."""
    if not passes.offline_tiling:
        return default_tiling(task, hw, compressed)
    return search_tilings(task, hw, compressed, buffer_slots(passes.double_buffering))[0]


def buffer_slots(double_buffering: bool) -> int:
    """Slots per buffer a program uses: both halves with double buffering, one without."""
    return SLOTS_PER_BUFFER if double_buffering else 1


def compressed_in_dram(workload: WorkloadSpec) -> bool:
    """Whether sparse weights sit in DRAM compressed: inference deploys them compressed
    offline; training compresses them each iteration, once up front (pre-generation) or at
    every use."""
    return workload.mode != "training" or workload.schedule.pregenerate_sparse_weights


#: Exactly timed tiling choices, by GEMM shape and hardware (the search is deterministic).
_TIMED: dict[tuple, Tiling] = {}

#: Candidates are timed exactly only while their programs stay this small (COMPUTEs) and the
#: runner-up's estimate is within this fraction of the best one's; otherwise the analytic
#: ranking stands (within about 1 % of the exact cycles on ResNet-50), which bounds the time.
MAX_TIMED_COMPUTES = 1024
TIMED_MARGIN = 0.01


def _computes(task: GemmTask, tiling: Tiling) -> int:
    nmt, nk, nn = _tile_counts(task, tiling)
    return task.copies * nmt * nk * nn


def _fastest(task: GemmTask, hw: HardwareSpec, compressed: bool, slots: int,
             double_buffering: bool) -> Tiling:
    candidates = search_tilings(task, hw, compressed, slots)
    if len(candidates) == 1 or max(_computes(task, t) for t in candidates) > MAX_TIMED_COMPUTES:
        return candidates[0]
    if _same_steps(task, *candidates):
        return candidates[0]  # the same program: a tie, which goes to the first
    first, second = (estimate(task, t, hw, slots).cycles for t in candidates)
    if second > first * (1 + TIMED_MARGIN):
        return candidates[0]  # a clear winner: the estimate decides
    # Within the margin, ties included: equal estimates can hide very different programs (an
    # m-tile of 5,461 rows and one of 811 ran 30 % slower than two of 3,136 on ResNet-18's
    # layer3.0.conv1.bp at an 8 MiB input buffer, with the same estimate).
    timed = []
    for i, t in enumerate(candidates):
        program = _gemm_program_cached((task,), (t,), hw, double_buffering)
        timed.append((program_cycles_cached(program, hw), i))
    return candidates[min(timed)[1]]


def _gemm_program_cached(tasks: tuple[GemmTask, ...], tilings: tuple[Tiling, ...],
                         hw: HardwareSpec, double_buffering: bool, bound: int | None = None
                         ) -> Program | None:
    """``gemm_program``, remembered (the exact timing of the search builds the winner first).

    With ``bound``, a program not built yet is built only while it can still take fewer than
    ``bound`` cycles (:class:`_Build`): None when it cannot (the build is kept, to resume).
    """
    key = ("gemm", tuple((t.name,) + _task_key(_as_written(t, tl), tl)
                         for t, tl in zip(tasks, tilings)), double_buffering, program_hardware(hw))
    if bound is None or key in _PROGRAMS.programs:
        return _PROGRAMS.get(key, gemm_program, tasks, tilings, hw, double_buffering)
    build = _PROGRAMS.take(("build",) + key) or _Build(tasks, tilings, hw, double_buffering)
    program = build.run(hw, bound)
    if program is None:
        _PROGRAMS.add(("build",) + key, build)
    else:
        _PROGRAMS.add(key, program, {timing_hardware(hw): build.em.end})
    return program


def _pregen_program_cached(tasks: tuple[GemmTask, ...], tilings: tuple[Tiling, ...],
                           hw: HardwareSpec, double_buffering: bool) -> Program:
    """``pregen_program``, remembered like :func:`_gemm_program_cached`."""
    key = ("pregen", tuple((t.weight,) + _task_key(t, tl) for t, tl in zip(tasks, tilings)),
           double_buffering, program_hardware(hw))
    return _PROGRAMS.get(key, pregen_program, tasks, tilings, hw, double_buffering)


class _ProgramCache:
    """Programs the scheduler built, by what determines them, and their exact cycles per
    hardware: the timing of the tiling search builds the winner first, and a design-space
    sweep's points that differ only in what programs do not depend on (DRAM, energy, clock:
    :func:`program_hardware`) reuse them; so do builds stopped part way (:class:`_Build`,
    under ``("build",) + key``). At most ``budget`` instructions stay, the least
    recently used programs going first, which bounds memory (a VGG-16 iteration builds
    millions of instructions; the schedule keeps the ones it runs)."""

    def __init__(self, budget: int) -> None:
        self.budget, self.size = budget, 0
        self.programs: dict[tuple, Program] = {}
        self.cycles: dict[int, dict[HardwareSpec, int]] = {}  # by id() of a program held

    def get(self, key: tuple, build, *args) -> Program:
        program = self.programs.pop(key, None)
        if program is None:
            self.add(key, build(*args))
        else:
            self.programs[key] = program  # now the most recently used
        return self.programs[key]

    def take(self, key: tuple) -> Program | _Build | None:
        """Remove and return the entry of ``key`` (None if there is none)."""
        entry = self.programs.pop(key, None)
        if entry is not None:
            self.size -= len(entry.instrs)
            del self.cycles[id(entry)]
        return entry

    def add(self, key: tuple, program: Program | _Build, cycles: dict | None = None) -> None:
        self.programs[key] = program
        self.cycles[id(program)] = cycles or {}
        self.size += len(program.instrs)
        while self.size > self.budget and len(self.programs) > 1:
            old = self.programs.pop(next(iter(self.programs)))
            self.size -= len(old.instrs)
            del self.cycles[id(old)]

    def cycles_of(self, program: Program, hw: HardwareSpec) -> int:
        """``cost.program_cycles``, remembered while the program is held (an id() is unique
        among live objects, and a held program lives)."""
        known = self.cycles.get(id(program))
        if known is None:
            return program_cycles(program, hw)
        timing = timing_hardware(hw)
        if timing not in known:
            known[timing] = program_cycles(program, hw)
        return known[timing]


#: Instructions the scheduler's program cache holds at most (about 420 bytes each).
MAX_CACHED_INSTRUCTIONS = 500_000

_PROGRAMS = _ProgramCache(MAX_CACHED_INSTRUCTIONS)


@lru_cache(maxsize=64)
def timing_hardware(hw: HardwareSpec) -> HardwareSpec:
    """``hw`` less the fields neither a GEMM or pre-generation program nor its timing and
    statistics depend on, given its tilings: the buffer sizes decide the tilings (part of every
    program's key) and nothing else — no writer, latency or charge reads them —, and clock and
    energy only convert cycles and counts into seconds and joules. Program cycles and segment
    statistics are remembered by it: the points of a sweep over buffer sizes whose GEMMs keep
    their tilings time each program once (tests/dataflows/test_program_cycles.py checks that
    programs and their timing are the same under other buffers)."""
    return canonical_hardware(hw.model_copy(update={
        "name": "timing", "clock_mhz": 1.0, "energy": EnergySpec(), "spgemm": SpGEMMEngineSpec(),
        "buffers": _BUFFERS}))


@lru_cache(maxsize=64)
def program_hardware(hw: HardwareSpec) -> HardwareSpec:
    """:func:`timing_hardware` less DRAM, which changes how long a program takes, never its
    instructions (the writers read the array, the widths and the store shift). Programs are
    cached by it."""
    return canonical_hardware(timing_hardware(hw).model_copy(update={"name": "program",
                                                                     "dram": _DRAM}))


def canonical_hardware(hw: HardwareSpec) -> HardwareSpec:
    """One object for each hardware value: the first equal one seen. The scheduler's memos are
    keyed by hardware, and a hit on an equal but other object compares the two field by field,
    nested specs included (pydantic): about a twentieth of a design-space sweep, whose points
    each load their own. Keyed by the same object, a hit is an identity check."""
    if len(_CANONICAL) > 4096:
        _CANONICAL.clear()
    return _CANONICAL.setdefault(hw, hw)


_CANONICAL: dict[HardwareSpec, HardwareSpec] = {}


_DRAM = DramSpec(bandwidth_bytes_per_cycle=1, latency_cycles=0)
_BUFFERS = BufferSpec(weight_bytes=1, input_bytes=1, accumulator_bytes=1)


def program_cycles_cached(program: Program, hw: HardwareSpec) -> int:
    """``cost.program_cycles``, remembered per program and hardware (:class:`_ProgramCache`),
    so the points of a sweep that share programs and hardware time each once."""
    return _PROGRAMS.cycles_of(program, hw)


def _as_written(task: GemmTask, tiling: Tiling) -> GemmTask:
    """``task`` less its N:M pattern where ``tiling`` is dense: the GEMM writers read the
    pattern only for a sparse tiling, so a dense mapping's program is the same whatever the
    sparsity, and a sweep over N:M patterns builds it once (about a fifth of a DSE point)."""
    return task if tiling.sparse or task.nm is None else replace(task, nm=None)


def _task_key(task: GemmTask, tiling: Tiling) -> tuple:
    # A convolution tiling's program depends on the geometry, not only on the GEMM's shape
    # (ResNet-50's layer4.0.conv2 and layer4.1.conv2 share m, k and n).
    conv = task.conv if tiling.conv or tiling.conv_b or tiling.conv_t else None
    return (task.m, task.k, task.n, task.nm, task.copies, tiling, conv)


class _SegmentCache:
    """Builds each distinct GEMM or pre-generation program once and times it on demand."""

    def __init__(self, hw: HardwareSpec, passes: SchedulePasses) -> None:
        self.hw, self.passes, self.programs, self._cycles, self._traffic = hw, passes, {}, {}, {}
        # Cycles a program not built takes at least, by key: a build stopped under one bound
        # proves it for every GEMM with the key (identical layers share it), so the layers
        # after it do not build and lose again.
        self._at_least: dict[tuple, int] = {}

    def cycles(self, segment: Segment) -> int:
        """Exact cycles of one run of a segment (``cost.program_cycles``), memoized by key."""
        if segment.key not in self._cycles:
            self._cycles[segment.key] = program_cycles_cached(segment.program, self.hw)
        return self._cycles[segment.key]

    def traffic(self, segment: Segment) -> tuple[int, int, int]:
        """(DRAM bytes, DMA busy cycles, PE busy cycles) of one run of a segment, memoized."""
        if segment.key not in self._traffic:
            # Each figure depends on an instruction's shape only: count the shapes, then
            # compute each once.
            _, examples = shape_index(segment.program)
            counts: Counter[int] = Counter()
            for (_, i), count in shape_counts(segment.program).items():
                counts[i] += count
            total = [0, 0, 0]
            for i, instr in enumerate(examples):
                count = counts[i]
                total[0] += count * transfer_bytes(instr, self.hw)
                if instr.unit != Unit.VEC:
                    total[1 + (instr.unit == Unit.PE)] += count * latency(instr, self.hw)
            self._traffic[segment.key] = tuple(total)
        return self._traffic[segment.key]

    def segment(self, work: GemmWork | PregenWork, repeat: int, bound: int | None = None
                ) -> Segment | None:
        """The segment of ``work``; with ``bound`` (GEMMs), None if its program provably takes
        at least ``bound`` cycles (then it is not built in full)."""
        kind = "gemm" if isinstance(work, GemmWork) else "pregen"
        key = (kind, self.passes.double_buffering) + tuple(
            _task_key(t, tl) for t, tl in zip(work.tasks, work.tilings))
        if key not in self.programs:
            proven = self._at_least.get(key)
            if bound is not None and proven is not None and bound <= proven:
                return None
            db = self.passes.double_buffering
            program = (_gemm_program_cached(work.tasks, work.tilings, self.hw, db, bound)
                       if kind == "gemm" else
                       _pregen_program_cached(work.tasks, work.tilings, self.hw, db))
            if program is None:
                self._at_least[key] = bound
                return None
            self.programs[key] = program
        return Segment(work, repeat, key, self.programs[key])


def build_segment(tasks: tuple[GemmTask, ...], hw: HardwareSpec, passes: SchedulePasses | None = None,
                  compressed_in_dram: bool = True) -> Segment[GemmWork]:
    """One segment for the given tasks (interleaved if several); used by tests and verification."""
    passes = passes or SchedulePasses()
    tilings = tuple(tiling_for(t, hw, passes, compressed_in_dram) for t in tasks)
    return _SegmentCache(hw, passes).segment(GemmWork(tasks, tilings), tasks[0].repeat)


def _dense_mapping(cache: _SegmentCache, task: GemmTask, tiling: Tiling, pregen: bool
                   ) -> tuple[DenseMapping, Tiling]:
    """Time ``task``'s dense (masked) mapping and its sparse one (``tiling``), exactly; also
    the dense tiling (the one the workload's dense variant gets: the same GEMM without its
    pattern, weights loaded dense)."""
    dense_tiling = tiling_for(replace(task, nm=None, weight=None), cache.hw, cache.passes, False)
    dense = cache.segment(GemmWork((task,), (dense_tiling,)), task.repeat)
    sparse = cache.cycles(cache.segment(GemmWork((task,), (tiling,)), task.repeat))
    if pregen:
        sparse += cache.cycles(cache.segment(PregenWork((task,), (tiling,)), task.repeat))
    return DenseMapping(cache.cycles(dense), *cache.traffic(dense), sparse), dense_tiling


def _dense_fallback(cache: _SegmentCache, tasks: list[GemmTask], tiling: dict[str, Tiling],
                    pregen: bool) -> dict[str, DenseMapping]:
    """Each sparse GEMM's :class:`DenseMapping`; where it is faster, ``tiling`` switches to it.

    A GEMM that falls back keeps its N:M pattern (its row says "dense fallback") but runs the
    dense tiling, so it needs no pre-generated weight either.
    """
    dense = {}
    for t in tasks:
        if tiling[t.name].sparse:
            dense[t.name], dense_tiling = _dense_mapping(cache, t, tiling[t.name], pregen)
            if dense[t.name].fallback:  # the dense tiling searched above, not searched again
                tiling[t.name] = dense_tiling
    return dense


def _gemm_group(cache: _SegmentCache, group: list[GemmTask], tiling: dict,
                dense: dict[str, DenseMapping]) -> list[Segment]:
    """The segments of one layer's GEMMs: apart, or interleaved where that is exactly faster."""
    separate = [cache.segment(GemmWork((t,), (tiling[t.name],), (dense.get(t.name),)), t.repeat)
                for t in group]
    passes = cache.passes
    # Interleaving needs a second accumulator slot for the other GEMM's tile in flight.
    if passes.interleave and passes.double_buffering and len(group) > 1:
        work = GemmWork(tuple(group), tuple(tiling[t.name] for t in group),
                        tuple(dense.get(t.name) for t in group))
        apart = sum(cache.cycles(s) for s in separate)
        mixed = cache.segment(work, group[0].repeat, bound=apart)
        if mixed is not None and cache.cycles(mixed) < apart:
            return [mixed]
    return separate


def schedule(workload: WorkloadSpec) -> Schedule:
    """Compile a workload into its sequence of tile-program segments."""
    with _collector_paused():
        return _schedule(workload)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off while programs are built: they hold no reference cycles
    (refcounting frees them), but each collection walks every object still alive, and the
    program cache keeps hundreds of thousands of instructions alive, so the walks cost about a
    sixth of a ResNet-50 schedule. Restored afterwards (also when it raises)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            _age_survivors()
            gc.enable()


def _age_survivors() -> None:
    """Move every object alive into the collector's oldest generation without walking them.

    Re-enabled with the hundreds of thousands of young objects a schedule leaves (its programs,
    cached or returned), the collector's next young collection walks them all to find no
    cycle: 0.17 CPU-s after a ResNet-50 schedule of 1.9. ``gc.freeze`` then ``gc.unfreeze``
    makes that move; a full collection still walks them, as it would have once they aged. The
    price: that young collection would also have stopped tracking tuples of plain numbers (the
    waits: about 300 k after ResNet-50), which later full collections now walk too. Only
    where nothing is frozen: unfreezing would thaw what a sweep worker froze on purpose
    (``reports.evaluate._settle``; its points run with the collector off anyway)."""
    if gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()


def _schedule(workload: WorkloadSpec) -> Schedule:
    hw, passes = canonical_hardware(workload.hardware), workload.schedule
    training = workload.mode == "training"
    compressed = compressed_in_dram(workload)
    cache = _SegmentCache(hw, passes)
    layers = expand(workload)
    groups = lower(layers, workload.mode)
    tiling = {t.name: tiling_for(t, hw, passes, compressed) for g in groups for t in g}
    pregen = training and passes.pregenerate_sparse_weights
    dense = _dense_fallback(cache, [t for g in groups for t in g], tiling, pregen)
    segments: list[Segment] = []
    if pregen:
        pruned = [t for g in groups for t in g if t.weight and tiling[t.name].sparse]
        segments.extend(cache.segment(PregenWork((t,), (tiling[t.name],)), t.repeat) for t in pruned)
    programs: dict = {}  # attention programs, shared between layers with equal signatures
    plans: dict = {}  # a training forward's attention plan, reused by its backward
    for layer, group, backward in _layer_groups(layers, groups, workload.mode):
        if layer is not None and layer.kind == "attention":  # FlashAttention-style segments
            segments.extend(attention_layer_segments(layer.name, layer.attention, hw, programs,
                                                     training, backward, plans))
        else:
            segments.extend(_gemm_group(cache, group, tiling, dense))
    return Schedule(hw, passes, tuple(segments))


def _layer_groups(layers, groups, mode) -> Iterator[tuple]:
    """(layer, its GEMM tasks, backward) in execution order. In inference ``lower`` gives one
    group per layer, in layer order. Training runs every layer's FF group (an attention
    layer: its forward), then in reverse layer order the BP/WG groups (``lower`` drops empty
    ones) and, in its place, an attention layer's backward."""
    if mode == "inference":
        yield from ((layer, group, False) for layer, group in zip(layers, groups, strict=True))
        return
    yield from ((layer, group, False) for layer, group in zip(layers, groups))
    rest = iter(groups[len(layers):])
    for layer in reversed(layers):
        if layer.kind == "attention":
            yield layer, [], True
        elif any(t.phase != "ff" for t in lower_layer(layer, mode)):
            yield None, next(rest), False
