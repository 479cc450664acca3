"""The vector unit's online softmax: ROWMAX, EXP, RESCALE and NORMALIZE of docs/isa.md.

Attention keeps a score tile Sᵀ (rows = keys, columns = queries) in an accumulator slot. Per
query column ``j`` this unit holds the softmax state the instructions share: the running max
``mx``, whether any score was kept yet, the running sum ``l``, the last ROWMAX's correction
``c`` and NORMALIZE's reciprocal. The arithmetic is exactly the golden interpreter's
(``verification.golden.Interpreter`` with ``verification.golden_softmax``; base 2, the exp table
of :func:`rtl.softmax.exp2_neg`, scores read as ``acc >> score_shift`` clipped to
``score_bits``), the widths those of :class:`~dataflows.softmax_format.SoftmaxFormat`.

A pass streams the tile one **beat** per cycle: one accumulator row of up to ``softmax_lanes``
consecutive columns (a *chunk*), chunk by chunk, rows inside a chunk, so ``B = rows ·
⌈cols / softmax_lanes⌉`` beats (``dataflows.cost.softmax_beats``). A beat engages only its
chunk's columns, which is the throughput the cost model charges, so the datapath is built per
**lane**, not per column: lane ``l`` serves column ``c·softmax_lanes + l`` while chunk ``c``
streams, through one score clip, one exp table, one block max, one set of EXP group registers
with its top-N selection and one multiplier of each kind, multiplexed to the chunk's columns.
Only what must outlive a chunk stays per column: ``mx``, the kept flag, ``l``, ``c``, and
NORMALIZE's divider and reciprocal. With instruction start ``s`` = cycle 0, beat ``i`` reads its
row (and the mask word pair) in cycle ``i`` and has its data in cycle ``i + 1``; ``X`` =
``exp_latency_cycles``:

* **ROWMAX** (``1 + B + X + 2``): beats update each lane's block max (a chunk's first row starts
  it afresh). The cycle after a chunk's last data cycle, its columns take the new max and
  ``new − old`` enters the lanes' exp tables (idle during ROWMAX); the correction comes out
  ``X`` cycles later with ``l · c`` registered; the next cycle writes ``l``. Chunks are at
  least one cycle apart, so their tails pipeline, and the last chunk's ends the instruction
  in cycle ``B + X + 2``, as when every column's correction waited for cycle ``B + 1``.
* **EXP** (``1 + B + X + 1``): each score enters its lane's exp table in its data cycle; ``X``
  cycles later its exponential (with score and keep bit) is filed into the lane's group
  registers (a group never spans chunks: a chunk's last row closes it); in the next cycle a
  group that closes (``M`` rows, one row when dense, or the instruction's last row: a cut group
  is padded with masked rows) keeps its top ``N`` by score (masked below every kept score, ties
  to the lower row), writes them as compressed weight rows ``P̃ = min(round(e / 2^(E−P)),
  2^P − 1)`` with their indices, and adds them to its column's ``l``.
* **RESCALE** (``1 + B + 2``): the data cycle registers the product with ``c``, the next the
  result ``⌊acc · c / 2^E⌋``, and the one after writes it back.
* **NORMALIZE** (``R + 1 + B + 2``): cycles ``0 .. R − 1`` run a restoring divider per column,
  ``R = ⌊2^K / l⌋`` one bit per cycle (0 for ``l = 0``), then a RESCALE-like pass with
  ``⌊acc · R / 2^(K−E)⌋``. The dividers stay per column: every column's reciprocal is needed
  by its chunk's first beat, and a chunk may have fewer rows than the ``R`` cycles a divider
  takes, so a lane's divider could not finish the next chunk's reciprocals in time. The divider needs ``l ≥ 2^E`` (true whenever a column kept a score:
  its maximum contributes exactly ``2^E``) and running sums of at most ``2^20`` keys
  (:data:`RUNNING_SUM_KEY_BITS`).
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from dataflows.isa import Op, Unit
from rtl import layouts
from rtl.dma import ceil_div_const, times_const
from rtl.params import Geometry, ceil_log2
from rtl.softmax import SoftmaxParams, exp2_neg
from rtl.vector import select_top_n
from workloads.arith import ceil_div
from workloads.spec import HardwareSpec

__all__ = ["OnlineSoftmax", "RUNNING_SUM_KEY_BITS"]

#: log2 of the most keys one query's running sum may cover (each adds at most 2^E).
RUNNING_SUM_KEY_BITS = 20


def _datapath_lanes(g: Geometry) -> int:
    """Lanes of the engine's datapath: ``softmax_lanes``, but no more than there are columns (a
    beat engages at most ``cols``; more lanes than that would never be used)."""
    return min(g.softmax_lanes, g.cols)


def _delay(m: Module, value, cycles: int, name: str):
    """``value`` as it was ``cycles`` cycles ago (a chain of registers)."""
    for i in range(cycles):
        reg = Signal.like(value, name=f"{name}_d{i + 1}")
        m.d.sync += reg.eq(value)
        value = reg
    return value


class OnlineSoftmax(wiring.Component):
    """Executes ROWMAX, EXP, RESCALE and NORMALIZE (see the module docstring).

    Parameters
    ----------
    hw
        The hardware description; every width comes from it.

    Attributes
    ----------
    issue : In(IssueSignature(Unit.VEC))
        Softmax instructions (the vector unit routes COMPRESS elsewhere) and the completion pulse.
    acc_rd, acc_wr : Out(AccRowReadSignature / AccWriteSignature)
        Score and output rows from the accumulator; RESCALE/NORMALIZE results back.
    mask_rd : Out(MaskReadSignature)
        The mask word pair of a beat's row.
    b_wr : Out(WeightBankWriteSignature)
        EXP's P̃ rows into a weight slot.
    active : Out(1)
        An instruction is running (the vector unit gives this block the weight write port).
    """

    def __init__(self, hw: HardwareSpec) -> None:
        self._hw = hw
        self._g = g = Geometry.of(hw)
        self._p = SoftmaxParams.of(hw)
        self._lanes = _datapath_lanes(g)
        super().__init__({
            "issue": In(layouts.IssueSignature(Unit.VEC)),
            "acc_rd": Out(layouts.AccRowReadSignature(g)),
            "acc_wr": Out(layouts.AccWriteSignature(g)),
            "mask_rd": Out(layouts.MaskReadSignature(g)),
            "b_wr": Out(layouts.WeightBankWriteSignature(g)),
            "active": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        g, p = self._g, self._p
        pay = self.issue.instr.payload
        busy, first = Signal(), Signal()
        m.d.comb += [self.issue.instr.ready.eq(~busy), self.active.eq(busy),
                     first.eq(self.issue.instr.valid & ~busy)]

        # The instruction, registered in its start cycle (``cur`` reads it straight from the
        # word in that cycle).
        names = ("op", "slot", "b_slot", "c_slot", "accumulate", "mask", "nm_n", "nm_m", "rows",
                 "cols", "k")
        reg = {n: Signal(len(getattr(pay, n)), name=f"i_{n}") for n in names}
        with m.If(first):
            m.d.sync += [busy.eq(1)] + [reg[n].eq(getattr(pay, n)) for n in names]
        cur = {n: Mux(first, getattr(pay, n), reg[n]) for n in names}
        op = reg["op"]
        is_rowmax, is_exp = op == Op.ROWMAX, op == Op.EXP
        is_rescale, is_norm = op == Op.RESCALE, op == Op.NORMALIZE

        self.st = _State(g, p)
        go, beat = self._sequencer(m, first, cur)
        data = self._read(m, go, beat, cur)
        self.st.build_exp(m, p, data["keep"])
        done_max = self._rowmax(m, first, data, is_rowmax, reg)
        done_exp = self._exp(m, data, is_exp, reg)
        done_scale = self._scale(m, data, is_rescale | is_norm, is_rescale, reg)
        done = done_max | done_exp | done_scale
        m.d.comb += self.issue.done.eq(done)
        with m.If(done):
            m.d.sync += busy.eq(0)
        return m

    # ----------------------------------------------------------------------------------------
    # Beats: which row and chunk is read in each cycle
    # ----------------------------------------------------------------------------------------

    def _sequencer(self, m: Module, first, cur):
        """``go``: a beat reads this cycle; ``beat``: its (row, chunk, last) position."""
        g, p = self._g, self._p
        row = Signal(16)
        chunk = Signal(range(max(2, ceil_div(g.cols, g.softmax_lanes))))
        reading = Signal()
        # NORMALIZE first runs the dividers (R cycles); every other pass reads in cycle 0.
        norm_start = first & (cur["op"] == Op.NORMALIZE)
        go = (first & ~norm_start) | reading
        chunks = ceil_div_const(cur["cols"], g.softmax_lanes, g.cols)
        last_row = row == cur["rows"] - 1
        last = last_row & (chunk == chunks - 1)
        with m.If(go):
            m.d.sync += reading.eq(~last)
            with m.If(last_row):
                m.d.sync += [row.eq(0), chunk.eq(Mux(last, 0, chunk + 1))]
            with m.Else():
                m.d.sync += row.eq(row + 1)

        count, dividing = Signal(range(p.fmt.recip_bits + 1)), Signal()
        step = norm_start | dividing
        with m.If(step):
            m.d.sync += count.eq(count + 1)
            with m.If(count == p.fmt.recip_bits - 1):
                m.d.sync += [dividing.eq(0), reading.eq(1), count.eq(0)]
            with m.Elif(norm_start):
                m.d.sync += dividing.eq(1)
        self._divide(m, norm_start, step)
        return go, {"row": row, "chunk": chunk, "last": last, "last_row": last_row}

    def _divide(self, m: Module, start, step) -> None:
        """Per column, ``⌊2^K / l⌋`` by restoring division, most significant bit first: the
        remainder starts at ``2^(E-1)``, the part of ``2^K`` above the ``R`` quotient bits."""
        p, st = self._p, self.st
        for j in range(self._g.cols):
            rem = Mux(start, 1 << (p.fmt.exp_bits - 1), st.rem[j])
            twice = Signal(len(st.rem[j]) + 1, name=f"twice_{j}")
            m.d.comb += twice.eq(rem << 1)
            fits = twice >= st.sums[j]
            with m.If(step):
                m.d.sync += [
                    st.rem[j].eq(Mux(fits, twice - st.sums[j], twice)),
                    st.recip[j].eq(Cat(fits, st.recip[j][:-1])),
                ]

    # ----------------------------------------------------------------------------------------
    # The read stage and what every pass sees in its data cycle
    # ----------------------------------------------------------------------------------------

    def _mask_word(self, m: Module, abs_row, chunk, cols):
        """(word, bit) of the first mask bit of a beat: row ``r``'s bits start at bit
        ``r · 8⌈cols/8⌉`` of the tile, the chunk's at ``chunk · softmax_lanes`` after that."""
        g = self._g
        width = Signal(range(g.mask_row_bytes_max + 1))
        m.d.comb += width.eq((cols + 7) >> 3)
        row_bits = Signal(range(8 * g.mask_bytes_max + 1))
        for w in range(1, g.mask_row_bytes_max + 1):
            with m.If(width == w):
                m.d.comb += row_bits.eq(times_const(abs_row[: max(1, ceil_log2(g.c_depth))],
                                                    8 * w))
        top = 8 * g.mask_bytes_max + g.cols
        offset = Signal(range(top + 1))
        m.d.comb += offset.eq(row_bits + times_const(chunk, g.softmax_lanes))
        beat_bits = 8 * g.beat_bytes
        word, bit = Signal(len(self.mask_rd.word)), Signal(range(beat_bits))
        if beat_bits & (beat_bits - 1) == 0:
            m.d.comb += [word.eq(offset >> ceil_log2(beat_bits)), bit.eq(offset)]
        else:
            m.d.comb += word.eq(ceil_div_const(offset + 1, beat_bits, top + 1) - 1)
            m.d.comb += bit.eq(offset - times_const(word, beat_bits))
        return word, bit

    def _read(self, m: Module, go, beat, cur) -> dict:
        """Drive the reads of the beat in ``go``'s cycle; return its data-cycle view, per lane
        (lane ``l`` of chunk ``c`` is column ``c·softmax_lanes + l``)."""
        g, p = self._g, self._p
        reads_scores = (cur["op"] == Op.ROWMAX) | (cur["op"] == Op.EXP)
        abs_row = Signal(16)
        m.d.comb += abs_row.eq(beat["row"] + Mux(cur["op"] == Op.EXP, cur["k"], 0))
        word, bit = self._mask_word(m, abs_row, beat["chunk"], cur["cols"])
        m.d.comb += [
            self.acc_rd.en.eq(go),
            self.acc_rd.slot.eq(Mux(reads_scores, cur["c_slot"], cur["slot"])),
            self.acc_rd.row.eq(abs_row),
            self.mask_rd.en.eq(go),
            self.mask_rd.slot.eq(cur["slot"]),
            self.mask_rd.word.eq(word),
        ]
        valid, row, chunk, last, chunk_end, bit_q = Signal(), Signal(16), \
            Signal.like(beat["chunk"]), Signal(), Signal(), Signal.like(bit)
        m.d.sync += [valid.eq(go), row.eq(beat["row"]), chunk.eq(beat["chunk"]),
                     last.eq(go & beat["last"]), chunk_end.eq(go & beat["last_row"]),
                     bit_q.eq(bit)]

        shift = p.fmt.score_shift
        lo, hi = p.fmt.score_range
        window = Signal(2 * 8 * g.beat_bytes)
        m.d.comb += window.eq(self.mask_rd.data >> bit_q)
        active, keep, scores, acc = [], [], [], []
        for lane in range(self._lanes):
            on = Signal(name=f"active_{lane}")
            m.d.comb += on.eq(valid & self._lane_in(chunk, lane, cur["cols"]))
            kept = Signal(name=f"keep_{lane}")
            m.d.comb += kept.eq(on & (~cur["mask"] | window[lane]))
            a = Signal(signed(g.acc_bits), name=f"acc_{lane}")
            m.d.comb += a.eq(self._lane_view(self.acc_rd.data, chunk, lane))
            wide = a >> shift
            x = Signal(signed(p.fmt.score_bits), name=f"score_{lane}")
            m.d.comb += x.eq(Mux(wide > hi, hi, Mux(wide < lo, lo, wide)))
            active.append(on)
            keep.append(kept)
            scores.append(x)
            acc.append(a)
        return {"valid": valid, "row": row, "chunk": chunk, "last": last,
                "chunk_end": chunk_end, "active": active, "keep": keep, "x": scores, "acc": acc}

    # ----------------------------------------------------------------------------------------
    # Lanes and columns
    # ----------------------------------------------------------------------------------------

    def _lane_view(self, per_col, chunk, lane: int):
        """Column ``chunk·softmax_lanes + lane`` of ``per_col`` (a multiplexer over chunks)."""
        lanes, cols = self._lanes, self._g.cols
        options = [per_col[c * lanes + lane] for c in range(ceil_div(cols, lanes))
                   if c * lanes + lane < cols]
        return options[0] if len(options) == 1 else Array(options)[chunk]

    def _lane_in(self, chunk, lane: int, cols):
        """Lane ``lane`` of ``chunk`` is a column of the instruction (``< cols``)."""
        return times_const(chunk, self._lanes) + lane < cols

    def _columns(self, chunk):
        """``(j, lane, selected)`` per column: ``selected`` when ``chunk`` is ``j``'s chunk."""
        lanes = self._lanes
        return [(j, j % lanes, chunk == j // lanes) for j in range(self._g.cols)]

    # ----------------------------------------------------------------------------------------
    # The passes
    # ----------------------------------------------------------------------------------------

    def _rowmax(self, m: Module, first, data, is_rowmax, reg):
        """Beats update each lane's block max (a chunk's first row starts it afresh); the cycle
        after a chunk's last beat its columns take the new max and send ``new − old`` through
        the lanes' exp tables, ``X`` cycles later ``c`` and ``l·c`` are registered, and the
        cycle after that ``l`` is written. The last chunk's tail is the instruction's end."""
        p, st = self._p, self.st
        lo = p.fmt.score_range[0]
        pay = self.issue.instr.payload
        starts = first & (pay.op == Op.ROWMAX)
        with m.If(starts & ~pay.accumulate):
            m.d.sync += [s.eq(0) for s in st.any + st.sums]
        fresh = data["row"] == 0
        for lane in range(self._lanes):
            x, kept = data["x"][lane], data["keep"][lane]
            with m.If(is_rowmax & data["valid"]):
                with m.If(kept & (fresh | ~st.bany[lane] | (x > st.bmax[lane]))):
                    m.d.sync += [st.bmax[lane].eq(x), st.bany[lane].eq(1)]
                with m.Elif(fresh):
                    m.d.sync += [st.bmax[lane].eq(lo), st.bany[lane].eq(0)]

        span = p.exp_latency + 2
        tail, chunk = [data["valid"] & data["chunk_end"] & is_rowmax], [data["chunk"]]
        for t in range(span):  # tail[t]: the chunk in chunk[t] ended t + 1 cycles ago
            tail.append(_delay(m, tail[-1], 1, f"tail{t}"))
            chunk.append(_delay(m, chunk[-1], 1, f"tail_chunk{t}"))
        tail, chunk = tail[1:], chunk[1:]
        done = _delay(m, data["valid"] & data["last"] & is_rowmax, span, "rowmax_done")
        m.d.comb += st.tail_now.eq(tail[0])
        corr_at, write_at = p.exp_latency, span - 1
        news = []  # per lane, in a tail cycle: (new max, "kept a score" after this chunk)
        for lane in range(self._lanes):
            mx, seen = self._lane_view(st.mx, chunk[0], lane), \
                self._lane_view(st.any, chunk[0], lane)
            bmax, bany = st.bmax[lane], st.bany[lane]
            new = Signal(signed(p.fmt.score_bits), name=f"new_max_{lane}")
            m.d.comb += [
                new.eq(Mux(seen, Mux(bany & (bmax > mx), bmax, mx), bmax)),
                st.tail_d[lane].eq((new - mx)[: p.fmt.score_bits + 1]),
                st.tail_keep[lane].eq(seen),  # no correction before the first kept score
            ]
            news.append((new, seen | bany))
            sums = self._lane_view(st.sums, chunk[corr_at], lane)
            with m.If(tail[corr_at]):
                m.d.sync += st.scaled_sum[lane].eq(sums * st.exp[lane])
        for j, lane, _ in self._columns(chunk[0]):
            new, seen_now = news[lane]
            for t, action in ((0, [st.mx[j].eq(new), st.any[j].eq(seen_now)]),
                              (corr_at, [st.corr[j].eq(st.exp[lane])]),
                              (write_at, [st.sums[j].eq(st.scaled_sum[lane]
                                                        >> p.fmt.exp_bits)])):
                here = (chunk[t] == j // self._lanes) & (j < reg["cols"])
                with m.If(tail[t] & here):
                    m.d.sync += action
        return done

    def _exp(self, m: Module, data, is_exp, reg):
        g, p, st, x_lat = self._g, self._p, self.st, self._p.exp_latency
        lanes = self._lanes
        for lane in range(lanes):
            x, mx = data["x"][lane], self._lane_view(st.mx, data["chunk"], lane)
            m.d.comb += st.exp_d[lane].eq(Mux(x > mx, 0, mx - x)[: p.fmt.score_bits + 1])
        # The exponential leaves the table X cycles after the data cycle: file it then.
        valid = _delay(m, data["valid"] & is_exp, x_lat, "exp_valid")
        row = _delay(m, data["row"], x_lat, "exp_row")
        chunk = _delay(m, data["chunk"], x_lat, "exp_chunk")
        last = _delay(m, data["last"], x_lat, "exp_last")
        sparse = reg["nm_n"] != 0
        group_n = Mux(sparse, reg["nm_n"], 1)
        group_m = Mux(sparse, reg["nm_m"], 1)
        pos = Signal(range(max(2, g.m_max)))
        m.d.comb += pos.eq(row & (group_m - 1))
        closes = (pos == group_m - 1) | (row == reg["rows"] - 1)
        cols = reg["cols"]
        for lane in range(lanes):
            # A group never spans two chunks (a chunk's last row closes it), so one set of
            # group registers per lane serves all the columns it takes in turn.
            filing = valid & _delay(m, data["active"][lane], x_lat, f"exp_on{lane}")
            x_e = _delay(m, data["x"][lane], x_lat, f"exp_x{lane}")
            keep_e = _delay(m, data["keep"][lane], x_lat, f"exp_keep{lane}")
            for q in range(g.m_max):
                with m.If(filing & (pos == q)):
                    m.d.sync += [st.gx[lane][q].eq(x_e), st.gkeep[lane][q].eq(keep_e),
                                 st.ge[lane][q].eq(st.exp[lane])]
                with m.Elif(filing & (pos == 0)):
                    # A new group: rows not filed yet are masked rows (0), the padding of a
                    # group the instruction cuts short.
                    m.d.sync += [st.gkeep[lane][q].eq(0), st.ge[lane][q].eq(0)]

        # The cycle after: a closing group keeps its top N, writes them and adds them up.
        w_valid, w_closes, w_last, w_chunk, w_end = Signal(), Signal(), Signal(), \
            Signal.like(chunk), Signal()
        m.d.sync += [w_valid.eq(valid), w_closes.eq(closes), w_last.eq(valid & last),
                     w_chunk.eq(chunk), w_end.eq(row == reg["rows"] - 1)]
        base = Signal(16)  # first compressed row of the closing group
        closing = w_valid & w_closes
        with m.If(closing):
            m.d.sync += base.eq(Mux(w_end, 0, base + group_n))
        banks, lg = g.b_banks, ceil_log2(g.b_banks)
        first_bank = base[:lg] if lg else Const(0, 1)
        inside = [Const(1) if q == 0 else (q < group_m) for q in range(g.m_max)]
        m.d.comb += self.b_wr.slot.eq(reg["b_slot"])
        slots = []  # per bank: which of the N picks it takes
        for b in range(banks):
            t = Signal(range(banks), name=f"wt_{b}")
            m.d.comb += t.eq(b - first_bank)
            slots.append(t)
        on, total, value, index = [], [], [], []
        for lane in range(lanes):
            lane_on = Signal(name=f"closing_{lane}")
            m.d.comb += lane_on.eq(closing & self._lane_in(w_chunk, lane, cols))
            gx, gk = st.gx[lane], st.gkeep[lane]

            def ranks_above(a, b, gx=gx, gk=gk):
                # Masked entries rank below every kept score; ties go to the lower row.
                return Mux(gk[a] & gk[b], gx[a] >= gx[b], gk[a] | ~gk[b])

            chosen = select_top_n(m, g.m_max, g.n_max, ranks_above, inside, group_n,
                                  f"top{lane}")
            picked_e, picked_p, picked_pos = [], [], []
            for t in range(g.n_max):
                e_t = Signal(p.fmt.exp_bits + 1, name=f"pick_e{lane}_{t}")
                pos_t = Signal(range(max(2, g.m_max)), name=f"pick_pos{lane}_{t}")
                for q in range(g.m_max):
                    with m.If(chosen[t][q]):
                        m.d.comb += [e_t.eq(st.ge[lane][q]), pos_t.eq(q)]
                p_t = Signal(p.fmt.prob_bits, name=f"pick_p{lane}_{t}")
                m.d.comb += p_t.eq(self._probability(e_t))
                picked_e.append(e_t)
                picked_p.append(p_t)
                picked_pos.append(pos_t)
            new_sum = Signal.like(st.sums[0], name=f"exp_sum_{lane}")
            m.d.comb += new_sum.eq(self._lane_view(st.sums, w_chunk, lane) + sum(picked_e))
            on.append(lane_on)
            total.append(new_sum)
            value.append([Array(picked_p)[t] if g.n_max > 1 else picked_p[0] for t in slots])
            index.append([Array(picked_pos)[t] if g.n_max > 1 else picked_pos[0]
                          for t in slots])
        for j, lane, selected in self._columns(w_chunk):
            with m.If(on[lane] & selected):
                m.d.sync += st.sums[j].eq(total[lane])
            for b in range(banks):
                entry = self.b_wr.data[b][j]
                m.d.comb += [
                    self.b_wr.mask[b][j].eq(on[lane] & selected & (slots[b] < group_n)),
                    entry.value.eq(value[lane][b]),
                    entry.index.eq(index[lane][b]),
                ]
        for b in range(banks):
            # (first_bank > b is constant for the last bank: leave it out.)
            wraps = (first_bank > b) if lg and b < banks - 1 else 0
            m.d.comb += self.b_wr.addr[b].eq((base >> lg) + wraps)
        return w_valid & w_last

    def _probability(self, e):
        """P̃ = min(round(e / 2^(E−P)), 2^P − 1): the operand the PV product streams."""
        p = self._p
        p_frac = p.fmt.prob_bits
        drop = p.fmt.exp_bits - p_frac
        rounded = (e + (1 << (drop - 1))) >> drop if drop > 0 else e << -drop
        top = (1 << p_frac) - 1
        return Mux(rounded > top, top, rounded)

    def _scale(self, m: Module, data, is_scale, is_rescale, reg):
        """RESCALE and NORMALIZE: the data cycle registers the product, the next the rounded
        result (``SOFTMAX_MUL_CYCLES``), the one after writes it back; one multiplier per
        lane, its factor the column's."""
        g, p, st = self._g, self._p, self.st
        valid = _delay(m, data["valid"] & is_scale, 2, "scale_valid")
        row = _delay(m, data["row"], 2, "scale_row")
        last = _delay(m, data["last"], 2, "scale_last")
        chunk = _delay(m, data["chunk"], 2, "scale_chunk")
        m.d.comb += self.acc_wr.slot.eq(reg["slot"])
        results, on = [], []
        for lane in range(self._lanes):
            def view(per_col, lane=lane):
                return self._lane_view(per_col, data["chunk"], lane)

            factor = Mux(is_rescale, view(st.corr), Mux(view(st.sums) == 0, 0, view(st.recip)))
            product = Signal(signed(g.acc_bits + max(p.fmt.exp_bits + 1, p.fmt.recip_bits) + 1),
                             name=f"scaled_{lane}")
            result = Signal(signed(g.acc_bits), name=f"scale_out_{lane}")
            m.d.sync += [
                product.eq(data["acc"][lane] * factor),
                result.eq(Mux(is_rescale, product >> p.fmt.exp_bits,
                              product >> (p.fmt.k - p.fmt.exp_bits))),
            ]
            results.append(result)
            on.append(_delay(m, data["active"][lane], 2, f"scale_on{lane}"))
        for j, lane, selected in self._columns(chunk):
            m.d.comb += [
                self.acc_wr.en[j].eq(valid & on[lane] & selected),
                self.acc_wr.addr[j].eq(row),
                self.acc_wr.data[j].eq(results[lane]),
            ]
        return valid & last


class _State:
    """The registers: per column the softmax state that persists across chunks and
    instructions (running max, "kept a score", running sum, correction, divider remainder and
    reciprocal); per lane what one chunk uses at a time (block max, the EXP group registers,
    the exp table shared by ROWMAX's correction ``tail_d`` and EXP's scores ``exp_d``, the
    ``l·c`` product)."""

    def __init__(self, g: Geometry, p: SoftmaxParams) -> None:
        cols, lanes, sb = g.cols, _datapath_lanes(g), p.fmt.score_bits
        sum_bits = p.fmt.exp_bits + 1 + RUNNING_SUM_KEY_BITS

        def per(count, shape, name):
            return [Signal(shape, name=f"{name}_{i}") for i in range(count)]

        self.mx, self.any = per(cols, signed(sb), "mx"), per(cols, 1, "any")
        self.sums = per(cols, sum_bits, "sum")
        self.corr = per(cols, p.fmt.exp_bits + 1, "corr")
        self.rem = per(cols, sum_bits + 1, "rem")
        self.recip = per(cols, p.fmt.recip_bits, "recip")
        self.bmax, self.bany = per(lanes, signed(sb), "bmax"), per(lanes, 1, "bany")
        self.scaled_sum = per(lanes, sum_bits + p.fmt.exp_bits + 1, "scaled_sum")
        self.gx = [[Signal(signed(sb), name=f"gx_{i}_{q}") for q in range(g.m_max)]
                   for i in range(lanes)]
        self.gkeep = [[Signal(name=f"gkeep_{i}_{q}") for q in range(g.m_max)]
                      for i in range(lanes)]
        self.ge = [[Signal(p.fmt.exp_bits + 1, name=f"ge_{i}_{q}") for q in range(g.m_max)]
                   for i in range(lanes)]
        self.tail_now = Signal()  # a ROWMAX tail: a chunk's new maxima go into the exp tables
        self.tail_d, self.exp_d = per(lanes, sb + 1, "tail_d"), per(lanes, sb + 1, "exp_d")
        self.tail_keep = per(lanes, 1, "tail_keep")
        self.exp: list = []  # per lane, the exp table's output (built by ``build_exp``)

    def build_exp(self, m: Module, p: SoftmaxParams, keep) -> None:
        """One exp table per lane: ROWMAX's tail feeds it ``new − old`` (no EXP beat is in
        flight during ROWMAX), EXP its scores' ``mx − x`` (0 where not ``keep``)."""
        for lane in range(len(self.bmax)):
            d = Mux(self.tail_now, self.tail_d[lane], self.exp_d[lane])
            kept = Mux(self.tail_now, self.tail_keep[lane], keep[lane])
            self.exp.append(exp2_neg(m, p, d, kept, Const(1), f"exp{lane}"))
