"""The DMA engine: tile rows between DRAM (docs/isa.md's memory interface) and the buffers.

One request per tile row (``addr + r·stride``, ``⌈row_bytes / W⌉`` beats of ``W`` bytes). The
memory may return rows at any byte address, so a row's element ``e`` always sits at byte
``e·elem_bytes`` of the row's beat stream and the engine never realigns data.

Timing (``dataflows.cost.dma_cycles`` = ``latency + rows·beats``), instruction starting in ``s``:

* **Loads.** The first request leaves in cycle ``s`` itself (it is decoded straight from the
  instruction word), the others in the following cycles, so the beats come back to back from
  ``s + latency``. Each row is written into its buffer in the cycle its last beat arrives; the
  last row's write is the instruction's last cycle.
* **Mask loads.** LOAD_MASK's tile is contiguous: one request for all of it,
  ``⌈rows·⌈cols/8⌉ / W⌉`` beats, each written into the mask store as the word it is, the last
  beat's write being the instruction's last cycle (the same timing as a one-row load).
* **Stores.** Requests leave from ``s`` as for loads, while the buffer's first row is read
  (one cycle). The memory accepts write beats from ``s + latency`` on (which is why the RTL needs
  ``latency_cycles >= 1``); the store ends with the cycle its last beat is accepted. Write
  responses are only counted: ``pending`` keeps the accelerator ``busy`` until every one arrived,
  but no instruction waits for them (the memory is in order, so later loads see the data).
* **Requantizing stores.** A STORE_C with ``requant`` writes each accumulator as
  :func:`requantize` makes it (shift, round half to even, saturate to ``data_bits``) at
  ``data_bytes``: combinational logic between the accumulator's read data and the beat, so the
  timing is a store's (``⌈cols·data_bytes / W⌉`` beats per row) and costs no cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from dataflows.isa import Op, Unit
from rtl import layouts
from rtl.errors import RTLError
from rtl.params import Geometry, ceil_log2
from workloads.arith import ceil_div, index_bits
from workloads.spec import HardwareSpec

__all__ = ["DMAEngine", "ceil_div_const", "requantize", "times_const"]


def times_const(x, k: int):
    """``x · k`` for a constant ``k >= 0`` as shifts and adds: Yosys would give a multiply by a
    constant a DSP block of its own."""
    terms = [x << bit for bit in range(k.bit_length()) if k >> bit & 1]
    if not terms:
        return Const(0, 1)
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def ceil_div_const(x, divisor: int, x_max: int):
    """⌈x / divisor⌉ for an unsigned value ``0 <= x <= x_max``, without a divider.

    A power of two is a shift; otherwise ``x`` is multiplied by a rounded-up reciprocal
    ``K = ⌈2**s / divisor⌉`` with the smallest ``s`` that is exact over the whole range (checked
    here, at elaboration).
    """
    if divisor & (divisor - 1) == 0:
        return (x + divisor - 1) >> ceil_log2(divisor)
    for shift in range(ceil_log2(x_max + divisor) + 1, 64):
        k = ceil_div((1 << shift), divisor)
        if all(((v + divisor - 1) * k) >> shift == ceil_div(v, divisor) for v in range(x_max + 1)):
            return times_const(x + divisor - 1, k) >> shift
    raise RTLError(f"no exact reciprocal for division by {divisor} up to {x_max}")


def requantize(m: Module, value, shift, low_masks, data_bits: int):
    """``value`` (signed accumulator) arithmetically shifted right by ``shift``, rounded half to
    even, saturated to ``data_bits`` signed (docs/isa.md, "Requantizing stores").

    ``shift`` is at most ``len(value)`` (a larger shift gives 0 too), ``low_masks`` the
    ``2**shift − 1`` for every shift (shared by all columns).
    """
    value = Value.cast(value)
    width = len(value)
    q = Signal(signed(width))
    m.d.comb += q.eq(value.as_signed() >> shift)
    below = value.as_unsigned() & low_masks[shift]  # the bits shifted out, = value − q·2**shift
    half = (low_masks[shift] >> 1) + (shift != 0)  # 2**(shift − 1), or 0 without a shift
    up = (shift != 0) & ((below > half) | ((below == half) & q[0]))
    rounded = Signal(signed(width + 1))
    m.d.comb += rounded.eq(q + up)
    hi, lo = (1 << (data_bits - 1)) - 1, -(1 << (data_bits - 1))
    out = Signal(signed(data_bits))
    m.d.comb += out.eq(Mux(rounded > hi, hi, Mux(rounded < lo, lo, rounded[:data_bits])))
    return out


class DMAEngine(wiring.Component):
    """Executes LOAD_A, LOAD_B, LOAD_MASK, STORE_C and STORE_B.

    Parameters
    ----------
    hw
        The hardware description (beat width, element widths, buffer geometry).

    Attributes
    ----------
    issue : In(IssueSignature(Unit.DMA))
        Instructions from the controller and the completion pulse back.
    mem_rd_req, mem_rd_data, mem_wr_req, mem_wr_data, mem_wr_resp
        The memory interface of docs/isa.md.
    a_wr, b_wr, b_rd, c_rd, mask_wr
        Buffer ports: input rows in, weight rows in and out, accumulator rows out, mask beats in.
    pending : Out(1)
        Write responses are outstanding (not counting one that arrives in this cycle).
    """

    def __init__(self, hw: HardwareSpec) -> None:
        self._g = g = Geometry.of(hw)
        super().__init__({
            "issue": In(layouts.IssueSignature(Unit.DMA)),
            "mem_rd_req": Out(stream.Signature(layouts.mem_request())),
            "mem_rd_data": In(stream.Signature(layouts.mem_read_beat(g))),
            "mem_wr_req": Out(stream.Signature(layouts.mem_request())),
            "mem_wr_data": Out(stream.Signature(layouts.mem_write_beat(g))),
            "mem_wr_resp": In(stream.Signature(layouts.MEM_WRITE_RESPONSE)),
            "a_wr": Out(layouts.InputWriteSignature(g)),
            "b_wr": Out(layouts.WeightRowWriteSignature(g)),
            "b_rd": Out(layouts.WeightRowReadSignature(g)),
            "c_rd": Out(layouts.AccRowReadSignature(g)),
            "mask_wr": Out(layouts.MaskWriteSignature(g)),
            "pending": Out(1),
        })

    # ----------------------------------------------------------------------------------------
    # Decoding (combinational, from the instruction word in its start cycle)
    # ----------------------------------------------------------------------------------------

    def _index_bits(self, m: Module, nm_m):
        """⌈log2 M⌉ (at least 1) of the instruction's M."""
        ib = Signal(3)
        m.d.comb += ib.eq(5)
        for bits in (4, 3, 2, 1):
            with m.If(nm_m <= (1 << bits)):
                m.d.comb += ib.eq(bits)
        return ib

    def _decode(self, m: Module, p):
        """Per-instruction constants, combinationally from the word (used in the start cycle)."""
        g = self._g
        op = p.op
        compressed = ((op == Op.LOAD_B) | (op == Op.STORE_B)) & (p.nm_n != 0)
        ib = self._index_bits(m, p.nm_m)
        row_bytes = Signal(24)
        # ⌈cols·ib/8⌉ for the index widths of the supported patterns (others never occur).
        index_bytes = Signal(24)
        for bits in sorted({index_bits(mm) for mm in g.m_values}):
            with m.If(ib == bits):
                m.d.comb += index_bytes.eq((times_const(p.cols, bits) + 7) >> 3)
        with m.If(op == Op.STORE_C):
            m.d.comb += row_bytes.eq(Mux(p.requant, times_const(p.cols, g.data_bytes),
                                         times_const(p.cols, g.acc_bytes)))
        with m.Else():
            m.d.comb += row_bytes.eq(times_const(p.cols, g.data_bytes)
                                     + Mux(compressed, index_bytes, 0))
        beats = Signal(16)
        m.d.comb += beats.eq(ceil_div_const(row_bytes, g.beat_bytes, g.row_bytes_max))
        with m.If(op == Op.LOAD_MASK):
            # The whole tile in one burst: rows of ⌈cols/8⌉ bytes back to back.
            tile_bytes = Signal(range(g.mask_bytes_max + 1))
            for width in range(1, g.mask_row_bytes_max + 1):
                with m.If((p.cols + 7) >> 3 == width):
                    m.d.comb += tile_bytes.eq(times_const(p.rows, width))
            m.d.comb += beats.eq(ceil_div_const(tile_bytes, g.beat_bytes, g.mask_bytes_max))
        # Input rows take 2**pitch banks: the smallest power of two of rows-wide words that holds
        # max(cols, k) operands (a LOAD_A with k > cols lays its rows out k wide).
        pitch = Signal(len(self.a_wr.pitch))
        lg = ceil_log2(g.a_banks)
        width = Mux(p.k > p.cols, p.k, p.cols)
        m.d.comb += pitch.eq(lg)
        for q in reversed(range(lg)):
            with m.If(width <= (g.rows << q)):
                m.d.comb += pitch.eq(q)
        return compressed, ib, row_bytes, beats, pitch

    # ----------------------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        g = self._g
        issue, p = self.issue, self.issue.instr.payload
        busy = Signal()
        first = Signal()  # the start cycle: decode straight from the instruction word
        m.d.comb += [issue.instr.ready.eq(~busy), first.eq(issue.instr.valid & ~busy)]

        dec_compressed, dec_ib, dec_row_bytes, dec_beats, dec_pitch = self._decode(m, p)
        # The slot row of the transfer's first row: the row offset of the buffer it touches.
        dec_row0 = Signal.like(p.a_row)
        m.d.comb += dec_row0.eq(Mux(p.op == Op.LOAD_A, p.a_row,
                                    Mux(p.op == Op.STORE_C, p.c_row, p.b_row)))
        s = _State(
            op=Signal(4), slot=Signal(), rows=Signal(16), cols=Signal(16), stride=Signal(24),
            compressed=Signal(), ib=Signal(3), row_bytes=Signal(24), beats=Signal(16),
            pitch=Signal(len(dec_pitch)), requant=Signal(),
            shift=Signal(range(g.acc_bits + 1)), row=Signal(16), row0=Signal.like(p.a_row),
            beat=Signal(range(max(2, g.beats_max))), done=Signal(), first=first, busy=busy,
        )
        with m.If(first):
            m.d.sync += [
                busy.eq(1), s.op.eq(p.op), s.slot.eq(p.slot), s.rows.eq(p.rows),
                s.cols.eq(p.cols), s.stride.eq(p.stride), s.compressed.eq(dec_compressed),
                s.ib.eq(dec_ib), s.row_bytes.eq(dec_row_bytes), s.beats.eq(dec_beats),
                s.pitch.eq(dec_pitch), s.requant.eq(p.requant), s.row0.eq(dec_row0),
                # Shifts past acc_bits leave 0, as acc_bits does: keep the shifter that narrow.
                s.shift.eq(Mux(p.shift > g.acc_bits, g.acc_bits, p.shift)),
            ]
        m.d.comb += issue.done.eq(s.done)
        wr_accept = self._requests(m, s, dec_beats)
        self._load(m, s)
        self._store(m, s, dec_row_bytes, dec_row0)
        # Added last so that it wins over the row and beat updates above.
        with m.If(s.done):
            m.d.sync += [busy.eq(0), s.row.eq(0), s.beat.eq(0)]

        # Write responses: counted, never waited for by an instruction.
        outstanding = Signal(20)
        m.d.comb += self.mem_wr_resp.ready.eq(1)
        m.d.sync += outstanding.eq(outstanding + wr_accept - self.mem_wr_resp.valid)
        # A response arriving this cycle settles its request now: with the memory of docs/isa.md
        # (response in the cycle after the last beat), busy then falls exactly at the run's end.
        m.d.comb += self.pending.eq(outstanding > self.mem_wr_resp.valid)
        return m

    def _requests(self, m: Module, s: _State, dec_beats):
        """One request per row; the first leaves in the start cycle. Returns write acceptance."""
        p = self.issue.instr.payload
        req_left = Signal(16)
        req_addr = Signal(32)
        cur_op = Mux(s.first, p.op, s.op)
        is_load = (cur_op == Op.LOAD_A) | (cur_op == Op.LOAD_B) | (cur_op == Op.LOAD_MASK)
        requests = Mux(p.op == Op.LOAD_MASK, 1, p.rows)
        req_valid = Mux(s.first, p.rows != 0, req_left != 0)
        cur_addr = Mux(s.first, p.addr, req_addr)
        cur_beats = Mux(s.first, dec_beats, s.beats)
        for req in (self.mem_rd_req, self.mem_wr_req):
            m.d.comb += [req.payload.addr.eq(cur_addr), req.payload.beats.eq(cur_beats)]
        m.d.comb += [
            self.mem_rd_req.valid.eq(req_valid & is_load),
            self.mem_wr_req.valid.eq(req_valid & ~is_load),
        ]
        wr_accept = self.mem_wr_req.valid & self.mem_wr_req.ready
        accepted = (self.mem_rd_req.valid & self.mem_rd_req.ready) | wr_accept
        with m.If(s.first | accepted):
            m.d.sync += [
                req_left.eq(Mux(s.first, requests, req_left) - accepted),
                req_addr.eq(cur_addr + Mux(accepted, Mux(s.first, p.stride, s.stride), 0)),
            ]
        return wr_accept

    def _load(self, m: Module, s: _State) -> None:
        g = self._g
        width = 8 * g.beat_bytes
        data = self.mem_rd_data.payload.data
        beat_in = self.mem_rd_data.valid
        m.d.comb += self.mem_rd_data.ready.eq(1)
        last_beat = s.beat == s.beats - 1
        held = [Signal(width, name=f"held_{k}") for k in range(g.beats_max - 1)]
        is_mask = s.op == Op.LOAD_MASK
        self._load_mask(m, s, is_mask)
        with m.If(beat_in & ~is_mask):
            for k, h in enumerate(held):
                with m.If(s.beat == k):
                    m.d.sync += h.eq(data)
            with m.If(last_beat):
                m.d.sync += [s.beat.eq(0), s.row.eq(s.row + 1)]
            with m.Else():
                m.d.sync += s.beat.eq(s.beat + 1)
        # The whole row with its last beat straight from the bus, so the row is written in the
        # cycle that beat arrives (a row with fewer beats leaves garbage past its end).
        row_bits = Cat(*(Mux(s.beat == k, data, held[k]) for k in range(g.beats_max - 1)), data)
        row_end = beat_in & last_beat
        is_a, is_b = s.op == Op.LOAD_A, s.op == Op.LOAD_B
        with m.If(s.busy & row_end & (s.row == s.rows - 1) & (is_a | is_b)):
            m.d.comb += s.done.eq(1)

        db = 8 * g.data_bytes
        m.d.comb += [
            self.a_wr.en.eq(row_end & is_a),
            self.a_wr.slot.eq(s.slot),
            self.a_wr.row.eq(s.row0 + s.row),
            self.a_wr.pitch.eq(s.pitch),
            self.b_wr.en.eq(row_end & is_b),
            self.b_wr.slot.eq(s.slot),
            self.b_wr.row.eq(s.row0 + s.row),
        ]
        for e in range(g.rows * g.a_banks):
            m.d.comb += self.a_wr.data[e].eq(row_bits[e * db : e * db + g.data_bits])
        for j in range(g.cols):
            m.d.comb += self.b_wr.data[j].value.eq(row_bits[j * db : j * db + g.data_bits])
        if g.sparse:
            # The index region starts right after the row's ``cols`` values.
            bits = g.cols * g.index_bits
            region = Array(row_bits[k * db : k * db + bits] for k in range(g.cols + 1))[s.cols]
            for j in range(g.cols):
                index = Signal(g.index_bits, name=f"index_{j}")
                for ib in sorted({index_bits(mm) for mm in g.m_values}):
                    with m.If(s.ib == ib):
                        m.d.comb += index.eq(region[j * ib : (j + 1) * ib])
                m.d.comb += self.b_wr.data[j].index.eq(Mux(s.compressed, index, 0))

    def _load_mask(self, m: Module, s: _State, is_mask) -> None:
        """LOAD_MASK: every beat straight into the mask store, word after word."""
        word = Signal(len(self.mask_wr.word))
        beat_in = self.mem_rd_data.valid & is_mask
        last = word == s.beats - 1
        m.d.comb += [
            self.mask_wr.en.eq(beat_in),
            self.mask_wr.slot.eq(s.slot),
            self.mask_wr.word.eq(word),
            self.mask_wr.data.eq(self.mem_rd_data.payload.data),
        ]
        with m.If(beat_in):
            m.d.sync += word.eq(Mux(last, 0, word + 1))
        with m.If(s.busy & beat_in & last):
            m.d.comb += s.done.eq(1)

    def _store(self, m: Module, s: _State, dec_row_bytes, dec_row0) -> None:
        g = self._g
        p = self.issue.instr.payload
        is_c, is_b = s.op == Op.STORE_C, s.op == Op.STORE_B
        have = Signal()  # the buffer's read data hold the current row
        left = Signal(24)  # bytes of the current row from the current beat on
        last_beat = s.beat == s.beats - 1
        xfer = self.mem_wr_data.valid & self.mem_wr_data.ready
        row_end = xfer & last_beat
        last_row = s.row == s.rows - 1
        starts = s.first & ((p.op == Op.STORE_C) | (p.op == Op.STORE_B))
        # Read row 0 in the start cycle, then the next row as the current one's last beat leaves.
        rd_en = starts | (row_end & ~last_row)
        cur_op = Mux(s.first, p.op, s.op)
        for port, kind in ((self.c_rd, Op.STORE_C), (self.b_rd, Op.STORE_B)):
            m.d.comb += [
                port.en.eq(rd_en & (cur_op == kind)),
                port.row.eq(Mux(s.first, dec_row0, s.row0 + s.row + 1)),
                port.slot.eq(Mux(s.first, p.slot, s.slot)),
            ]
        m.d.sync += have.eq(starts | (have & ~s.done))
        with m.If(s.first):
            m.d.sync += left.eq(dec_row_bytes)
        with m.If(xfer):
            with m.If(last_beat):
                m.d.sync += [s.beat.eq(0), s.row.eq(s.row + 1), left.eq(s.row_bytes)]
            with m.Else():
                m.d.sync += [s.beat.eq(s.beat + 1), left.eq(left - g.beat_bytes)]
        with m.If(s.busy & (is_c | is_b) & row_end & last_row):
            m.d.comb += s.done.eq(1)

        # Row images: accumulators sign-extended to acc_bytes, or requantized and sign-extended
        # to data_bytes; weight values, then indices.
        acc_row = Cat(*(_sext(self.c_rd.data[j], 8 * g.acc_bytes) for j in range(g.cols)))
        low_masks = Array(Const((1 << k) - 1, g.acc_bits) for k in range(g.acc_bits + 1))
        requantized = Cat(*(_sext(requantize(m, self.c_rd.data[j], s.shift, low_masks, g.data_bits),
                                  8 * g.data_bytes) for j in range(g.cols)))
        acc_row = Mux(s.requant, requantized, acc_row)
        values = Cat(*(_sext(self.b_rd.data[j].value, 8 * g.data_bytes) for j in range(g.cols)))
        weight_row = values
        if g.sparse:
            region = Signal(g.cols * g.index_bits)
            for ib in sorted({index_bits(mm) for mm in g.m_values}):
                with m.If(s.ib == ib):
                    m.d.comb += region.eq(Cat(*(self.b_rd.data[j].index[:ib]
                                                for j in range(g.cols))))
            db = 8 * g.data_bytes
            packed = Array(Cat(values[: k * db], region) for k in range(g.cols + 1))[s.cols]
            weight_row = Mux(s.compressed, packed, values)
        row_bits = Mux(is_c, acc_row, weight_row)
        width = 8 * g.beat_bytes
        beats = [row_bits[k * width : (k + 1) * width] for k in range(g.beats_max)]
        m.d.comb += [
            self.mem_wr_data.valid.eq(s.busy & (is_c | is_b) & have),
            self.mem_wr_data.payload.data.eq(Array(beats)[s.beat]),
            self.mem_wr_data.payload.strb.eq(Cat(*(left > k for k in range(g.beat_bytes)))),
        ]


@dataclass(frozen=True)
class _State:
    """The DMA's registers for the running instruction (and the start-cycle flags)."""

    op: Signal
    slot: Signal
    rows: Signal
    cols: Signal
    stride: Signal
    compressed: Signal
    ib: Signal
    row_bytes: Signal
    beats: Signal
    pitch: Signal
    requant: Signal
    shift: Signal
    row: Signal
    row0: Signal
    beat: Signal
    done: Signal
    first: Signal
    busy: Signal


def _sext(value, width: int):
    """The bits of signed ``value`` sign-extended to ``width`` (two's complement in memory)."""
    value = value.as_value() if hasattr(value, "as_value") else value
    return Cat(value, value[-1].replicate(width - len(value)))
