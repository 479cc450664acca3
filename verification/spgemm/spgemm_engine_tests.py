"""cocotb tests of the SpGEMM engine (run by ``test_spgemm_engine.py`` inside the simulator).

Each test streams one product C = A·B through the engine with :class:`EngineBench` (DMA timing,
spill round trips) and demands: C equal to scipy's ``A @ B``; C entries in the model's drain
order; every row of C ending in the cycle the SimPy model predicts; the same total cycles.
"""

from __future__ import annotations

import os

import cocotb
import numpy as np
import scipy.sparse as sp
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from dataflows.spgemm import SpGEMMProblem
from verification.spgemm.bench import INPUTS, OUTPUTS, EngineBench, expected
from workloads.generators.sparse_matrices import rmat, uniform_random
from workloads.matrices import resolve_matrix
from workloads.spec import HardwareSpec


def _hw() -> HardwareSpec:
    return HardwareSpec.model_validate_json(os.environ["ARCHSIM_SPGEMM_HW"])


def _value(handle) -> int:
    value = handle.value
    return value.to_unsigned() if hasattr(value, "to_unsigned") else int(value)


async def _run(dut, a, b=None) -> None:
    problem = SpGEMMProblem(a, a if b is None else b, _hw())
    want = expected(problem)
    bench = EngineBench(problem)
    ins = {name: getattr(dut, name) for name in INPUTS}
    outs = {name: getattr(dut, name) for name in OUTPUTS}
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    for handle in ins.values():
        handle.value = 0
    dut.rst.value = 1
    await RisingEdge(dut.clk)
    await RisingEdge(dut.clk)
    dut.rst.value = 0
    t = 0
    while not bench.finished:
        values = bench.inputs(t)
        for name, value in values.items():
            ins[name].value = value
        await ReadOnly()
        bench.observe(t, values, {name: _value(h) for name, h in outs.items()})
        await RisingEdge(dut.clk)
        t += 1
    bench.check(want)
    rows = [r for r, _, _ in bench.c_entries]
    cols = [c for _, c, _ in bench.c_entries]
    vals = [v for _, _, v in bench.c_entries]
    got = sp.csr_matrix((vals, (rows, cols)), shape=(a.shape[0], problem.n_cols), dtype=np.int64)
    assert (got - problem.a @ problem.b).count_nonzero() == 0, "C differs from scipy's A @ B"
    dut._log.info(f"{a.shape[0]} rows, {problem.multiplies} products, {bench.spilled} spilled: "
                  f"{bench.done_cycle} cycles, equal to the model")


@cocotb.test()
async def random_uniform(dut):
    await _run(dut, uniform_random(32, 32, density=0.12, seed=11))


@cocotb.test()
async def random_dense_rows_spill(dut):
    # Rows of C with ~100 distinct columns on a 64-entry table: buckets overflow, rows take
    # several passes (Fibonacci hashing spreads fewer consecutive columns than that evenly).
    a = uniform_random(24, 24, density=0.2, seed=12)
    b = uniform_random(24, 128, density=0.3, seed=16)
    assert expected(SpGEMMProblem(a, b, _hw())).spilled > 0, "this case must spill"
    await _run(dut, a, b)


@cocotb.test()
async def rmat_power_law(dut):
    await _run(dut, rmat(64, 320, seed=13))


@cocotb.test()
async def pyamg_bar(dut):
    # A leading 48 x 48 block of pyamg's real FEM matrix 'bar' (the whole matrix takes minutes).
    bar = resolve_matrix("pyamg:bar", {}, 0, ".").matrix
    await _run(dut, sp.csr_matrix(bar[:48, :48]))


@cocotb.test()
async def rectangular_product(dut):
    a = uniform_random(24, 40, density=0.1, seed=14)
    b = uniform_random(40, 16, density=0.2, seed=15)
    await _run(dut, a, b)
