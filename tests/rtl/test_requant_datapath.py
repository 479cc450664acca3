"""The DMA's requantizing datapath (``rtl.dma.requantize``) against the golden rule: every shift
the DMA can hold, extremes, exact halves and random accumulators, for tiny's and sat_vcu1525's
widths."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Array, Const, Module, Signal, signed
from amaranth.sim import Simulator

from rtl.dma import requantize
from verification.golden import requantize as golden_requantize


@pytest.mark.parametrize(("acc_bits", "data_bits"), [(32, 8), (48, 16), (16, 8)])
def test_datapath_matches_the_golden_rule(acc_bits, data_bits):
    m = Module()
    value, shift = Signal(signed(acc_bits)), Signal(range(acc_bits + 1))
    masks = Array(Const((1 << k) - 1, acc_bits) for k in range(acc_bits + 1))
    out = requantize(m, value, shift, masks, data_bits)
    rng = np.random.default_rng(acc_bits)
    half = 1 << (acc_bits - 1)
    special = [-half, half - 1, 0, -1, 1, 2, -2, 3, -3, 6, -6, 10, -10]
    cases = []
    for s in range(acc_bits + 1):
        ties = [t << max(s - 1, 0) for t in (1, -1, 3, -3, 5, -5)] if s else []
        rand = rng.integers(-half, half, 40).tolist()
        values = [int(v) for v in special + ties + rand if -half <= v < half]
        cases += [(v, s) for v in values]
    got = []

    async def bench(ctx):
        for v, s in cases:
            ctx.set(value, v)
            ctx.set(shift, s)
            got.append(ctx.get(out))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    want = [int(golden_requantize(np.array([v]), s, acc_bits, data_bits)[0]) for v, s in cases]
    bad = [(c, g, w) for c, g, w in zip(cases, got, want) if g != w]
    assert not bad, bad[:5]
