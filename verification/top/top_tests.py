"""cocotb tests of ``accel_top`` (run inside the simulator by ``verification.session.run_plan``).

The plan (``$ARCHSIM_VERIFY_PLAN``) lists programs by seed (or as explicit tasks, for regression
tests). For each, the program is rebuilt (:func:`verification.programs.case_from_spec`), the
golden models and the SimPy model
are run and cross-checked in Python (:func:`verification.golden.prepare`), and the bench runs the
program on the RTL. The DUT is reset before the first program and after any failed one; the
others follow each other directly, as segments do on a real host, so state a program leaves
behind (counters, instruction memories, buffers) is exercised too. Every result is appended to
the plan's results file as it comes, so a crash mid-run still reports what ran; the test fails
if any program failed.
"""

from __future__ import annotations

import json
import os
import traceback

import cocotb
from cocotb.clock import Clock

from verification.common.bench import AccelBench
from verification.common.ports import PortMap
from verification.common.scoreboard import ProgramResult
from verification.errors import VerificationError
from verification.golden import prepare
from verification.programs import case_from_spec
from verification.session import PLAN_ENV
from workloads.errors import ArchsimError
from workloads.spec import HardwareSpec

#: Clock period; only its existence matters, cycle counts are what is compared.
_PERIOD_NS = 10


def _load_plan() -> dict:
    path = os.environ.get(PLAN_ENV)
    if not path:
        raise VerificationError(f"${PLAN_ENV} is not set; run these tests via verification.session")
    with open(path) as f:
        return json.load(f)


async def _run_one(bench: AccelBench, hw: HardwareSpec, entry: dict, backpressure: float,
                   reset: bool) -> ProgramResult:
    seed = int(entry["seed"])
    kind, description, instructions = "?", "", 0
    try:
        case = case_from_spec(hw, entry)
        kind, description, instructions = case.kind, case.description, len(case.program.instrs)
        prepared = prepare(case)
    except ArchsimError as exc:
        # The golden models disagree, or the program is defective or unmappable: no RTL
        # verdict is possible.
        return ProgramResult(seed, kind, hw.name, description, instructions, 0, backpressure > 0,
                             error=f"before simulation: {exc}")
    return await bench.run_case(prepared, backpressure, reset)


@cocotb.test()
async def random_programs(dut):
    """Every program of the plan: values bit-exact, cycles equal to archsim (no backpressure)."""
    plan = _load_plan()
    hw = HardwareSpec.model_validate_json(plan["hardware"])
    ports = PortMap.from_json(plan["ports"])
    backpressure = float(plan.get("backpressure", 0.0))
    Clock(dut.clk, _PERIOD_NS, unit="ns").start(start_high=False)
    bench = AccelBench(dut, ports)
    failures = []
    reset = True
    with open(plan["results"], "a") as out:
        for entry in plan["programs"]:
            try:
                result = await _run_one(bench, hw, entry, backpressure, reset)
            except Exception:  # a testbench crash must still leave a result for this seed
                result = ProgramResult(int(entry["seed"]), "?", hw.name, "", 0, 0,
                                       backpressure > 0,
                                       error="testbench crashed: " + traceback.format_exc(limit=3))
            out.write(json.dumps(result.to_json()) + "\n")
            out.flush()
            dut._log.info(result.summary())
            reset = not result.ok
            if not result.ok:
                failures.append(result.summary())
    assert not failures, f"{len(failures)} program(s) failed:\n" + "\n".join(failures)
