"""The vector unit's N:M weight compression (COMPRESS), in place in a weight-buffer slot.

(The vector unit, :class:`rtl.vector_unit.VectorUnit`, also runs the attention softmax of
:mod:`rtl.online_softmax`; :func:`select_top_n` serves both.)

For every group of M consecutive dense rows and every column it keeps the N weights of largest
magnitude (ties go to the lower index) in increasing index order, with their indices: exactly
``workloads.generators.nm.compress_nm``. Compressed row ``g·N + t`` holds the ``t``-th kept weight
of group ``g``.

The unit works through one *group row* (M dense rows × all columns) at a time, ``lanes`` columns
per cycle: one weight-buffer read returns the M rows of a group at once (the buffer spreads rows
over ``m_max`` banks), each lane compresses one column's group, and ``pipeline_cycles`` later the
lanes write their N results per column into N rows (N distinct banks, so in one cycle). Hence
``dataflows.cost.compress_cycles`` = ``rows/M · ⌈cols/lanes⌉ + pipeline_cycles``: the first of the
pipeline cycles is the buffer read, the others are register stages after the selection network.
Writing in place is safe because compressed row ``g·N + t`` lies below dense row ``(g+1)·M``, and
every dense row at or above that is read before group ``g``'s results are written.
"""

from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from dataflows.isa import Unit
from rtl import layouts
from rtl.params import Geometry, ceil_log2
from workloads.arith import ceil_div
from workloads.spec import HardwareSpec

__all__ = ["NMCompressor", "CompressEngine", "select_top_n"]


def _group_layout(g: Geometry) -> data.StructLayout:
    return data.StructLayout({
        "values": data.ArrayLayout(signed(g.data_bits), g.m_max),
        "n": unsigned(5),
        "m": unsigned(5),
    })


def _kept_layout(g: Geometry) -> data.StructLayout:
    return data.StructLayout({
        "values": data.ArrayLayout(signed(g.data_bits), g.n_max),
        "indices": data.ArrayLayout(unsigned(g.index_bits), g.n_max),
    })


def select_top_n(m: Module, size: int, n_max: int, ranks_above, inside, n, name: str):
    """The top ``n`` of ``size`` entries, combinationally, in increasing index order.

    ``ranks_above(i, j)`` (for ``i < j``) is a 1-bit value: entry ``i`` ranks at or above entry
    ``j``, so ties go to the lower index. Entry ``i`` takes part where ``inside[i]``; it is kept
    when fewer than ``n`` entries beat it. Returns ``chosen[t][i]``: entry ``i`` is output
    ``t``, the kept entry with ``t`` kept entries before it (``t < n_max``).
    """
    ge = {(i, j): Signal(name=f"{name}_ge_{i}_{j}") for i in range(size)
          for j in range(i + 1, size)}
    m.d.comb += [sig.eq(ranks_above(i, j)) for (i, j), sig in ge.items()]
    kept = []
    for i in range(size):
        beaten_by = [inside[j] & ge[j, i] for j in range(i)]
        beaten_by += [inside[j] & ~ge[i, j] for j in range(i + 1, size)]
        rank = Signal(range(size + 1), name=f"{name}_rank_{i}")
        m.d.comb += rank.eq(sum(beaten_by, Const(0, range(size + 1))))
        keep = Signal(name=f"{name}_keep_{i}")
        m.d.comb += keep.eq(inside[i] & (rank < n))
        kept.append(keep)
    chosen = [[None] * size for _ in range(n_max)]
    for i in range(size):
        before = Signal(range(size + 1), name=f"{name}_pos_{i}")
        m.d.comb += before.eq(sum(kept[:i], Const(0, range(size + 1))))
        for t in range(n_max):
            chosen[t][i] = kept[i] & (before == t)
    return chosen


class NMCompressor(wiring.Component):
    """One lane: the top-N of a group of M weights by magnitude (combinational).

    Element ``i`` of the group (``i < m``) is kept when fewer than ``n`` elements beat it, where
    ``j`` beats ``i`` if ``|w_j| > |w_i|``, or ``|w_j| = |w_i|`` and ``j < i``. Kept elements leave
    in increasing index order: output ``t`` is the kept element with ``t`` kept elements before it.

    Attributes
    ----------
    group : In(stream {values[m_max], n, m})
        The group (lanes ``m`` and above are ignored).
    kept : Out(stream {values[n_max], indices[n_max]})
        Outputs ``0 .. n-1``; ``valid`` follows ``group.valid`` in the same cycle.
    """

    def __init__(self, hw: HardwareSpec) -> None:
        self._g = g = Geometry.of(hw)
        super().__init__({
            "group": In(stream.Signature(_group_layout(g), always_ready=True)),
            "kept": Out(stream.Signature(_kept_layout(g), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        g = self._g
        size = g.m_max
        values = self.group.payload.values
        mags = [abs(values[i]) for i in range(size)]
        inside = [Signal(name=f"in_{i}") for i in range(size)]
        m.d.comb += [inside[i].eq(i < self.group.payload.m) for i in range(size)]
        chosen = select_top_n(m, size, g.n_max, lambda i, j: mags[i] >= mags[j], inside,
                              self.group.payload.n, "sel")
        for t in range(g.n_max):
            for i in range(size):
                with m.If(chosen[t][i]):
                    m.d.comb += [
                        self.kept.payload.values[t].eq(values[i]),
                        self.kept.payload.indices[t].eq(i),
                    ]
        m.d.comb += self.kept.valid.eq(self.group.valid)
        return m


class CompressEngine(wiring.Component):
    """Executes COMPRESS on the weight buffer.

    Parameters
    ----------
    hw
        The hardware description (``vector_unit.lanes``, ``pipeline_cycles``, patterns).

    Attributes
    ----------
    issue : In(IssueSignature(Unit.VEC))
        Instructions from the controller and the completion pulse back.
    rd : Out(WeightBlockReadSignature)
        Reads the M rows of a group at once.
    wr : Out(WeightBankWriteSignature)
        Writes the kept weights, N rows per cycle, the lanes' columns only.
    """

    def __init__(self, hw: HardwareSpec) -> None:
        self._hw = hw
        self._g = g = Geometry.of(hw)
        super().__init__({
            "issue": In(layouts.IssueSignature(Unit.VEC)),
            "rd": Out(layouts.WeightBlockReadSignature(g)),
            "wr": Out(layouts.WeightBankWriteSignature(g)),
        })

    def elaborate(self, platform):
        m = Module()
        g = self._g
        lanes, banks, lg = g.lanes, g.b_banks, ceil_log2(g.b_banks)
        chunks = ceil_div(g.cols, lanes)
        p = self.issue.instr.payload
        busy, issuing = Signal(), Signal()
        first = Signal()
        m.d.comb += [self.issue.instr.ready.eq(~busy), first.eq(self.issue.instr.valid & ~busy)]
        slot, n, mm, rows, cols = Signal(), Signal(5), Signal(5), Signal(16), Signal(16)
        with m.If(first):
            m.d.sync += [busy.eq(1), slot.eq(p.slot), n.eq(p.nm_n), mm.eq(p.nm_m),
                         rows.eq(p.rows), cols.eq(p.cols)]

        # Read side: group row by group row, ``lanes`` columns per cycle.
        in_base, out_base = Signal(16), Signal(16)
        chunk, col0 = Signal(range(max(2, chunks))), Signal(16)
        cur = {
            "in_base": Mux(first, 0, in_base), "out_base": Mux(first, 0, out_base),
            "chunk": Mux(first, 0, chunk), "col0": Mux(first, 0, col0),
            "n": Mux(first, p.nm_n, n), "m": Mux(first, p.nm_m, mm),
            "rows": Mux(first, p.rows, rows), "cols": Mux(first, p.cols, cols),
        }
        reading = first | issuing
        last_chunk = cur["col0"] + lanes >= cur["cols"]
        last_read = last_chunk & (cur["in_base"] + cur["m"] >= cur["rows"])
        m.d.comb += [
            self.rd.en.eq(reading),
            self.rd.slot.eq(Mux(first, p.slot, slot)),
            self.rd.block.eq(cur["in_base"] >> lg),
        ]
        with m.If(reading):
            m.d.sync += issuing.eq(~last_read)
            with m.If(last_chunk):
                m.d.sync += [chunk.eq(0), col0.eq(0), in_base.eq(cur["in_base"] + cur["m"]),
                             out_base.eq(cur["out_base"] + cur["n"])]
            with m.Else():
                # (The bases are written too: in the start cycle they come from constants.)
                m.d.sync += [chunk.eq(cur["chunk"] + 1), col0.eq(cur["col0"] + lanes),
                             in_base.eq(cur["in_base"]), out_base.eq(cur["out_base"])]

        # What each read is for, arriving with its data one cycle later.
        ctl = data.StructLayout({"valid": 1, "last": 1, "chunk": len(chunk), "off": max(1, lg),
                                 "out_base": 16})
        stage = Signal(ctl)
        m.d.sync += [
            stage.valid.eq(reading), stage.last.eq(last_read), stage.chunk.eq(cur["chunk"]),
            stage.off.eq(cur["in_base"] if lg else 0), stage.out_base.eq(cur["out_base"]),
        ]

        # Selection: lane l takes column chunk·lanes + l of the group's M rows.
        compressors = [NMCompressor(self._hw) for _ in range(lanes)]
        rotated = [Array(self.rd.data[(o + t) % banks] for o in range(banks))[stage.off]
                   for t in range(g.m_max)]
        for lane, comp in enumerate(compressors):
            m.submodules[f"lane_{lane}"] = comp
            columns = [k * lanes + lane for k in range(chunks) if k * lanes + lane < g.cols]
            for t in range(g.m_max):
                pick = Array(rotated[t][j].value for j in columns)[stage.chunk]
                m.d.comb += comp.group.payload.values[t].eq(pick)
            m.d.comb += [comp.group.payload.n.eq(n), comp.group.payload.m.eq(mm),
                         comp.group.valid.eq(stage.valid)]

        # pipeline_cycles - 1 register stages after the (combinational) selection.
        kept = [comp.kept.payload for comp in compressors]
        for depth in range(g.vector_pipeline_cycles - 1):
            nxt_stage = Signal(ctl, name=f"ctl_{depth}")
            nxt_kept = [Signal(_kept_layout(g), name=f"kept_{depth}_{lane}")
                        for lane in range(lanes)]
            m.d.sync += nxt_stage.eq(stage)
            m.d.sync += [dst.eq(src) for dst, src in zip(nxt_kept, kept)]
            stage, kept = nxt_stage, nxt_kept

        # Write side: kept weight t of group g goes to row g·n + t, bank (g·n + t) % banks.
        first_bank = stage.out_base[:lg] if lg else Const(0, 1)
        m.d.comb += self.wr.slot.eq(slot)
        for b in range(banks):
            t = Signal(range(banks), name=f"t_{b}")
            m.d.comb += [
                t.eq(b - first_bank),
                self.wr.addr[b].eq((stage.out_base >> lg)
                                   + ((first_bank > b) if b < banks - 1 else 0)),
            ]
            for j in range(g.cols):
                lane = j % lanes
                entry = self.wr.data[b][j]
                m.d.comb += [
                    self.wr.mask[b][j].eq(stage.valid & (stage.chunk == j // lanes) & (j < cols)
                                    & (t < n)),
                    entry.value.eq(Array(kept[lane].values[x] for x in range(g.n_max))[t]),
                    entry.index.eq(Array(kept[lane].indices[x] for x in range(g.n_max))[t]),
                ]
        done = stage.valid & stage.last
        m.d.comb += self.issue.done.eq(done)
        with m.If(done):
            m.d.sync += busy.eq(0)
        return m
