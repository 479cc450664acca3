"""The vector unit: N:M compression (:class:`rtl.vector.CompressEngine`) and the attention
softmax (:class:`rtl.online_softmax.OnlineSoftmax`) behind one issue port.

The unit runs one instruction at a time, in program order, like every unit of docs/isa.md: it
takes an instruction only when both engines are idle, hands it to the engine of its op, and the
weight-buffer write port (COMPRESS's results, EXP's P̃ rows) follows whichever engine runs.
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from dataflows.isa import Op, Unit
from rtl import layouts
from rtl.online_softmax import OnlineSoftmax
from rtl.params import Geometry
from rtl.vector import CompressEngine
from workloads.spec import HardwareSpec

__all__ = ["VectorUnit"]


class VectorUnit(wiring.Component):
    """COMPRESS, ROWMAX, EXP, RESCALE and NORMALIZE.

    Attributes
    ----------
    issue : In(IssueSignature(Unit.VEC))
        Instructions from the controller and the completion pulse back.
    rd, wr : Out(WeightBlockReadSignature / WeightBankWriteSignature)
        The weight buffer: COMPRESS reads groups of rows; both engines write rows.
    acc_rd, acc_wr : Out(AccRowReadSignature / AccWriteSignature)
        Score and output rows of the softmax passes.
    mask_rd : Out(MaskReadSignature)
        Element masks of partial blocks.
    """

    def __init__(self, hw: HardwareSpec) -> None:
        self._hw = hw
        g = Geometry.of(hw)
        super().__init__({
            "issue": In(layouts.IssueSignature(Unit.VEC)),
            "rd": Out(layouts.WeightBlockReadSignature(g)),
            "wr": Out(layouts.WeightBankWriteSignature(g)),
            "acc_rd": Out(layouts.AccRowReadSignature(g)),
            "acc_wr": Out(layouts.AccWriteSignature(g)),
            "mask_rd": Out(layouts.MaskReadSignature(g)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.compress = comp = CompressEngine(self._hw)
        m.submodules.softmax = soft = OnlineSoftmax(self._hw)
        instr = self.issue.instr
        is_compress = instr.payload.op == Op.COMPRESS
        idle = comp.issue.instr.ready & soft.issue.instr.ready
        m.d.comb += [
            comp.issue.instr.payload.eq(instr.payload),
            soft.issue.instr.payload.eq(instr.payload),
            comp.issue.instr.valid.eq(instr.valid & is_compress & idle),
            soft.issue.instr.valid.eq(instr.valid & ~is_compress & idle),
            instr.ready.eq(idle),
            self.issue.done.eq(comp.issue.done | soft.issue.done),
        ]
        wiring.connect(m, wiring.flipped(self.rd), comp.rd)
        wiring.connect(m, wiring.flipped(self.acc_rd), soft.acc_rd)
        wiring.connect(m, wiring.flipped(self.acc_wr), soft.acc_wr)
        wiring.connect(m, wiring.flipped(self.mask_rd), soft.mask_rd)
        writer = {"slot", "mask", "addr", "data"}
        with m.If(soft.active):
            m.d.comb += [getattr(self.wr, n).eq(getattr(soft.b_wr, n)) for n in sorted(writer)]
        with m.Else():
            m.d.comb += [getattr(self.wr, n).eq(getattr(comp.wr, n)) for n in sorted(writer)]
        return m
