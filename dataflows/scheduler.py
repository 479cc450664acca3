"""The dataflow scheduler: a workload becomes a sequence of tile programs (segments).

Pipeline: layers (``workloads.layers.expand``) → GEMM tasks per phase (``lowering``) → tiling per
task (``tiling``) → segments, each a :class:`~dataflows.isa.Program`. Segments run one after the
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

from collections.abc import Iterator
from dataclasses import dataclass, field

from dataflows.attention import attention_layer_segments
from dataflows.cost import program_cycles
from dataflows.isa import SLOTS_PER_BUFFER, UNIT_OF, Instr, Op, Program, Tensor, Unit
from dataflows.lowering import GemmTask, lower
from dataflows.tiling import Tiling, default_tiling, search_tiling
from workloads.arith import ceil_div, index_bits
from workloads.layers import expand
from workloads.spec import HardwareSpec, SchedulePasses, WorkloadSpec

__all__ = [
    "Segment",
    "Schedule",
    "schedule",
    "build_segment",
    "gemm_program",
    "pregen_program",
    "compressed_tile_geometry",
    "tiling_for",
]

_ALIGN = 64


@dataclass(frozen=True, slots=True)
class Segment:
    """One tile program plus what it computes. It runs ``repeat`` times back to back."""

    kind: str  # "gemm" or "pregen"
    tasks: tuple[GemmTask, ...]
    tilings: tuple[Tiling | None, ...]
    repeat: int
    key: tuple  # identical keys ⇒ identical programs (and identical timing)
    program: Program = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Schedule:
    hardware: HardwareSpec
    passes: SchedulePasses
    segments: tuple[Segment, ...]

    @property
    def tasks(self) -> list[GemmTask]:
        return [t for s in self.segments if s.kind == "gemm" for t in s.tasks]


# --------------------------------------------------------------------------------------------
# Instruction emission with slot bookkeeping
# --------------------------------------------------------------------------------------------


def _draft(op: Op, **fields) -> tuple[Op, dict]:
    """An instruction whose waits are not known yet (the emitter fills them in)."""
    return op, fields


@dataclass
class _Slot:
    resident: tuple | None = None  # which tile the slot holds (None: nothing reusable)
    producer: tuple[Unit, int] | None = None  # instruction that filled it (unit, ordinal)
    last_reader: tuple[Unit, int] | None = None  # last instruction that read it


class _Emitter:
    """Appends instructions, turning dependencies into completion-count waits."""

    def __init__(self, hw: HardwareSpec, double_buffering: bool) -> None:
        self.hw = hw
        self.program = Program()
        self.issued = [0, 0, 0]
        self.nslots = SLOTS_PER_BUFFER if double_buffering else 1
        self.buffers = {b: [_Slot() for _ in range(self.nslots)] for b in "ABC"}
        self.turn = {b: 0 for b in "ABC"}
        self.pending_store: tuple | None = None

    def emit(self, draft: tuple[Op, dict], deps: list[tuple[Unit, int] | None], tag: int) -> tuple[Unit, int]:
        """Append one instruction; ``deps`` are the (unit, ordinal) instructions it needs."""
        op, fields = draft
        wait = [0, 0, 0]
        unit = UNIT_OF[op]
        for dep in deps:
            if dep is not None and dep[0] != unit and dep[1] >= wait[dep[0]]:
                wait[dep[0]] = dep[1] + 1
        self.program.instrs.append(Instr(op, (wait[0], wait[1], wait[2]), **fields))
        self.program.tags.append(tag)
        ordinal = self.issued[unit]
        self.issued[unit] += 1
        return unit, ordinal

    def find_or_claim(self, buf: str, key: tuple) -> tuple[int, bool]:
        """Slot holding tile ``key`` (reuse) or the next slot to load it into."""
        for s, slot in enumerate(self.buffers[buf]):
            if slot.resident == key:
                return s, True
        s = self.turn[buf]
        self.turn[buf] = (s + 1) % self.nslots
        return s, False

    def acc_slot(self, key: tuple, first: bool) -> int:
        """The accumulator slot of output tile ``key``; a free one for its first k-step.

        An accumulator slot is free once its tile has been stored (``resident`` is None); a slot
        whose tile is still accumulating is never taken, whatever the round-robin turn says.
        """
        slots = self.buffers["C"]
        if not first:
            return next(i for i, sl in enumerate(slots) if sl.resident == key)
        order = [(self.turn["C"] + j) % self.nslots for j in range(self.nslots)]
        free = [i for i in order if slots[i].resident is None]
        if not free:
            raise AssertionError("more GEMMs interleaved than accumulator slots")
        self.turn["C"] = (free[0] + 1) % self.nslots
        return free[0]

    def alloc(self, name: str, rows: int, cols: int, elem_bytes: int, fmt: str = "dense",
              nbytes: int | None = None) -> Tensor:
        tensors = self.program.tensors
        addr = 0
        if tensors:
            last = max(tensors.values(), key=lambda t: t.addr)
            addr = ceil_div((last.addr + last.nbytes), _ALIGN) * _ALIGN
        size = nbytes if nbytes is not None else rows * cols * elem_bytes
        tensor = Tensor(name, addr, rows, cols, elem_bytes, cols * elem_bytes, fmt, size)
        tensors[name] = tensor
        return tensor


def compressed_tile_geometry(tiling: Tiling, nm: tuple[int, int], hw: HardwareSpec) -> tuple[int, int]:
    """(compressed rows, bytes per row) of one full pre-compressed weight tile in DRAM.

    Tiles are padded to the full array width so every compressed row has the same layout.
    """
    n, m = nm
    cols = hw.array.cols
    return tiling.tk // m * n, cols * hw.data_bytes + ceil_div(cols * index_bits(m), 8)


@dataclass(frozen=True, slots=True)
class _Step:
    """One COMPUTE and the loads it needs: tile (mi, ni, ki) of one copy of one task."""

    tag: int
    copy: int
    mi: int
    ni: int
    ki: int
    last_k: bool


def _steps(tag: int, task: GemmTask, tiling: Tiling) -> Iterator[_Step]:
    m, k, n = tiling.dims(task)
    nmt, nk, nn = ceil_div(m, tiling.tm), ceil_div(k, tiling.tk), ceil_div(n, tiling.tn)
    for copy in range(task.copies):
        outer = ((mi, ni) for mi in range(nmt) for ni in range(nn)) if tiling.order == "mnk" else (
            (mi, ni) for ni in range(nn) for mi in range(nmt))
        for mi, ni in outer:
            for ki in range(nk):
                yield _Step(tag, copy, mi, ni, ki, ki == nk - 1)


class _GemmWriter:
    """Emits the instructions of one task's tile steps through a shared emitter."""

    def __init__(self, em: _Emitter, tag: int, task: GemmTask, tiling: Tiling) -> None:
        self.em, self.tag, self.task, self.t = em, tag, task, tiling
        hw = em.hw
        self.m, self.k, self.n = tiling.dims(task)
        db, copies = hw.data_bytes, task.copies
        self.a = em.alloc(f"{task.name}.A", self.m * copies, self.k, db)
        self.c = em.alloc(f"{task.name}.C", self.m * copies, self.n, hw.acc_bytes)
        if tiling.sparse and tiling.compressed_in_dram:
            kc, rb = compressed_tile_geometry(tiling, task.nm, hw)
            self.nk, self.nn = ceil_div(self.k, tiling.tk), ceil_div(self.n, tiling.tn)
            self.tile_bytes = kc * rb
            tiles = self.nk * self.nn * copies
            self.b = em.alloc(f"{task.name}.B", kc * tiles, hw.array.cols, db, "nm_tiles",
                              tiles * self.tile_bytes)
        else:
            self.b = em.alloc(f"{task.name}.B", self.k * copies, self.n, db)

    def extent(self, i: int, tile: int, total: int) -> tuple[int, int]:
        start = i * tile
        return start, min(tile, total - start)

    def load_a(self, s: _Step) -> int:
        em, db = self.em, self.em.hw.data_bytes
        m0, tm = self.extent(s.mi, self.t.tm, self.m)
        k0, tk = self.extent(s.ki, self.t.tk, self.k)
        slot_i, hit = em.find_or_claim("A", (self.tag, s.copy, s.mi, s.ki))
        slot = em.buffers["A"][slot_i]
        if not hit:
            row0 = s.copy * self.m + m0
            instr = _draft(Op.LOAD_A, slot=slot_i, addr=self.a.addr + (row0 * self.k + k0) * db,
                          stride=self.k * db, rows=tm, cols=tk)
            slot.producer = em.emit(instr, [slot.last_reader], self.tag)
            slot.resident = (self.tag, s.copy, s.mi, s.ki)
        return slot_i

    def load_b(self, s: _Step) -> int:
        em, hw, t = self.em, self.em.hw, self.t
        k0, tk = self.extent(s.ki, t.tk, self.k)
        n0, tn = self.extent(s.ni, t.tn, self.n)
        slot_i, hit = em.find_or_claim("B", (self.tag, s.copy, s.ki, s.ni))
        slot = em.buffers["B"][slot_i]
        if hit:
            return slot_i
        nm_n, nm_m = self.task.nm if t.sparse else (0, 0)
        if t.sparse and t.compressed_in_dram:
            kc, rb = compressed_tile_geometry(t, self.task.nm, hw)
            tile = (s.copy * self.nk + s.ki) * self.nn + s.ni
            instr = _draft(Op.LOAD_B, slot=slot_i, addr=self.b.addr + tile * self.tile_bytes,
                          stride=rb, rows=tk // nm_m * nm_n, cols=hw.array.cols, nm_n=nm_n, nm_m=nm_m)
            slot.producer = em.emit(instr, [slot.last_reader], self.tag)
        else:
            row0 = s.copy * self.k + k0
            instr = _draft(Op.LOAD_B, slot=slot_i, addr=self.b.addr + (row0 * self.n + n0) * hw.data_bytes,
                          stride=self.n * hw.data_bytes, rows=tk, cols=tn)
            loaded = em.emit(instr, [slot.last_reader], self.tag)
            slot.producer = loaded
            if t.sparse:  # compress on chip before use
                comp = _draft(Op.COMPRESS, slot=slot_i, rows=tk, cols=tn, nm_n=nm_n, nm_m=nm_m)
                slot.producer = em.emit(comp, [loaded, slot.last_reader], self.tag)
        slot.resident = (self.tag, s.copy, s.ki, s.ni)
        return slot_i

    def compute(self, s: _Step, a_slot: int, b_slot: int) -> None:
        em, t = self.em, self.t
        m0, tm = self.extent(s.mi, t.tm, self.m)
        _, tk = self.extent(s.ki, t.tk, self.k)
        _, tn = self.extent(s.ni, t.tn, self.n)
        nm_n, nm_m = self.task.nm if t.sparse else (0, 0)
        k_rows = tk // nm_m * nm_n if t.sparse else tk
        c_slot = em.acc_slot(("acc", self.tag, s.copy, s.mi, s.ni), first=s.ki == 0)
        acc = em.buffers["C"][c_slot]
        a, b = em.buffers["A"][a_slot], em.buffers["B"][b_slot]
        deps = [a.producer, b.producer] + ([acc.last_reader] if s.ki == 0 else [])
        instr = _draft(Op.COMPUTE, slot=a_slot, b_slot=b_slot, c_slot=c_slot, accumulate=s.ki > 0,
                      rows=tm, cols=tn, k=k_rows, m=tm, nm_n=nm_n, nm_m=nm_m)
        done = em.emit(instr, deps, self.tag)
        a.last_reader = b.last_reader = done
        acc.producer, acc.resident = done, ("acc", self.tag, s.copy, s.mi, s.ni)
        if s.last_k:
            n0, _ = self.extent(s.ni, t.tn, self.n)
            row0 = s.copy * self.m + m0
            store = _draft(Op.STORE_C, slot=c_slot, addr=self.c.addr + (row0 * self.n + n0) * em.hw.acc_bytes,
                          stride=self.n * em.hw.acc_bytes, rows=tm, cols=tn)
            em.pending_store = (store, c_slot, self.tag)

    def step(self, s: _Step) -> None:
        a_slot = self.load_a(s)
        b_slot = self.load_b(s)
        _flush_store(self.em)  # the previous tile's store goes after this tile's loads
        self.compute(s, a_slot, b_slot)
        if self.em.nslots == 1:
            _flush_store(self.em)


def _flush_store(em: _Emitter) -> None:
    if em.pending_store is None:
        return
    store, c_slot, tag = em.pending_store
    acc = em.buffers["C"][c_slot]
    acc.last_reader = em.emit(store, [acc.producer], tag)
    acc.resident = None
    em.pending_store = None


def _proportional(streams: list[Iterator[_Step]], totals: list[int]) -> Iterator[_Step]:
    """Merge step streams so each advances in proportion to its length.

    The GEMM with fewer steps is spread evenly over the longer one, so its transfers hide behind
    the other's computes along the whole segment instead of only at its start.
    """
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
    m, k, n = tiling.dims(task)
    return task.copies * ceil_div(m, tiling.tm) * ceil_div(k, tiling.tk) * ceil_div(n, tiling.tn)


def gemm_program(tasks: tuple[GemmTask, ...], tilings: tuple[Tiling, ...], hw: HardwareSpec,
                 double_buffering: bool = True) -> Program:
    """The tile program of one or more GEMMs (more than one: their tiles interleave)."""
    em = _Emitter(hw, double_buffering)
    writers = [_GemmWriter(em, tag, task, tiling) for tag, (task, tiling) in enumerate(zip(tasks, tilings))]
    streams = [_steps(tag, task, tiling) for tag, (task, tiling) in enumerate(zip(tasks, tilings))]
    totals = [_step_count(task, tiling) for task, tiling in zip(tasks, tilings)]
    for s in _proportional(streams, totals):
        writers[s.tag].step(s)
    _flush_store(em)
    em.program.tasks = tasks
    return em.program


def pregen_program(tasks: tuple[GemmTask, ...], tilings: tuple[Tiling, ...], hw: HardwareSpec,
                   double_buffering: bool = True) -> Program:
    """Compress each pruned weight copy once: load dense tile → COMPRESS → store compressed tile."""
    em = _Emitter(hw, double_buffering)
    pending = None
    for tag, (task, t) in enumerate(zip(tasks, tilings)):
        nm_n, nm_m = task.nm
        m, k, n = t.dims(task)
        dense = em.alloc(f"{task.weight}.dense", k, n, hw.data_bytes)
        kc, rb = compressed_tile_geometry(t, task.nm, hw)
        nk, nn = ceil_div(k, t.tk), ceil_div(n, t.tn)
        comp = em.alloc(f"{task.weight}.nm", kc * nk * nn, hw.array.cols, hw.data_bytes, "nm_tiles", kc * rb * nk * nn)
        for ki in range(nk):
            for ni in range(nn):
                k0, tk = ki * t.tk, min(t.tk, k - ki * t.tk)
                n0, tn = ni * t.tn, min(t.tn, n - ni * t.tn)
                s, _ = em.find_or_claim("B", (tag, ki, ni))
                slot = em.buffers["B"][s]
                load = em.emit(_draft(Op.LOAD_B, slot=s, addr=dense.addr + (k0 * n + n0) * hw.data_bytes,
                                     stride=n * hw.data_bytes, rows=tk, cols=tn), [slot.last_reader], -1)
                if pending is not None:
                    em_store, prev_slot, prev_comp = pending
                    em.buffers["B"][prev_slot].last_reader = em.emit(em_store, [prev_comp], -1)
                done = em.emit(_draft(Op.COMPRESS, slot=s, rows=tk, cols=tn, nm_n=nm_n, nm_m=nm_m), [load], -1)
                store = _draft(Op.STORE_B, slot=s, addr=comp.addr + (ki * nn + ni) * kc * rb, stride=rb,
                              rows=tk // nm_m * nm_n, cols=hw.array.cols, nm_n=nm_n, nm_m=nm_m)
                pending = (store, s, done)
                slot.resident = None
                if em.nslots == 1:
                    em.buffers["B"][s].last_reader = em.emit(store, [done], -1)
                    pending = None
    if pending is not None:
        store, s, done = pending
        em.emit(store, [done], -1)
    em.program.tasks = tasks
    return em.program


# --------------------------------------------------------------------------------------------
# Whole workloads
# --------------------------------------------------------------------------------------------


def tiling_for(task: GemmTask, hw: HardwareSpec, passes: SchedulePasses, compressed: bool) -> Tiling:
    """The tiling the scheduler uses for ``task`` under ``passes`` (search or heuristic)."""
    # A tile must fit one slot, and a slot is always half a buffer: the ISA addresses slots with
    # one bit and the RTL's halves are fixed. Single buffering uses one slot; it does not get a
    # bigger one (found by verification: whole-buffer tiles overwrote their own first rows).
    choose = search_tiling if passes.offline_tiling else default_tiling
    return choose(task, hw, compressed)


def _task_key(task: GemmTask, tiling: Tiling) -> tuple:
    return (task.m, task.k, task.n, task.nm, task.copies, tiling)


class _SegmentCache:
    def __init__(self, hw: HardwareSpec, passes: SchedulePasses) -> None:
        self.hw, self.passes, self.programs, self._cycles = hw, passes, {}, {}

    def cycles(self, segment: Segment) -> int:
        """Exact cycles of one run of a segment (``cost.program_cycles``), memoized by key."""
        if segment.key not in self._cycles:
            self._cycles[segment.key] = program_cycles(segment.program, self.hw)
        return self._cycles[segment.key]

    def segment(self, kind: str, tasks: tuple[GemmTask, ...], tilings: tuple[Tiling, ...], repeat: int) -> Segment:
        key = (kind, self.passes.double_buffering) + tuple(_task_key(t, tl) for t, tl in zip(tasks, tilings))
        if key not in self.programs:
            build = gemm_program if kind == "gemm" else pregen_program
            self.programs[key] = build(tasks, tilings, self.hw, self.passes.double_buffering)
        return Segment(kind, tasks, tilings, repeat, key, self.programs[key])


def build_segment(tasks: tuple[GemmTask, ...], hw: HardwareSpec, passes: SchedulePasses | None = None,
                  compressed_in_dram: bool = True) -> Segment:
    """One segment for the given tasks (interleaved if several); used by tests and verification."""
    passes = passes or SchedulePasses()
    tilings = tuple(tiling_for(t, hw, passes, compressed_in_dram) for t in tasks)
    return _SegmentCache(hw, passes).segment("gemm", tasks, tilings, tasks[0].repeat)


def schedule(workload: WorkloadSpec) -> Schedule:
    """Compile a workload into its sequence of tile-program segments."""
    hw, passes = workload.hardware, workload.schedule
    training = workload.mode == "training"
    # Inference deploys weights compressed offline; training compresses them each iteration,
    # once up front (pre-generation) or at every use.
    compressed = (not training) or passes.pregenerate_sparse_weights
    cache = _SegmentCache(hw, passes)
    layers = expand(workload)
    groups = lower(layers, workload.mode)
    attention = attention_layer_segments(layers, hw)
    tiling = {t.name: tiling_for(t, hw, passes, compressed) for g in groups for t in g}
    segments: list[Segment] = []
    if training and passes.pregenerate_sparse_weights:
        pruned = [t for g in groups for t in g if t.weight and tiling[t.name].sparse]
        for t in pruned:
            segments.append(cache.segment("pregen", (t,), (tiling[t.name],), t.repeat))
    for group in groups:
        if not group:  # an attention layer: its FlashAttention-style segments, in layer order
            segments.extend(next(attention))
            continue
        separate = [cache.segment("gemm", (t,), (tiling[t.name],), t.repeat) for t in group]
        # Interleaving needs a second accumulator slot for the other GEMM's tile in flight.
        if passes.interleave and passes.double_buffering and len(group) > 1:
            mixed = cache.segment("gemm", tuple(group), tuple(tiling[t.name] for t in group), group[0].repeat)
            if cache.cycles(mixed) < sum(cache.cycles(s) for s in separate):
                segments.append(mixed)
                continue
        segments.extend(separate)
    return Schedule(hw, passes, tuple(segments))

