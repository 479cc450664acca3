"""``archsim rtl``: the files it promises, one-line errors, and a real (small) synthesis."""

from __future__ import annotations

import json
import re

import pytest

from archsim.cli import main
from dataflows.isa import WORD_BITS
from rtl import synth
from rtl.errors import RTLError

#: A 2x2 dense-only accelerator with small buffers: its synthesis takes about 20 s.
SMALL = """\
version: 1
name: small
clock_mhz: 100
array: {rows: 2, cols: 2}
data_bits: 8
acc_bits: 32
buffers: {weight_bytes: 64, input_bytes: 256, accumulator_bytes: 256}
dram: {bandwidth_bytes_per_cycle: 8, latency_cycles: 4}
vector_unit: {lanes: 1, pipeline_cycles: 1}
controller: {instruction_depth: 16}
"""


def test_rtl_writes_verilog_scripts_and_ports(tmp_path, capsys):
    out = tmp_path / "tiny"
    assert main(["rtl", "tiny", "--out", str(out)]) == 0
    for name in ("accel_top.v", "files.f", "synth.ys", "vivado.tcl", "accel_top.xdc", "ports.md",
                 "ports.json"):
        assert (out / name).stat().st_size > 0, name
    assert sorted(p.name for p in out.iterdir()) == sorted(synth.FLOW_FILES)  # what --force checks
    assert "synth_xilinx -family xcup -top accel_top" in (out / "synth.ys").read_text()
    tcl = (out / "vivado.tcl").read_text()
    assert "-part xcvu9p-fsgd2104-2L-e" in tcl and "read_verilog accel_top.v" in tcl
    assert "-period 10.000" in (out / "accel_top.xdc").read_text()  # tiny runs at 100 MHz
    ports = {p["name"]: p for p in json.loads((out / "ports.json").read_text())["ports"]}
    assert ports["mem_rd_req__payload"]["fields"] == {"addr": [0, 32], "beats": [32, 16]}
    assert ports["mem_wr_data__payload"]["fields"] == {"data": [0, 64], "strb": [64, 8]}
    assert ports["instr__payload"]["width"] == WORD_BITS and ports["cycles"]["direction"] == "out"
    assert "wrote accel_top.v" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["rtl", "nope"], "unknown hardware preset 'nope'"),
    (["rtl", "tiny", "--set", "dram.latency_cycles=0"], "latency_cycles must be at least 1"),
    (["rtl", "missing.yaml"], "missing.yaml: file not found"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_synth_of_buffers_larger_than_the_device_is_refused_before_any_work(tmp_path, capsys):
    """A 1 GiB weight buffer ran Yosys out of 10 GiB of memory: refused at once instead."""
    out = tmp_path / "x"
    assert main(["rtl", "tiny", "--set", "buffers.weight_bytes=1073741824", "--synth",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--synth: the buffers hold 1,024.0 MiB" in err
    assert "more than the XCVU9P's 43.2 MiB of BRAM and URAM" in err
    assert not out.exists()


def test_failed_synthesis_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(synth, "yosys_script", lambda: "read_verilog no_such_file.v\n")
    assert main(["rtl", "tiny", "--out", str(tmp_path), "--synth"]) == 2
    err = capsys.readouterr().err
    assert "yosys synthesis failed: ERROR:" in err and err.count("\n") == 1


def test_synthesize_reports_an_error_without_verilog(tmp_path):
    (tmp_path / "synth.ys").write_text(synth.yosys_script())
    with pytest.raises(RTLError, match=r"yosys synthesis failed: ERROR: .*accel_top_synth\.v"):
        synth.synthesize(tmp_path)


def test_synth_writes_resources(tmp_path, capsys):
    spec = tmp_path / "small.yaml"
    spec.write_text(SMALL)
    out = tmp_path / "out"
    assert main(["rtl", str(spec), "--out", str(out), "--synth"]) == 0
    report = json.loads((out / "resources.json").read_text())
    total, blocks = report["total"], report["blocks"]
    assert blocks["compute.array.pe"]["instances"] == 4
    # One DSP48E2 per PE: the multiply and the accumulate of the MAC.
    assert blocks["compute.array.pe"]["DSP"] == 4
    assert total["LUT"] > 0 and total["FF"] > 0 and total["DSP"] >= 4
    assert total["LUT"] == sum(b["LUT"] for b in blocks.values())
    printed = capsys.readouterr().out
    assert "compute.array.pe" in printed and "total" in printed
    # The device share, what the synthesis cost, and the timing proxy come with the counts.
    share = report["device"]["share"]
    assert report["device"]["name"] == "XCVU9P"
    assert share["DSP"] == pytest.approx(total["DSP"] / 6840, abs=1e-5)
    assert report["peak_memory_bytes"] > 10 * 1024**2 and report["seconds"] > 0
    assert report["engine"]
    assert report["timing"]["logic_levels"] > 0 and report["timing"]["blocks"]
    assert "logic levels through" in printed and "share of XCVU9P" in printed


def _earlier_run(out):
    """An earlier run's Verilog and synthesis results, and a file of the user's own."""
    out.mkdir()
    (out / "accel_top.v").write_text("// earlier Verilog\n")
    (out / "resources.json").write_text('{"earlier": true}\n')
    (out / "timing.rpt").write_text("earlier Vivado timing\n")
    (out / "notes.txt").write_text("mine\n")


def _fake_write_flow(hw, out_dir, interrupt=False):
    """``write_flow`` without building: every file it promises, naming the hardware."""
    for name in synth.FLOW_FILES:
        (out_dir / name).write_text(f"// {hw.name} {hw.array.rows}x{hw.array.cols}\n")
        if interrupt:
            raise KeyboardInterrupt
    return {name: out_dir / name for name in synth.FLOW_FILES}


def test_rtl_refuses_to_replace_an_earlier_runs_outputs_without_force(tmp_path, capsys):
    out = tmp_path / "x"
    _earlier_run(out)
    assert main(["rtl", "tiny", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pass --force to replace them" in err
    assert "(accel_top.v, resources.json, timing.rpt)" in err
    assert (out / "accel_top.v").read_text() == "// earlier Verilog\n"
    assert (out / "resources.json").read_text() == '{"earlier": true}\n'


def test_rtl_force_replaces_the_verilog_and_drops_the_synthesis_results_it_made_stale(
        tmp_path, capsys):
    out = tmp_path / "x"
    _earlier_run(out)
    assert main(["rtl", "tiny", "--out", str(out), "--force"]) == 0
    assert "module accel_top" in (out / "accel_top.v").read_text()
    assert not (out / "resources.json").exists() and not (out / "timing.rpt").exists()
    assert (out / "notes.txt").read_text() == "mine\n"  # not ours: kept


def test_rtl_interrupted_with_force_keeps_the_earlier_run_whole(tmp_path, capsys, monkeypatch):
    out = tmp_path / "x"
    _earlier_run(out)
    monkeypatch.setattr(synth, "write_flow",
                        lambda hw, out_dir: _fake_write_flow(hw, out_dir, interrupt=True))
    assert main(["rtl", "tiny", "--out", str(out), "--force"]) == 130
    assert f"nothing written to {out}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]  # no staging folder left
    assert (out / "accel_top.v").read_text() == "// earlier Verilog\n"
    assert (out / "resources.json").read_text() == '{"earlier": true}\n'


def test_rtl_default_folder_joins_the_set_overrides(tmp_path, capsys, monkeypatch):
    """out/rtl/tiny holds the plain preset's Verilog and synthesis results; an 8x8 build must
    not land beside them."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(synth, "write_flow", _fake_write_flow)
    assert main(["rtl", "tiny"]) == 0
    assert main(["rtl", "tiny", "--set", "array.rows=8", "--set", "array.cols=8"]) == 0
    assert (tmp_path / "out/rtl/tiny/accel_top.v").read_text() == "// tiny 4x4\n"
    eight = tmp_path / "out/rtl/tiny+array.rows_8+array.cols_8/accel_top.v"
    assert eight.read_text() == "// tiny 8x8\n"


def test_a_geometry_the_rtl_refuses_is_blamed_on_its_line_in_the_hardware_file(tmp_path, capsys):
    """The RTL's own checks name the field's line in the file (or the --set) that gave it."""
    from workloads.load import PRESET_DIR

    text = (PRESET_DIR / "tiny.yaml").read_text()
    lines = text.splitlines()
    line = next(i for i, s in enumerate(lines, 1) if "input_bytes:" in s)
    bad = tmp_path / "hw.yaml"
    bad.write_text(re.sub(r"input_bytes: \d+", "input_bytes: 16", text))
    assert main(["rtl", str(bad), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:{line}: buffers.input_bytes: half of buffers.input_bytes" in err
    assert err.count("\n") == 1
