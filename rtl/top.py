"""``AccelTop``: the whole accelerator behind docs/isa.md's host and memory interfaces.

::

    host ──instr/start──▶ Controller ──dma──▶ DMAEngine ◀──▶ mem_rd_* / mem_wr_*
                              │  ──pe───▶ ComputeUnit (SystolicArray of PEs), or
                              │           OSComputeUnit (OSSystolicArray) per array.dataflow
                              │  ──vec──▶ VectorUnit (NMCompressor lanes, OnlineSoftmax)
                              ▼
          InputBuffer (A) · WeightBuffer (B) · AccumulatorBuffer (C) · MaskBuffer, two slots each

Blocks meet only through ``wiring.connect``; the top level owns nothing but the wiring.
"""

from __future__ import annotations

from amaranth.hdl import Module, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from dataflows.isa import WORD_BITS
from rtl import layouts
from rtl.buffers import AccumulatorBuffer, InputBuffer, MaskBuffer, WeightBuffer
from rtl.compute import ComputeUnit
from rtl.controller import CYCLES_BITS, Controller
from rtl.dma import DMAEngine
from rtl.os_compute import OSComputeUnit
from rtl.params import Geometry
from rtl.vector_unit import VectorUnit
from workloads.spec import HardwareSpec

__all__ = ["AccelTop"]


class AccelTop(wiring.Component):
    """The SAT-like accelerator for one hardware description.

    Parameters
    ----------
    hw
        Every width, depth and count comes from it (through :class:`rtl.params.Geometry`).

    Attributes
    ----------
    instr : In(stream unsigned(256))
        Instruction words in program order (``dataflows.isa.encode``), while not ``busy``.
    start : In(1)
        Run the program written so far (cycle 0 is the next cycle).
    busy : Out(1)
        High from cycle 0 until every unit has drained and every write response arrived.
    cycles : Out(32)
        The last run's cycle count (its largest instruction end time).
    mem_rd_req, mem_rd_data, mem_wr_req, mem_wr_data, mem_wr_resp
        The memory interface (docs/isa.md).
    """

    def __init__(self, hw: HardwareSpec) -> None:
        self.hw = hw
        self.geometry = g = Geometry.of(hw)
        self.controller = Controller(hw)
        self.dma = DMAEngine(hw)
        self.compute = OSComputeUnit(hw) if g.output_stationary else ComputeUnit(hw)
        self.vector = VectorUnit(hw)
        self.input_buffer = InputBuffer(hw)
        self.weight_buffer = WeightBuffer(hw)
        self.acc_buffer = AccumulatorBuffer(hw)
        self.mask_buffer = MaskBuffer(hw)
        super().__init__({
            "instr": In(stream.Signature(unsigned(WORD_BITS))),
            "start": In(1),
            "busy": Out(1),
            "cycles": Out(CYCLES_BITS),
            "mem_rd_req": Out(stream.Signature(layouts.mem_request())),
            "mem_rd_data": In(stream.Signature(layouts.mem_read_beat(g))),
            "mem_wr_req": Out(stream.Signature(layouts.mem_request())),
            "mem_wr_data": Out(stream.Signature(layouts.mem_write_beat(g))),
            "mem_wr_resp": In(stream.Signature(layouts.MEM_WRITE_RESPONSE)),
        })

    def elaborate(self, platform):
        m = Module()
        ctrl, dma, pe, vec = self.controller, self.dma, self.compute, self.vector
        a, b, c = self.input_buffer, self.weight_buffer, self.acc_buffer
        m.submodules.controller = ctrl
        m.submodules.dma = dma
        m.submodules.compute = pe
        m.submodules.vector = vec
        m.submodules.input_buffer = a
        m.submodules.weight_buffer = b
        m.submodules.acc_buffer = c
        m.submodules.mask_buffer = mask = self.mask_buffer

        wiring.connect(m, host=wiring.flipped(self.instr), controller=ctrl.instr)
        m.d.comb += [ctrl.start.eq(self.start), self.busy.eq(ctrl.busy),
                     self.cycles.eq(ctrl.cycles), ctrl.pending.eq(dma.pending)]
        wiring.connect(m, controller=ctrl.dma, dma=dma.issue)
        wiring.connect(m, controller=ctrl.pe, compute=pe.issue)
        wiring.connect(m, controller=ctrl.vec, vector=vec.issue)

        wiring.connect(m, top=wiring.flipped(self.mem_rd_req), dma=dma.mem_rd_req)
        wiring.connect(m, top=wiring.flipped(self.mem_rd_data), dma=dma.mem_rd_data)
        wiring.connect(m, top=wiring.flipped(self.mem_wr_req), dma=dma.mem_wr_req)
        wiring.connect(m, top=wiring.flipped(self.mem_wr_data), dma=dma.mem_wr_data)
        wiring.connect(m, top=wiring.flipped(self.mem_wr_resp), dma=dma.mem_wr_resp)

        wiring.connect(m, dma=dma.a_wr, input_buffer=a.write)
        wiring.connect(m, compute=pe.a_rd, input_buffer=a.read)
        wiring.connect(m, dma=dma.b_wr, weight_buffer=b.dma_wr)
        wiring.connect(m, dma=dma.b_rd, weight_buffer=b.dma_rd)
        wiring.connect(m, compute=pe.b_rd, weight_buffer=b.pe_rd)
        wiring.connect(m, vector=vec.rd, weight_buffer=b.vec_rd)
        wiring.connect(m, vector=vec.wr, weight_buffer=b.vec_wr)
        wiring.connect(m, compute=pe.c_rd, acc_buffer=c.pe_rd)
        wiring.connect(m, compute=pe.c_wr, acc_buffer=c.pe_wr)
        wiring.connect(m, dma=dma.c_rd, acc_buffer=c.dma_rd)
        wiring.connect(m, vector=vec.acc_rd, acc_buffer=c.vec_rd)
        wiring.connect(m, vector=vec.acc_wr, acc_buffer=c.vec_wr)
        wiring.connect(m, vector=vec.mask_rd, mask_buffer=mask.vec_rd)
        wiring.connect(m, dma=dma.mask_wr, mask_buffer=mask.dma_wr)
        return m
