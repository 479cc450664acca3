"""Issue 15 part 8: did-you-mean on the command line, the right install hint, shipped examples."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import archsim.cli as cli
from archsim.cli import main
from workloads.arguments import EXAMPLES_DIR, ExampleError, description, examples, resolve

ROOT = Path(cli.__file__).resolve().parents[1]


@pytest.mark.parametrize("argv, hint", [
    (["rnu", "x.yaml"], "invalid choice: 'rnu' .*; did you mean 'run'\\?"),
    (["dse", "s.yaml", "--wokers", "2"], "unrecognized arguments: --wokers 2; did you mean "
                                         "'--workers'\\?"),
    (["run", "w.yaml", "--set=a=1", "--quite"], "unrecognized arguments: --quite; did you mean "
                                                "'--quiet'\\?"),
    (["report", "r.db", "--titel", "T"], "unrecognized arguments: --titel T; did you mean "
                                         "'--title'\\?"),
])
def test_unknown_flags_and_commands_get_did_you_mean(argv, hint, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines  # one line, like every refusal: no usage block above it
    assert lines[0].startswith("archsim") and re.search(hint, lines[0]), lines
    command = "archsim" if argv[0] == "rnu" else f"archsim {argv[0]}"
    assert lines[0].startswith(f"{command}: error: ")
    assert lines[0].endswith(f"(see '{command} --help')")


def test_install_hint_from_a_checkout_and_from_an_install(monkeypatch, tmp_path):
    from workloads import version

    monkeypatch.chdir(ROOT)
    assert version.install_hint("rtl") == "pip install -e '.[rtl]'"
    monkeypatch.chdir(tmp_path)
    assert version.install_hint("rtl") == f"pip install -e '{ROOT}[rtl]'"
    # Installed from a wheel, the package sits in site-packages with no pyproject.toml beside it.
    fake = tmp_path / "site-packages" / "workloads" / "version.py"
    fake.parent.mkdir(parents=True)
    monkeypatch.setattr(version, "__file__", str(fake))
    assert version.install_hint("dist") == "pip install 'archsim[dist]'"


def test_examples_lists_every_shipped_file_with_a_description(capsys):
    assert main(["examples"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = sorted(p.stem for p in EXAMPLES_DIR.glob("*.yaml"))
    assert [line.split()[0] for line in lines[:-1]] == names
    assert "resnet18_bdwp" in names and "sweep_tiny" in names
    assert all(len(line.split(None, 1)) == 2 for line in lines[:-1])  # a description each
    assert lines[-1].startswith("run one: archsim run example:tiny_gemm")
    assert description(examples()["tiny_gemm"]) == ("Three GEMMs on the tiny accelerator: dense, "
                                                    "2:4 along the reduction dim, and 2:8.")


def test_run_and_dse_take_an_example_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nowhere near the checkout
    assert main(["run", "example:tiny_gemm", "--quiet", "--out", "o"]) == 0
    assert json.loads((tmp_path / "o" / "results.json").read_text())["summary"]["total_cycles"] \
        == 735
    assert resolve("example:sweep_tiny.yaml") == str(EXAMPLES_DIR / "sweep_tiny.yaml")
    assert resolve("my.yaml") == "my.yaml"


def test_unknown_example_is_one_line_with_did_you_mean(capsys):
    with pytest.raises(ExampleError, match=r"example:resnet18: no shipped example of that name; "
                                           r"did you mean example:resnet18_bdwp\? 'archsim "
                                           r"examples' lists them"):
        resolve("example:resnet18")
    with pytest.raises(SystemExit) as stop:
        main(["dse", "example:sweep_tyni"])
    assert stop.value.code == 2
    assert "did you mean example:sweep_tiny?" in capsys.readouterr().err


def test_unknown_verify_kind_gets_did_you_mean(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["verify", "tiny", "--kinds", "dense,nmff"])
    assert stop.value.code == 2
    assert "unknown kind(s) nmff; did you mean nm_ff?; known: dense" in capsys.readouterr().err


def test_a_buffer_the_scheduler_refuses_points_at_its_line_or_set(tmp_path, capsys):
    """'enlarge buffers.weight_bytes' named only the GEMM ('dense: a weight tile ...'): no file,
    line or --set, unlike every loader error."""
    tiny = (ROOT / "workloads" / "hardware" / "tiny.yaml").read_text()
    small = re.sub(r"weight_bytes: \d+", "weight_bytes: 4", tiny)
    (tmp_path / "hw.yaml").write_text(small)
    line = next(i for i, text in enumerate(small.splitlines(), 1) if "weight_bytes: 4" in text)
    inline = tmp_path / "w.yaml"
    inline.write_text("version: 1\nname: w\nhardware:\n" + "".join(
        f"  {text}\n" for text in small.splitlines() if text and not text.startswith("#"))
        + "operations: [{op: gemm, name: g, m: 16, k: 16, n: 8}]\n")
    inline_line = next(i for i, text in enumerate(inline.read_text().splitlines(), 1)
                       if "weight_bytes: 4" in text)
    gemm = str(EXAMPLES_DIR / "tiny_gemm.yaml")
    for argv, where in [
        (["serve", "example:serve_decoder", "--set", "hardware.buffers.weight_bytes=2"],
         "--set hardware.buffers.weight_bytes=2"),
        (["run", gemm, "--set", "hardware.buffers.weight_bytes=1", "--set",
          "hardware.buffers.weight_bytes=2"], "--set hardware.buffers.weight_bytes=2"),
        (["run", gemm, "--hardware", str(tmp_path / "hw.yaml")], f"{tmp_path}/hw.yaml:{line}"),
        (["run", str(inline)], f"{inline}:{inline_line}"),
    ]:
        assert main([*argv, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"archsim: error: {where}: buffers.weight_bytes: "), err
        assert "enlarge buffers.weight_bytes" in err and err.count("\n") == 1


@pytest.mark.parametrize("field, value, names", [
    ("input_bytes", 8, "an input row of"),
    ("accumulator_bytes", 16, "an accumulator row of"),
])
def test_an_input_or_accumulator_buffer_too_small_is_named(tmp_path, capsys, field, value, names):
    """'... does not fit half of the buffers (input 8 B, accumulator 64 B); enlarge them' named
    no field, so the CLI could not point at the line or --set that made it too small."""
    gemm = str(EXAMPLES_DIR / "tiny_gemm.yaml")
    setting = f"hardware.buffers.{field}={value}"
    assert main(["run", gemm, "--set", setting, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"archsim: error: --set {setting}: buffers.{field}: "), err
    assert names in err and f"enlarge buffers.{field} to at least" in err
    assert err.count("\n") == 1
