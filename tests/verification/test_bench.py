"""The testbench tested on a small DUT: a correct one passes exactly, every planted bug is caught.

``dma_dut.DmaCopier`` has the ``accel_top`` ports and the DMA timing of docs/isa.md; one
Verilator build (reused for the whole run) serves every test, its ``bug`` input choosing the
behaviour. These tests prove the cocotb side (host driver, memory model, monitor, scoreboard,
runner plumbing) before it is trusted with the accelerator.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("cocotb")
pytest.importorskip("amaranth")

from dma_dut import DmaCopier  # noqa: E402

from verification.common.ports import port_map_of  # noqa: E402
from verification.session import BuiltDut, build_dut, run_plan, use_pypi_toolchain  # noqa: E402
from workloads.load import load_hardware  # noqa: E402

SEEDS = [11, 12, 13, 14]


@pytest.fixture(scope="module")
def hw():
    return load_hardware("tiny")


@pytest.fixture(scope="module")
def dut(hw, tmp_path_factory) -> BuiltDut:
    use_pypi_toolchain()
    from amaranth.back import verilog

    root = Path(os.environ.get("ARCHSIM_VERIFY_BUILD_DIR") or tmp_path_factory.mktemp("build"))
    src = root / "dma_copier" / "dma_copier.v"
    src.parent.mkdir(parents=True, exist_ok=True)
    component = DmaCopier(hw)
    ports = port_map_of(component)
    text = verilog.convert(component, name="accel_top")
    # Rewrite only when changed, so the build stamp (a hash of the text) stays valid.
    if not src.exists() or src.read_text() != text:
        src.write_text(text)
    return build_dut(src, "accel_top", root / "dma_copier" / "sim", ports)


def run(dut, hw, tmp_path, bug: str, seeds=SEEDS, backpressure: float = 0.0):
    plan = {"hardware": hw.model_dump_json(), "backpressure": backpressure,
            "programs": [{"seed": s, "bug": bug} for s in seeds]}
    return run_plan(dut, "dma_tests", plan, tmp_path)


def test_correct_dut_matches_values_and_every_cycle(dut, hw, tmp_path):
    results = run(dut, hw, tmp_path, "none")
    for r in results:
        assert r.ok, r.summary()
        assert r.cycle_diff == 0 and r.busy_cycles == r.model_cycles
        # Every instruction is a DMA instruction, so every one was timed on the memory ports.
        assert r.timed_instructions == r.instructions > 0
        assert r.timing_mismatches == 0


def test_relative_directories_work(dut, hw, tmp_path, monkeypatch):
    # The simulator runs in the work directory; paths handed to it must not depend on the cwd.
    monkeypatch.chdir(tmp_path)
    results = run(dut, hw, Path("relative") / "run", "none", seeds=SEEDS[:1])
    assert len(results) == 1 and results[0].ok, results[0].summary()


def test_backpressure_compares_values_only(dut, hw, tmp_path):
    results = run(dut, hw, tmp_path, "none", backpressure=0.4)
    for r in results:
        assert r.ok, r.summary()
        assert r.backpressure and r.cycle_diff is None
        assert "values only (random backpressure)" in r.summary()
    # The stalls really happened: the RTL took longer than the stall-free model.
    assert all(r.rtl_cycles > r.model_cycles for r in results)


def test_backpressure_still_catches_wrong_values(dut, hw, tmp_path):
    results = run(dut, hw, tmp_path, "flip_bit", backpressure=0.4)
    assert all(r.value_mismatches and not r.ok for r in results)


@pytest.mark.parametrize("bug, symptom", [
    ("late_start", lambda r: r.cycle_diff == r.instructions and r.timing_mismatches > 0),
    ("flip_bit", lambda r: r.value_mismatches > 0 and "-> " in r.value_examples[0]),
    ("busy_early", lambda r: r.busy_cycles == r.model_cycles - 1 or r.protocol_errors),
    ("wrong_addr", lambda r: any("expected rd addr" in e or "expected wr addr" in e
                                 for e in r.protocol_errors)),
    ("drop_valid", lambda r: any("valid fell before a transfer" in e
                                 for e in r.protocol_errors)),
])
def test_planted_bug_is_caught(dut, hw, tmp_path, bug, symptom):
    results = run(dut, hw, tmp_path, bug)
    for r in results:
        assert not r.ok, f"{bug} went unnoticed: {r.summary()}"
        assert symptom(r), r.summary()
