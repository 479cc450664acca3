"""Issue 15 part 7: Ctrl-C stops `archsim run` and `archsim rtl` at once: one line, exit 130,
no half-written result. (dse: tests/reports/test_interrupt.py.)"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

import pytest


def _press(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it may be gone already
        os.killpg(pgid, signal.SIGINT)


def _interrupt(argv: list[str], busy) -> tuple[subprocess.Popen, str, float]:
    """Start ``archsim argv``, wait until ``busy(proc)``, press Ctrl-C twice; (proc, stderr, s)."""
    proc = subprocess.Popen([sys.executable, "-m", "archsim.cli", *argv], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not busy(proc):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.3)
        assert proc.poll() is None, "finished before the press; use a longer job"
        pressed = time.monotonic()
        _press(proc.pid)
        threading.Timer(0.1, _press, (proc.pid,)).start()  # a second press
        err = proc.communicate(timeout=10)[1]
        return proc, err, time.monotonic() - pressed
    finally:
        proc.poll() is None and os.killpg(proc.pid, signal.SIGKILL)


def test_ctrl_c_stops_run_within_2_s(tmp_path):
    out = tmp_path / "o"
    # The output folder is made before simulating (a bad --out fails first).
    proc, err, took = _interrupt(["run", "workloads/examples/resnet18_bdwp.yaml", "--out",
                                  str(out)], lambda proc: out.is_dir())
    assert proc.returncode == 130 and took < 2, (took, err)
    assert err == "archsim: interrupted\n"
    assert not out.exists()  # the run made it and wrote nothing into it: it is removed again


def test_ctrl_c_stops_rtl_within_2_s(tmp_path):
    out = tmp_path / "rtl"
    # Off a terminal the build prints a progress line first (rtl.cli.progress_lines).
    proc, err, took = _interrupt(["rtl", "tiny", "--out", str(out)],
                                 lambda proc: proc.stdout.readline().startswith("building"))
    assert proc.returncode == 130 and took < 2, (took, err)
    # The Verilog is staged beside the folder and moved in whole: none of it arrived.
    assert err == f"archsim: interrupted; nothing written to {out}\n"
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its staging sibling


def test_a_failed_run_keeps_the_folders_it_did_not_make_and_any_file(tmp_path, monkeypatch):
    """Only the empty folders a failed or interrupted command created go away."""
    import archsim.api
    from archsim.cli import main

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(archsim.api, "simulate", stop)
    argv = ["run", "workloads/examples/tiny_gemm.yaml", "--quiet", "--out"]
    assert main([*argv, str(tmp_path / "new" / "deeper")]) == 130
    assert list(tmp_path.iterdir()) == []  # both levels were made by the run
    (tmp_path / "mine").mkdir()
    assert main([*argv, str(tmp_path / "mine")]) == 130
    assert (tmp_path / "mine").is_dir()  # the user's folder stays, empty or not
    (tmp_path / "mine" / "sub").mkdir()
    (tmp_path / "mine" / "sub" / "notes.txt").write_text("keep")
    assert main([*argv, str(tmp_path / "mine" / "sub")]) == 130
    assert (tmp_path / "mine" / "sub" / "notes.txt").read_text() == "keep"


def test_an_interrupted_rtl_or_baseline_removes_the_empty_folders_it_made(tmp_path, monkeypatch):
    """archsim rtl and archsim baseline left their (empty) --out folders behind on Ctrl-C, unlike
    run, serve and dse."""
    import baselines.cli
    import rtl.synth
    from archsim.cli import main

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rtl.synth, "write_flow", stop)
    monkeypatch.setattr(baselines.cli, "_measure_with_progress", stop)
    assert main(["rtl", "tiny", "--out", str(tmp_path / "rtl" / "tiny")]) == 130
    assert main(["baseline", "workloads/examples/tiny_gemm.yaml", "--device", "cpu", "--quiet",
                 "--out", str(tmp_path / "b" / "c" / "base.json")]) == 130
    assert list(tmp_path.iterdir()) == []


def _press_here() -> None:
    """Ctrl-C, as the terminal sends it, to this process; its handler runs at once."""
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)  # not reached: the handler raises first


def test_a_press_that_a_library_wraps_in_its_own_error_is_still_an_interrupt(
        tmp_path, monkeypatch, capsys):
    """Ctrl-C during 'archsim report' once ended in a traceback of matplotlib's 'ValueError:
    Invalid bounding box' (or pydantic's SchemaError): the library turned the
    KeyboardInterrupt into its own error. The press is the cause: one line, exit 130."""
    import archsim.api
    from archsim.cli import main

    def wrapping_library(*args, **kwargs):
        try:
            _press_here()
        except KeyboardInterrupt:
            raise ValueError("Invalid bounding box") from None

    monkeypatch.setattr(archsim.api, "simulate", wrapping_library)
    argv = ["run", "workloads/examples/tiny_gemm.yaml", "--quiet", "--out", str(tmp_path / "o")]
    assert main(argv) == 130
    assert capsys.readouterr().err == "archsim: interrupted\n"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back

    def failing_library(*args, **kwargs):
        raise ValueError("Invalid bounding box")

    monkeypatch.setattr(archsim.api, "simulate", failing_library)
    with pytest.raises(ValueError, match="Invalid bounding box"):  # no press: a bug, kept
        main(argv)


def test_a_press_while_the_commands_load_is_an_interrupt(monkeypatch, capsys):
    """Ctrl-C in the first second, while the parser imports the commands, was a traceback."""
    import archsim.cli

    monkeypatch.setattr(archsim.cli, "_parser", _press_here)
    assert archsim.cli.main(["examples"]) == 130
    assert capsys.readouterr().err == "archsim: interrupted\n"


def test_the_console_script_ignores_a_press_once_the_command_has_ended(monkeypatch, capsys):
    """A press after a complete report broke the interpreter's exit instead ('Exception ignored
    in: <function TransformNode.set_children...> KeyboardInterrupt', a traceback after 'wrote
    report.html'): only the exit is left, so it is ignored."""
    from archsim.cli import main

    monkeypatch.setattr(sys, "argv", ["archsim", "examples"])
    try:
        assert main() == 0
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


#: A sitecustomize for the child process: Ctrl-C, as the terminal sends it, the moment the
#: module $PRESS_ON_IMPORT starts to load (a timed press would hit a random module).
_PRESS_ON_IMPORT = '''
import os, signal, sys

class _PressOnImport:
    def find_spec(self, name, path=None, target=None):
        if name == os.environ["PRESS_ON_IMPORT"]:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, _PressOnImport())
'''


def _console_script() -> list[str]:
    """The command pip's console script runs: pyproject's entry point, in its template."""
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    entry = tomllib.loads(pyproject.read_text())["project"]["scripts"]["archsim"]
    module, function = entry.split(":")
    return ["-c", f"import sys; from {module} import {function}; sys.exit({function}())"]


@pytest.mark.parametrize(("command", "module"), [
    ("script", "archsim.cli"), ("script", "workloads.outputs"), ("script", "numpy"),
    ("-m archsim", "archsim.cli"), ("-m archsim", "numpy"), ("-m archsim.cli", "numpy"),
])
def test_a_press_while_the_package_loads_is_an_interrupt(tmp_path, command, module):
    """Ctrl-C in the first 0.4 s of any command, while Python imported archsim (the simulator,
    numpy, pydantic) before archsim.cli.main ran, was Python's KeyboardInterrupt traceback."""
    (tmp_path / "sitecustomize.py").write_text(_PRESS_ON_IMPORT)
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    how = _console_script() if command == "script" else command.split()
    proc = subprocess.run([sys.executable, *how, "examples"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": path, "PRESS_ON_IMPORT": module},
                          timeout=60)
    assert (proc.returncode, proc.stderr) == (130, "archsim: interrupted\n")
    assert proc.stdout == ""


#: As _PRESS_ON_IMPORT, but the press comes inside code run by exec() of a string, as
#: dataclasses and namedtuple build their methods while archsim's modules load.
_PRESS_IN_EXEC = _PRESS_ON_IMPORT.replace(
    "os.kill(os.getpid(), signal.SIGINT)",
    'exec("os.kill(os.getpid(), signal.SIGINT)\\nfor _ in range(10 ** 7): pass")')


@pytest.mark.parametrize("command", ["-m archsim", "-m archsim.cli"])
def test_a_press_inside_exec_while_loading_still_exits_130(tmp_path, command):
    """A KeyboardInterrupt that leaves code exec()'d from a string marks it unhandled for the
    interpreter, which at exit then killed itself with SIGINT (returncode -2) after the one
    line, whatever exit code archsim returned: about one early press in six of 'archsim dse'."""
    (tmp_path / "sitecustomize.py").write_text(_PRESS_IN_EXEC)
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, *command.split(), "examples"], capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": path, "PRESS_ON_IMPORT": "numpy"})
    assert (proc.returncode, proc.stderr) == (130, "archsim: interrupted\n")
