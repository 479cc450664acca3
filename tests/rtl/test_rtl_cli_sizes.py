"""``archsim rtl``: the RTL's own checks point at the field's line, and ``--synth`` says
before any work when Yosys would need more memory than it can have (new-user trial: a bad
buffer named only the hardware; a 1 GiB weight buffer gave no warning and Yosys was killed)."""

from __future__ import annotations

import pytest

from archsim.cli import main
from rtl import cli, synth
from rtl.errors import RTLError
from workloads.load import load_hardware, preset_path


def _tiny_with(tmp_path, old: str, new: str):
    """The tiny preset's file with one text replaced (its buffers are on line 13)."""
    path = tmp_path / "hw.yaml"
    path.write_text(preset_path("tiny").read_text().replace(old, new, 1))
    return path


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_an_rtl_check_points_at_the_fields_line(tmp_path, capsys):
    path = _tiny_with(tmp_path, "weight_bytes: 1024", "weight_bytes: 16")
    err = _error(capsys, ["rtl", str(path), "--out", str(tmp_path / "o")])
    assert err.startswith(f"archsim: error: {path}:13: buffers.weight_bytes: half of "
                          f"buffers.weight_bytes (8 B) cannot hold")
    assert not (tmp_path / "o").exists()


def test_an_rtl_check_on_an_overridden_field_points_at_the_set(tmp_path, capsys):
    argv = ["rtl", "tiny", "--set", "dram.latency_cycles=0", "--out", str(tmp_path / "o")]
    err = _error(capsys, argv)
    assert err.startswith("archsim: error: --set dram.latency_cycles=0: dram.latency_cycles: "
                          "dram.latency_cycles must be at least 1 for the RTL")


def test_buffers_beyond_the_device_point_at_the_largest_buffer(tmp_path, capsys):
    path = _tiny_with(tmp_path, "input_bytes: 4096", "input_bytes: 104857600")
    err = _error(capsys, ["rtl", str(path), "--synth", "--out", str(tmp_path / "o")])
    assert err.startswith(f"archsim: error: {path}:13: buffers.input_bytes: --synth: the "
                          f"buffers hold 100.0 MiB")


@pytest.mark.parametrize(("preset", "overrides", "measured_gib"), [
    ("tiny", [], 0.53), ("tiny", ["array.rows=16", "array.cols=16"], 1.36),
    ("sat_vcu1525", ["array.rows=4", "array.cols=4"], 1.09), ("sat_vcu1525", [], 8.04),
])
def test_the_yosys_memory_estimate_follows_the_measured_runs(preset, overrides, measured_gib):
    """Within 10 % of the peaks docs/rtl.md and docs/dse.md report."""
    estimate = cli.yosys_peak_estimate_bytes(load_hardware(preset, overrides)) / 2**30
    assert estimate == pytest.approx(measured_gib, rel=0.1)


def test_synth_warns_before_any_work_when_memory_is_short(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "memory_available_bytes", lambda: 2**28)  # 0.25 GiB

    def write_flow(hw, out):
        raise RTLError("stopped before the Verilog")

    monkeypatch.setattr(synth, "write_flow", write_flow)
    argv = ["rtl", "tiny", "--synth", "--yosys", "native", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    warning, error = capsys.readouterr().err.splitlines()
    assert warning.startswith("archsim: warning: --synth: Yosys may need about 0.6 GiB for 4x4 "
                              "PEs of 8 bits and 0.0 MiB of buffers")
    assert "more than the memory this machine has available (0.2 GiB)" in warning
    assert error == "archsim: error: stopped before the Verilog"


def test_no_warning_with_memory_to_spare_and_one_for_the_webassembly_yosys(capsys, monkeypatch):
    monkeypatch.setattr(cli, "memory_available_bytes", lambda: 64 * 2**30)
    cli._warn_if_memory_short(load_hardware("sat_vcu1525"), "native")
    assert capsys.readouterr().err == ""
    cli._warn_if_memory_short(load_hardware("sat_vcu1525"), "wasm")
    err = capsys.readouterr().err
    assert "about 8.1 GiB for 32x32 PEs of 16 bits and 6.5 MiB of buffers" in err
    assert "more than the WebAssembly Yosys's address space (3.9 GiB)" in err
    assert err.rstrip().endswith("use --yosys native (pip install pyosys)")
    cli._warn_if_memory_short(load_hardware("tiny"), "wasm")
    assert capsys.readouterr().err == ""


def test_memory_available_is_a_positive_number_here():
    available = cli.memory_available_bytes()
    assert available is None or available > 0
