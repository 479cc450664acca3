"""The softmax unit in amaranth.sim: bit-exact with the golden model, cycles as the cost formula.

Fast logic-level checks; the Verilator run through cocotb is verification/softmax/.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("amaranth")

from amaranth.sim import Simulator  # noqa: E402

from dataflows.cost import softmax_cycles  # noqa: E402
from dataflows.softmax_format import SoftmaxFormat  # noqa: E402
from rtl.softmax import Softmax, SoftmaxParams  # noqa: E402
from verification.golden_softmax import softmax_fixed  # noqa: E402
from workloads.load import load_hardware  # noqa: E402

TINY = load_hardware("tiny")  # 2 lanes, 8-bit data (P = 7), 16-bit scores with F = 8, E = 16


def variant(data_bits: int = 8, **vector_unit):
    vu = TINY.vector_unit.model_copy(update=vector_unit)
    return TINY.model_copy(update={"vector_unit": vu, "data_bits": data_bits})


# 16-bit data: 15-bit probabilities resolve single-LSB differences of the 16-bit exponentials.
WIDE = variant(data_bits=16, softmax_lanes=4)


def run_tile(hw, x: np.ndarray, keep: np.ndarray, stall_every: int = 0):
    """Drive the three passes of one tile; return (probabilities [rows, lanes], cycles).

    ``cycles`` counts from the cycle the first score is accepted to the cycle the last
    probability leaves, inclusive. ``stall_every`` > 0 drops the output's ready every that many
    cycles (backpressure).
    """
    dut = Softmax(hw)
    rows, lanes = x.shape
    beats = [(x[r], keep[r], r == rows - 1) for _ in range(3) for r in range(rows)]
    out: list[list[int]] = []
    result = {}

    async def bench(ctx):
        cycle, first, sent = 0, None, 0
        while len(out) < rows:
            assert cycle < 100 * rows + 500, "the unit hangs"
            if sent < len(beats):
                score, mask, last = beats[sent]
                ctx.set(dut.i_stream.valid, 1)
                for i in range(lanes):
                    ctx.set(dut.i_stream.payload.score[i], int(score[i]))
                ctx.set(
                    dut.i_stream.payload.keep, int(sum(int(k) << i for i, k in enumerate(mask)))
                )
                ctx.set(dut.i_stream.payload.last, int(last))
            else:
                ctx.set(dut.i_stream.valid, 0)
            ready_out = 0 if stall_every and cycle % stall_every == stall_every - 1 else 1
            ctx.set(dut.o_stream.ready, ready_out)
            if sent < len(beats) and ctx.get(dut.i_stream.ready):
                first = cycle if first is None else first
                sent += 1
            if ctx.get(dut.o_stream.valid) and ready_out:
                out.append([ctx.get(dut.o_stream.payload.prob[i]) for i in range(lanes)])
                assert ctx.get(dut.o_stream.payload.last) == (len(out) == rows)
                result["last"] = cycle
            await ctx.tick()
            cycle += 1
        result["first"] = first
        # Back to idle: a new tile may start.
        assert ctx.get(dut.i_stream.ready) and not ctx.get(dut.busy)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return np.array(out, dtype=np.int64), result["last"] - result["first"] + 1


def random_tile(fmt: SoftmaxFormat, rows: int, rng, spread: int, keep_p: float = 0.8):
    lo, hi = fmt.score_range
    centre = int(rng.integers(lo // 2, hi // 2))
    x = np.clip(centre + rng.integers(-spread, spread, size=(rows, fmt.lanes)), lo, hi)
    keep = rng.random((rows, fmt.lanes)) < keep_p
    return x.astype(np.int64), keep


@pytest.mark.parametrize(
    "hw, rows, seed",
    [
        (TINY, 1, 0),
        (TINY, 7, 1),
        (TINY, 13, 2),
        (WIDE, 24, 5),
        (variant(softmax_lanes=4, exp_latency_cycles=4, score_frac_bits=5, exp_bits=12), 9, 3),
        (variant(softmax_lanes=3, score_bits=10, score_frac_bits=3, exp_bits=10), 6, 4),
    ],
)
def test_matches_golden_and_cycle_formula(hw, rows, seed):
    fmt = SoftmaxFormat.of(hw)
    rng = np.random.default_rng(seed)
    x, keep = random_tile(fmt, rows, rng, spread=12 << fmt.frac_bits)
    keep[:, 0] = False  # a lane with nothing kept outputs zeros
    keep[0, 1] = True
    probs, cycles = run_tile(hw, x, keep)
    assert np.array_equal(probs, softmax_fixed(x, keep, fmt)), (probs, softmax_fixed(x, keep, fmt))
    assert cycles == softmax_cycles(rows, fmt.lanes, hw), (
        f"RTL took {cycles} cycles; archsim predicts {softmax_cycles(rows, fmt.lanes, hw)}"
    )


def test_extreme_scores_saturate_and_underflow():
    # One dominant score per lane (p saturates at 2^P - 1) and scores far below (e = 0).
    fmt = SoftmaxFormat.of(TINY)
    lo, hi = fmt.score_range
    x = np.array([[hi, lo], [lo, hi], [0, 0]], dtype=np.int64)
    keep = np.ones_like(x, dtype=bool)
    probs, _ = run_tile(TINY, x, keep)
    expected = softmax_fixed(x, keep, fmt)
    assert np.array_equal(probs, expected)
    assert probs[0, 0] == probs[1, 1] == (1 << fmt.prob_bits) - 1


def test_backpressure_changes_timing_not_values():
    fmt = SoftmaxFormat.of(TINY)
    x, keep = random_tile(fmt, 6, np.random.default_rng(7), spread=4 << fmt.frac_bits)
    probs, cycles = run_tile(TINY, x, keep, stall_every=3)
    assert np.array_equal(probs, softmax_fixed(x, keep, fmt))
    assert cycles > softmax_cycles(6, fmt.lanes, TINY)


@pytest.mark.parametrize(
    "hw",
    [TINY, WIDE, variant(score_frac_bits=12, exp_bits=24), variant(score_frac_bits=1, exp_bits=4)],
)
def test_rom_is_the_format_table(hw):
    # The RTL's ROM and the golden model both read SoftmaxFormat.exp_table. Pin it against an
    # independent float formula for T[f] = round(2^E · 2^(-f/2^F)): end to end, a probability
    # of P < E bits hides most single-LSB table errors, so the table is compared whole.
    fmt = SoftmaxFormat.of(hw)
    f = np.arange(1 << fmt.frac_bits)
    want = np.floor(np.exp2(fmt.exp_bits - f / (1 << fmt.frac_bits)) + 0.5).astype(np.int64)
    assert list(fmt.exp_table) == want.tolist()
    assert SoftmaxParams.of(hw).fmt == fmt
