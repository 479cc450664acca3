"""The PE-array unit: executes COMPUTE on the systolic array.

Timeline of a COMPUTE that starts in cycle ``s`` (``R × C`` array, ``m`` activation rows):

* cycles ``s .. s+R-1``: weight row ``r`` is read from the weight buffer, and loaded into PE row
  ``r`` in cycle ``s+r+1`` (zero for rows at or beyond ``k``, so they add nothing);
* cycles ``s .. s+m-1``: activation row ``i`` is read from the input buffer, its lanes are
  routed to the PE rows (the group of M a PE row's weights belong to, or the row's own element
  when dense) and registered at the array edge, which PE row 0 sees in cycle ``s+2+i``, in time
  for its weight and ahead of PE row ``r``'s, which arrives ``r`` cycles later, as does the
  activation;
* column ``j``'s result for row ``i`` leaves the array in cycle ``s+2+i+j+R`` and is added to the
  accumulator bank of column ``j`` (read a cycle earlier) in that same cycle.

In the convolution address mode (``conv = 1``, docs/isa.md) the row read in cycle ``s+i`` is
not ``a_row + i`` but the slot row of streamed row ``i``'s input pixel, from counters that step
one output pixel per cycle (no division); a pixel in the padding is read anyway (any row) and
replaced by zeros as its data arrives, so the mode costs no cycle.

With the transposing read (``conv_t = 1``, docs/isa.md) the rows read in cycles ``s ..
s+m-1`` are blocks of ``R`` patch rows (pixels at one kernel offset and channel chunk, the
counters restarting at the word's first pixel after each block) into a fill register block;
each full block moves to a stream block that presents one column per cycle (a channel of
every pixel) while the next block fills, so the activation stream, and everything after it,
starts ``R`` cycles later: ``m + 2R + C + 1`` cycles (``dataflows.cost.transposing_compute_cycles``).

The last write (row ``m-1``, column ``C-1``) happens in cycle ``s+m+R+C``, so the instruction
takes ``m + R + C + 1`` cycles: ``dataflows.cost.compute_cycles``. Preloading weights costs
nothing extra because it runs one row ahead of the activation wavefront.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from dataflows.isa import Unit
from rtl import layouts
from rtl.array import SystolicArray
from rtl.compute_base import ComputeBase
from rtl.params import Geometry
from workloads.spec import HardwareSpec

__all__ = ["ComputeUnit"]

class ComputeUnit(ComputeBase, wiring.Component):
    """The PE array and the sequencer that feeds it.

    Parameters
    ----------
    hw
        The hardware description.

    Attributes
    ----------
    issue : In(IssueSignature(Unit.PE))
        Instructions from the controller and the completion pulse back.
    a_rd : Out(InputReadSignature)
        Activation rows.
    b_rd : Out(WeightRowReadSignature)
        Weight rows to preload.
    c_rd, c_wr : Out(AccReadSignature / AccWriteSignature)
        Per-column read-add-write of the accumulators.
    """

    def __init__(self, hw: HardwareSpec) -> None:
        self._g = g = Geometry.of(hw)
        self.array = SystolicArray(hw)
        super().__init__({
            "issue": In(layouts.IssueSignature(Unit.PE)),
            "a_rd": Out(layouts.InputReadSignature(g)),
            "b_rd": Out(layouts.WeightRowReadSignature(g)),
            "c_rd": Out(layouts.AccReadSignature(g)),
            "c_wr": Out(layouts.AccWriteSignature(g)),
        })

    def elaborate(self, platform):
        m = Module()
        g = self._g
        m.submodules.array = array = self.array
        p = self.issue.instr.payload
        busy, first = Signal(), Signal()
        m.d.comb += [self.issue.instr.ready.eq(~busy), first.eq(self.issue.instr.valid & ~busy)]

        a_slot, b_slot, c_slot, accumulate = Signal(), Signal(), Signal(), Signal()
        k, rows_m, cols = Signal(16), Signal(16), Signal(16)
        # Row offsets within the slots (buffer-level tiles): added to every row address.
        a_row, b_row, c_row = Signal.like(p.a_row), Signal.like(p.b_row), Signal.like(p.c_row)
        mode = self._pattern_mode(m, first)  # 0: dense, p+1: pattern p
        with m.If(first):
            m.d.sync += [busy.eq(1), a_slot.eq(p.slot), b_slot.eq(p.b_slot), c_slot.eq(p.c_slot),
                         accumulate.eq(p.accumulate), k.eq(p.k), rows_m.eq(p.m), cols.eq(p.cols),
                         a_row.eq(p.a_row), b_row.eq(p.b_row),
                         c_row.eq(p.c_row)]

        # Weight preload: read row r in cycle s+r, load it into PE row r one cycle later.
        # With the convolution address mode on weight rows (conv_b), row r is a pixel's.
        self._conv_config(m, first)
        preload = Signal(range(g.rows + 1))
        loading = first | (preload != 0)
        cur_row = Mux(first, 0, preload)
        with m.If(loading):
            m.d.sync += preload.eq(Mux(cur_row == g.rows - 1, 0, cur_row + 1))
        conv_b = self._field("conv") & self._field("conv_b")
        b_conv_row, b_pad = self._conv_address(m, first, loading, p.b_row, len(self.b_rd.row), "cb")
        m.d.comb += [
            self.b_rd.en.eq(loading),
            self.b_rd.slot.eq(Mux(first, p.b_slot, b_slot)),
            self.b_rd.row.eq(Mux(conv_b, b_conv_row, Mux(first, p.b_row, b_row) + cur_row)),
        ]
        load_valid, load_row, load_zero = Signal(), Signal(range(max(2, g.rows))), Signal()
        m.d.sync += [load_valid.eq(loading), load_row.eq(cur_row), load_zero.eq(conv_b & b_pad)]
        m.d.comb += [array.weights.valid.eq(load_valid), array.weights.payload.row.eq(load_row)]
        for j in range(g.cols):
            entry = self.b_rd.data[j]
            # Rows at or beyond k hold zero weights: they contribute nothing to any sum; so do
            # padding pixels of the weight-side address mode.
            m.d.comb += [
                array.weights.payload.entries[j].value.eq(
                    Mux((load_row < k) & ~load_zero, entry.value, 0)),
                array.weights.payload.entries[j].index.eq(entry.index),
            ]
        if g.sparse:
            m.d.comb += array.dense.eq(mode == 0)

        # Activation stream: read row i in cycle s+i, register its routed lanes at the edge.
        streamed = Signal(16)
        streaming = Signal()
        cur_i = Mux(first, 0, streamed)
        reading = first | streaming
        last_i = cur_i == Mux(first, p.m, rows_m) - 1
        with m.If(reading):
            m.d.sync += [streamed.eq(cur_i + 1), streaming.eq(~last_i)]
        conv_on = self._field("conv") & ~self._field("conv_b")
        t_on = conv_on & self._field("conv_t")
        block = self._t_blocks(m, first, reading)
        conv_row, pad = self._conv_address(m, first, reading, p.a_row, len(self.a_rd.row), "ca",
                                           block)
        multi = self._conv_parts(m, conv_on, conv_row, pad)
        m.d.comb += [
            self.a_rd.en.eq(reading),
            self.a_rd.slot.eq(Mux(first, p.slot, a_slot)),
            self.a_rd.row.eq(Mux(conv_on, conv_row, Mux(first, p.a_row, a_row) + cur_i)),
        ]
        arrived = Signal()
        m.d.sync += arrived.eq(reading)
        edge = Signal(data.ArrayLayout(layouts.act_vector(g), g.rows))
        edge_valid = Signal()
        # A padding pixel's row arrives as zeros (its read was of an arbitrary row).
        zero_row = Signal()
        m.d.sync += zero_row.eq(conv_on & pad & ~multi)  # (several parts: zeroed per part)
        row = Signal(self.a_rd.data.shape())
        m.d.comb += row.eq(Mux(zero_row, 0, self.a_rd.data.as_value()))
        t_present, t_row = self._t_registers(m, t_on, arrived, block[0], row)
        m.d.sync += edge_valid.eq(Mux(t_on, t_present, arrived))
        row_in = Signal.like(row)
        m.d.comb += row_in.eq(Mux(t_on, t_row.as_value(), row.as_value()))
        for r in range(g.rows):
            for t in range(g.m_max):
                lane = edge[r][t]
                if t == 0:
                    m.d.sync += lane.eq(row_in[r])  # dense: the PE row's own element
                for index, (n, mm) in enumerate(g.patterns):
                    if t < mm:
                        with m.If(mode == index + 1):
                            m.d.sync += lane.eq(row_in[(r // n) * mm + t])
        m.d.comb += [array.act.valid.eq(edge_valid), array.act.payload.eq(edge)]

        # Accumulate: each column at its own (skewed) time, into its own bank.
        addr_shape = len(self.c_rd.addr[0])
        done = Signal()
        m.d.comb += [self.c_rd.en.eq(busy), self.c_rd.slot.eq(c_slot), self.c_wr.slot.eq(c_slot)]
        for j in range(g.cols):
            out = array.psum[j]
            written = Signal(16, name=f"written_{j}")
            with m.If(first):
                m.d.sync += written.eq(0)
            with m.Elif(out.valid):
                m.d.sync += written.eq(written + 1)
            # Read the next row's accumulator a cycle ahead of its result.
            m.d.comb += [
                self.c_rd.addr[j].eq((c_row + written + out.valid)[:addr_shape]),
                self.c_wr.en[j].eq(out.valid & (j < cols)),
                self.c_wr.addr[j].eq((c_row + written)[:addr_shape]),
                self.c_wr.data[j].eq(out.payload + Mux(accumulate, self.c_rd.data[j], 0)),
            ]
            if j == g.cols - 1:
                m.d.comb += done.eq(busy & out.valid & (written == rows_m - 1))
        m.d.comb += self.issue.done.eq(done)
        with m.If(done):
            m.d.sync += busy.eq(0)
        return m

    def _t_blocks(self, m: Module, first, step):
        """The transposing read's block walk (docs/isa.md, "The transposing read"): which pixel
        of its block the row read this cycle is, and the block's kernel offset and chunk. Each
        read (``step``) moves one pixel on; after ``rows`` pixels the next block starts at the
        word's first pixel again, one kernel column further (wrapping to the next kernel row,
        and after the last one to the next channel chunk, ``chunk_rows`` slot rows on).
        Returns (the pixel index of this read, whether it ends its block, the block's kernel
        row and column, and the next block's (row, column, slot-row offset))."""
        g, field = self._g, self._field
        kw, kh, in_w, chunk_rows = (field("conv_kw"), field("conv_kh"), field("conv_in_w"),
                                    field("conv_chunk_rows"))
        pix, col, krow = Signal(range(g.rows)), Signal(6), Signal(6)
        off, base = Signal(signed(34)), Signal(signed(34))
        cur = {name: Mux(first, 0, sig) for name, sig in
               (("pix", pix), ("col", col), ("krow", krow), ("off", off), ("base", base))}
        end = cur["pix"] == g.rows - 1
        col_wrap, row_wrap = cur["col"] + 1 == kw, cur["krow"] + 1 == kh
        nxt_col = Mux(col_wrap, 0, cur["col"] + 1)
        nxt_row = Mux(col_wrap, Mux(row_wrap, 0, cur["krow"] + 1), cur["krow"])
        nxt_base = Mux(col_wrap & row_wrap, cur["base"] + chunk_rows, cur["base"])
        nxt_off = Mux(col_wrap, Mux(row_wrap, nxt_base, cur["off"] + in_w), cur["off"])
        with m.If(step):
            m.d.sync += pix.eq(Mux(end, 0, cur["pix"] + 1))
            with m.If(end):
                m.d.sync += [col.eq(nxt_col), krow.eq(nxt_row), off.eq(nxt_off),
                             base.eq(nxt_base)]
            with m.Else():
                m.d.sync += [col.eq(cur["col"]), krow.eq(cur["krow"]), off.eq(cur["off"]),
                             base.eq(cur["base"])]
        return cur["pix"], end, cur["krow"], cur["col"], nxt_row, nxt_col, nxt_off

    def _t_registers(self, m: Module, t_on, arrived, pix_read, row):
        """The two ``rows × rows`` register blocks of the transposing read: pixel ``r``'s row
        (its first ``rows`` channels) fills row ``r`` of the fill block as it arrives; with a
        block's last pixel the stream block takes the whole block, and then presents one
        column per cycle (channel ``c`` of every pixel), shifting, ``rows`` cycles long, while
        the next block fills. Returns (a column is presented this cycle, that column as a
        row of the input buffer's shape)."""
        g = self._g
        bits = g.data_bits
        pix = Signal(range(g.rows))  # the pixel whose row arrives this cycle
        m.d.sync += pix.eq(pix_read)
        fill = [Signal(bits * g.rows, name=f"t_fill_{r}") for r in range(g.rows)]
        stream = [Signal(bits * g.rows, name=f"t_stream_{r}") for r in range(g.rows)]
        left = Signal(range(g.rows + 1))
        incoming = Cat(*(row[c] for c in range(g.rows)))
        with m.If(arrived & t_on):
            for r in range(g.rows):
                with m.If(pix == r):
                    m.d.sync += fill[r].eq(incoming)
        last = arrived & t_on & (pix == g.rows - 1)
        with m.If(last):
            m.d.sync += [stream[r].eq(fill[r]) for r in range(g.rows - 1)]
            m.d.sync += [stream[g.rows - 1].eq(incoming), left.eq(g.rows)]
        with m.Elif(left != 0):
            m.d.sync += [s.eq(s >> bits) for s in stream]
            m.d.sync += left.eq(left - 1)
        out = Signal.like(row)
        m.d.comb += [out[r].eq(stream[r][:bits]) for r in range(g.rows)]
        return left != 0, out
