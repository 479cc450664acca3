"""Run tile programs on ``AccelTop`` in ``amaranth.sim`` with a Python memory model.

The memory follows docs/isa.md: a request accepted in cycle ``t`` gets its first read beat (or
has its first write beat accepted) in cycle ``max(t + latency, channel free)``, beats of
successive requests follow back to back, and a write response comes in the cycle after its last
beat. The runner records when each unit took each instruction (start) and raised ``done`` (end
= that cycle + 1), the ``busy`` and ``cycles`` outputs, and the DRAM image afterwards.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from amaranth.sim import Simulator

from dataflows.isa import Unit, encode
from dataflows.program import Program
from dataflows.scheduler import Segment, compressed_tile_geometry
from rtl.top import AccelTop
from workloads.arith import index_bits
from workloads.generators.nm import compress_nm, nm_mask, random_weights
from workloads.spec import HardwareSpec

__all__ = ["MemoryModel", "RunResult", "run_on_rtl", "Operands", "build_image", "check_outputs"]


@dataclass
class _Request:
    kind: str
    addr: int
    beats: int
    accepted: int
    done: int = 0


class MemoryModel:
    """Byte-addressed DRAM with docs/isa.md timing and no backpressure."""

    def __init__(self, image: np.ndarray, hw: HardwareSpec) -> None:
        self.data = image.copy()
        self.width = hw.dram.bandwidth_bytes_per_cycle
        self.latency = hw.dram.latency_cycles
        self.channel: deque[_Request] = deque()
        self.free = 0  # first cycle the data channel is free
        self.responses: deque[int] = deque()  # due cycles
        self.written: set[int] = set()

    def due(self, cycle: int) -> _Request | None:
        head = self.channel[0] if self.channel else None
        if head is None:
            return None
        earliest = self.free if head.done else max(head.accepted + self.latency, self.free)
        return head if cycle >= earliest else None

    def read_beat(self, req: _Request) -> int:
        start = req.addr + req.done * self.width
        return int.from_bytes(self.data[start:start + self.width].tobytes(), "little")

    def write_beat(self, req: _Request, word: int, strb: int) -> None:
        start = req.addr + req.done * self.width
        raw = word.to_bytes(self.width, "little")
        for b in range(self.width):
            if strb >> b & 1:
                self.data[start + b] = raw[b]
                self.written.add(start + b)

    def advance(self, cycle: int) -> None:
        req = self.channel[0]
        req.done += 1
        self.free = cycle + 1
        if req.done == req.beats:
            self.channel.popleft()
            if req.kind == "wr":
                self.responses.append(cycle + 1)


@dataclass
class RunResult:
    """What one run on the RTL did."""

    cycles: int  # the ``cycles`` output after the run
    busy_cycles: int  # cycles ``busy`` stayed high from cycle 0
    trace: list[tuple[int, int]]  # per instruction, (start, end)
    image: np.ndarray
    written: set[int] = field(default_factory=set)


def run_on_rtl(hw: HardwareSpec, program: Program, image: np.ndarray,
               top: AccelTop | None = None, limit: int = 100_000) -> RunResult:
    """Load ``program`` through ``instr``, pulse ``start`` and run until ``busy`` falls."""
    top = top or AccelTop(hw)
    mem = MemoryModel(image, hw)
    queues = program.per_unit()
    ports = {Unit.DMA: top.controller.dma, Unit.PE: top.controller.pe,
             Unit.VEC: top.controller.vec}
    starts: dict[int, int] = {}
    ends: dict[int, int] = {}
    taken = {u: 0 for u in Unit}
    finished = {u: 0 for u in Unit}
    out: dict[str, int] = {}

    async def bench(ctx):
        for instr in program.instrs:
            ctx.set(top.instr.valid, 1)
            ctx.set(top.instr.payload, encode(instr))
            assert ctx.get(top.instr.ready)
            await ctx.tick()
        ctx.set(top.instr.valid, 0)
        ctx.set(top.start, 1)
        await ctx.tick()
        ctx.set(top.start, 0)
        rd_valid = wr_ready = resp_valid = False
        busy_cycles = None
        for cycle in range(limit):
            # Drive this cycle's memory outputs (they depend only on earlier cycles).
            head = mem.due(cycle)
            want_rd = head is not None and head.kind == "rd"
            want_wr = head is not None and head.kind == "wr"
            want_resp = bool(mem.responses) and mem.responses[0] <= cycle
            if want_rd:
                ctx.set(top.mem_rd_data.payload.data, mem.read_beat(head))
            if want_rd != rd_valid:
                ctx.set(top.mem_rd_data.valid, want_rd)
            if want_wr != wr_ready:
                ctx.set(top.mem_wr_data.ready, want_wr)
            if want_resp != resp_valid:
                ctx.set(top.mem_wr_resp.valid, want_resp)
            rd_valid, wr_ready, resp_valid = want_rd, want_wr, want_resp
            ctx.set(top.mem_rd_req.ready, 1)
            ctx.set(top.mem_wr_req.ready, 1)
            # Sample the settled outputs; the handshakes complete at the edge ending the cycle.
            if want_rd:
                assert ctx.get(top.mem_rd_data.ready)
                mem.advance(cycle)
            if want_wr and ctx.get(top.mem_wr_data.valid):
                mem.write_beat(head, ctx.get(top.mem_wr_data.payload.data),
                               ctx.get(top.mem_wr_data.payload.strb))
                mem.advance(cycle)
            if want_resp:
                mem.responses.popleft()
            for kind, port in (("rd", top.mem_rd_req), ("wr", top.mem_wr_req)):
                if ctx.get(port.valid):
                    mem.channel.append(_Request(kind, ctx.get(port.payload.addr),
                                                ctx.get(port.payload.beats), cycle))
            for unit, port in ports.items():
                if ctx.get(port.instr.valid) and ctx.get(port.instr.ready):
                    starts[queues[unit][taken[unit]]] = cycle
                    taken[unit] += 1
                if ctx.get(port.done):
                    ends[queues[unit][finished[unit]]] = cycle + 1
                    finished[unit] += 1
            if not ctx.get(top.busy):
                busy_cycles = cycle
                break
            await ctx.tick()
        assert busy_cycles is not None, f"still busy after {limit} cycles"
        out["busy"] = busy_cycles
        out["cycles"] = ctx.get(top.cycles)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    trace = [(starts.get(i, -1), ends.get(i, -1)) for i in range(len(program.instrs))]
    return RunResult(out["cycles"], out["busy"], trace, mem.data, mem.written)


# --------------------------------------------------------------------------------------------
# DRAM images and expected results
# --------------------------------------------------------------------------------------------


def _le_bytes(values: np.ndarray, nbytes: int) -> np.ndarray:
    """Little-endian two's complement bytes of integers, shape ``values.shape + (nbytes,)``."""
    v = np.asarray(values, dtype=np.int64).astype(np.uint64)
    shifts = np.arange(nbytes, dtype=np.uint64) * np.uint64(8)
    return ((v[..., None] >> shifts) & np.uint64(0xFF)).astype(np.uint8)


def _from_le(raw: np.ndarray, bits: int) -> np.ndarray:
    u = np.zeros(raw.shape[:-1], dtype=object)
    for b in range(raw.shape[-1]):
        u = u + (raw[..., b].astype(object) << (8 * b))
    u = u & ((1 << bits) - 1)
    return np.where(u >= (1 << (bits - 1)), u - (1 << bits), u).astype(np.int64)


def _pack_indices(idx: np.ndarray, ib: int) -> np.ndarray:
    rows, cols = idx.shape
    bits = ((idx[..., None].astype(np.uint64) >> np.arange(ib, dtype=np.uint64)) & 1)
    return np.packbits(bits.astype(np.uint8).reshape(rows, cols * ib), axis=1, bitorder="little")


@dataclass
class Operands:
    """Per task (tag order): A as executed ``[copies, m, k]`` and dense B ``[copies, k, n]``."""

    a: list[np.ndarray]
    b: list[np.ndarray]


def build_image(segment: Segment, hw: HardwareSpec, rng: np.random.Generator
                ) -> tuple[np.ndarray, Operands]:
    """A random DRAM image holding the segment's A and B tensors (everything else random too)."""
    program = segment.program
    end = max(t.addr + t.nbytes for t in program.tensors.values())
    image = rng.integers(0, 256, size=end + 4 * hw.dram.bandwidth_bytes_per_cycle + 64,
                         dtype=np.uint8)
    db = hw.data_bytes
    ops = Operands([], [])
    for task, tiling in zip(segment.work.tasks, segment.work.tilings):
        m, k, n = tiling.dims(task)
        a = random_weights((task.copies, m, k), hw.data_bits, rng)
        b = random_weights((task.copies, k, n), hw.data_bits, rng)
        ops.a.append(a)
        ops.b.append(b)
        ta, tb = program.tensors[f"{task.name}.A"], program.tensors[f"{task.name}.B"]
        rows_a = _le_bytes(a.reshape(-1, k), db).reshape(-1, k * db)
        for r, row in enumerate(rows_a):
            image[ta.addr + r * ta.stride: ta.addr + r * ta.stride + row.size] = row
        if tb.fmt == "nm_tiles":
            nm_n, nm_m = task.nm
            kc, rb = compressed_tile_geometry(tiling, task.nm, hw)
            nk, nn = -(-k // tiling.tk), -(-n // tiling.tn)
            for copy in range(task.copies):
                for ki in range(nk):
                    for ni in range(nn):
                        tile = b[copy, ki * tiling.tk:(ki + 1) * tiling.tk,
                                 ni * tiling.tn:(ni + 1) * tiling.tn]
                        values, idx = compress_nm(tile, nm_n, nm_m)
                        pad = ((0, 0), (0, hw.array.cols - tile.shape[1]))
                        values, idx = np.pad(values, pad), np.pad(idx, pad)
                        raw = np.concatenate([
                            _le_bytes(values, db).reshape(values.shape[0], -1),
                            _pack_indices(idx, index_bits(nm_m))], axis=1)
                        base = tb.addr + ((copy * nk + ki) * nn + ni) * kc * rb
                        image[base:base + raw.size] = raw.ravel()
        else:
            rows_b = _le_bytes(b.reshape(-1, n), db).reshape(-1, n * db)
            for r, row in enumerate(rows_b):
                image[tb.addr + r * tb.stride: tb.addr + r * tb.stride + row.size] = row
    return image, ops


def expected_c(segment: Segment, hw: HardwareSpec, ops: Operands, tag: int) -> np.ndarray:
    """numpy's C of task ``tag`` (all copies stacked), wrapped to ``acc_bits``."""
    task, tiling = segment.work.tasks[tag], segment.work.tilings[tag]
    a, b = ops.a[tag].astype(object), ops.b[tag]
    if tiling.sparse:
        b = np.where(nm_mask(b, *task.nm, axis=1), b, 0)  # groups along k of each [k, n] copy
    c = np.concatenate([a[i] @ b[i].astype(object) for i in range(a.shape[0])])
    half = 1 << (hw.acc_bits - 1)
    return ((c + half) % (2 * half) - half).astype(np.int64)


def check_outputs(segment: Segment, hw: HardwareSpec, image: np.ndarray, ops: Operands,
                  before: np.ndarray, written: set[int]) -> None:
    """C tensors equal numpy; no byte outside the C tensors was written."""
    allowed: set[int] = set()
    for tag, task in enumerate(segment.work.tasks):
        tc = segment.program.tensors[f"{task.name}.C"]
        want = expected_c(segment, hw, ops, tag)
        rows, cols = want.shape
        got = np.stack([
            _from_le(image[tc.addr + r * tc.stride: tc.addr + r * tc.stride + cols * hw.acc_bytes]
                     .reshape(cols, hw.acc_bytes), hw.acc_bits)
            for r in range(rows)])
        bad = np.argwhere(got != want)
        assert bad.size == 0, (
            f"{task.name}: {len(bad)} of {want.size} outputs differ, first at {tuple(bad[0])}: "
            f"RTL {got[tuple(bad[0])]}, numpy {want[tuple(bad[0])]}")
        for r in range(rows):
            start = tc.addr + r * tc.stride
            allowed.update(range(start, start + cols * hw.acc_bytes))
    stray = sorted(written - allowed)
    assert not stray, f"{len(stray)} bytes written outside the C tensors, first at {stray[0]:#x}"
    untouched = np.ones(before.size, dtype=bool)
    untouched[sorted(allowed)] = False
    assert (image[untouched] == before[untouched]).all()
