"""The vector unit's fixed-point softmax: row max, exp by table, row sum, normalization.

``lanes`` independent lanes, one query column each, process a score tile that streams in one
key row per beat. The tile arrives **three times**, as the ISA's vector passes read it from the
accumulator SRAM (docs/attention.md): pass 1 finds each lane's maximum, pass 2 sums the
exponentials ``2^(x - max)``, then a per-lane restoring divider forms the reciprocal of the sum,
and pass 3 recomputes each exponential and scales it by the reciprocal into a probability. The
arithmetic is exactly ``verification.golden_softmax``, the widths those of
:class:`~dataflows.softmax_format.SoftmaxFormat` (base 2; ``log2(e)/√d`` is folded into Q):

* ``e = T[f] >> q`` for ``d = max - x = q·2^F + f``, with the ROM ``T[f] = round(2^E·2^(-f/2^F))``;
* ``R = ⌊2^K / Σe⌋``, ``K = E + P + G``, one quotient bit per cycle;
* ``p = min((e·R + 2^(K-P-1)) >> (K-P), 2^P - 1)``.

Timing (``dataflows.cost.softmax_cycles``; ``n`` beats, ``X = exp_latency_cycles``): pass 1
accepts a beat per cycle (``n``); pass 2 accepts a beat per cycle and its sum is final ``X``
cycles after its last beat (``n + X``); the divider takes ``P + G + 1`` cycles; pass 3 accepts a
beat per cycle and each probability leaves ``X + 2`` cycles after its score entered
(``n + X + 2``). Output backpressure stalls pass 3 (timing then differs; values do not).

Ports (every parameter from :class:`~workloads.spec.HardwareSpec`):

``i_stream`` (in)
    ``score``: ``lanes`` × signed ``score_bits``; ``keep``: one bit per lane (0 masks the score
    out); ``last``: the final beat of a pass.
``o_stream`` (out)
    ``prob``: ``lanes`` × unsigned ``data_bits - 1`` (fraction bits); ``last``: the final beat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from dataflows.softmax_format import SoftmaxFormat
from workloads.spec import HardwareSpec

__all__ = ["Softmax", "SoftmaxParams", "exp2_neg"]


@dataclass(frozen=True)
class SoftmaxParams:
    """The softmax unit's sizes: the shared number format plus what only the RTL needs.

    Attributes
    ----------
    fmt
        The number format (:class:`~dataflows.softmax_format.SoftmaxFormat`): ``L``, the score
        width, ``F``, ``E``, ``P``, ``G``, ``K``, the reciprocal width and the exp table.
    max_rows
        The longest tile: an accumulator slot's rows (a score tile lives in one).
    sum_bits
        Width of a lane's sum: ``E + 1 + ⌈log2 max_rows⌉``.
    exp_latency
        ``exp_latency_cycles``: pipeline depth from a score to its exponential.
    """

    fmt: SoftmaxFormat
    max_rows: int
    sum_bits: int
    exp_latency: int

    @classmethod
    def of(cls, hw: HardwareSpec) -> SoftmaxParams:
        fmt = SoftmaxFormat.of(hw)
        max_rows = max(1, hw.buffers.accumulator_bytes // 2 // (hw.array.cols * hw.acc_bytes))
        return cls(fmt, max_rows, fmt.exp_bits + 1 + max(1, math.ceil(math.log2(max_rows))),
                   hw.vector_unit.exp_latency_cycles)

    def in_layout(self) -> data.StructLayout:
        return data.StructLayout(
            {
                "score": data.ArrayLayout(signed(self.fmt.score_bits), self.fmt.lanes),
                "keep": unsigned(self.fmt.lanes),
                "last": unsigned(1),
            }
        )

    def out_layout(self) -> data.StructLayout:
        return data.StructLayout(
            {
                "prob": data.ArrayLayout(unsigned(self.fmt.prob_bits), self.fmt.lanes),
                "last": unsigned(1),
            }
        )


def exp2_neg(m: Module, p: SoftmaxParams, d, keep, enable, name: str) -> Signal:
    """``2^(-d / 2^F)`` with ``E`` fraction bits (``T[d mod 2^F] >> (d >> F)``), or 0 where
    ``keep`` is low, for an unsigned ``d`` presented in some cycle: the result is valid
    ``exp_latency`` cycles later. Stage 0 reads the table ROM (and registers the shift), stage
    1 shifts, further stages only register. ``enable`` low freezes every stage."""
    table = list(p.fmt.exp_table)
    rom = Memory(shape=unsigned(p.fmt.exp_bits + 1), depth=len(table), init=table)
    m.submodules[f"{name}_rom"] = rom
    port = rom.read_port()
    m.d.comb += [port.addr.eq(d[: p.fmt.frac_bits]), port.en.eq(enable)]
    q = Signal(len(d) - p.fmt.frac_bits, name=f"{name}_q")
    keep1 = Signal(name=f"{name}_keep1")
    with m.If(enable):
        m.d.sync += [q.eq(d[p.fmt.frac_bits :]), keep1.eq(keep)]
    stage = Signal(p.fmt.exp_bits + 1, name=f"{name}_1")
    m.d.comb += stage.eq(Mux(keep1, port.data >> q, 0))
    for depth in range(2, p.exp_latency + 1):
        nxt = Signal(p.fmt.exp_bits + 1, name=f"{name}_{depth}")
        with m.If(enable):
            m.d.sync += nxt.eq(stage)
        stage = nxt
    return stage


class Softmax(wiring.Component):
    """Fixed-point softmax over score tiles, ``lanes`` query columns in parallel.

    Parameters
    ----------
    hw
        The hardware description; every width and depth comes from it.

    Attributes
    ----------
    i_stream : In(stream in_layout)
        Score beats; the whole tile three times (max, sum, normalize), each pass ending with
        ``last``.
    o_stream : Out(stream out_layout)
        Probability beats of pass 3, in input order.
    busy : Out(1)
        High from the first accepted beat until the last probability has left.
    """

    def __init__(self, hw: HardwareSpec) -> None:
        self.params = p = SoftmaxParams.of(hw)
        super().__init__(
            {
                "i_stream": In(stream.Signature(p.in_layout())),
                "o_stream": Out(stream.Signature(p.out_layout())),
                "busy": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        p = self.params
        lanes, x_lat = p.fmt.lanes, p.exp_latency
        beat = self.i_stream.payload
        accept = Signal()
        m.d.comb += accept.eq(self.i_stream.valid & self.i_stream.ready)

        # Per-lane state: running max, "some score kept", sum, divider remainder, reciprocal.
        maxes = [Signal(signed(p.fmt.score_bits), name=f"max{i}") for i in range(lanes)]
        kept = [Signal(name=f"kept{i}") for i in range(lanes)]
        sums = [Signal(p.sum_bits, name=f"sum{i}") for i in range(lanes)]
        rems = [Signal(p.sum_bits + 1, name=f"rem{i}") for i in range(lanes)]
        recips = [Signal(p.fmt.recip_bits, name=f"recip{i}") for i in range(lanes)]
        count = Signal(range(p.fmt.recip_bits + 1))
        fed = Signal()  # this pass has taken its last beat (wait for the pipeline to drain)

        # Output backpressure freezes the whole pass-3 pipeline.
        stall = Signal()
        m.d.comb += stall.eq(self.o_stream.valid & ~self.o_stream.ready)

        # ---- exp pipeline (passes 2 and 3): stage 0 reads the ROM, stage 1 shifts ----------
        feeding = Signal()  # the current pass sends its beats down the exp pipeline
        pipe_valid = [Signal(name=f"pv{s}") for s in range(x_lat + 1)]
        pipe_last = [Signal(name=f"pl{s}") for s in range(x_lat + 1)]
        m.d.comb += [pipe_valid[0].eq(accept & feeding), pipe_last[0].eq(beat.last)]
        exps = [  # per lane: the exponential at the end of the pipeline (stage x_lat)
            exp2_neg(m, p, (maxes[i] - beat.score[i])[: p.fmt.score_bits + 1], beat.keep[i], ~stall,
                     f"exp{i}")
            for i in range(lanes)
        ]
        with m.If(~stall):
            for s in range(1, x_lat + 1):
                m.d.sync += [pipe_valid[s].eq(pipe_valid[s - 1]), pipe_last[s].eq(pipe_last[s - 1])]
        done_valid, done_last = pipe_valid[x_lat], pipe_last[x_lat]

        # ---- pass 3 tail: product, then rounding and saturation ---------------------------
        shift = p.fmt.k - p.fmt.prob_bits
        top = (1 << p.fmt.prob_bits) - 1
        prod_valid, prod_last = Signal(), Signal()
        products = [Signal(p.fmt.exp_bits + 1 + p.fmt.recip_bits, name=f"prod{i}")
                    for i in range(lanes)]
        out_valid, out_last = Signal(), Signal()
        probs = [Signal(p.fmt.prob_bits, name=f"prob{i}") for i in range(lanes)]

        with m.FSM(init="MAX"):
            with m.State("MAX"):
                m.d.comb += self.i_stream.ready.eq(1)
                with m.If(accept):
                    m.d.sync += self.busy.eq(1)
                    for i in range(lanes):
                        with m.If(beat.keep[i] & (~kept[i] | (beat.score[i] > maxes[i]))):
                            m.d.sync += [maxes[i].eq(beat.score[i]), kept[i].eq(1)]
                    with m.If(beat.last):
                        m.d.sync += [fed.eq(0)] + [s.eq(0) for s in sums]
                        m.next = "SUM"
            with m.State("SUM"):
                m.d.comb += [self.i_stream.ready.eq(~fed), feeding.eq(1)]
                with m.If(accept & beat.last):
                    m.d.sync += fed.eq(1)
                with m.If(done_valid):
                    m.d.sync += [s.eq(s + e) for s, e in zip(sums, exps)]
                    with m.If(done_last):
                        # Restoring division of 2^K by the sum: the remainder starts at
                        # 2^(E-1), the part of 2^K above the quotient bits (sum >= 2^E).
                        m.d.sync += [count.eq(0)] + [r.eq(1 << (p.fmt.exp_bits - 1)) for r in rems]
                        m.next = "DIVIDE"
            with m.State("DIVIDE"):
                for i in range(lanes):
                    twice = Signal(p.sum_bits + 2, name=f"twice{i}")
                    m.d.comb += twice.eq(rems[i] << 1)
                    fits = twice >= sums[i]
                    m.d.sync += [
                        rems[i].eq(Mux(fits, twice - sums[i], twice)),
                        # One quotient bit per cycle, most significant first.
                        recips[i].eq(Cat(fits, recips[i][:-1])),
                    ]
                m.d.sync += count.eq(count + 1)
                with m.If(count == p.fmt.recip_bits - 1):
                    m.d.sync += fed.eq(0)
                    m.next = "SCALE"
            with m.State("SCALE"):
                m.d.comb += [self.i_stream.ready.eq(~fed & ~stall), feeding.eq(1)]
                with m.If(accept & beat.last):
                    m.d.sync += fed.eq(1)
                with m.If(~stall):
                    m.d.sync += [prod_valid.eq(done_valid), prod_last.eq(done_last)]
                    m.d.sync += [pr.eq(e * r) for pr, e, r in zip(products, exps, recips)]
                    m.d.sync += [out_valid.eq(prod_valid), out_last.eq(prod_last)]
                    for i in range(lanes):
                        rounded = (products[i] + (1 << (shift - 1))) >> shift
                        m.d.sync += probs[i].eq(Mux(rounded > top, top, rounded))
                with m.If(self.o_stream.valid & self.o_stream.ready & self.o_stream.payload.last):
                    m.d.sync += [fed.eq(0), self.busy.eq(0), out_valid.eq(0), prod_valid.eq(0)]
                    m.d.sync += [k.eq(0) for k in kept]
                    m.next = "MAX"

        m.d.comb += [
            self.o_stream.valid.eq(out_valid),
            self.o_stream.payload.last.eq(out_last),
        ]
        m.d.comb += [self.o_stream.payload.prob[i].eq(probs[i]) for i in range(lanes)]
        return m
