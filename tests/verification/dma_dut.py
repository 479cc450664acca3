"""A small Amaranth DUT with the ``accel_top`` ports, for testing the testbench itself.

``DmaCopier`` implements only the DMA unit of docs/isa.md, with a twist that makes its results
easy to predict: loads (``LOAD_A``/``LOAD_B``) push the beats they read into a FIFO and stores
(``STORE_C``/``STORE_B``) write beats popped from it. Its timing follows the ISA exactly (first
request in the cycle an instruction starts, the next instruction in the cycle after the last
beat), so a program of DMA instructions takes exactly ``archsim.model.run_program`` cycles on
it. Tests of the testbench run real programs through it with the real memory model, host driver,
monitor and scoreboard, and check that deliberately broken behaviours are caught: the extra
``bug`` input selects one of :data:`BUGS` at run time, so one Verilator build serves them all.
"""

from __future__ import annotations

from amaranth import Array, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from dataflows.isa import FIELDS, WORD_BITS, Op
from workloads.spec import HardwareSpec

__all__ = ["DmaCopier", "BUGS"]

#: Deliberate defects the testbench must detect.
BUGS = (
    "none",
    "late_start",  # each instruction issues its first request one cycle late
    "flip_bit",  # stores flip bit 0 of their first beat
    "busy_early",  # busy falls one cycle before the last beat
    "wrong_addr",  # the second row of every instruction goes 8 bytes too far
    "drop_valid",  # wr_data.valid pulses low while waiting for ready (stream rule 2)
)

_DEPTH = 16


def _field(word, name: str):
    offset = 0
    for f, width in FIELDS:
        if f == name:
            return word[offset:offset + width]
        offset += width
    raise KeyError(name)


class DmaCopier(wiring.Component):
    """DMA-only stand-in for ``accel_top`` (see the module docstring).

    Parameters
    ----------
    hw
        Beat width (a power of two), element widths.
    """

    def __init__(self, hw: HardwareSpec) -> None:
        self._hw = hw
        beat = hw.dram.bandwidth_bytes_per_cycle
        req = data.StructLayout({"addr": 32, "beats": 16})
        super().__init__({
            "instr": In(stream.Signature(WORD_BITS)),
            "start": In(1),
            "busy": Out(1),
            "cycles": Out(32),
            "mem_rd_req": Out(stream.Signature(req)),
            "mem_rd_data": In(stream.Signature(data.StructLayout({"data": 8 * beat}))),
            "mem_wr_req": Out(stream.Signature(req)),
            "mem_wr_data": Out(stream.Signature(
                data.StructLayout({"data": 8 * beat, "strb": beat}))),
            "mem_wr_resp": In(stream.Signature(1)),
            "bug": In(range(len(BUGS))),
        })

    def elaborate(self, platform):
        m = Module()
        hw = self._hw

        def bug(name: str):
            return self.bug == BUGS.index(name)

        beat = hw.dram.bandwidth_bytes_per_cycle
        shift = beat.bit_length() - 1

        imem = Array(Signal(WORD_BITS, name=f"imem{i}") for i in range(_DEPTH))
        count = Signal(range(_DEPTH + 1))  # words written since the last start
        n_instr = Signal(range(_DEPTH + 1))  # words of the running program
        pc = Signal(range(_DEPTH + 1))
        running = Signal()
        row = Signal(16)
        done_beats = Signal(32)
        late = Signal()  # the late_start bug's idle cycle at the start of each instruction

        m.submodules.fifo = fifo = SyncFIFO(width=8 * beat, depth=256)

        word = imem[pc]
        op, addr, stride = _field(word, "op"), _field(word, "addr"), _field(word, "stride")
        rows, cols = _field(word, "rows"), _field(word, "cols")
        is_store = (op == Op.STORE_C) | (op == Op.STORE_B)
        row_bytes = Signal(32)
        m.d.comb += row_bytes.eq(cols * Mux(op == Op.STORE_C, hw.acc_bytes, hw.data_bytes))
        per_row = Signal(16)
        m.d.comb += per_row.eq((row_bytes + beat - 1) >> shift)
        total = Signal(32)
        m.d.comb += total.eq(rows * per_row)
        last = Signal()
        m.d.comb += last.eq(done_beats + 1 == total)
        final = Signal()
        m.d.comb += final.eq(pc + 1 == n_instr)

        # Host side: words are filed while idle; start runs them and restarts the count.
        m.d.comb += self.instr.ready.eq(~running)
        with m.If(self.instr.valid & self.instr.ready):
            m.d.sync += [imem[count].eq(self.instr.payload), count.eq(count + 1)]
        with m.If(self.start & ~running):
            m.d.sync += [running.eq(1), pc.eq(0), row.eq(0), done_beats.eq(0), n_instr.eq(count),
                         count.eq(0), self.cycles.eq(0), late.eq(bug("late_start"))]
        m.d.comb += self.busy.eq(running & ~(bug("busy_early") & final & last))

        # Requests: one per row, the first in the cycle the instruction starts.
        req_addr = Signal(32)
        skew = Mux(bug("wrong_addr") & (row == 1), 8, 0)
        m.d.comb += req_addr.eq(addr + row * stride + skew)
        issuing = running & (row < rows) & ~late
        for port, want in ((self.mem_rd_req, ~is_store), (self.mem_wr_req, is_store)):
            m.d.comb += [port.valid.eq(issuing & want), port.payload.addr.eq(req_addr),
                         port.payload.beats.eq(per_row)]
            with m.If(port.valid & port.ready):
                m.d.sync += row.eq(row + 1)

        # Beats: loads push read beats into the FIFO, stores write popped beats.
        moved = Signal()
        m.d.comb += [fifo.w_data.eq(self.mem_rd_data.payload.data),
                     self.mem_rd_data.ready.eq(running & ~is_store & fifo.w_rdy),
                     self.mem_wr_resp.ready.eq(1)]
        with m.If(self.mem_rd_data.valid & self.mem_rd_data.ready):
            m.d.comb += [fifo.w_en.eq(1), moved.eq(1)]
        toggle = Signal()
        m.d.sync += toggle.eq(~toggle)
        wr_valid = running & is_store & fifo.r_rdy & (toggle | ~bug("drop_valid"))
        flip = Mux(bug("flip_bit") & (done_beats == 0), 1, 0)
        m.d.comb += [self.mem_wr_data.valid.eq(wr_valid),
                     self.mem_wr_data.payload.data.eq(fifo.r_data ^ flip),
                     self.mem_wr_data.payload.strb.eq((1 << beat) - 1)]
        with m.If(self.mem_wr_data.valid & self.mem_wr_data.ready):
            m.d.comb += [fifo.r_en.eq(1), moved.eq(1)]

        # The instruction ends with its last beat; the next one starts in the next cycle.
        with m.If(running):
            m.d.sync += self.cycles.eq(self.cycles + 1)
            with m.If(late):
                m.d.sync += late.eq(0)
            with m.If(moved):
                m.d.sync += done_beats.eq(done_beats + 1)
                with m.If(last):
                    m.d.sync += [pc.eq(pc + 1), row.eq(0), done_beats.eq(0),
                                 late.eq(bug("late_start"))]
                    with m.If(final):
                        m.d.sync += running.eq(0)
        return m
