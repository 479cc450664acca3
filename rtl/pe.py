"""The processing element: one multiply-accumulate datapath for dense and N:M sparse weights.

A PE holds one stationary weight and, for a compressed row, its index ``0 <= idx < M`` inside its
group of M. Each cycle it receives a vector of ``m_max`` activations (the group the weight belongs
to), picks the one its index names with an M:1 multiplexer, multiplies it by the weight and adds
the product to the partial sum coming from the PE above. In dense mode the multiplexer is
bypassed: lane 0 carries the activation of the PE's own row. Everything is two's complement with
wrap-around at ``acc_bits``, which is what numpy's fixed-width integers do.

A dense-only hardware description (no ``nm_patterns``) builds a PE with a single lane and neither
the multiplexer nor the index register, which is the baseline of docs/rtl.md's area comparison.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from rtl import layouts
from rtl.params import Geometry
from workloads.spec import HardwareSpec

__all__ = ["ProcessingElement"]


class ProcessingElement(wiring.Component):
    """One PE of the weight-stationary array.

    Parameters
    ----------
    hw
        The hardware description; widths and lanes come from it.

    Attributes
    ----------
    weight : In(stream weight_entry)
        A weight (and index) to hold from the next cycle on, loaded while ``valid``.
    act_in, act_out : In/Out(stream act_vector)
        Activations from the left, passed on to the right one cycle later.
    psum_in, psum_out : In/Out(stream signed(acc_bits), always valid)
        Partial sum from above; ``psum_out = psum_in + weight · activation`` one cycle later. A
        partial sum is meaningful in the cycles its activation vector is ``valid``.
    dense : In(1)
        Bypass the index multiplexer (only when the PE supports N:M patterns).
    """

    def __init__(self, hw: HardwareSpec) -> None:
        self._g = g = Geometry.of(hw)
        act = stream.Signature(layouts.act_vector(g), always_ready=True)
        psum = stream.Signature(signed(g.acc_bits), always_valid=True, always_ready=True)
        members = {
            "weight": In(stream.Signature(layouts.weight_entry(g), always_ready=True)),
            "act_in": In(act),
            "act_out": Out(act),
            "psum_in": In(psum),
            "psum_out": Out(psum),
        }
        if g.sparse:
            members["dense"] = In(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        g = self._g
        weight = Signal(signed(g.data_bits))
        with m.If(self.weight.valid):
            m.d.sync += weight.eq(self.weight.payload.value)
        lanes = self.act_in.payload
        if g.sparse:
            index = Signal(g.index_bits)
            with m.If(self.weight.valid):
                m.d.sync += index.eq(self.weight.payload.index)
            act = Mux(self.dense, lanes[0], lanes[index])
        else:
            act = lanes[0]
        m.d.sync += [
            self.act_out.payload.eq(self.act_in.payload),
            self.act_out.valid.eq(self.act_in.valid),
            # .eq truncates to acc_bits: two's complement wrap-around, as the ISA specifies.
            self.psum_out.payload.eq(self.psum_in.payload + act * weight),
        ]
        return m
