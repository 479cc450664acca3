"""The vector unit's N:M compressor lane against ``workloads.generators.nm.compress_nm``."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from rtl.vector import NMCompressor
from workloads.generators.nm import compress_nm
from workloads.load import load_hardware

TINY = load_hardware("tiny")
SAT = load_hardware("sat_vcu1525")


@pytest.mark.parametrize("hw", [TINY, SAT], ids=["tiny", "sat_vcu1525"])
def test_compressor_equals_compress_nm(hw):
    lane = NMCompressor(hw)
    lanes = max(p.m for p in hw.nm_patterns)
    lo, hi = -(1 << (hw.data_bits - 1)), (1 << (hw.data_bits - 1)) - 1
    rng = np.random.default_rng(5)
    failures = []

    async def bench(ctx):
        ctx.set(lane.group.valid, 1)
        for p in hw.nm_patterns:
            for trial in range(40):
                # Narrow ranges give many magnitude ties (-3 vs 3), which go to the lower index;
                # the most negative value has the largest magnitude.
                if trial % 3 == 0:
                    w = rng.integers(-3, 4, size=p.m)
                elif trial % 3 == 1:
                    w = rng.choice([lo, hi, 0, -hi], size=p.m)
                else:
                    w = rng.integers(lo, hi + 1, size=p.m)
                values, idx = compress_nm(w.reshape(p.m, 1), p.n, p.m)
                padding = [int(v) for v in rng.integers(lo, hi + 1, size=lanes - p.m)]
                ctx.set(lane.group.payload.values, [int(v) for v in w] + padding)
                ctx.set(lane.group.payload.n, p.n)
                ctx.set(lane.group.payload.m, p.m)
                got_v = [ctx.get(lane.kept.payload.values[t]) for t in range(p.n)]
                got_i = [ctx.get(lane.kept.payload.indices[t]) for t in range(p.n)]
                if got_v != list(values[:, 0]) or got_i != list(idx[:, 0]):
                    failures.append((p.n, p.m, list(w), got_v, got_i))
        assert ctx.get(lane.kept.valid)

    sim = Simulator(lane)
    sim.add_testbench(bench)
    sim.run()
    assert not failures, f"{len(failures)} groups differ from compress_nm, e.g. {failures[0]}"
