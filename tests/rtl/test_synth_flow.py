"""Issue 20, part 1: the synthesis flow at size — identical modules merged before Yosys, the
engine chosen (native or WebAssembly), and a synthesis that dies says why and what to do."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

from rtl import synth
from rtl.dedup import merge_identical_modules
from rtl.errors import RTLError

LEAF = """\
(* src = "{src}" *)
module {name} (a, y);
  reg \\$auto$verilog_backend.cc:2505:dump_module${n}  = 0;
  input a;
  output y;
  assign y = {expr};
endmodule
"""
PARENT = """\
(* top =  1  *)
module top (a, y0, y1, y2);
  input a;
  output y0, y1, y2;
  \\top.leaf_0  leaf_0 (
    .a(a), .y(y0)
  );
  \\top.leaf_1  leaf_1 (
    .a(a), .y(y1)
  );
  \\top.odd  odd (
    .a(a), .y(y2)
  );
endmodule
"""


def _design() -> str:
    leaves = [LEAF.format(name="\\top.leaf_0 ", src="a.py:1", n=1, expr="~a"),
              LEAF.format(name="\\top.leaf_1 ", src="a.py:9", n=7, expr="~a"),
              LEAF.format(name="\\top.odd ", src="a.py:1", n=3, expr="a")]
    return "/* header */\n" + PARENT + "".join(leaves)


def test_identical_modules_merge_and_instances_follow():
    merged = merge_identical_modules(_design())
    assert (merged.modules_before, merged.modules_after) == (4, 3)
    defined = re.findall(r"^module (\S+)", merged.text, re.M)
    assert defined == ["top", "\\top.leaf_0", "\\top.odd"]
    instances = re.findall(r"^  (\S+)  ?(\S+) \($", merged.text, re.M)
    # both leaf instances now use the one leaf kept; their instance names stay apart
    assert instances == [("\\top.leaf_0", "leaf_0"), ("\\top.leaf_0", "leaf_1"),
                         ("\\top.odd", "odd")]
    assert merged.text.startswith("/* header */\n")


def test_parents_whose_children_merged_merge_too():
    # Two middle modules that differ only in which (identical) leaf they instantiate.
    middle = "module {name} (a, y);\n  input a;\n  output y;\n  {child} u (\n    .a(a), .y(y)\n  );\nendmodule\n"
    text = (middle.format(name="m0", child="\\l0 ") + middle.format(name="m1", child="\\l1 ")
            + LEAF.format(name="\\l0 ", src="x", n=1, expr="~a")
            + LEAF.format(name="\\l1 ", src="y", n=2, expr="~a"))
    merged = merge_identical_modules(text)
    assert re.findall(r"^module (\S+)", merged.text, re.M) == ["m0", "\\l0"]


def test_merging_the_tiny_accelerator_keeps_every_instance_defined():
    from rtl.build import build, verilog_text
    from workloads.load import load_hardware

    verilog = verilog_text(build(load_hardware("tiny")))
    merged = merge_identical_modules(verilog)
    assert merged.modules_after < merged.modules_before
    defined = set(re.findall(r"^module (\S+)", merged.text, re.M))
    used = {kind for kind, _ in re.findall(r"^  (\S+)  ?(\S+) \($", merged.text, re.M)}
    assert used <= defined
    pes = re.findall(r"^  (\S+)  ?pe_\d+_\d+ \($", merged.text, re.M)
    assert len(pes) == 16 and len(set(pes)) < 16


def _fake_engine(monkeypatch, code: str, kind: str = "native"):
    engine = synth.YosysEngine(kind, f"fake {kind}", (sys.executable, "-c", code), False)
    monkeypatch.setattr(synth, "yosys_engine", lambda kind="auto": engine)


def test_a_timeout_stops_yosys_and_says_so(tmp_path, monkeypatch):
    _fake_engine(monkeypatch, "import time; time.sleep(60)")
    with pytest.raises(RTLError, match=r"stopped after --synth-timeout 0.5 s \(peak memory"):
        synth.synthesize(tmp_path, timeout_s=0.5)


def test_a_killed_yosys_is_reported_with_its_memory(tmp_path, monkeypatch):
    _fake_engine(monkeypatch, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    with pytest.raises(RTLError, match=r"killed by signal 9 at [\d.]+ GiB resident \(out of "
                                       r"memory\?"):
        synth.synthesize(tmp_path)


def test_the_webassembly_ceiling_is_named_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(synth, "WASM_CEILING_BYTES", 64 * 1024**2)
    _fake_engine(monkeypatch, "x = bytearray(128 * 1024**2); raise SystemExit(1)", kind="wasm")
    with pytest.raises(RTLError, match=r"WebAssembly Yosys ran out of its 4 GiB address space "
                                       r"\(peak [\d.]+ GiB\); install a native Yosys: pip "
                                       r"install pyosys"):
        synth.synthesize(tmp_path)


def test_peak_memory_is_measured(tmp_path, monkeypatch):
    code = ("x = bytearray(96 * 1024**2)\nopen('stat.json', 'w').write('{}')\n")
    _fake_engine(monkeypatch, code)
    run = synth.synthesize(tmp_path)
    assert run.peak_memory_bytes >= 96 * 1024**2 and run.engine == "fake native"


def test_a_missing_engine_names_the_install(monkeypatch):
    monkeypatch.setattr(synth, "_native_engines", lambda: [])
    with pytest.raises(RTLError, match=r"no native Yosys found for synthesis: .*pyosys"):
        synth.yosys_engine("native")


LTP = """\

12. Executing LTP pass (find longest path).

Longest topological path in accel_top (length=4):
    0: \\dma.addr [0]
    1: $flatten\\dma.$abc$1$blif$7.f0 (via $flatten\\dma.$abc$1$blif$7.lut0)
    2: \\compute.array.pe_3_1.sum [4] (via $flatten\\compute.\\array.\\pe_3_1.$abc$9$blif$2)
    3: \\compute.array.pe_3_1.sum [5] (via $flatten\\compute.\\array.\\pe_3_1.$auto$alumacc.cc:1$3.carry4)
    4: \\vector.softmax.out [0] (via $flatten\\vector.\\softmax.$abc$5$blif$1)
"""


def test_the_longest_path_counts_levels_and_names_its_blocks(tmp_path):
    (tmp_path / "ltp.txt").write_text(LTP)
    assert synth.logic_depth(tmp_path / "ltp.txt") == {
        "logic_levels": 4, "blocks": ["dma", "compute.array.pe", "vector.softmax"]}


def test_a_timeout_also_stops_what_yosys_started(tmp_path, monkeypatch):
    # Yosys runs ABC as a child process of its own: the timeout must not leave it running.
    code = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "open('grandchild.pid', 'w').write(str(child.pid))\n"
            "time.sleep(60)\n")
    _fake_engine(monkeypatch, code)
    with pytest.raises(RTLError, match="stopped after --synth-timeout"):
        synth.synthesize(tmp_path, timeout_s=2)
    pid = int((tmp_path / "grandchild.pid").read_text())
    deadline = time.monotonic() + 5
    while _alive(pid):
        assert time.monotonic() < deadline, "the grandchild outlived the timeout"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")  # a zombie has exited: only its entry remains
    return not (status.exists() and "State:\tZ" in status.read_text())
