"""The output-stationary systolic array: ``rows × cols`` PEs that each keep one output's sum
while the operands stream past (docs/rtl.md, "Output-stationary PE-array unit").

PE ``(i, j)`` owns output ``(i, j)`` of the current output tile. Every cycle the array takes one
reduction step: per PE row ``i`` the activation lanes of output row ``i`` (``act``), per column
``j`` a weight, its N:M index and the ``first`` flag (``steps``). Activations move right and
steps move down one PE per cycle, each skewed at the array edge (row ``i`` by ``i`` cycles,
column ``j`` by ``j``), so PE ``(i, j)`` does the step that entered in cycle ``τ`` in cycle
``τ + i + j``, with its activation and its weight.

On a step with ``first`` a PE hands its sum to the drain and restarts from the product. The
drain is control-free: two registers per PE down each column (the hand-over writes the
first, which otherwise takes the second register of the PE above), moving every cycle. Row
``i``'s sum, handed over in cycle ``φ + i + j`` (``φ``: the cycle the next tile's first step
entered), leaves the bottom of column ``j`` in cycle ``φ + 2·rows − i + j``: bottom row first,
one per cycle, without colliding with the tile before or after as long as a tile lasts at least
``rows`` cycles.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from rtl import layouts
from rtl.params import Geometry
from workloads.spec import HardwareSpec

__all__ = ["OSProcessingElement", "OSSystolicArray"]


class OSProcessingElement(wiring.Component):
    """One PE of the output-stationary array.

    Parameters
    ----------
    hw
        The hardware description; widths and lanes come from it.

    Attributes
    ----------
    act_in, act_out : In/Out(act_vector)
        Activation lanes from the left, passed on to the right one cycle later.
    step_in, step_out : In/Out(os_step)
        The weight step from above, passed down one cycle later.
    drain_in, drain_out : In/Out(signed(acc_bits))
        The drain chain: the second register of the PE above, this PE's second register.
    dense : In(1)
        Bypass the index multiplexer (only when the PE supports N:M patterns).
    """

    def __init__(self, hw: HardwareSpec) -> None:
        self._g = g = Geometry.of(hw)
        members = {
            "act_in": In(layouts.act_vector(g)),
            "act_out": Out(layouts.act_vector(g)),
            "step_in": In(layouts.os_step(g)),
            "step_out": Out(layouts.os_step(g)),
            "drain_in": In(signed(g.acc_bits)),
            "drain_out": Out(signed(g.acc_bits)),
        }
        if g.sparse:
            members["dense"] = In(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        g = self._g
        entry, lanes = self.step_in.entry, self.act_in
        act = Mux(self.dense, lanes[0], lanes[entry.index]) if g.sparse else lanes[0]
        product = act * entry.value
        acc = Signal(signed(g.acc_bits))
        handed = Signal(signed(g.acc_bits))  # the drain's first register
        first = self.step_in.first
        # .eq truncates to acc_bits: two's complement wrap-around, as the ISA specifies. The
        # restart gates the adder's input (it folds into the adder's LUTs) rather than
        # choosing between two sums.
        m.d.sync += [
            acc.eq(Mux(first, 0, acc) + product),
            handed.eq(Mux(first, acc, self.drain_in)),
            self.drain_out.eq(handed),
            self.act_out.eq(self.act_in),
            self.step_out.eq(self.step_in),
        ]
        return m


class OSSystolicArray(wiring.Component):
    """The output-stationary PE array with its input skews.

    Parameters
    ----------
    hw
        The hardware description (``array.rows × array.cols`` PEs).

    Attributes
    ----------
    act : In(ArrayLayout(act_vector, rows))
        One step's activations: PE row ``i`` receives vector ``i``, ``i`` cycles later.
    steps : In(ArrayLayout(os_step, cols))
        One step's weights: PE column ``j`` receives entry ``j``, ``j`` cycles later.
    sums : Out(ArrayLayout(signed(acc_bits), cols))
        The bottom of each column's drain.
    dense : In(1)
        Dense mode for every PE (only when the PE supports N:M patterns).
    """

    def __init__(self, hw: HardwareSpec) -> None:
        self._hw = hw
        self._g = g = Geometry.of(hw)
        members = {
            "act": In(data.ArrayLayout(layouts.act_vector(g), g.rows)),
            "steps": In(data.ArrayLayout(layouts.os_step(g), g.cols)),
            "sums": Out(data.ArrayLayout(signed(g.acc_bits), g.cols)),
        }
        if g.sparse:
            members["dense"] = In(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        g = self._g
        pes = [[OSProcessingElement(self._hw) for _ in range(g.cols)] for _ in range(g.rows)]
        for i, row in enumerate(pes):
            for j, pe in enumerate(row):
                m.submodules[f"pe_{i}_{j}"] = pe
                if g.sparse:
                    m.d.comb += pe.dense.eq(self.dense)
                if j + 1 < g.cols:
                    m.d.comb += pes[i][j + 1].act_in.eq(pe.act_out)
                if i + 1 < g.rows:
                    m.d.comb += [pes[i + 1][j].step_in.eq(pe.step_out),
                                 pes[i + 1][j].drain_in.eq(pe.drain_out)]
        for i in range(g.rows):
            m.d.comb += pes[i][0].act_in.eq(_skewed(m, self.act[i], i, f"act_skew_{i}"))
        for j in range(g.cols):
            m.d.comb += [pes[0][j].step_in.eq(_skewed(m, self.steps[j], j, f"step_skew_{j}")),
                         pes[0][j].drain_in.eq(0),
                         self.sums[j].eq(pes[g.rows - 1][j].drain_out)]
        return m


def _skewed(m: Module, value, delay: int, name: str):
    """``value`` delayed by ``delay`` cycles (a chain of registers)."""
    for stage in range(delay):
        delayed = Signal.like(value, name=f"{name}_{stage}")
        m.d.sync += delayed.eq(value)
        value = delayed
    return value
