"""Both timing engines take an instruction's latency and charges once per shape
(``cost.shape_of``: ``cost.latencies``, ``accounting.account_program``), so every instruction
must cost exactly what the first instruction of its shape costs. Checked instruction by
instruction, with ``latency`` and ``charges`` themselves, on the verification programs of every
kind and on the programs of shipped examples (GEMMs, convolutions, pre-generation, attention
forward and backward, SpGEMM)."""

from __future__ import annotations

from pathlib import Path

import pytest

from archsim.accounting import charges
from archsim.fast import run_program_fast
from archsim.spgemm import simulate_spgemm
from dataflows.cost import latency, shape_index
from dataflows.scheduler import schedule
from verification.configs import load_config
from verification.programs import CONV, random_case
from workloads.load import load_workload
from workloads.spec import SpGEMMOp

EXAMPLES = Path(__file__).resolve().parents[2] / "workloads" / "examples"


def _costs_follow_shapes(program, hw) -> int:
    """Assert it for ``program``; returns how many instructions shared a shape with another."""
    ids, examples = shape_index(program)
    for instr, i in zip(program.instrs, ids):
        first = examples[i]
        assert latency(instr, hw) == latency(first, hw), (instr, first)
        assert charges(instr, hw) == charges(first, hw), (instr, first)
    return len(program.instrs) - len(examples)


@pytest.mark.parametrize("config", ["tiny", "wide"])
def test_verification_programs_cost_what_their_shapes_cost(config):
    hw = load_config(config)
    shared = sum(_costs_follow_shapes(random_case(hw, seed).program, hw) for seed in range(40))
    # Seeds 11 mod 12 of convolutions run a weight gradient with the transposing read, whose
    # COMPUTEs take longer than their shape's other fields say (test_fast's seeds).
    shared += sum(_costs_follow_shapes(random_case(hw, seed, (CONV,)).program, hw)
                  for seed in (11, 23, 71, 191))
    assert shared > 500  # the check compared instructions, not only one per shape


@pytest.mark.parametrize("example, overrides", [
    ("tiny_cnn_bdwp", ()),
    ("resnet18_bdwp", ("operations.0.batch=1",)),
    ("attention_bert", ()),
    ("attention_patterns", ()),
])
def test_example_programs_cost_what_their_shapes_cost(example, overrides):
    workload = load_workload(EXAMPLES / f"{example}.yaml", overrides=list(overrides))
    sched = schedule(workload)
    shared = sum(_costs_follow_shapes(s.program, sched.hardware) for s in sched.segments)
    assert shared > 0


def test_spgemm_programs_cost_what_their_shapes_cost():
    workload = load_workload(EXAMPLES / "spgemm_lookalike.yaml")
    checked = []

    def run(program, hw, trace=False):
        checked.append(_costs_follow_shapes(program, hw))
        return run_program_fast(program, hw, trace)

    for op in workload.operations:
        if isinstance(op, SpGEMMOp):
            simulate_spgemm(op, workload.hardware, run)
    assert checked
