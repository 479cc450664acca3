"""The output-stationary PE-array unit: executes COMPUTE on :class:`rtl.os_array.OSSystolicArray`
(docs/isa.md, "Output-stationary COMPUTE"; docs/rtl.md, "Output-stationary PE-array unit").

A COMPUTE issued in cycle ``s`` (``R × C`` array, ``m`` output rows, ``kc`` reduction chunks)
walks ``T·kc`` blocks, ``T = ⌈m/R⌉`` m-tiles, tile-major (block ``b = t·kc + c``), each exactly
``R`` cycles long:

* **A reads** (the A walker, from cycle ``s``): block ``b``'s row ``i < m_t`` in cycle
  ``s + b·R + i``, slot row ``a_row + c·a_chunk_rows + t·R + i`` (or, through the
  convolution address mode, pixel ``t·R + i`` at chunk ``c``'s kernel offsets); it arrives a cycle later into row ``i`` of the fill register block (rows
  ``i ≥ m_t`` are zero).
* With the arrival of the block's row ``R − 1`` (cycle ``s + (b+1)·R``) the stream block takes
  the whole fill block and presents one reduction step per cycle, shifting: dense, operand
  ``r`` of every row; N:M, the M operands of group ``r // N``.
* **B reads** (the B walker, ``R`` cycles behind): step ``r`` of block ``b`` reads weight row
  ``b_row + c·b_chunk_rows + r`` (or the weight-side address mode's pixel ``c·k + r``,
  restarting every m-tile) in cycle ``s + (b+1)·R + r``, zero for ``r ≥ k_c``; a flush step (``first``, zero
  weights) follows the last block.
* Step and weight are registered at the array edge, which PE ``(0, 0)`` sees in cycle
  ``τ = s + (b+1)·R + 2 + r``; the first step of every tile (and the flush) carries ``first``.
* **Writes**: the drain of the tile whose successor's first step entered in cycle ``φ`` brings
  row ``i`` to the bottom of column ``j`` in cycle ``φ + 2R − i + j``; a write sequencer
  (started ``R − 1`` cycles after ``φ``) produces column 0's (row, address) one cycle ahead and
  a register chain skews it to the other columns, which read-add-write their accumulator bank.

The last write (tile ``T − 1``, row 0, column ``C − 1``) is in cycle ``s + T·kc·R + 3R + C + 1``:
``dataflows.cost.os_compute_cycles``.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from dataflows.isa import Unit
from rtl import layouts
from rtl.compute_base import ComputeBase
from rtl.os_array import OSSystolicArray
from rtl.params import Geometry
from workloads.spec import HardwareSpec

__all__ = ["OSComputeUnit"]

#: The word's fields the sequencers need after the issue cycle.
_KEPT = ("slot", "b_slot", "c_slot", "accumulate", "k", "m", "cols", "nm_n", "a_row", "b_row",
         "c_row", "chunks", "a_chunk_rows", "b_chunk_rows", "k_last", "conv_kh0")


@dataclass(frozen=True)
class _Walk:
    """One walker's signals this cycle (see :meth:`OSComputeUnit._walker`)."""

    active: object  # walking this cycle
    pos: object  # position in the block (A: row i, B: step r)
    chunk: object  # the block's chunk c
    end_block: object  # the block's last position
    left: object  # output rows from this tile's first on (m − t·R)
    off: object  # c · the chunk stride
    last_chunk: object  # this block is its tile's last chunk
    tile_start: object  # position 0 of chunk 0
    first_block: object  # block 0 (tile 0, chunk 0)
    end: object  # the last position of the last block


class OSComputeUnit(ComputeBase, wiring.Component):
    """The output-stationary PE array and the sequencers that feed and drain it.

    Parameters
    ----------
    hw
        The hardware description (``array.dataflow: output_stationary``).

    Attributes
    ----------
    issue, a_rd, b_rd, c_rd, c_wr
        As :class:`rtl.compute.ComputeUnit`'s.
    """

    def __init__(self, hw: HardwareSpec) -> None:
        self._g = g = Geometry.of(hw)
        self.array = OSSystolicArray(hw)
        super().__init__({
            "issue": In(layouts.IssueSignature(Unit.PE, output_stationary=True)),
            "a_rd": Out(layouts.InputReadSignature(g)),
            "b_rd": Out(layouts.WeightRowReadSignature(g)),
            "c_rd": Out(layouts.AccReadSignature(g)),
            "c_wr": Out(layouts.AccWriteSignature(g)),
        })

    def elaborate(self, platform):
        m = Module()
        g = self._g
        m.submodules.array = array = self.array
        busy, first = Signal(), Signal()
        m.d.comb += [self.issue.instr.ready.eq(~busy), first.eq(self.issue.instr.valid & ~busy)]
        m.d.sync += busy.eq(busy | first)
        self._conv_config(m, first, _KEPT)
        mode = self._pattern_mode(m, first)
        if g.sparse:
            m.d.comb += array.dense.eq(mode == 0)
        a_walk = self._walker(m, first, self._field("a_chunk_rows"), "aw")
        rows = self._a_reads(m, first, a_walk)
        stream = self._stream(m, mode, rows)
        b_start = Signal()
        m.d.sync += b_start.eq(a_walk.first_block & (a_walk.pos == g.rows - 1))
        b_walk = self._walker(m, b_start, self._field("b_chunk_rows"), "bw")
        drain = self._b_reads(m, first, b_walk, stream)
        done = self._writes(m, first, busy, drain)
        m.d.comb += self.issue.done.eq(busy & done)
        with m.If(busy & done):
            m.d.sync += busy.eq(0)
        return m

    def _walker(self, m: Module, start, stride, prefix: str) -> _Walk:
        """Walk the instruction's blocks from ``start`` (position 0 of block 0): ``R``
        positions per block, ``kc`` chunks per tile (chunk offsets ``stride`` apart), tile
        after tile until one with at most ``R`` output rows left."""
        g, field = self._g, self._field
        pos = Signal(range(g.rows), name=f"{prefix}_pos")
        chunk = Signal(12, name=f"{prefix}_chunk")
        left = Signal(17, name=f"{prefix}_left")
        off = Signal(22, name=f"{prefix}_off")
        running = Signal(name=f"{prefix}_running")
        cur_pos, cur_chunk = Mux(start, 0, pos), Mux(start, 0, chunk)
        cur_left, cur_off = Mux(start, field("m"), left), Mux(start, 0, off)
        active = start | running
        end_block = cur_pos == g.rows - 1
        last_chunk = cur_chunk + 1 >= field("chunks")  # chunks 0 and 1: one
        end = active & end_block & last_chunk & (cur_left <= g.rows)
        with m.If(active):
            m.d.sync += [
                pos.eq(Mux(end_block, 0, cur_pos + 1)),
                chunk.eq(Mux(end_block, Mux(last_chunk, 0, cur_chunk + 1), cur_chunk)),
                off.eq(Mux(end_block, Mux(last_chunk, 0, cur_off + stride), cur_off)),
                left.eq(Mux(end_block & last_chunk, cur_left - g.rows, cur_left)),
                running.eq(~end),
            ]
        block0 = active & (cur_chunk == 0) & (cur_left == field("m"))
        return _Walk(active, cur_pos, cur_chunk, end_block, cur_left, cur_off, last_chunk,
                     active & (cur_pos == 0) & (cur_chunk == 0), block0, end)

    def _a_reads(self, m: Module, first, walk: _Walk):
        """Read block rows ``i < m_t``; returns (a row arrives this cycle, its block position,
        the row: its first ``k_max`` operands, zero for a row not read or a padding pixel)."""
        g, field, rd = self._g, self._field, self.a_rd
        reading = walk.active & (walk.pos < walk.left)
        conv_on = field("conv") & ~field("conv_b")
        conv_row, pad, multi = self._a_conv(m, first, walk, reading, conv_on)
        plain = field("a_row") + walk.off + (field("m") - walk.left) + walk.pos
        m.d.comb += [rd.en.eq(reading), rd.slot.eq(field("slot")),
                     rd.row.eq(Mux(conv_on, conv_row, plain))]
        arrived, pos, keep = Signal(), Signal(range(g.rows)), Signal()
        # A padding pixel's row arrives as zeros (with several parts the buffer zeroes each).
        m.d.sync += [arrived.eq(walk.active), pos.eq(walk.pos),
                     keep.eq(reading & ~(conv_on & pad & ~multi))]
        row = Signal(g.k_max * g.data_bits)
        m.d.comb += row.eq(Mux(keep, Cat(*(rd.data[e] for e in range(g.k_max))), 0))
        return arrived, pos, row

    def _a_conv(self, m: Module, first, walk: _Walk, reading, conv_on):
        """The address mode on A rows: block ``(t, c)`` reads pixels ``t·R ..`` (from the
        word's first) at chunk ``c``'s kernel offsets (:meth:`_kernel_walk`). With one chunk
        the counters just go on; with several they restart at every block: at the m-tile's
        first pixel (``tile``, the word's offset) moved by the chunk's offset, and chunk 1's
        restart keeps the counters of chunk 0, which then stand at the next m-tile's first
        pixel (``next_tile``). Returns (slot row, padding, several parts)."""
        field = self._field
        ddh, ddw, doff, group, kw0 = self._kernel_walk(m, walk)
        origin = self._conv_origin(field, field("a_row"))
        tile = {name: Signal.like(value, name=f"ca_tile_{name}") for name, value in
                (("ow", Signal(12)), ("oh", Signal(12)), ("ih", Signal(signed(16))),
                 ("iw", Signal(signed(16))), ("line", Signal(signed(34))))}
        next_tile = {name: Signal.like(value, name=f"ca_next_{name}")
                     for name, value in tile.items()}
        base = {name: Mux(first, origin[name], Mux(walk.tile_start, next_tile[name], tile[name]))
                for name in tile}
        start = {"ow": base["ow"], "oh": base["oh"], "ih": base["ih"] + ddh,
                 "iw": base["iw"] + ddw, "line": base["line"] + doff - ddw}
        restart = first | (walk.active & (walk.pos == 0) & ~walk.first_block
                           & (field("chunks") > 1))
        row, pad = self._conv_address(m, first, reading, field("a_row"), len(self.a_rd.row),
                                      "ca", restart=restart, start=start, delta=(ddh, ddw))
        regs = self._conv_regs
        with m.If(first):
            m.d.sync += [tile[name].eq(origin[name]) for name in tile]
        with m.If(walk.active & (walk.pos == 0) & (walk.chunk == 1)):
            m.d.sync += [next_tile[name].eq(regs[name]) for name in tile]
        with m.If(walk.tile_start & ~walk.first_block):
            m.d.sync += [tile[name].eq(next_tile[name]) for name in tile]
        multi = self._conv_parts(m, conv_on, row, pad, group=group, kw0=kw0)
        return row, pad, multi

    def _kernel_walk(self, m: Module, walk: _Walk):
        """Chunk ``c``'s kernel offsets (``isa.os_conv_chunks``): from the word's first offset
        ``o0 = kh0·kw + kw0`` on, ``g = conv_group`` offsets a chunk in row-major order over
        ``kh × kw``; after the kernel's last offset, offset 0 of the next channel chunk,
        ``conv_chunk_rows`` slot rows on. Returns the block's (kernel rows and columns from
        the word's offset, slot rows from the word's offset's, offsets in this chunk
        ``min(g, kh·kw − o)``, its first offset's kernel column)."""
        field, g = self._field, self._g
        kw, kh0, kw0, in_w = (field("conv_kw"), field("conv_kh0"), field("conv_kw0"),
                              field("conv_in_w"))
        per, grp = field("conv_kh") * kw, Mux(field("conv_group") > 1, field("conv_group"), 1)
        regs = {"o": Signal(12, name="kw_o"), "col": Signal(6, name="kw_col"),
                "row": Signal(6, name="kw_row"), "base": Signal(signed(34), name="kw_base"),
                "off": Signal(signed(34), name="kw_off")}
        init = {"o": kh0 * kw + kw0, "col": kw0, "row": kh0, "base": 0, "off": 0}
        cur = {name: Mux(walk.tile_start, init[name], reg) for name, reg in regs.items()}
        chain = self._offset_chain(cur["col"], g.a_banks)
        col, ddh, delta = chain[1]
        for j in range(2, len(chain)):
            col, ddh, delta = (Mux(grp == j, new, old) for new, old in zip(chain[j], (col, ddh, delta)))
        o = cur["o"] + grp
        wrap = o >= per  # on to the next channel chunk's patch
        base = Mux(wrap, cur["base"] + field("conv_chunk_rows"), cur["base"])
        nxt = {"o": Mux(wrap, 0, o), "col": Mux(wrap, 0, col),
               "row": Mux(wrap, 0, cur["row"] + ddh), "base": base,
               "off": Mux(wrap, base - kh0 * in_w - kw0, cur["off"] + delta)}
        with m.If(walk.active):
            m.d.sync += [reg.eq(Mux(walk.end_block, nxt[name], cur[name]))
                         for name, reg in regs.items()]
        left = per - cur["o"]
        return (cur["row"] - kh0, cur["col"] - kw0, cur["off"], Mux(left < grp, left, grp),
                cur["col"])

    def _stream(self, m: Module, mode, rows):
        """The fill and stream register blocks: fill row ``i`` takes block row ``i`` as it
        arrives; with row ``R − 1`` the stream block takes the block and then presents one
        step per cycle, shifting by an operand (dense) or by M operands every N steps (N:M).
        Returns the stream block's rows (lane ``t`` of row ``i``: operand ``t`` of row ``i``)."""
        g, bits = self._g, self._g.data_bits
        arrived, pos, incoming = rows
        fill = [Signal.like(incoming, name=f"fill_{i}") for i in range(g.rows)]
        stream = [Signal.like(incoming, name=f"stream_{i}") for i in range(g.rows)]
        with m.If(arrived):
            for i in range(g.rows - 1):
                with m.If(pos == i):
                    m.d.sync += fill[i].eq(incoming)
        phase = Signal(range(max(2, g.n_max)))  # the step within its group of N
        wrap = phase + 1 >= self._field("nm_n")
        with m.If(arrived & (pos == g.rows - 1)):
            m.d.sync += [s.eq(f) for s, f in zip(stream, fill[:-1] + [incoming])]
            m.d.sync += phase.eq(0)
        with m.Else():
            m.d.sync += phase.eq(Mux(wrap, 0, phase + 1))
            with m.If(mode == 0):
                m.d.sync += [s.eq(s >> bits) for s in stream]
            for index, (_, mm) in enumerate(g.patterns):
                with m.Elif((mode == index + 1) & wrap):
                    m.d.sync += [s.eq(s >> (mm * bits)) for s in stream]
        return stream

    def _b_reads(self, m: Module, first, walk: _Walk, stream):
        """Read step ``r``'s weight row (zero for ``r ≥ k_c``), then the flush step; register
        both the step and the stream's lanes at the array edge. Returns whether the edge's
        step drains a tile (a tile's first step but the instruction's first, or the flush)."""
        g, field, rd, array = self._g, self._field, self.b_rd, self.array
        k_c = Mux(walk.last_chunk & (field("k_last") != 0), field("k_last"), field("k"))
        reading = walk.active & (walk.pos < k_c)
        conv_b = field("conv") & field("conv_b")
        conv_row, pad = self._conv_address(m, first, reading, field("b_row"), len(rd.row), "cb",
                                           restart=walk.tile_start)
        plain = field("b_row") + walk.off + walk.pos
        m.d.comb += [rd.en.eq(reading), rd.slot.eq(field("b_slot")),
                     rd.row.eq(Mux(conv_b, conv_row, plain))]
        flush, keep, starts, drains = Signal(), Signal(), Signal(), Signal()
        tail = walk.tile_start & ~walk.first_block  # a tile's start but the first
        m.d.sync += [flush.eq(walk.end), keep.eq(reading & ~(conv_b & pad)),
                     starts.eq(walk.tile_start | flush), drains.eq(tail | flush)]
        edge_drains = Signal()
        m.d.sync += edge_drains.eq(drains)
        for j in range(g.cols):
            step = array.steps[j]
            m.d.sync += [step.entry.value.eq(Mux(keep, rd.data[j].value, 0)),
                         step.entry.index.eq(rd.data[j].index), step.first.eq(starts)]
        for i in range(g.rows):
            for t in range(min(g.m_max, g.k_max)):
                m.d.sync += array.act[i][t].eq(stream[i][t * g.data_bits:(t + 1) * g.data_bits])
        return edge_drains

    def _writes(self, m: Module, first, busy, edge_drains):
        """Read-add-write the drained sums: column 0's row ``R − 1 − q`` of a drained tile in
        cycle ``φ + R + 1 + q``, column ``j`` ``j`` cycles later. Returns whether this cycle
        writes the instruction's last sum (row 0 of the last tile, column ``C − 1``)."""
        g, field = self._g, self._field
        trigger = edge_drains
        for stage in range(g.rows - 1):  # column 0's first write is R + 1 cycles after φ
            delayed = Signal(name=f"drain_delay_{stage}")
            m.d.sync += delayed.eq(trigger)
            trigger = delayed
        addr_bits = len(self.c_rd.addr[0])
        base, left = Signal(addr_bits + 8), Signal(17)  # the next drained tile's
        row, on = Signal(range(g.rows)), Signal()
        cur_base, cur_left = Signal.like(base), Signal.like(left)
        with m.If(first):
            m.d.sync += [base.eq(self.issue.instr.payload.c_row),
                         left.eq(self.issue.instr.payload.m)]
        with m.If(trigger):
            m.d.sync += [row.eq(g.rows - 1), on.eq(1), cur_base.eq(base), cur_left.eq(left),
                         base.eq(base + g.rows), left.eq(left - g.rows)]
        with m.Elif(on):
            m.d.sync += [row.eq(row - 1), on.eq(row != 0)]
        record = data.StructLayout({"en": 1, "last": 1, "addr": addr_bits})
        chain = [Signal(record, name="write_0")]  # column 0's write of the next cycle
        m.d.comb += [chain[0].en.eq(on & (row < cur_left)), chain[0].addr.eq(cur_base + row),
                     chain[0].last.eq(on & (row == 0) & (cur_left <= g.rows))]
        for j in range(g.cols):
            chain.append(Signal(record, name=f"write_{j + 1}"))
            m.d.sync += chain[j + 1].eq(chain[j])
        acc = field("accumulate")
        m.d.comb += [self.c_rd.en.eq(busy), self.c_rd.slot.eq(field("c_slot")),
                     self.c_wr.slot.eq(field("c_slot"))]
        for j in range(g.cols):
            now = chain[j + 1]  # column j writes column 0's record of j cycles ago
            m.d.comb += [
                self.c_rd.addr[j].eq(chain[j].addr),
                self.c_wr.en[j].eq(now.en & (j < field("cols"))),
                self.c_wr.addr[j].eq(now.addr),
                self.c_wr.data[j].eq(self.array.sums[j] + Mux(acc, self.c_rd.data[j], 0)),
            ]
        return chain[g.cols].last
