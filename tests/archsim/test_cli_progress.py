"""Issue 15 part 8: long steps print progress lines where no terminal shows a spinner."""

from __future__ import annotations

import io
import time

from rich.console import Console

from rtl.cli import progress_lines


def test_progress_lines_in_a_log_start_beat_and_end():
    log = io.StringIO()
    console = Console(file=log, force_terminal=False, width=200)
    with progress_lines(console, "synthesizing", detail=lambda: "3/9 done", every_s=0.05):
        time.sleep(0.18)
    lines = log.getvalue().splitlines()
    assert lines[0] == "synthesizing ..."
    assert len(lines) >= 4 and all(line.startswith("  still working (") and
                                   line.endswith(" s; 3/9 done)") for line in lines[1:-1])
    assert lines[-1].startswith("  done in ")


def test_progress_lines_on_a_terminal_print_nothing_to_keep():
    log = io.StringIO()
    console = Console(file=log, force_terminal=True, width=200)
    with progress_lines(console, "synthesizing", every_s=0.05):
        pass
    assert "synthesizing ..." not in log.getvalue()


def test_verify_in_a_log_says_it_is_building_and_counts_programs(monkeypatch, capsys):
    from archsim.cli import main
    from verification.common.scoreboard import ProgramResult
    from verification.session import VerifyReport

    def fake_verify(hw, seeds, build_root, backpressure=0.0, kinds=None, progress=None):
        results = [ProgramResult(seed=s, kind="nm_ff", hardware="tiny", description="",
                                 instructions=1, model_cycles=9, rtl_cycles=9, busy_cycles=9,
                                 timed_instructions=1) for s in seeds]
        for r in results:
            progress([r])
        return VerifyReport(hw, seeds, backpressure, results)

    monkeypatch.setattr("verification.session.verify", fake_verify)
    assert main(["verify", "tiny", "--programs", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "building the RTL and running 2 programs ..."
    assert out[2:5] == ["  1/2 programs done, 0 failed", "  2/2 programs done, 0 failed",
                        "  done in 0 s"]
