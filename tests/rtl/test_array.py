"""The systolic array: dot products of each column, at the skewed cycle the compute unit expects.

Activation row ``i`` presented in cycle ``t0 + i`` must leave column ``j`` in cycle
``t0 + i + j + rows`` (docs/rtl.md) with ``Σ_r B[r][j] · A[i][col(r, j)]``, where ``col`` is the
dense row or the N:M group position the PE's index selects.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from rtl.array import SystolicArray
from workloads.load import load_hardware

TINY = load_hardware("tiny")


@pytest.mark.parametrize("mode", ["dense", "2:4", "1:4"])
def test_array_outputs_dot_products_on_the_skewed_schedule(mode):
    hw = TINY
    rows, cols, lanes = hw.array.rows, hw.array.cols, 8
    rng = np.random.default_rng(11)
    n, m = (1, 1) if mode == "dense" else map(int, mode.split(":"))
    span = rows if mode == "dense" else rows // n * m
    weights = rng.integers(-128, 128, size=(rows, cols))
    index = rng.integers(0, m, size=(rows, cols))
    a = rng.integers(-128, 128, size=(6, span))
    # The activation each PE multiplies: its own row's element, or its group's indexed element.
    col = (np.arange(rows)[:, None] + 0 * index if mode == "dense"
           else (np.arange(rows) // n * m)[:, None] + index)
    want = np.array([[sum(int(weights[r, j]) * int(a[i, col[r, j]]) for r in range(rows))
                      for j in range(cols)] for i in range(len(a))])
    array = SystolicArray(hw)
    seen: dict[int, list[tuple[int, int]]] = {j: [] for j in range(cols)}

    async def bench(ctx):
        ctx.set(array.dense, mode == "dense")
        for r in range(rows):
            ctx.set(array.weights.valid, 1)
            ctx.set(array.weights.payload.row, r)
            for j in range(cols):
                ctx.set(array.weights.payload.entries[j].value, int(weights[r, j]))
                ctx.set(array.weights.payload.entries[j].index, int(index[r, j]))
            await ctx.tick()
        ctx.set(array.weights.valid, 0)
        for cycle in range(len(a) + rows + cols + 2):
            if cycle < len(a):
                i = cycle
                ctx.set(array.act.valid, 1)
                for r in range(rows):
                    if mode == "dense":
                        vector = [int(a[i, r])] + [0] * (lanes - 1)
                    else:
                        base = r // n * m
                        vector = [int(a[i, base + t]) for t in range(m)] + [0] * (lanes - m)
                    ctx.set(array.act.payload[r], vector)
            else:
                ctx.set(array.act.valid, 0)
            for j in range(cols):
                if ctx.get(array.psum[j].valid):
                    seen[j].append((cycle, ctx.get(array.psum[j].payload)))
            await ctx.tick()

    sim = Simulator(array)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    for j in range(cols):
        assert seen[j] == [(i + j + rows, int(want[i, j])) for i in range(len(a))], f"column {j}"
