"""The unified PE: dense MACs and every N:M mode of the tiny preset, bit-exact with wrap-around."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from rtl.pe import ProcessingElement
from workloads.load import load_hardware
from workloads.spec import HardwareSpec

TINY = load_hardware("tiny")
MODES = ["dense"] + [f"{p.n}:{p.m}" for p in TINY.nm_patterns]


def _wrap(x: int, bits: int) -> int:
    half = 1 << (bits - 1)
    return (x + half) % (2 * half) - half


def _run(hw: HardwareSpec, mode: str, trials: int = 60) -> ProcessingElement:
    pe = ProcessingElement(hw)
    lanes = max((p.m for p in hw.nm_patterns), default=1)
    lo, hi = -(1 << (hw.data_bits - 1)), (1 << (hw.data_bits - 1)) - 1
    acc_lo, acc_hi = -(1 << (hw.acc_bits - 1)), (1 << (hw.acc_bits - 1)) - 1
    rng = np.random.default_rng(3)
    m = 1 if mode == "dense" else int(mode.split(":")[1])

    async def bench(ctx):
        if hw.nm_patterns:
            ctx.set(pe.dense, mode == "dense")
        for trial in range(trials):
            # Extremes first: the most negative operands and a sum on the edge of overflow.
            weight = lo if trial == 0 else int(rng.integers(lo, hi + 1))
            index = int(rng.integers(0, m)) if mode != "dense" else int(rng.integers(0, lanes))
            ctx.set(pe.weight.valid, 1)
            ctx.set(pe.weight.payload.value, weight)
            if hw.nm_patterns:
                ctx.set(pe.weight.payload.index, index)
            await ctx.tick()
            ctx.set(pe.weight.valid, 0)
            acts = [lo if trial == 0 else int(v) for v in rng.integers(lo, hi + 1, size=lanes)]
            psum = acc_hi if trial == 0 else int(rng.integers(acc_lo, acc_hi + 1))
            valid = bool(rng.integers(0, 2))
            ctx.set(pe.act_in.payload, acts)
            ctx.set(pe.act_in.valid, valid)
            ctx.set(pe.psum_in.payload, psum)
            await ctx.tick()
            picked = acts[0] if mode == "dense" else acts[index]
            want = _wrap(psum + weight * picked, hw.acc_bits)
            assert ctx.get(pe.psum_out.payload) == want, (mode, trial, weight, index, acts, psum)
            assert [ctx.get(pe.act_out.payload[t]) for t in range(lanes)] == acts
            assert ctx.get(pe.act_out.valid) == valid

    sim = Simulator(pe)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return pe


@pytest.mark.parametrize("mode", MODES)
def test_unified_pe_is_bit_exact(mode):
    _run(TINY, mode)


def test_dense_only_pe_has_no_mux():
    doc = TINY.model_dump()
    hw = HardwareSpec.model_validate({**doc, "nm_patterns": [], "name": "dense_only"})
    pe = _run(hw, "dense")
    assert "dense" not in pe.signature.members


def test_sixteen_bit_operands_and_48_bit_accumulators():
    hw = load_hardware("sat_vcu1525")
    _run(hw, "dense", trials=20)
    _run(hw, "1:8", trials=20)
