"""Issue 15 part 7: Ctrl-C stops `archsim run` at once: one line, exit 130, no half-written file."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time


def _press(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it may be gone already
        os.killpg(pgid, signal.SIGINT)


def test_ctrl_c_stops_run_within_2_s(tmp_path):
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "archsim.cli", "run", "workloads/examples/resnet18_bdwp.yaml",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not out.is_dir():  # made before simulating (a bad --out fails first)
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.3)
        assert proc.poll() is None, "finished before the press; use a longer workload"
        pressed = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        threading.Timer(0.1, _press, (proc.pid,)).start()  # a second press
        err = proc.communicate(timeout=10)[1]
        took = time.monotonic() - pressed
    finally:
        proc.poll() is None and os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130 and took < 2, (took, err)
    assert err == "archsim: interrupted\n"
    assert not (out / "results.json").exists()
