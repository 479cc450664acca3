"""cocotb tests of ``rtl.softmax.Softmax`` (run inside Verilator by ``test_softmax.py``).

Every tile is checked bit for bit against ``verification.golden_softmax.softmax_fixed`` and,
without backpressure, its cycle count against ``dataflows.cost.softmax_cycles``. The plan (a
JSON file named by ``$ARCHSIM_SOFTMAX_PLAN``) gives the hardware, a seed and how many random
tiles to run; a summary line per test goes to the plan's ``results`` file.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from dataflows.cost import softmax_cycles
from dataflows.softmax_format import SoftmaxFormat
from verification.golden_softmax import softmax_fixed
from workloads.spec import HardwareSpec


def _plan() -> dict:
    with open(os.environ["ARCHSIM_SOFTMAX_PLAN"]) as fh:
        plan = json.load(fh)
    plan["hw"] = HardwareSpec.model_validate_json(plan["hardware"])
    return plan


def _report(plan: dict, record: dict) -> None:
    with open(plan["results"], "a") as fh:
        fh.write(json.dumps(record) + "\n")


class Driver:
    """Drives the unit's streams and timestamps every transfer (cycle = rising edges seen)."""

    def __init__(self, dut, fmt: SoftmaxFormat) -> None:
        self.dut, self.fmt = dut, fmt
        self.cycle = 0

    async def reset(self) -> None:
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        dut.rst.value = 1
        dut.i_stream__valid.value = 0
        dut.o_stream__ready.value = 1
        for _ in range(3):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        await RisingEdge(dut.clk)

    def _pack(self, scores: np.ndarray, keep: np.ndarray, last: bool) -> int:
        fmt, word, shift = self.fmt, 0, 0
        mask = (1 << fmt.score_bits) - 1
        for s in scores:
            word |= (int(s) & mask) << shift
            shift += fmt.score_bits
        word |= sum(int(k) << i for i, k in enumerate(keep)) << shift
        shift += fmt.lanes
        return word | (int(last) << shift)

    def _unpack(self, word: int) -> list[int]:
        p = self.fmt.prob_bits
        return [(word >> (i * p)) & ((1 << p) - 1) for i in range(self.fmt.lanes)]

    async def tile(
        self,
        x: np.ndarray,
        keep: np.ndarray,
        ready_p: float = 1.0,
        rng: random.Random | None = None,
    ) -> tuple[np.ndarray, int]:
        """Three passes of one tile; returns (probabilities, cycles first accept..last output)."""
        dut, rows = self.dut, x.shape[0]
        beats = [self._pack(x[r], keep[r], r == rows - 1) for _ in range(3) for r in range(rows)]
        out, sent, first, last_cycle = [], 0, None, None
        while len(out) < rows:
            dut.i_stream__valid.value = int(sent < len(beats))
            if sent < len(beats):
                dut.i_stream__payload.value = beats[sent]
            ready = 1 if ready_p >= 1.0 or rng.random() < ready_p else 0
            dut.o_stream__ready.value = ready
            await ReadOnly()
            if sent < len(beats) and int(dut.i_stream__ready.value):
                first = self.cycle if first is None else first
                sent += 1
            if int(dut.o_stream__valid.value) and ready:
                word = int(dut.o_stream__payload.value)
                out.append(self._unpack(word))
                assert (word >> (self.fmt.lanes * self.fmt.prob_bits)) & 1 == (len(out) == rows), (
                    "o_stream.last must mark exactly the last probability beat"
                )
                last_cycle = self.cycle
            await RisingEdge(dut.clk)
            self.cycle += 1
            assert self.cycle - (first or self.cycle) < 200 * rows + 1000, "the unit hangs"
        dut.i_stream__valid.value = 0
        return np.array(out, dtype=np.int64), last_cycle - first + 1


def _random_tile(fmt: SoftmaxFormat, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    rows = int(rng.integers(1, 40))
    lo, hi = fmt.score_range
    spread = int(rng.choice([1, 4, 16, 64])) << fmt.frac_bits
    centre = int(rng.integers(lo + spread, hi - spread)) if hi - lo > 2 * spread else 0
    x = np.clip(centre + rng.integers(-spread, spread + 1, size=(rows, fmt.lanes)), lo, hi)
    keep = rng.random((rows, fmt.lanes)) < rng.choice([1.0, 0.9, 0.5])
    return x.astype(np.int64), keep


def _check(x, keep, got, fmt) -> None:
    want = softmax_fixed(x, keep, fmt)
    if not np.array_equal(got, want):
        r, c = np.argwhere(got != want)[0]
        raise AssertionError(
            f"probability [{r}, lane {c}] is {got[r, c]}, golden {want[r, c]} (score {x[r, c]}, "
            f"kept {bool(keep[r, c])}); tile {x.shape[0]}x{fmt.lanes}"
        )


@cocotb.test()
async def random_tiles_match_golden_and_cycles(dut):
    """Random tiles (1..39 rows, random masks and spreads): values exact, cycles exact."""
    plan = _plan()
    hw, fmt = plan["hw"], SoftmaxFormat.of(plan["hw"])
    drv = Driver(dut, fmt)
    await drv.reset()
    rng = np.random.default_rng(plan["seed"])
    total = 0
    for _ in range(plan["tiles"]):
        x, keep = _random_tile(fmt, rng)
        got, cycles = await drv.tile(x, keep)
        _check(x, keep, got, fmt)
        model = softmax_cycles(x.shape[0], fmt.lanes, hw)
        assert cycles == model, f"RTL took {cycles} cycles; archsim predicts {model} (tolerance 0)"
        total += cycles
    _report(plan, {"test": "random", "tiles": plan["tiles"], "cycles": total})


@cocotb.test()
async def every_table_entry(dut):
    """Each lane keeps its maximum and one score d below it, for every fraction f of d (q = 0)
    and again two octaves down (q = 2): the whole exp table through the RTL."""
    plan = _plan()
    hw, fmt = plan["hw"], SoftmaxFormat.of(plan["hw"])
    drv = Driver(dut, fmt)
    await drv.reset()
    size, tiles = 1 << fmt.frac_bits, 0
    for octave in (0, 2):
        for f0 in range(0, size, fmt.lanes):
            d = [octave * size + min(f0 + i, size - 1) for i in range(fmt.lanes)]
            top = min(fmt.score_range[1], 3 * size)
            x = np.array([[top] * fmt.lanes, [top - di for di in d]], dtype=np.int64)
            keep = np.ones_like(x, dtype=bool)
            got, cycles = await drv.tile(x, keep)
            _check(x, keep, got, fmt)
            assert cycles == softmax_cycles(2, fmt.lanes, hw)
            tiles += 1
    _report(plan, {"test": "table", "tiles": tiles})


@cocotb.test()
async def backpressure_keeps_values(dut):
    """Random output backpressure: values still exact; timing only grows."""
    plan = _plan()
    hw, fmt = plan["hw"], SoftmaxFormat.of(plan["hw"])
    drv = Driver(dut, fmt)
    await drv.reset()
    rng, coin = np.random.default_rng(plan["seed"] + 1), random.Random(plan["seed"])
    for _ in range(max(1, plan["tiles"] // 4)):
        x, keep = _random_tile(fmt, rng)
        got, cycles = await drv.tile(x, keep, ready_p=0.6, rng=coin)
        _check(x, keep, got, fmt)
        assert cycles >= softmax_cycles(x.shape[0], fmt.lanes, hw)
    _report(plan, {"test": "backpressure", "tiles": max(1, plan["tiles"] // 4)})
