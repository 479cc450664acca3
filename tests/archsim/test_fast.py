"""The fast timing engine equals the SimPy model: on random programs (any waits, deadlocks
included), on the verification programs of every kind, and on whole shipped workloads."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from archsim.api import simulate
from archsim.fast import run_program_fast
from archsim.model import run_program
from dataflows import cost
from dataflows.cost import latencies
from dataflows.program import Program
from verification.configs import load_config
from verification.programs import ATTENTION, CONV, random_case
from verification.random_waits import random_waits_program
from workloads.errors import SimulationError
from workloads.load import load_hardware, load_workload

EXAMPLES = Path(__file__).resolve().parents[2] / "workloads" / "examples"
TINY = load_hardware("tiny")


def _snapshot(stats) -> dict:
    """Everything a SegmentStats holds, as plain values (dict order ignored)."""
    return {
        "busy": stats.busy, "stall": stats.stall, "cycles": stats.cycles,
        "groups": stats.vector_groups, "trace": stats.trace,
        "tasks": {t: dataclasses.asdict(ts) for t, ts in stats.tasks.items()},
        "sram_read": dict(stats.sram_read_bytes), "sram_write": dict(stats.sram_write_bytes),
    }


def _both(program: Program, hw) -> tuple:
    """(SimPy, fast) results: snapshots, or the SimulationError message each raised."""
    out = []
    for run in (run_program, run_program_fast):
        try:
            out.append(_snapshot(run(program, hw, trace=True)))
        except SimulationError as e:
            out.append(str(e))
    return tuple(out)


@pytest.mark.parametrize("forward", [False, True])
def test_random_programs(forward):
    rng = np.random.default_rng(7 + forward)
    deadlocks = 0
    for _ in range(300):
        simpy_result, fast_result = _both(random_waits_program(rng, forward), TINY)
        assert fast_result == simpy_result
        deadlocks += isinstance(simpy_result, str)
    assert forward == (deadlocks > 0)  # forward waits do produce deadlocks to compare


@pytest.mark.parametrize("forward", [False, True])
def test_the_one_pass_in_program_order_times_what_the_rounds_do(forward):
    """``cost.timeline`` times a program whose waits all look back in one pass in program
    order and leaves one with a wait on a later instruction to the rounds; both paths of
    the random programs above are taken, and the pass times as the rounds do."""
    rng = np.random.default_rng(11 + forward)
    passes = 0
    for _ in range(200):
        program = random_waits_program(rng, forward)
        cycles = latencies(program, TINY)
        in_order = cost._in_program_order(program, cycles)
        passes += in_order is not None
        if in_order is not None:
            with mock.patch.object(cost, "_in_program_order", return_value=None):
                assert cost.timeline(program, cycles) == in_order
    assert passes == 200 if not forward else 0 < passes < 200


@pytest.mark.parametrize("config", ["tiny", "wide"])
@pytest.mark.parametrize("kinds", [None, (ATTENTION,)])
def test_verification_programs(config, kinds):
    hw = load_config(config)
    for seed in range(15):
        program = random_case(hw, seed, kinds).program
        simpy_result, fast_result = _both(program, hw)
        assert fast_result == simpy_result, f"seed {seed}"


@pytest.mark.parametrize("config", ["tiny", "wide"])
def test_transposing_read_programs(config):
    """Convolution programs whose weight gradient runs swapped with the transposing read
    (seeds 11 mod 12 where the accumulator holds a channel chunk; COMPUTE takes `rows` more)."""
    hw = load_config(config)
    seen = 0
    for seed in (11, 23, 71, 191):
        program = random_case(hw, seed, (CONV,)).program
        seen += any(i.transposing for i in program.instrs)
        simpy_result, fast_result = _both(program, hw)
        assert fast_result == simpy_result, f"seed {seed}"
    assert seen >= 2


@pytest.mark.parametrize("example", ["tiny_gemm", "bert_inference_nm", "attention_bert"])
def test_whole_workloads(example):
    workload = load_workload(EXAMPLES / f"{example}.yaml")
    assert simulate(workload, engine="fast") == simulate(workload, engine="simpy")
