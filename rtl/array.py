"""The weight-stationary systolic array: ``rows × cols`` PEs, activations flowing right, partial
sums flowing down.

PE ``(r, j)`` holds weight ``B[r][j]``. An activation row enters the array as one vector per PE
row; the array delays PE row ``r``'s vector by ``r`` cycles (the input skew), so PE ``(r, j)`` works
on activation row ``i`` in cycle ``t0 + i + r + j`` and the finished dot product of row ``i`` and
column ``j`` leaves the bottom of column ``j`` in cycle ``t0 + i + j + rows`` (``t0``: the cycle
row 0 is at the input). Columns finish at skewed times; the accumulator buffer has one bank per
column, so nothing de-skews the outputs.

Weights load one PE row per cycle through ``weights`` (row index plus one entry per column). The
compute unit loads row ``r`` just before activation row 0 reaches it, so loading costs no cycles
of its own (see ``dataflows.cost.compute_cycles``).
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from rtl import layouts
from rtl.params import Geometry
from rtl.pe import ProcessingElement
from workloads.spec import HardwareSpec

__all__ = ["SystolicArray"]


class SystolicArray(wiring.Component):
    """The PE array with its input skew.

    Parameters
    ----------
    hw
        The hardware description (``array.rows × array.cols`` PEs).

    Attributes
    ----------
    weights : In(stream weight_load)
        Load ``entries`` into PE row ``row`` (visible to that row's MACs from the next cycle).
    act : In(stream ArrayLayout(act_vector, rows))
        One activation row: PE row ``r`` receives vector ``r``, ``r`` cycles later.
    psum : Out(stream signed(acc_bits)).array(cols)
        Column ``j``'s dot products, ``rows + j`` cycles after their activation row entered.
    dense : In(1)
        Dense mode for every PE (only when the PE supports N:M patterns).
    """

    def __init__(self, hw: HardwareSpec) -> None:
        self._hw = hw
        self._g = g = Geometry.of(hw)
        members = {
            "weights": In(stream.Signature(layouts.weight_load(g), always_ready=True)),
            "act": In(stream.Signature(data.ArrayLayout(layouts.act_vector(g), g.rows),
                                       always_ready=True)),
            "psum": Out(stream.Signature(signed(g.acc_bits), always_ready=True)).array(g.cols),
        }
        if g.sparse:
            members["dense"] = In(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        g = self._g
        pes = [[ProcessingElement(self._hw) for _ in range(g.cols)] for _ in range(g.rows)]
        for r, row in enumerate(pes):
            for j, pe in enumerate(row):
                m.submodules[f"pe_{r}_{j}"] = pe
                m.d.comb += [
                    pe.weight.valid.eq(self.weights.valid & (self.weights.payload.row == r)),
                    pe.weight.payload.eq(self.weights.payload.entries[j]),
                ]
                if g.sparse:
                    m.d.comb += pe.dense.eq(self.dense)
                if j + 1 < g.cols:
                    wiring.connect(m, act=pe.act_out, right=pes[r][j + 1].act_in)
                if r + 1 < g.rows:
                    wiring.connect(m, psum=pe.psum_out, below=pes[r + 1][j].psum_in)
                else:
                    # The bottom PE's result is valid when the activation it used was.
                    m.d.comb += [
                        self.psum[j].payload.eq(pe.psum_out.payload),
                        self.psum[j].valid.eq(pe.act_out.valid),
                    ]
        for j in range(g.cols):
            m.d.comb += pes[0][j].psum_in.payload.eq(0)
        # Input skew: PE row r sees its vector r cycles after row 0 does.
        for r in range(g.rows):
            valid, vector = self.act.valid, self.act.payload[r]
            for stage in range(r):
                delayed_valid = Signal(name=f"skew_valid_{r}_{stage}")
                delayed = Signal(layouts.act_vector(g), name=f"skew_{r}_{stage}")
                m.d.sync += [delayed_valid.eq(valid), delayed.eq(vector)]
                valid, vector = delayed_valid, delayed
            m.d.comb += [pes[r][0].act_in.valid.eq(valid), pes[r][0].act_in.payload.eq(vector)]
        return m
