"""Row-wise SpGEMM engine with a banked hash accumulator (the ``hash`` dataflow's hardware).

C = A·B row by row: for each nonzero a_ik of a row of A, the engine takes row k of B in beats
of ``multipliers`` elements, multiplies them by a_ik, and adds every partial product into a hash
table in on-chip memory (SMASH-style: products are merged as they are produced). When the row is
done it drains the table as the row of C and clears it.

The table has ``hash_entries`` entries in ``hash_banks`` banks, grouped in buckets of
``hash_ways`` entries. A column's bucket is the top bits of the low 32 bits of
``col · HASH_MULTIPLIER`` (``dataflows.spgemm.hash_bucket``); its bank is ``bucket %
hash_banks``. Each bank serves one probe per cycle: it scans the bucket's ways in order until it
finds the column (add), an empty way (insert) or, after the last way, gives up and spills the
product on ``spill_out``. Spilled products come back on ``spill_in`` after the row's table has
been drained, for another pass with an empty table, until a pass spills nothing. Keys in a pass's
table and the keys it spilled are disjoint, so every pass drains distinct columns of the row.

Streams (payload layouts below; ``cols``/``values`` arrays are lanes):

- ``a`` in: one element of A per beat (``col``, ``value``, ``last`` of row); an empty row is a
  single beat with ``empty``.
- ``b`` in: for every nonzero of A, in order, its row of B in beats of up to ``multipliers``
  elements (``count`` valid lanes, ``last`` beat of the row); an empty B row is one beat with
  ``count == 0``.
- ``spill_in`` in: a pass's spilled products, ``multipliers`` per beat, in the order they left.
- ``spill_out`` out (valid and payload, no backpressure): per cycle, the products each bank spilled (``valid`` bits).
- ``c`` out: per drain cycle, entry ``t`` of every bank's list of inserted keys (``valid``
  bits); ``pass_end`` on a pass's last beat and ``last`` on the row's last beat. An empty row of
  C is one beat with no valid lane.

Timing (cycles; docs/spgemm.md, mirrored by ``dataflows.spgemm.hash_row_trace``): per nonzero of
A, one cycle to accept it and one to accept the first beat of its B row; a beat then takes the
probes of its busiest bank, and the next beat is accepted in the last of those cycles; a drain
takes its longest bank list (at least one cycle); an empty row of A costs two cycles.

Memories use combinational read ports (distributed RAM): one probe per bank per cycle needs the
entry in the cycle its address is known.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from dataflows.spgemm import HASH_MULTIPLIER
from workloads.spec import HardwareSpec

__all__ = [
    "SpGEMMEngine",
    "a_element_layout",
    "b_beat_layout",
    "spill_in_layout",
    "spill_out_layout",
    "c_beat_layout",
    "spgemm_verilog",
]


def _bits(n: int) -> int:
    """Bits to hold the values 0 .. n."""
    return max(1, int(n).bit_length())


def _log2(n: int) -> int:
    return int(n).bit_length() - 1


def a_element_layout(hw: HardwareSpec) -> data.StructLayout:
    return data.StructLayout({
        "col": unsigned(hw.spgemm.index_bits),
        "value": signed(hw.data_bits),
        "last": 1,
        "empty": 1,
    })


def b_beat_layout(hw: HardwareSpec) -> data.StructLayout:
    p = hw.spgemm.multipliers
    return data.StructLayout({
        "cols": data.ArrayLayout(unsigned(hw.spgemm.index_bits), p),
        "values": data.ArrayLayout(signed(hw.data_bits), p),
        "count": unsigned(_bits(p)),
        "last": 1,
    })


def spill_in_layout(hw: HardwareSpec) -> data.StructLayout:
    p = hw.spgemm.multipliers
    return data.StructLayout({
        "cols": data.ArrayLayout(unsigned(hw.spgemm.index_bits), p),
        "values": data.ArrayLayout(signed(hw.acc_bits), p),
        "count": unsigned(_bits(p)),
        "last": 1,
    })


def spill_out_layout(hw: HardwareSpec) -> data.StructLayout:
    nb = hw.spgemm.hash_banks
    return data.StructLayout({
        "cols": data.ArrayLayout(unsigned(hw.spgemm.index_bits), nb),
        "values": data.ArrayLayout(signed(hw.acc_bits), nb),
        "valid": unsigned(nb),
    })


def c_beat_layout(hw: HardwareSpec) -> data.StructLayout:
    nb = hw.spgemm.hash_banks
    return data.StructLayout({
        "cols": data.ArrayLayout(unsigned(hw.spgemm.index_bits), nb),
        "values": data.ArrayLayout(signed(hw.acc_bits), nb),
        "valid": unsigned(nb),
        "last": 1,
        "pass_end": 1,
    })


def _entry_layout(hw: HardwareSpec) -> data.StructLayout:
    return data.StructLayout({
        "valid": 1,
        "key": unsigned(hw.spgemm.index_bits),
        "value": signed(hw.acc_bits),
    })


class SpGEMMEngine(wiring.Component):
    """The row-wise hash-accumulator SpGEMM engine; every parameter from ``hw.spgemm``.

    Parameters
    ----------
    hw : HardwareSpec
        ``spgemm.multipliers`` lanes, ``hash_entries`` / ``hash_banks`` / ``hash_ways`` table
        geometry, ``spgemm.index_bits`` columns; ``data_bits`` operands, ``acc_bits`` sums.
    """

    def __init__(self, hw: HardwareSpec) -> None:
        self._hw = hw
        super().__init__({
            "a": In(stream.Signature(a_element_layout(hw))),
            "b": In(stream.Signature(b_beat_layout(hw))),
            "spill_in": In(stream.Signature(spill_in_layout(hw))),
            # No ready: the spill write buffer takes a beat every cycle, so a bank that gives
            # up on a product never waits (the timing model relies on it).
            "spill_out": Out(wiring.Signature({
                "valid": Out(1), "payload": Out(spill_out_layout(hw)),
            })),
            "c": Out(stream.Signature(c_beat_layout(hw))),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        hw, eng = self._hw, self._hw.spgemm
        p, nb, ways = eng.multipliers, eng.hash_banks, eng.hash_ways
        depth = eng.hash_entries // nb  # entries per bank
        bucket_bits, bank_bits, way_bits = _log2(eng.hash_buckets), _log2(nb), _log2(ways)
        addr_bits = max(1, _log2(depth))

        # Beat registers: one lane per multiplier.
        lane_col = [Signal(eng.index_bits, name=f"lane_col{i}") for i in range(p)]
        lane_prod = [Signal(signed(hw.acc_bits), name=f"lane_prod{i}") for i in range(p)]
        lane_bucket = [Signal(max(1, bucket_bits), name=f"lane_bucket{i}") for i in range(p)]
        pending = Signal(p)
        a_value = Signal(signed(hw.data_bits))
        a_last = Signal()
        beat_last = Signal()
        from_spill = Signal()  # the current pass reads spill_in instead of A and B
        spilled = Signal()  # this pass spilled: another pass follows the drain
        drain_t = Signal(_bits(depth))
        counts = [Signal(_bits(depth), name=f"count{b}") for b in range(nb)]
        way = [Signal(max(1, way_bits), name=f"way{b}") for b in range(nb)]

        def bucket_of(col):
            if bucket_bits == 0:
                return Const(0, 1)
            return (col.as_unsigned() * HASH_MULTIPLIER)[32 - bucket_bits : 32]

        def bank_of(bucket):
            return bucket[:bank_bits] if bank_bits else Const(0, 1)

        # Loading a beat into the lanes (from B, multiplied by a_ik, or from spill_in as is).
        load = Signal()
        src_valid, src_last, src_count = Signal(), Signal(), Signal(_bits(p))
        src_cols = [Signal(eng.index_bits, name=f"src_col{i}") for i in range(p)]
        src_prods = [Signal(signed(hw.acc_bits), name=f"src_prod{i}") for i in range(p)]
        with m.If(from_spill):
            m.d.comb += [
                src_valid.eq(self.spill_in.valid),
                src_last.eq(self.spill_in.payload.last),
                src_count.eq(self.spill_in.payload.count),
                self.spill_in.ready.eq(load),
            ]
            for i in range(p):
                m.d.comb += [
                    src_cols[i].eq(self.spill_in.payload.cols[i]),
                    src_prods[i].eq(self.spill_in.payload.values[i]),
                ]
        with m.Else():
            m.d.comb += [
                src_valid.eq(self.b.valid),
                src_last.eq(self.b.payload.last),
                src_count.eq(self.b.payload.count),
                self.b.ready.eq(load),
            ]
            for i in range(p):
                m.d.comb += [
                    src_cols[i].eq(self.b.payload.cols[i]),
                    src_prods[i].eq(a_value * self.b.payload.values[i]),
                ]
        accepted = Signal()
        m.d.comb += accepted.eq(load & src_valid)

        # Banks: entry memory and the list of inserted entries (in insertion order).
        probing = Signal()
        draining = Signal()
        drain_fire = Signal()
        finishing = []  # per bank: no lane left after this cycle
        done_lanes = []  # per bank: one-hot of the lane it completes this cycle
        spill_lanes = Signal(nb)
        lane_valid = Signal(nb)
        max_count = Signal(_bits(depth))
        for b in range(nb):
            entries = Memory(shape=_entry_layout(hw), depth=depth, init=[])
            order = Memory(shape=unsigned(addr_bits), depth=depth, init=[])
            m.submodules[f"entries{b}"] = entries
            m.submodules[f"order{b}"] = order
            rd, wr = entries.read_port(domain="comb"), entries.write_port()
            lrd, lwr = order.read_port(domain="comb"), order.write_port()

            cand = Cat(*(pending[i] & (bank_of(lane_bucket[i]) == b) for i in range(p)))
            sel = Signal(range(p), name=f"sel{b}")
            for i in reversed(range(p)):  # lowest pending lane of this bank
                with m.If(cand[i]):
                    m.d.comb += sel.eq(i)
            col = Array(lane_col)[sel]
            prod = Array(lane_prod)[sel]
            bucket = Array(lane_bucket)[sel]
            base = (bucket >> bank_bits) if bank_bits else bucket
            probe_addr = Signal(addr_bits, name=f"probe_addr{b}")
            m.d.comb += probe_addr.eq((base << way_bits) | way[b] if way_bits else base)
            hit = rd.data.valid & (rd.data.key == col)
            empty = ~rd.data.valid
            give_up = rd.data.valid & (rd.data.key != col) & (way[b] == ways - 1)
            done = Signal(name=f"done{b}")
            m.d.comb += done.eq(probing & cand.any() & (hit | empty | give_up))
            others = cand & ~(Const(1, p) << sel)[:p]
            fin = Signal(name=f"finishing{b}")
            m.d.comb += fin.eq(~cand.any() | (done & ~others.any()))
            finishing.append(fin)
            onehot = Signal(p, name=f"done_lane{b}")
            with m.If(done):
                m.d.comb += onehot.eq(Const(1, p) << sel)
            done_lanes.append(onehot)

            m.d.comb += lane_valid[b].eq(drain_t < counts[b])
            with m.If(draining):
                m.d.comb += [
                    lrd.addr.eq(drain_t),
                    rd.addr.eq(lrd.data),
                    wr.addr.eq(lrd.data),
                    wr.data.eq(0),
                    wr.en.eq(drain_fire & lane_valid[b]),
                    self.c.payload.cols[b].eq(rd.data.key),
                    self.c.payload.values[b].eq(rd.data.value),
                ]
            with m.Else():
                m.d.comb += [rd.addr.eq(probe_addr), wr.addr.eq(probe_addr)]
                with m.If(probing & cand.any()):
                    with m.If(done):
                        m.d.sync += way[b].eq(0)
                    with m.Else():
                        m.d.sync += way[b].eq(way[b] + 1)
                    with m.If(hit):
                        m.d.comb += [
                            wr.data.valid.eq(1),
                            wr.data.key.eq(col),
                            wr.data.value.eq(rd.data.value + prod),
                            wr.en.eq(1),
                        ]
                    with m.Elif(empty):
                        m.d.comb += [
                            wr.data.valid.eq(1),
                            wr.data.key.eq(col),
                            wr.data.value.eq(prod),
                            wr.en.eq(1),
                            lwr.addr.eq(counts[b]),
                            lwr.data.eq(probe_addr),
                            lwr.en.eq(1),
                        ]
                        m.d.sync += counts[b].eq(counts[b] + 1)
                    with m.Elif(give_up):
                        m.d.comb += [
                            spill_lanes[b].eq(1),
                            self.spill_out.payload.cols[b].eq(col),
                            self.spill_out.payload.values[b].eq(prod),
                        ]
        largest = Const(0, _bits(depth))
        for b in range(nb):
            nxt = Signal(_bits(depth), name=f"max_upto{b}")
            m.d.comb += nxt.eq(largest)
            with m.If(counts[b] > largest):
                m.d.comb += nxt.eq(counts[b])
            largest = nxt
        m.d.comb += max_count.eq(largest)

        m.d.comb += [
            self.spill_out.valid.eq(spill_lanes.any()),
            self.spill_out.payload.valid.eq(spill_lanes),
        ]
        beat_done = Signal()
        m.d.comb += beat_done.eq(Cat(*finishing).all())
        with m.If(probing):
            m.d.sync += pending.eq(pending & ~_or_all(done_lanes, p))
            with m.If(spill_lanes.any()):
                m.d.sync += spilled.eq(1)
        # A beat accepted in this cycle replaces the lanes (this comes after the clearing above,
        # so it wins when the next beat is accepted in the last probe cycle of the one before).
        with m.If(accepted):
            m.d.sync += [
                pending.eq(Cat(*(src_count > i for i in range(p)))),
                beat_last.eq(src_last),
            ]
            for i in range(p):
                m.d.sync += [
                    lane_col[i].eq(src_cols[i]),
                    lane_prod[i].eq(src_prods[i]),
                    lane_bucket[i].eq(bucket_of(src_cols[i])),
                ]

        last_drain_beat = Signal()
        m.d.comb += last_drain_beat.eq(drain_t + 1 >= max_count)

        with m.FSM(name="engine"):
            with m.State("READ_A"):
                m.d.comb += self.a.ready.eq(1)
                with m.If(self.a.valid):
                    with m.If(self.a.payload.empty):
                        m.next = "EMPTY"
                    with m.Else():
                        m.d.sync += [
                            a_value.eq(self.a.payload.value),
                            a_last.eq(self.a.payload.last),
                            from_spill.eq(0),
                        ]
                        m.next = "BEAT"
            with m.State("EMPTY"):
                m.d.comb += [
                    self.c.valid.eq(1),
                    self.c.payload.last.eq(1),
                    self.c.payload.pass_end.eq(1),
                ]
                with m.If(self.c.ready):
                    m.next = "READ_A"
            with m.State("BEAT"):
                m.d.comb += load.eq(1)
                with m.If(src_valid):
                    with m.If(src_count != 0):
                        m.next = "PROBE"
                    with m.Elif(a_last):  # an empty row of B: nothing to probe
                        m.next = "DRAIN"
                    with m.Else():
                        m.next = "READ_A"
            with m.State("PROBE"):
                m.d.comb += probing.eq(1)
                with m.If(beat_done):
                    with m.If(~beat_last):
                        m.d.comb += load.eq(1)
                        with m.If(~src_valid):
                            m.next = "BEAT"
                    with m.Elif(from_spill | a_last):
                        m.next = "DRAIN"
                    with m.Else():
                        m.next = "READ_A"
            with m.State("DRAIN"):
                m.d.comb += [
                    draining.eq(1),
                    self.c.valid.eq(1),
                    self.c.payload.valid.eq(lane_valid),
                    self.c.payload.last.eq(last_drain_beat & ~spilled),
                    self.c.payload.pass_end.eq(last_drain_beat),
                    drain_fire.eq(self.c.ready),
                ]
                with m.If(self.c.ready):
                    m.d.sync += drain_t.eq(drain_t + 1)
                    with m.If(last_drain_beat):
                        m.d.sync += [drain_t.eq(0), spilled.eq(0)]
                        m.d.sync += [cnt.eq(0) for cnt in counts]
                        with m.If(spilled):
                            m.d.sync += from_spill.eq(1)
                            m.next = "BEAT"
                        with m.Else():
                            m.next = "READ_A"
        return m


def _or_all(masks: list[Signal], width: int):
    """Bitwise OR of one-hot lane masks."""
    out = Const(0, width)
    for mask in masks:
        out = out | mask
    return out


def spgemm_verilog(hw: HardwareSpec, name: str = "spgemm_engine") -> str:
    """Verilog of the engine for ``hw`` (ports named by signature path: ``a__valid``, ...)."""
    from rtl.build import verilog_text

    return verilog_text(SpGEMMEngine(hw), name=name)
