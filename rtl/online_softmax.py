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
⌈cols / softmax_lanes⌉`` beats (``dataflows.cost.softmax_beats``). Each column has its own exp
table and state; a beat engages only its chunk's columns, which is the throughput the cost model
charges. With instruction start ``s`` = cycle 0, beat ``i`` reads its row (and the mask word
pair) in cycle ``i`` and has its data in cycle ``i + 1``; ``X`` = ``exp_latency_cycles``:

* **ROWMAX** (``1 + B + X + 2``): beats update each column's block max; in cycle ``B + 1`` the
  new max goes in and ``new − old`` enters the exp tables; the correction comes out ``X`` cycles
  later with ``l · c`` registered; the next cycle writes ``l``.
* **EXP** (``1 + B + X + 1``): each score enters the exp table in its data cycle; ``X`` cycles
  later its exponential (with score and keep bit) is filed into the column's group registers;
  in the next cycle a group that closes (``M`` rows, one row when dense, or the instruction's
  last row: a cut group is padded with masked rows) keeps its top ``N`` by score (masked
  below every kept score, ties to the lower row), writes them as compressed weight rows
  ``P̃ = min(round(e / 2^(E−P)), 2^P − 1)`` with their indices, and adds them to ``l``.
* **RESCALE** (``1 + B + 2``): the data cycle registers the product with ``c``, the next the
  result ``⌊acc · c / 2^E⌋``, and the one after writes it back.
* **NORMALIZE** (``R + 1 + B + 2``): cycles ``0 .. R − 1`` run a restoring divider per column,
  ``R = ⌊2^K / l⌋`` one bit per cycle (0 for ``l = 0``), then a RESCALE-like pass with
  ``⌊acc · R / 2^(K−E)⌋``. The divider needs ``l ≥ 2^E`` (true whenever a column kept a score:
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
        tail_now = Signal()  # ROWMAX's cycle B + 1: the new maxima go into the exp tables
        self.st.build_exp(m, p, tail_now, data["keep"])
        done_max = self._rowmax(m, first, data, is_rowmax, tail_now)
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
        return go, {"row": row, "chunk": chunk, "last": last}

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
        """Drive the reads of the beat in ``go``'s cycle; return its data-cycle view."""
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
        valid, row, chunk, last, bit_q = Signal(), Signal(16), Signal.like(beat["chunk"]), \
            Signal(), Signal.like(bit)
        m.d.sync += [valid.eq(go), row.eq(beat["row"]), chunk.eq(beat["chunk"]),
                     last.eq(go & beat["last"]), bit_q.eq(bit)]

        shift = p.fmt.score_shift
        lo, hi = p.fmt.score_range
        window = Signal(2 * 8 * g.beat_bytes)
        m.d.comb += window.eq(self.mask_rd.data >> bit_q)
        active, keep, scores = [], [], []
        for j in range(g.cols):
            on = Signal(name=f"active_{j}")
            m.d.comb += on.eq(valid & (chunk == j // g.softmax_lanes) & (j < cur["cols"]))
            kept = Signal(name=f"keep_{j}")
            m.d.comb += kept.eq(on & (~cur["mask"] | window[j % g.softmax_lanes]))
            wide = self.acc_rd.data[j] >> shift
            x = Signal(signed(p.fmt.score_bits), name=f"score_{j}")
            m.d.comb += x.eq(Mux(wide > hi, hi, Mux(wide < lo, lo, wide)))
            active.append(on)
            keep.append(kept)
            scores.append(x)
        return {"valid": valid, "row": row, "chunk": chunk, "last": last, "active": active,
                "keep": keep, "x": scores, "acc": self.acc_rd.data}

    # ----------------------------------------------------------------------------------------
    # The passes
    # ----------------------------------------------------------------------------------------

    def _rowmax(self, m: Module, first, data, is_rowmax, tail_now):
        g, p, st = self._g, self._p, self.st
        lo = p.fmt.score_range[0]
        pay = self.issue.instr.payload
        starts = first & (pay.op == Op.ROWMAX)
        tail = [Signal(name=f"tail_{t}") for t in range(p.exp_latency + 2)]
        m.d.sync += tail[0].eq(data["valid"] & data["last"] & is_rowmax)
        m.d.sync += [tail[t].eq(tail[t - 1]) for t in range(1, len(tail))]
        m.d.comb += tail_now.eq(tail[0])
        corr_at = tail[p.exp_latency]
        for j in range(g.cols):
            with m.If(starts):
                m.d.sync += [st.bmax[j].eq(lo), st.bany[j].eq(0)]
                with m.If(~pay.accumulate):
                    m.d.sync += [st.any[j].eq(0), st.sums[j].eq(0)]
            x = data["x"][j]
            with m.If(is_rowmax & data["keep"][j] & (~st.bany[j] | (x > st.bmax[j]))):
                m.d.sync += [st.bmax[j].eq(x), st.bany[j].eq(1)]
            new = Mux(st.any[j], Mux(st.bany[j] & (st.bmax[j] > st.mx[j]), st.bmax[j], st.mx[j]),
                      st.bmax[j])
            m.d.comb += st.tail_d[j].eq((new - st.mx[j])[: p.fmt.score_bits + 1])
            with m.If(tail[0]):
                m.d.sync += [st.mx[j].eq(new), st.any[j].eq(st.any[j] | st.bany[j]),
                             st.any_old[j].eq(st.any[j])]
            corr = Mux(st.any_old[j], st.exp[j], 0)
            with m.If(corr_at):
                m.d.sync += [st.corr[j].eq(corr), st.scaled_sum[j].eq(st.sums[j] * corr)]
            with m.If(tail[-1]):
                m.d.sync += st.sums[j].eq(st.scaled_sum[j] >> p.fmt.exp_bits)
        return tail[-1]

    def _exp(self, m: Module, data, is_exp, reg):
        g, p, st, x_lat = self._g, self._p, self.st, self._p.exp_latency
        for j in range(g.cols):
            x = data["x"][j]
            m.d.comb += st.exp_d[j].eq(Mux(x > st.mx[j], 0, st.mx[j] - x)[: p.fmt.score_bits + 1])
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
        for j in range(g.cols):
            filing = valid & (chunk == j // g.softmax_lanes) & (j < cols)
            x_e = _delay(m, data["x"][j], x_lat, f"exp_x{j}")
            keep_e = _delay(m, data["keep"][j], x_lat, f"exp_keep{j}")
            for q in range(g.m_max):
                with m.If(filing & (pos == q)):
                    m.d.sync += [st.gx[j][q].eq(x_e), st.gkeep[j][q].eq(keep_e),
                                 st.ge[j][q].eq(st.exp[j])]
                with m.Elif(filing & (pos == 0)):
                    # A new group: rows not filed yet are masked rows (0), the padding of a
                    # group the instruction cuts short.
                    m.d.sync += [st.gkeep[j][q].eq(0), st.ge[j][q].eq(0)]

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
        for j in range(g.cols):
            on = closing & (w_chunk == j // g.softmax_lanes) & (j < cols)
            gx, gk = st.gx[j], st.gkeep[j]

            def ranks_above(a, b, gx=gx, gk=gk):
                # Masked entries rank below every kept score; ties go to the lower row.
                return Mux(gk[a] & gk[b], gx[a] >= gx[b], gk[a] | ~gk[b])

            chosen = select_top_n(m, g.m_max, g.n_max, ranks_above, inside, group_n, f"top{j}")
            picked_e, picked_pos = [], []
            for t in range(g.n_max):
                e_t = Signal(p.fmt.exp_bits + 1, name=f"pick_e{j}_{t}")
                pos_t = Signal(range(max(2, g.m_max)), name=f"pick_pos{j}_{t}")
                for q in range(g.m_max):
                    with m.If(chosen[t][q]):
                        m.d.comb += [e_t.eq(st.ge[j][q]), pos_t.eq(q)]
                picked_e.append(e_t)
                picked_pos.append(pos_t)
            with m.If(on):
                m.d.sync += st.sums[j].eq(st.sums[j] + sum(picked_e))
            for b in range(banks):
                t = Signal(range(banks), name=f"wt{j}_{b}")
                m.d.comb += t.eq(b - first_bank)
                entry = self.b_wr.data[b][j]
                m.d.comb += [
                    self.b_wr.mask[b][j].eq(on & (t < group_n)),
                    entry.value.eq(self._probability(Array(picked_e)[t] if g.n_max > 1
                                                     else picked_e[0])),
                    entry.index.eq(Array(picked_pos)[t] if g.n_max > 1 else picked_pos[0]),
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
        result (``SOFTMAX_MUL_CYCLES``), the one after writes it back."""
        g, p, st = self._g, self._p, self.st
        valid = _delay(m, data["valid"] & is_scale, 2, "scale_valid")
        row = _delay(m, data["row"], 2, "scale_row")
        last = _delay(m, data["last"], 2, "scale_last")
        m.d.comb += self.acc_wr.slot.eq(reg["slot"])
        for j in range(g.cols):
            factor = Mux(is_rescale, st.corr[j], Mux(st.sums[j] == 0, 0, st.recip[j]))
            product = Signal(signed(g.acc_bits + max(p.fmt.exp_bits + 1, p.fmt.recip_bits) + 1),
                             name=f"scaled_{j}")
            result = Signal(signed(g.acc_bits), name=f"scale_out_{j}")
            m.d.sync += [
                product.eq(data["acc"][j] * factor),
                result.eq(Mux(is_rescale, product >> p.fmt.exp_bits,
                              product >> (p.fmt.k - p.fmt.exp_bits))),
            ]
            on = _delay(m, data["active"][j], 2, f"scale_on{j}")
            m.d.comb += [
                self.acc_wr.en[j].eq(valid & on),
                self.acc_wr.addr[j].eq(row),
                self.acc_wr.data[j].eq(result),
            ]
        return valid & last


class _State:
    """Per column registers: the softmax state, the block max, the divider, the EXP groups and
    the exp table shared by ROWMAX's correction (``tail_d``) and EXP's scores (``exp_d``)."""

    def __init__(self, g: Geometry, p: SoftmaxParams) -> None:
        cols, sb = g.cols, p.fmt.score_bits
        sum_bits = p.fmt.exp_bits + 1 + RUNNING_SUM_KEY_BITS

        def per_col(shape, name):
            return [Signal(shape, name=f"{name}_{j}") for j in range(cols)]

        self.mx, self.bmax = per_col(signed(sb), "mx"), per_col(signed(sb), "bmax")
        self.any, self.bany, self.any_old = per_col(1, "any"), per_col(1, "bany"), \
            per_col(1, "any_old")
        self.sums = per_col(sum_bits, "sum")
        self.scaled_sum = per_col(sum_bits + p.fmt.exp_bits + 1, "scaled_sum")
        self.corr = per_col(p.fmt.exp_bits + 1, "corr")
        self.rem = per_col(sum_bits + 1, "rem")
        self.recip = per_col(p.fmt.recip_bits, "recip")
        self.gx = [[Signal(signed(sb), name=f"gx_{j}_{q}") for q in range(g.m_max)]
                   for j in range(cols)]
        self.gkeep = [[Signal(name=f"gkeep_{j}_{q}") for q in range(g.m_max)] for j in range(cols)]
        self.ge = [[Signal(p.fmt.exp_bits + 1, name=f"ge_{j}_{q}") for q in range(g.m_max)]
                   for j in range(cols)]
        self.tail_d, self.exp_d = per_col(sb + 1, "tail_d"), per_col(sb + 1, "exp_d")
        self.exp: list = []  # per column, the exp table's output (built by ``build_exp``)

    def build_exp(self, m: Module, p: SoftmaxParams, tail_now, keep) -> None:
        """One exp table per column: ROWMAX's tail feeds it ``new − old`` in ``tail_now`` (no
        EXP beat is in flight then), EXP its scores' ``mx − x`` (0 where not ``keep``)."""
        for j in range(len(self.mx)):
            d = Mux(tail_now, self.tail_d[j], self.exp_d[j])
            self.exp.append(exp2_neg(m, p, d, tail_now | keep[j], Const(1), f"exp{j}"))
