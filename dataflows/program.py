"""The program layer: one program type, one emitter and one DRAM allocator for every workload
family (GEMM layers, N:M weight pre-generation, attention).

A :class:`Program` is what the SimPy model and the RTL controller both execute. Writers — the
GEMM and pre-generation writers in ``dataflows.scheduler``, the attention writer in
``dataflows.attention`` — never compute a wait themselves: they :meth:`Emitter.emit` an
instruction together with the buffer slots (:class:`Resource`) it reads and writes, and the
emitter derives its completion-count waits (docs/isa.md, "Execution model"):

* a read waits for the slot's last writer (read after write);
* a write waits for the slot's last writer and for every unit's last reader since that write
  (write after write, write after read).

Waits on the instruction's own unit are dropped: program order already covers them.

A :class:`Segment` pairs a program with what it computes (its *work*: the GEMM tasks and
tilings, the weights pre-generated, or an attention work item) and how often it runs. The work
type says what ``Program.tags`` index: each work type has ``tag_names``, one per tag value.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Generic, TypeVar

from dataflows.isa import SLOTS_PER_BUFFER, UNIT_INDEX, UNIT_OF, ConvAddress, Instr, Op, Unit
from workloads.arith import ceil_div
from workloads.spec import HardwareSpec, SchedulePasses

__all__ = [
    "ALIGN",
    "Tensor",
    "Program",
    "Segment",
    "Schedule",
    "Resource",
    "Buffer",
    "Allocator",
    "Emitter",
]

#: Every tensor starts on a multiple of this many bytes of DRAM.
ALIGN = 64

#: An emitter's buffers: operands A and B, the accumulators C, and the element masks.
BUFFER_NAMES = ("A", "B", "C", "mask")


@dataclass(frozen=True, slots=True)
class Tensor:
    """A tensor's place in DRAM: ``rows × cols`` elements, row-major, rows ``stride`` bytes apart.

    ``fmt`` is ``dense``, ``nm_tiles`` (pre-compressed N:M weights stored tile by tile, each
    tile's compressed rows padded to the array width, see ``isa.row_bytes``) or ``mask_tiles``
    (attention element masks, one contiguous bit tile per partial block).
    """

    name: str
    addr: int
    rows: int
    cols: int
    elem_bytes: int
    stride: int
    fmt: str = "dense"
    nbytes: int = 0


@dataclass(slots=True)
class Program:
    """A tile program: instructions in program order plus the DRAM layout they refer to.

    ``tags[i]`` says which piece of the segment's work instruction ``i`` serves: an index into
    the ``tag_names`` of the segment's work (a GEMM task, a pre-generated weight, an attention
    phase). The hardware never sees tags; the statistics are split by them.
    """

    instrs: list[Instr] = field(default_factory=list)
    tags: list[int] = field(default_factory=list)
    tensors: dict[str, Tensor] = field(default_factory=dict)
    #: What the timing engines derive from the instructions alone, whatever the hardware (the
    #: unit queues, ``cost.shape_index``), by name, with the instruction count it was derived
    #: at: a program is timed once per design point of a sweep, and only ever grows.
    derived: dict[str, tuple] = field(default_factory=dict, repr=False, compare=False)
    #: The runs appended as copies (``Emitter.repeat``), in program order: ``(start, size,
    #: times)`` — each of the ``times`` blocks of ``size`` instructions after
    #: ``start + size`` is instructions ``start ..`` with only waits and addresses moved, so
    #: of the same shapes (``cost.shape_index`` copies theirs).
    copies: list[tuple[int, int, int]] = field(default_factory=list, repr=False, compare=False)

    def per_unit(self) -> dict[Unit, array]:
        """Indices of each unit's instructions, in the order that unit executes them."""
        known = self.derived.get("queues")
        if known is not None and known[0] == len(self.instrs):
            return known[1]
        # Kept as machine integers (4 bytes an instruction, not a list's 36): a VGG-16
        # iteration holds millions of instructions. A program that grew (a build resumed
        # under another bound) extends the queues it had.
        first, packed = known or (0, {u: array("i") for u in Unit})
        queues = [packed[u] for u in Unit]
        for i, instr in enumerate(self.instrs[first:], first):
            queues[UNIT_INDEX[instr.op]].append(i)
        self.derived["queues"] = (len(self.instrs), packed)
        return packed


W = TypeVar("W")


@dataclass(frozen=True, slots=True)
class Segment(Generic[W]):
    """One tile program and what it computes; it runs ``repeat`` times back to back.

    Attributes
    ----------
    work
        What the program computes: ``scheduler.GemmWork``, ``scheduler.PregenWork`` or
        ``attention.AttentionWork``. ``program.tags`` index ``work.tag_names``.
    key
        Identical keys ⇒ identical programs (and identical timing): simulated once.
    """

    work: W
    repeat: int
    key: tuple
    program: Program = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A workload compiled for one accelerator: its segments, run one after the other."""

    hardware: HardwareSpec
    passes: SchedulePasses
    segments: tuple[Segment, ...]

    def of(self, work_type: type) -> list[Segment]:
        """The segments whose work is a ``work_type``, in order."""
        return [s for s in self.segments if isinstance(s.work, work_type)]


# --------------------------------------------------------------------------------------------
# Emission
# --------------------------------------------------------------------------------------------


class Resource:
    """A buffer slot (or a mask slot): who wrote it last, who read it since, what it holds."""

    __slots__ = ("writer", "readers", "resident")

    def __init__(self) -> None:
        self.writer: tuple[Unit, int] | None = None
        self.readers: dict[Unit, int] = {}
        self.resident: tuple | None = None  # the tile it holds, for reuse (None: nothing)


class Buffer:
    """The slots of one buffer, handed out round-robin (ping-pong with two).

    A slot may hold a buffer-level tile of several *parts* (row ranges, one array tile each):
    :meth:`place` gives the parts their own :class:`Resource`, so a COMPUTE waits only for the
    loads of the parts it reads. Each new part starts with the hazards of everything the slot
    held before (its writers and readers count as readers of the part, so the part's first
    write waits for all of them): conservative per slot, exact per part within a tile.
    """

    __slots__ = ("slots", "turn", "parts")

    def __init__(self, nslots: int) -> None:
        self.slots = [Resource() for _ in range(nslots)]
        self.turn = 0
        self.parts: list[dict] = [{} for _ in range(nslots)]

    def place(self, s: int) -> None:
        """Slot ``s`` now receives a new tile: forget its parts, folding their hazards into the
        slot's own :class:`Resource` (which every new part inherits)."""
        whole = self.slots[s]
        readers = whole.readers
        for r in self.parts[s].values():
            if r.writer is not None:
                unit, ordinal = r.writer
                if readers.get(unit, -1) < ordinal:
                    readers[unit] = ordinal
            for unit, ordinal in r.readers.items():
                if readers.get(unit, -1) < ordinal:
                    readers[unit] = ordinal
        if whole.writer is not None:
            unit, ordinal = whole.writer
            if readers.get(unit, -1) < ordinal:
                readers[unit] = ordinal
            whole.writer = None
        self.parts[s] = {}

    def part(self, s: int, key: tuple) -> Resource:
        """The resource of part ``key`` of the tile in slot ``s`` (created on first use)."""
        parts = self.parts[s]
        if key not in parts:
            r = Resource()
            r.readers = dict(self.slots[s].readers)
            parts[key] = r
        return parts[key]

    def claim(self) -> int:
        """The next slot in turn."""
        s = self.turn
        self.turn = (s + 1) % len(self.slots)
        return s

    def find_or_claim(self, key: tuple) -> tuple[int, bool]:
        """``(slot, True)`` if a slot holds tile ``key`` (reuse), else ``(next slot, False)``."""
        for s, slot in enumerate(self.slots):
            if slot.resident == key:
                return s, True
        return self.claim(), False

    def holding(self, key: tuple) -> int:
        """The slot that holds tile ``key``."""
        return next(s for s, slot in enumerate(self.slots) if slot.resident == key)

    def claim_free(self) -> int:
        """The next slot in turn that holds nothing; never one whose tile is still live."""
        n = len(self.slots)
        for j in range(n):
            s = (self.turn + j) % n
            if self.slots[s].resident is None:
                self.turn = (s + 1) % n
                return s
        raise AssertionError("every slot holds a live tile (more GEMMs interleaved than slots)")


class Allocator:
    """Places tensors one after the other in DRAM, each on an :data:`ALIGN` boundary."""

    __slots__ = ("tensors", "end")

    def __init__(self) -> None:
        self.tensors: dict[str, Tensor] = {}
        self.end = 0

    def alloc(self, name: str, rows: int, cols: int, elem_bytes: int, fmt: str = "dense",
              nbytes: int | None = None) -> Tensor:
        """A new tensor of ``rows × cols`` elements (``nbytes`` if its format packs them)."""
        addr = ceil_div(self.end, ALIGN) * ALIGN
        size = nbytes if nbytes is not None else rows * cols * elem_bytes
        tensor = Tensor(name, addr, rows, cols, elem_bytes, cols * elem_bytes, fmt, size)
        self.tensors[name] = tensor
        self.end = addr + size
        return tensor


class Emitter:
    """Appends instructions to a program, turning declared slot accesses into waits.

    Parameters
    ----------
    nslots
        Slots per buffer (two with double buffering; one without).
    instr_type
        The instruction class built (:class:`~dataflows.isa.SpGEMMInstr` for SpGEMM programs).
    """

    def __init__(self, nslots: int = SLOTS_PER_BUFFER, instr_type: type[Instr] = Instr) -> None:
        self.instr_type = instr_type  # SpGEMM programs: isa.SpGEMMInstr
        self.program = Program()
        self.dram = Allocator()
        self.program.tensors = self.dram.tensors
        self.issued = [0, 0, 0]
        self.nslots = nslots
        self.buffers = {name: Buffer(nslots) for name in BUFFER_NAMES}
        self.shared: dict = {}  # values emitted before, by themselves (_shared_fields)

    def slot(self, buffer: str, index: int) -> Resource:
        return self.buffers[buffer].slots[index]

    def emit(self, op: Op, tag: int, reads: tuple[Resource, ...] = (),
             writes: tuple[Resource, ...] = (), **fields) -> tuple[Unit, int]:
        """Append ``op`` with ``fields``; returns its (unit, ordinal on that unit)."""
        return self.emit_fields(op, tag, reads, writes, fields)

    def emit_fields(self, op: Op, tag: int, reads: tuple[Resource, ...],
                    writes: tuple[Resource, ...], fields: dict) -> tuple[Unit, int]:
        """:meth:`emit` with the fields in a dict, which it may change."""
        unit = UNIT_INDEX[op]
        wait = self._wait(unit, reads, writes)
        return self.append(self.instr_type(op, self._shared_fields(wait, fields), **fields), tag,
                           unit, reads, writes)

    def emit_compute(self, tag: int, reads: tuple[Resource, ...], acc: Resource, slot: int,
                     b_slot: int, c_slot: int, accumulate: bool, m: int, cols: int, k: int,
                     nm_n: int, nm_m: int, a_row: int, b_row: int, c_row: int,
                     conv: ConvAddress | None) -> tuple[Unit, int]:
        """A COMPUTE of ``m`` streamed rows (``rows = m``) writing accumulator part ``acc``:
        :meth:`emit_fields`' instruction, built from positional fields. This is the
        scheduler's innermost loop (about half of a program's instructions), and keyword
        arguments through a dict cost about twice as much (docs/scheduler.md, "What
        scheduling costs")."""
        unit = _PE
        wait = self._wait(unit, reads, (acc,))
        shared = self.shared
        if conv is not None:
            conv = shared.setdefault(conv, conv)
        a_row, b_row, c_row = self._shared_rows(a_row, b_row, c_row)
        wait = shared.setdefault(wait, wait)
        # Positional, in Instr's field order: op, wait, slot, b_slot, c_slot, accumulate, addr,
        # stride, rows, cols, k, m, nm_n, nm_m, mask, requant, shift, a_row, b_row, c_row, conv.
        instr = self.instr_type(_COMPUTE, wait, slot, b_slot, c_slot, accumulate, 0, 0, m, cols,
                                k, m, nm_n, nm_m, False, False, 0, a_row, b_row, c_row, conv)
        return self.append(instr, tag, unit, reads, (acc,))

    def emit_transfer(self, op: Op, tag: int, reads: tuple[Resource, ...],
                      writes: tuple[Resource, ...], slot: int, addr: int, stride: int, rows: int,
                      cols: int, k: int = 0, nm_n: int = 0, nm_m: int = 0, a_row: int = 0,
                      b_row: int = 0, c_row: int = 0, requant: bool = False, shift: int = 0
                      ) -> tuple[Unit, int]:
        """A DMA transfer (LOAD_A, LOAD_B, STORE_C, STORE_B): :meth:`emit_fields`' instruction
        from named fields rather than a dict, like :meth:`emit_compute` (the GEMM writers'
        loads and stores are most of a program's other instructions)."""
        unit = UNIT_INDEX[op]
        wait = self._wait(unit, reads, writes)
        a_row, b_row, c_row = self._shared_rows(a_row, b_row, c_row)
        wait = self.shared.setdefault(wait, wait)
        # Positional, in Instr's field order (see emit_compute).
        instr = self.instr_type(op, wait, slot, 0, 0, False, addr, stride, rows, cols, k, 0, nm_n,
                                nm_m, False, requant, shift, a_row, b_row, c_row, None)
        return self.append(instr, tag, unit, reads, writes)

    def _shared_rows(self, a_row: int, b_row: int, c_row: int) -> tuple[int, int, int]:
        """The slot row offsets, each large one replaced by an equal one emitted before
        (:meth:`_shared_fields`, for the positional paths)."""
        shared = self.shared
        if a_row > _SMALL_INT:
            a_row = shared.setdefault(a_row, a_row)
        if b_row > _SMALL_INT:
            b_row = shared.setdefault(b_row, b_row)
        if c_row > _SMALL_INT:
            c_row = shared.setdefault(c_row, c_row)
        return a_row, b_row, c_row

    @staticmethod
    def _wait(unit: int, reads: tuple[Resource, ...], writes: tuple[Resource, ...]
              ) -> tuple[int, int, int]:
        """The wait tuple of an instruction on ``unit``: the last writer of every slot touched
        and, for a write, every unit's reader since then; never ``unit`` itself (program order
        covers it)."""
        wait = [0, 0, 0]
        for r in reads:
            if r.writer is not None:
                other, ordinal = r.writer
                if ordinal >= wait[other]:
                    wait[other] = ordinal + 1
        for r in writes:
            if r.writer is not None:
                other, ordinal = r.writer
                if ordinal >= wait[other]:
                    wait[other] = ordinal + 1
            for other, ordinal in r.readers.items():
                if ordinal >= wait[other]:
                    wait[other] = ordinal + 1
        wait[unit] = 0
        return wait[0], wait[1], wait[2]

    def append(self, instr: Instr, tag: int, unit: int, reads: tuple[Resource, ...],
               writes: tuple[Resource, ...]) -> tuple[Unit, int]:
        """Append ``instr`` (on ``unit``, waits computed) and record its slot accesses;
        returns its (unit, ordinal on that unit). Subclasses extend it (a timed emitter)."""
        self.program.instrs.append(instr)
        self.program.tags.append(tag)
        ordinal = self.issued[unit]
        self.issued[unit] = ordinal + 1
        for r in reads:
            r.readers[unit] = ordinal
        for r in writes:
            r.writer, r.readers = (unit, ordinal), {}
        return UNIT_OF[instr.op], ordinal

    # Periodic runs ----------------------------------------------------------------------------

    def state(self) -> tuple:
        """What the instructions emitted next depend on besides their writer's arguments, as
        plain values: the instruction count, each unit's count, every buffer's turn and
        resources' shape (parts, which units wrote and read), the tiles resident, and the
        instruction numbers of the resources' writers and readers. See :meth:`repeat`."""
        shape, tiles, numbers = [], [], []
        for name, buf in self.buffers.items():
            shape.append(buf.turn)
            for slot, parts in zip(buf.slots, buf.parts):
                tiles.append((name, slot.resident))
                keys = sorted(parts)
                shape.append(tuple(keys))
                for r in (slot, *(parts[key] for key in keys)):
                    readers = sorted(r.readers.items())
                    shape.append((r.writer and r.writer[0], tuple(u for u, _ in readers)))
                    numbers.extend(readers if r.writer is None else [r.writer, *readers])
        return (len(self.program.instrs), tuple(self.issued), tuple(shape), tuple(tiles),
                tuple(numbers))

    def repeat(self, first: tuple, middle: tuple, times: int, moved) -> bool:
        """Append ``times`` more periods of a run that repeats itself, by arithmetic.

        ``first`` and ``middle`` are the :meth:`state` where the last two periods emitted
        began. The writer vouches that each further period's arguments are the last one's with
        its addresses a fixed stride on; ``moved(buffer, tile, periods)`` names a resident tile
        ``periods`` periods on. Emission is then a function of the state that commutes with a
        :class:`_Shift` of instruction numbers: if the state now is ``middle`` shifted, and
        the last period the one before shifted (its waits; its addresses by a stride), every
        later period is the last one shifted again. Checked here; False, with nothing
        appended, if it does not hold."""
        now = self.state()
        if (self.instr_type is not Instr or now[0] - middle[0] != middle[0] - first[0]
                or now[2] != middle[2]
                or now[3] != tuple((b, t and moved(b, t, 1)) for b, t in middle[3])):
            return False
        waits = _wait_pairs(self.program, first[0], middle[0])
        if waits is None:
            return False
        shift = _Shift.fit(first[1], middle[1], now[1], list(zip(middle[4], now[4])) + waits)
        strides = shift and _addr_strides(self.program, first[0], middle[0])
        if strides is None:
            return False
        self._append_periods(middle[0], strides, shift, times)
        self._shift_state(shift.times(times), lambda buffer, tile: moved(buffer, tile, times))
        return True

    def _append_periods(self, middle: int, strides: list[int], shift: _Shift, times: int) -> None:
        """``times`` copies of the instructions from ``middle`` on, copy ``p`` with its waits
        ``shift.times(p)`` and its address ``p·stride`` on."""
        program, make = self.program, self.instr_type
        period = program.instrs[middle:]
        # Per instruction: its fields, its wait, how far that moves a period (each number
        # moves by its unit's count or stays, ``_Shift.wait``), its address and stride.
        template = [(list(_values(instr)), instr.wait,
                     tuple(m - w for m, w in zip(shift.wait(instr.wait), instr.wait)),
                     instr.addr, stride) for instr, stride in zip(period, strides)]
        append = program.instrs.append
        shared = self.shared.setdefault  # equal waits stored once, as _shared_fields does
        for p in range(1, times + 1):
            for args, (w0, w1, w2), (d0, d1, d2), addr, stride in template:
                moved = (w0 + p * d0, w1 + p * d1, w2 + p * d2)
                args[_WAIT] = shared(moved, moved)
                args[_ADDR] = addr + p * stride
                append(make(*args))
        program.tags.extend(program.tags[middle:] * times)
        program.copies.append((middle, len(period), times))
        self.issued = [count + d * times for count, d in zip(self.issued, shift.delta)]

    def _shift_state(self, shift: _Shift, moved) -> None:
        """Every buffer's hazards moved by ``shift``, its resident tiles ``moved(buffer, tile)``."""
        for name, buf in self.buffers.items():
            for slot, parts in zip(buf.slots, buf.parts):
                shift.resource(slot)
                if slot.resident is not None:
                    slot.resident = moved(name, slot.resident)
                for part in parts.values():
                    shift.resource(part)

    def _shared_fields(self, wait: tuple[int, int, int], fields: dict) -> tuple[int, int, int]:
        """The wait tuple, with it and ``fields``' convolution address and row offsets replaced
        by equal values emitted before where there are: a program's instructions repeat a few
        of them (VGG-16: 22,698 distinct addresses among 1.48 M COMPUTEs), and a value shared
        is stored once (about a third of a program's memory). Values stay equal, so the
        program is the same."""
        shared = self.shared
        conv = fields.get("conv")
        if conv is not None:
            fields["conv"] = shared.setdefault(conv, conv)
        for name in _ROW_FIELDS:
            value = fields.get(name)
            if value is not None and value > _SMALL_INT:
                fields[name] = shared.setdefault(value, value)
        return shared.setdefault(wait, wait)


class _Shift:
    """Instruction numbers (per unit) moved on by a whole number of a run's periods: a number
    from ``since`` on moves ``delta`` per period, an earlier one stays. The move is strictly
    increasing per unit and moves every instruction the run emits, so the emitter's maxima,
    comparisons and waits commute with it, wherever ``since`` lies (:meth:`fit` finds one)."""

    __slots__ = ("since", "delta")

    def __init__(self, since: tuple, delta: tuple) -> None:
        self.since, self.delta = since, delta

    @classmethod
    def fit(cls, first: tuple, middle: tuple, now: tuple, pairs: list) -> _Shift | None:
        """The shift taking each ``(unit, number)`` pair's first to its second, one period of
        units' counts ``middle - first`` (as ``now - middle`` must be); None if there is none."""
        delta = tuple(m - f for f, m in zip(first, middle))
        if tuple(n - m for m, n in zip(middle, now)) != delta:
            return None
        moving, staying = list(middle), [-1, -1, -1]
        for (unit, before), (_, after) in pairs:  # equal units: the states' shapes are equal
            if after == before and delta[unit]:
                staying[unit] = max(staying[unit], before)
            elif after == before + delta[unit]:
                moving[unit] = min(moving[unit], before)
            else:
                return None
        if any(stay >= move for stay, move in zip(staying, moving)):
            return None
        return cls(tuple(moving), delta)

    def times(self, periods: int) -> _Shift:
        return _Shift(self.since, tuple(d * periods for d in self.delta))

    def ordinal(self, unit: int, ordinal: int) -> int:
        return ordinal + self.delta[unit] if ordinal >= self.since[unit] else ordinal

    def wait(self, wait: tuple[int, int, int]) -> tuple[int, int, int]:
        """A wait (instruction number + 1; 0: none) moved."""
        (s0, s1, s2), (d0, d1, d2), (w0, w1, w2) = self.since, self.delta, wait
        return (w0 + d0 if w0 > s0 else w0, w1 + d1 if w1 > s1 else w1,
                w2 + d2 if w2 > s2 else w2)

    def resource(self, r: Resource) -> None:
        """Move a live resource's hazards."""
        if r.writer is not None:
            r.writer = (r.writer[0], self.ordinal(*r.writer))
        r.readers = {unit: self.ordinal(unit, ordinal) for unit, ordinal in r.readers.items()}


def _wait_pairs(program: Program, first: int, middle: int) -> list | None:
    """Each wait of period ``[first, middle)`` beside the next period's, as instruction
    numbers (``_Shift.fit``); None if a wait on nothing meets one on something."""
    instrs, size, pairs = program.instrs, middle - first, []
    for i in range(first, middle):
        for unit, (x, y) in enumerate(zip(instrs[i].wait, instrs[i + size].wait)):
            if bool(x) != bool(y):
                return None
            if x:
                pairs.append(((unit, x - 1), (unit, y - 1)))
    return pairs


def _addr_strides(program: Program, first: int, middle: int) -> list[int] | None:
    """Each instruction's address stride from period ``[first, middle)`` to the next, if the
    next is this one with only its address changed beside its waits (which the shift was fit
    to, ``_Shift.fit``); None if not."""
    instrs, tags, size, strides = program.instrs, program.tags, middle - first, []
    for i in range(first, middle):
        x, y = instrs[i], instrs[i + size]
        if tags[i] != tags[i + size] or type(x) is not type(y):
            return None
        xs, ys = list(_values(x)), list(_values(y))
        xs[_WAIT], xs[_ADDR] = ys[_WAIT], ys[_ADDR]
        if xs != ys:
            return None
        strides.append(y.addr - x.addr)
    return strides


#: Instruction fields whose values repeat across a program (slot row offsets).
_ROW_FIELDS = ("a_row", "b_row", "c_row")

#: CPython keeps one object of each integer up to this; larger ones are worth sharing.
_SMALL_INT = 256

_PE = int(Unit.PE)
_COMPUTE = Op.COMPUTE

#: An instruction's fields, in order (``Emitter.repeat`` builds copies positionally).
_FIELDS = tuple(f.name for f in fields(Instr))
_values = attrgetter(*_FIELDS)
_WAIT, _ADDR = _FIELDS.index("wait"), _FIELDS.index("addr")
