"""Check the area model's memory rule (reports/fpga_memory.py) against Yosys, memory by memory.

Each probe synthesizes one memory like the RTL's buffers (one write port, one synchronous read
port with an enable; ``--group`` bits per write-enable group) with the flow's
``synth_xilinx -family xcup -uram``, up to the memory and flip-flop mapping (seconds each), and
prints Yosys's cells next to the rule's::

    python benchmarks/area_memory_probe.py 2048x86 2048x44 48x43690 304x1024x19
    python benchmarks/area_memory_probe.py --block WeightBuffer --hardware sat_vcu1525 --size 4x16

``WIDTHxDEPTH[xGROUP]``; ``--block`` probes one whole buffer of rtl/buffers.py instead (its
memories with their real ports) and prints the rule's cells for that buffer.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_RUNNER = ("import sys\nfrom pyosys import libyosys as ys\n"
           "ys.run_pass('script ' + sys.argv[1], ys.Design())\n")
_CELLS = {"RAMB36E2": ("bram", 1.0), "RAMB18E2": ("bram", 0.5), "URAM288": ("uram", 1.0),
          "RAM64M8": ("lutram", 1.0), "RAM32M16": ("lutram", 1.0), "RAM64M": ("lutram", 1.0),
          "RAM32M": ("lutram", 1.0), "RAM64X1D": ("lutram", 1.0), "RAM32X1D": ("lutram", 1.0),
          "RAM128X1D": ("lutram", 1.0), "RAM256X1D": ("lutram", 1.0)}


def yosys_cells(il_text: str) -> dict[str, float]:
    """Memory cells and flip-flops Yosys makes of a design (RTLIL text, top ``top``)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "t.il").write_text(il_text)
        (work / "s.ys").write_text(
            f"read_rtlil {work / 't.il'}\n"
            "synth_xilinx -family xcup -top top -noiopad -noclkbuf -uram -run begin:map_ffs\n"
            f"tee -q -o {work / 'stat.json'} stat -json\n")
        subprocess.run([sys.executable, "-c", _RUNNER, str(work / "s.ys")], check=True,
                       capture_output=True)
        cells = json.loads((work / "stat.json").read_text())["design"]["num_cells_by_type"]
    out = dict.fromkeys(("bram", "uram", "lutram", "ff"), 0.0)
    for name, n in cells.items():
        if name in _CELLS:
            kind, per = _CELLS[name]
            out[kind] += n * per
        elif name.startswith("$_DFF") or name.startswith("$_SDFF"):
            out["ff"] += n
    return out


def _one_memory(width: int, depth: int, group: int) -> str:
    from amaranth.back import rtlil
    from amaranth.hdl import Elaboratable, Module, Signal
    from amaranth.lib import memory

    class One(Elaboratable):
        def __init__(self):
            self.mem = memory.Memory(shape=width, depth=depth, init=[])
            self.wp = self.mem.write_port(granularity=group if group < width else None)
            self.rp = self.mem.read_port()
            # One enable bit per group, as the weight buffer drives its entries.
            self.en = Signal(len(self.wp.en))

        def elaborate(self, platform):
            m = Module()
            m.submodules.mem = self.mem
            m.d.comb += self.wp.en.eq(self.en)
            return m

    top = One()
    ports = [top.wp.addr, top.wp.data, top.en, top.rp.addr, top.rp.data, top.rp.en]
    return rtlil.convert(top, ports=ports, name="top")


def _main() -> int:
    from dataflows.buffer_shapes import MemoryShape, buffer_shapes
    from reports.fpga_memory import memory_cells

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("memories", nargs="*", metavar="WIDTHxDEPTH[xGROUP]")
    parser.add_argument("--block", help="a buffer class of rtl/buffers.py, e.g. InputBuffer")
    parser.add_argument("--hardware", default="sat_vcu1525")
    parser.add_argument("--size", default="4x4", metavar="RxC")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    for text in args.memories:
        width, depth, *group = (int(v) for v in text.split("x"))
        shape = MemoryShape("probe", 1, width, depth, group[0] if group else width)
        start = time.process_time()
        got = yosys_cells(_one_memory(width, depth, shape.group_bits))
        print(f"{text}: yosys {got}  rule {memory_cells(shape)}  "
              f"({time.process_time() - start:.1f} s CPU here, Yosys in a child)", flush=True)
    if args.block:
        from amaranth.back import rtlil

        from rtl import buffers
        from workloads.load import load_hardware

        rows, cols = args.size.split("x")
        hw = load_hardware(args.hardware, overrides=[*args.overrides, f"array.rows={rows}",
                                                     f"array.cols={cols}"])
        got = yosys_cells(rtlil.convert(getattr(buffers, args.block)(hw), name="top"))
        name = {"InputBuffer": "input", "WeightBuffer": "weight",
                "AccumulatorBuffer": "accumulator", "MaskBuffer": "mask"}[args.block]
        mem = next(m for m in buffer_shapes(hw).memories() if m.name == name)
        print(f"{args.block} {args.hardware} {args.size}: yosys {got}  rule {mem.count} x "
              f"{memory_cells(mem)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
