"""Fast amaranth.sim tests of rtl/spgemm.py against the model's hash dataflow (values, cycles)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

pytest.importorskip("amaranth")

from amaranth.sim import Simulator  # noqa: E402

from dataflows.spgemm import SpGEMMProblem  # noqa: E402
from rtl.spgemm import SpGEMMEngine  # noqa: E402
from verification.spgemm.bench import INPUTS, OUTPUTS, EngineBench, expected  # noqa: E402
from workloads.generators.sparse_matrices import rmat, uniform_random  # noqa: E402
from workloads.load import load_hardware  # noqa: E402


def _port(dut, path: str):
    obj = dut
    for part in path.split("__"):
        obj = getattr(obj, part)
    return obj.as_value() if hasattr(obj, "as_value") else obj


def run_engine(problem: SpGEMMProblem) -> EngineBench:
    dut = SpGEMMEngine(problem.hw)
    bench = EngineBench(problem, max_cycles=200_000)
    ins = {name: _port(dut, name) for name in INPUTS}
    outs = {name: _port(dut, name) for name in OUTPUTS}

    async def testbench(ctx):
        t = 0
        while not bench.finished:
            values = bench.inputs(t)
            for name, value in values.items():
                ctx.set(ins[name], value)
            bench.observe(t, values, {name: ctx.get(sig) for name, sig in outs.items()})
            await ctx.tick()
            t += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return bench


@pytest.mark.parametrize(
    "a",
    [
        pytest.param(rmat(24, 90, seed=4), id="rmat"),
        pytest.param(uniform_random(20, 20, density=0.15, seed=5), id="uniform"),
    ],
)
def test_engine_matches_model(a):
    hw = load_hardware("tiny")
    problem = SpGEMMProblem(a, a, hw)
    want = expected(problem)
    bench = run_engine(problem)
    bench.check(want)
    c = sp.csr_matrix((np.array([v for _, _, v in bench.c_entries]),
                       ([r for r, _, _ in bench.c_entries], [c for _, c, _ in bench.c_entries])),
                      shape=a.shape)
    assert (c - a @ a).count_nonzero() == 0


def test_engine_spills_and_still_matches():
    # Rows of up to 12 distinct columns on an 8-entry table: they overflow and take passes.
    hw = load_hardware("tiny", overrides=["spgemm.hash_entries=8", "spgemm.hash_ways=2"])
    a = uniform_random(12, 12, density=0.5, seed=6)
    problem = SpGEMMProblem(a, a, hw)
    want = expected(problem)
    assert want.spilled > 0
    bench = run_engine(problem)
    bench.check(want)
    assert bench.spilled == want.spilled


def test_empty_rows_and_empty_b_rows():
    a = sp.csr_matrix(np.array([[0, 2, 0, 0], [0, 0, 0, 0], [3, 0, 0, -1], [0, 0, 0, 0]]))
    b = sp.csr_matrix(np.array([[1, 0, 0], [0, 0, 0], [0, 4, 0], [2, 0, 5]]))
    problem = SpGEMMProblem(a, b, load_hardware("tiny"))
    bench = run_engine(problem)
    bench.check(expected(problem))
    assert sorted(bench.c_entries) == [(2, 0, 1), (2, 2, -5)]
