"""``archsim verify``: its report, exit codes, replay lines and one-line errors."""

from __future__ import annotations

import pytest

from archsim.cli import main
from verification.common.scoreboard import ProgramResult
from verification.session import VerifyReport
from workloads.load import load_hardware


def _result(seed: int, **kw) -> ProgramResult:
    base = dict(seed=seed, kind="nm_ff", hardware="tiny", description=f"case {seed}",
                instructions=10, model_cycles=200, rtl_cycles=200, busy_cycles=200,
                timed_instructions=10)
    return ProgramResult(**{**base, **kw})


def _fake_verify(results):
    def verify(hw, seeds, build_root, backpressure=0.0, kinds=None, progress=None):
        report = VerifyReport(hw, seeds, backpressure, results[:len(seeds)])
        if progress:
            progress(report.results)
        return report
    return verify


def test_failures_exit_1_with_replay_lines(monkeypatch, capsys):
    results = [_result(5), _result(6, rtl_cycles=203, busy_cycles=203),
               _result(7, value_mismatches=2, value_examples=["fc.C[0, 1]: expected 3, got 4"])]
    monkeypatch.setattr("verification.session.verify", _fake_verify(results))
    code = main(["verify", "tiny", "--programs", "3", "--seed", "5", "--set", "array.rows=8"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL seed 6 nm_ff: RTL took 203 cycles; archsim predicts 200 (tolerance 0)" in out
    assert "replay: archsim verify tiny --seed 6 --programs 1 --set array.rows=8" in out
    assert "fc.C[0, 1]: expected 3, got 4" in out
    assert "programs run: 3 (nm_ff 3)" in out
    assert "value mismatches: 1 program(s)" in out
    assert "max |cycle difference|: 3" in out
    assert "failed programs: 2 (seeds 6, 7)" in out
    assert "replay this run: archsim verify tiny --seed 5 --programs 3 --set array.rows=8" in out
    assert out.rstrip().endswith("result: FAIL")


def test_pass_exits_0(monkeypatch, capsys):
    monkeypatch.setattr("verification.session.verify", _fake_verify([_result(0), _result(1)]))
    assert main(["verify", "tiny", "--programs", "2"]) == 0
    out = capsys.readouterr().out
    assert "max |cycle difference|: 0" in out and out.rstrip().endswith("result: PASS")
    assert "FAIL" not in out


def test_backpressure_says_values_only(monkeypatch, capsys):
    results = [_result(0, backpressure=True, rtl_cycles=260, busy_cycles=260)]
    monkeypatch.setattr("verification.session.verify", _fake_verify(results))
    assert main(["verify", "tiny", "--programs", "1", "--backpressure"]) == 0
    out = capsys.readouterr().out
    assert "random backpressure p=0.3: cycle counts are not compared, values only" in out
    assert "max |cycle difference|: not compared (random backpressure)" in out


def test_bad_hardware_is_one_line_exit_2(capsys):
    assert main(["verify", "no_such_preset"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("archsim: error: unknown hardware preset 'no_such_preset'")
    assert "\n" not in err


def test_bad_override_is_one_line_exit_2(capsys):
    assert main(["verify", "tiny", "--set", "array.rows=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "array.rows" in err and "\n" not in err


@pytest.mark.parametrize("argv, message", [
    (["--kinds", "sparse"], "unknown kind(s) sparse"),
    (["--programs", "0"], "expected a whole number >= 1, got 0"),
    (["--backpressure", "1.5"], "expected a probability in (0, 1)"),
])
def test_bad_options_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["verify", "tiny", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_rtl_is_a_verification_error(monkeypatch, tmp_path, capsys):
    import builtins

    real_import = builtins.__import__

    def no_rtl(name, *args, **kwargs):
        if name == "rtl.build":
            raise ImportError("No module named 'rtl.build'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_rtl)
    assert main(["verify", "tiny", "--build-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "the RTL is not available" in err and "write_verilog(hw, out_dir)" in err


def test_report_counts(tmp_path):
    hw = load_hardware("tiny")
    report = VerifyReport(hw, [1, 2], 0.0, [_result(1), _result(2, rtl_cycles=195)])
    assert report.max_cycle_diff == 5 and not report.ok and report.value_mismatches == 0
    assert [r.seed for r in report.failures] == [2]


def test_a_named_kind_no_program_was_fails_and_says_so(monkeypatch, capsys):
    """--kinds dense,grouped with 2 programs both drawn as dense printed PASS with no word that
    no grouped program ran (new-user trial)."""
    results = [_result(0, kind="dense"), _result(1, kind="dense")]
    monkeypatch.setattr("verification.session.verify", _fake_verify(results))
    assert main(["verify", "tiny", "--programs", "2", "--kinds", "dense,grouped"]) == 1
    out = capsys.readouterr().out
    assert ("requested kind grouped: 0 of 2 programs ran (each seed draws one of dense, grouped "
            "by weight; run more --programs, or name grouped alone)") in out
    assert "requested kind dense" not in out and out.rstrip().endswith("result: FAIL")


def test_pregen_on_hardware_without_patterns_says_why_none_ran(monkeypatch, capsys):
    monkeypatch.setattr("verification.session.verify", _fake_verify([_result(0)]))
    argv = ["verify", "tiny", "--programs", "1", "--kinds", "pregen", "--set", "nm_patterns=[]"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "requested kind pregen: 0 of 1 programs ran (tiny has no nm_patterns" in out


def test_every_named_kind_ran_passes(monkeypatch, capsys):
    results = [_result(0, kind="dense"), _result(1, kind="grouped")]
    monkeypatch.setattr("verification.session.verify", _fake_verify(results))
    assert main(["verify", "tiny", "--programs", "2", "--kinds", "dense,grouped"]) == 0
    out = capsys.readouterr().out
    assert "requested kind" not in out and out.rstrip().endswith("result: PASS")
