"""The controller: per-unit instruction memories and docs/isa.md's timing rule in hardware.

The host streams 320-bit instruction words in program order; each is filed into its unit's
instruction memory (``controller.instruction_depth`` entries, only the fields that unit uses).
A ``start`` pulse runs them. Each unit's next instruction is offered to the unit (``valid``) as
soon as its waits are met, ``wait_v <= completed_v`` for the other units ``v``; it starts in the
cycle the unit takes it (``ready``, i.e. the unit is idle). A unit raises ``done`` in its
instruction's last cycle, so the completion count has its new value from the next cycle on and an
instruction waiting for it may start in that very cycle — the rule the SimPy model implements.

Cycle 0 is the cycle after ``start`` is seen. ``cycles`` counts until every unit has drained and
then holds the run's cycle count (the largest end time). ``busy`` is high from cycle 0 until then,
and for as long as the DMA still waits for write responses.

Words written after a run (or after reset) start a new program; ``start`` without new words
runs the previous program again. A word whose ``op`` this RTL does not execute is dropped (see
:data:`IMPLEMENTED_OPS`); words beyond a unit's ``instruction_depth`` are dropped too (the host
must split such programs).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from dataflows.isa import MODEL_ONLY, UNIT_OF, WORD_BITS, Op, Unit
from rtl import layouts
from rtl.params import Geometry
from workloads.spec import HardwareSpec

__all__ = ["Controller", "CYCLES_BITS", "IMPLEMENTED_OPS"]

#: Width of the ``cycles`` output (a run of 2**32 cycles is hours at any clock in the presets).
CYCLES_BITS = 32

_COUNT_BITS = 24  # completion counts: the width of the wait fields

#: The ops this RTL executes: all of docs/isa.md but the model-only ones (the attention
#: backward's). A word with any other op value is dropped when filed, so no unit ever sees it.
IMPLEMENTED_OPS = tuple(op for op in Op if op not in MODEL_ONLY)
_NAMES = {Unit.DMA: "dma", Unit.PE: "pe", Unit.VEC: "vec"}


class Controller(wiring.Component):
    """Instruction memories, completion counters and the issue logic of the three units.

    Parameters
    ----------
    hw
        The hardware description (``controller.instruction_depth``).

    Attributes
    ----------
    instr : In(stream unsigned(256))
        Host instruction words (``dataflows.isa.encode``), accepted while not ``busy``.
    start : In(1)
        Run the program (ignored while running).
    busy : Out(1)
        The program is running or write responses are outstanding.
    cycles : Out(32)
        Cycles of the current (counting) or last run.
    dma, pe, vec : Out(IssueSignature)
        Each unit's instruction stream and completion pulse.
    pending : In(1)
        The DMA waits for write responses.
    """

    def __init__(self, hw: HardwareSpec) -> None:
        self._g = Geometry.of(hw)
        super().__init__({
            "instr": In(stream.Signature(unsigned(WORD_BITS))),
            "start": In(1),
            "busy": Out(1),
            "cycles": Out(CYCLES_BITS),
            "dma": Out(layouts.IssueSignature(Unit.DMA)),
            "pe": Out(layouts.IssueSignature(Unit.PE, self._g.output_stationary)),
            "vec": Out(layouts.IssueSignature(Unit.VEC)),
            "pending": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        depth = self._g.instruction_depth
        word_layout = layouts.instr_word()
        word = data.View(word_layout, self.instr.payload[: word_layout.size])
        ports = {Unit.DMA: self.dma, Unit.PE: self.pe, Unit.VEC: self.vec}

        running, fresh = Signal(), Signal(init=1)
        start_now = self.start & ~running
        host_write = self.instr.valid & self.instr.ready
        m.d.comb += self.instr.ready.eq(~running)
        with m.If(host_write):
            m.d.sync += fresh.eq(0)
        with m.If(start_now):
            m.d.sync += [running.eq(1), fresh.eq(1)]

        completed = {u: Signal(_COUNT_BITS, name=f"completed_{_NAMES[u]}") for u in Unit}
        pcs = {u: Signal(range(depth + 1), name=f"pc_{_NAMES[u]}") for u in Unit}
        lengths = {u: Signal(range(depth + 1), name=f"length_{_NAMES[u]}") for u in Unit}
        written = {u: Signal(range(depth + 1), name=f"written_{_NAMES[u]}") for u in Unit}
        words = {}
        for unit in Unit:
            layout = layouts.unit_instr(unit, self._g.output_stationary)
            mem = memory.Memory(shape=layout, depth=depth, init=[])
            m.submodules[f"imem_{_NAMES[unit]}"] = mem
            wp = mem.write_port()
            rp = mem.read_port()
            ops = [op for op in IMPLEMENTED_OPS if UNIT_OF[op] == unit]
            mine = host_write & _any(word.op == op for op in ops)
            at = Mux(fresh, 0, written[unit])
            m.d.comb += [wp.en.eq(mine & (at < depth)), wp.addr.eq(at)]
            m.d.comb += [getattr(wp.data, name).eq(getattr(word, name)) for name in layout.members]
            with m.If(host_write):
                with m.If(mine & (at < depth)):
                    m.d.sync += written[unit].eq(at + 1)
                with m.Elif(fresh):
                    m.d.sync += written[unit].eq(0)
            issue = ports[unit].instr
            took = issue.valid & issue.ready
            m.d.comb += [rp.en.eq(1), rp.addr.eq(Mux(start_now, 0, pcs[unit] + took))]
            words[unit] = rp.data
            with m.If(start_now):
                m.d.sync += [pcs[unit].eq(0), completed[unit].eq(0),
                             lengths[unit].eq(written[unit])]
            with m.Else():
                with m.If(took):
                    m.d.sync += pcs[unit].eq(pcs[unit] + 1)
                with m.If(ports[unit].done):
                    m.d.sync += completed[unit].eq(completed[unit] + 1)

        waits = {Unit.DMA: "wait_dma", Unit.PE: "wait_pe", Unit.VEC: "wait_vec"}
        for unit in Unit:
            met = _all(getattr(words[unit], waits[other]) <= completed[other]
                       for other in Unit if other != unit)
            issue = ports[unit].instr
            m.d.comb += [
                issue.valid.eq(running & (pcs[unit] < lengths[unit]) & met),
                issue.payload.eq(words[unit]),
            ]

        drained = _all((pcs[u] == lengths[u]) & ports[u].instr.ready for u in Unit)
        with m.If(running & drained):
            m.d.sync += running.eq(0)
        with m.If(start_now):
            m.d.sync += self.cycles.eq(0)
        with m.Elif(running & ~drained):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        m.d.comb += self.busy.eq((running & ~drained) | self.pending)
        return m


def _any(terms):
    terms = list(terms)
    out = terms[0]
    for t in terms[1:]:
        out = out | t
    return out


def _all(terms):
    terms = list(terms)
    out = terms[0]
    for t in terms[1:]:
        out = out & t
    return out
