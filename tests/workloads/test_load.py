"""The strict loader: every bad input gives one `file:line: field: message` SpecError."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from archsim.cli import main
from workloads.errors import SpecError
from workloads.load import EXAMPLE_DIR, PRESET_DIR, load_hardware, load_workload
from workloads.spec import BDWPSparsity, GemmOp

GOOD = """\
version: 1
name: t
hardware: tiny
operations:
  - op: gemm
    name: g
    m: 8
    k: 16
    n: 8
    sparsity: {kind: nm, n: 2, m: 4}
"""


def write(tmp_path: Path, text: str, name: str = "w.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(path: Path, **kwargs) -> str:
    with pytest.raises(SpecError) as info:
        load_workload(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_good_file_loads(tmp_path):
    w = load_workload(write(tmp_path, GOOD))
    assert w.hardware.name == "tiny"
    op = w.operations[0]
    assert isinstance(op, GemmOp) and (op.sparsity.n, op.sparsity.m) == (2, 4)


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        (GOOD.replace("    k: 16", "    kk: 16"), 8, r"operations\[0\]\.kk: unknown key; did you mean 'k'\?"),
        (GOOD.replace("    n: 8\n", "    n: 8\n    n: 4\n"), 10, r"operations\[0\]\.n: duplicate key 'n' \(first defined on line 9\)"),
        (GOOD.replace("    m: 8", "    m: eight"), 7, r"operations\[0\]\.m: Input should be a valid integer, got 'eight'"),
        (GOOD.replace("{kind: nm, n: 2, m: 4}", "{kind: nm, n: 5, m: 4}"), 10, r"sparsity: n must satisfy 0 < n <= m, got n=5, m=4"),
        (GOOD.replace("{kind: nm, n: 2, m: 4}", "{kind: nm, n: 2, m: 6}"), 10, r"m must be a power of two no larger than 16, got m=6"),
        (GOOD.replace("    k: 16", "    k: 18"), 5, r"operations\[0\]: k=18 is not a multiple of m=4"),
        (GOOD.replace("version: 1", "version: 2"), 1, r"version: Input should be 1, got 2"),
        (GOOD.replace("op: gemm", "op: gemmm"), 5, r"operations\[0\]: Input tag 'gemmm' found using 'op' does not match"),
    ],
    ids=["misspelled", "duplicate", "wrong-type", "n-gt-m", "m-not-pow2", "not-divisible", "version", "bad-op"],
)
def test_bad_field_points_at_its_line(tmp_path, text, line, expected):
    path = write(tmp_path, text)
    message = error_of(path)
    assert message.startswith(f"{path}:{line}: "), message
    assert __import__("re").search(expected, message), message


def test_missing_file(tmp_path):
    assert error_of(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: file not found"


def test_empty_file(tmp_path):
    path = write(tmp_path, "")
    assert "file is empty" in error_of(path)


def test_not_a_mapping(tmp_path):
    path = write(tmp_path, "- 1\n- 2\n")
    assert error_of(path) == f"{path}:1: expected a mapping at the top level, got a list"


def test_invalid_yaml_syntax(tmp_path):
    path = write(tmp_path, "version: 1\nname: [unclosed\n")
    assert error_of(path).startswith(f"{path}:")


def test_error_in_referenced_hardware_file_names_that_file(tmp_path):
    hw = (PRESET_DIR / "tiny.yaml").read_text().replace("cols: 4", "colz: 4")
    write(tmp_path, hw, "hw.yaml")
    path = write(tmp_path, GOOD.replace("hardware: tiny", "hardware: hw.yaml"))
    message = error_of(path)
    assert message.startswith(f"{tmp_path / 'hw.yaml'}:"), message
    assert "array.colz: unknown key; did you mean 'cols'?" in message


def test_hardware_path_is_relative_to_the_workload_file(tmp_path):
    sub = tmp_path / "hw"
    sub.mkdir()
    (sub / "mine.yaml").write_text((PRESET_DIR / "tiny.yaml").read_text().replace("name: tiny", "name: mine"))
    path = write(tmp_path, GOOD.replace("hardware: tiny", "hardware: hw/mine.yaml"))
    assert load_workload(path).hardware.name == "mine"


def test_unknown_preset_lists_the_known_ones(tmp_path):
    path = write(tmp_path, GOOD.replace("hardware: tiny", "hardware: tinny"))
    message = error_of(path)
    assert "unknown hardware preset 'tinny'" in message and "did you mean 'tiny'?" in message


def test_inline_hardware(tmp_path):
    inline = "hardware:\n" + "".join(
        f"  {line}\n" for line in (PRESET_DIR / "tiny.yaml").read_text().splitlines() if line and not line.startswith("#")
    )
    path = write(tmp_path, GOOD.replace("hardware: tiny\n", inline))
    assert load_workload(path).hardware.array.rows == 4


def test_repeated_loads_see_edits_and_never_each_others_overrides(tmp_path):
    """Parsed files and --set values are remembered by their text (a sweep loads one workload
    per design point): an override applied to one load must not reach the next, a structured
    --set value must not be shared, and an edited file is read as it is now."""
    path = write(tmp_path, GOOD)
    pattern = "operations.0.sparsity={kind: nm, n: 1, m: 2}"
    first = load_workload(path, overrides=["hardware.array.rows=8", "operations.0.m=16", pattern])
    assert (first.hardware.array.rows, first.operations[0].m) == (8, 16)
    assert first.operations[0].sparsity.n == 1
    again = load_workload(path)
    assert (again.hardware.array.rows, again.operations[0].m, again.operations[0].sparsity.n) == (4, 8, 2)
    second = load_workload(path, overrides=[pattern, "operations.0.sparsity.m=4"])
    assert second.operations[0].sparsity.m == 4
    assert load_workload(path, overrides=[pattern]).operations[0].sparsity.m == 2
    path.write_text(GOOD.replace("    m: 8", "    m: 24"))
    assert load_workload(path).operations[0].m == 24
    path.write_text(GOOD.replace("    m: 8", "    m: eight"))
    assert "operations[0].m" in error_of(path)


def test_an_override_may_index_a_list_as_errors_print_it(tmp_path):
    """Errors name fields as operations[0].m; --set operations[0].m=... said 'operations[0]
    does not exist' and only operations.0.m worked."""
    from archsim.cli import default_out_dir

    path = write(tmp_path, GOOD)
    w = load_workload(path, overrides=["operations[0].m=32", "hardware.array.rows=8"])
    assert w.operations[0].m == 32 and w.hardware.array.rows == 8
    message = error_of(path, overrides=["operations[0].m=-1"])
    assert message.startswith("--set operations[0].m=-1: operations[0].m: Input should be greater")
    assert "operations[7] does not exist" in error_of(path, overrides=["operations[7].m=1"])
    assert default_out_dir("w", ["operations[0].m=32"]) == default_out_dir("w", ["operations.0.m=32"])


def test_a_mapping_check_blames_the_override_of_the_field_it_names(tmp_path):
    """--set operations.0.sparsity.n=5 pointed at the file's sparsity line, which the user did
    not change; the file's own fields still point at their lines."""
    path = write(tmp_path, GOOD)
    assert error_of(path, overrides=["operations.0.sparsity.n=5"]).startswith(
        "--set operations.0.sparsity.n=5: operations[0].sparsity: n must satisfy 0 < n <= m")
    assert error_of(path, overrides=["operations.0.sparsity.m=0"]).startswith(
        "--set operations.0.sparsity.m=0: operations[0].sparsity: n must satisfy")
    bad = write(tmp_path, GOOD.replace("n: 2, m: 4", "n: 5, m: 4"), "bad.yaml")
    assert re.match(rf"{re.escape(str(bad))}:\d+: operations\[0\]\.sparsity: n must satisfy",
                    error_of(bad, overrides=["operations.0.name=x"]))


def test_an_override_is_blamed_under_a_mapping_and_over_stale_file_lines(tmp_path):
    """--set operations.0.a.params.n=0 pointed at the file's line of 'a' (the check names 'n',
    not 'params.n'), and --set operations.0.dataflows=[foo] at the file's old dataflows[0]."""
    path = write(tmp_path, """\
        version: 1
        name: s
        hardware: tiny
        operations:
          - op: spgemm
            name: r
            a: {source: rmat, params: {n: 64, nnz: 300}, seed: 1}
            dataflows: [gustavson, hash]
        """)
    assert error_of(path, overrides=["operations.0.a.params.n=0"]).startswith(
        "--set operations.0.a.params.n=0: operations[0].a: rmat: expected n >= 1, got 0")
    assert error_of(path, overrides=["operations.0.dataflows=[foo]"]).startswith(
        "--set operations.0.dataflows=[foo]: operations[0].dataflows[0]: Input should be")
    assert error_of(path, overrides=["operations.0.dataflows.1=foo"]).startswith(
        "--set operations.0.dataflows.1=foo: operations[0].dataflows[1]: Input should be")
    assert error_of(path, overrides=["operations.0.a.params.nnz=-1", "operations.0.a.seed=2"]
                    ).startswith("--set operations.0.a.params.nnz=-1: operations[0].a:")


def test_overrides_apply_and_report_themselves(tmp_path):
    path = write(tmp_path, GOOD)
    w = load_workload(path, overrides=["hardware.array.rows=8", "operations.0.m=32"])
    assert w.hardware.array.rows == 8 and w.operations[0].m == 32
    message = error_of(path, overrides=["operations.0.m=-1"])
    assert message.startswith("--set operations.0.m=-1: operations[0].m: Input should be greater than 0")
    assert "does not exist" in error_of(path, overrides=["hardware.arra.rows=8"])



def test_a_whole_document_check_names_the_override_it_blames(tmp_path):
    """A cross-field check (pydantic locates it at the top level) whose message names an
    overridden field points at the --set, not at the preset file the user did not edit."""
    path = write(tmp_path, GOOD)
    message = error_of(path, overrides=["hardware.array.rows=3"])
    assert message.startswith("--set hardware.array.rows=3: array.rows: array.rows=3 must be")
    message = error_of(path, overrides=["hardware.acc_bits=8"])
    assert message.startswith("--set hardware.acc_bits=8: acc_bits: acc_bits must be at least")

def test_workload_default_sparsity_is_checked_at_the_op(tmp_path):
    # BDWP prunes W along `in` (k=16, fine) and along `out` (n=12, not a multiple of 8): the
    # error names the op's line although the sparsity was written at the top of the file.
    text = GOOD.replace("    sparsity: {kind: nm, n: 2, m: 4}\n", "").replace("    n: 8", "    n: 12").replace(
        "hardware: tiny\n", "hardware: tiny\nsparsity: {kind: bdwp, n: 2, m: 8}\n"
    )
    path = write(tmp_path, text)
    assert error_of(path) == f"{path}:6: operations[0]: n=12 is not a multiple of m=8 (N:M groups along 'out'); pad the layer or choose another M"


def test_bdwp_default_applies_to_explicit_ops(tmp_path):
    text = GOOD.replace("    sparsity: {kind: nm, n: 2, m: 4}\n", "").replace(
        "hardware: tiny\n", "hardware: tiny\nsparsity: {kind: bdwp, n: 2, m: 4}\n"
    )
    w = load_workload(write(tmp_path, text))
    assert isinstance(w.operations[0].sparsity, BDWPSparsity)


def test_hardware_invariants():
    with pytest.raises(SpecError, match=r"acc_bits must be at least 2\*data_bits=32"):
        load_hardware("sat_vcu1525", overrides=["acc_bits=24"])
    with pytest.raises(SpecError, match=r"array.rows=6 must be a multiple of n=4"):
        load_hardware("sat_vcu1525", overrides=["array.rows=6"])


def test_cli_turns_errors_into_one_line_and_exit_2(tmp_path, capsys):
    path = write(tmp_path, GOOD.replace("    k: 16", "    kk: 16"))
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"archsim: error: {path}:8: ")
    assert not (tmp_path / "o").exists()


# sweep_*.yaml are DSE sweep specs (reports/), tested with the sweep loader.
@pytest.mark.parametrize(
    "example", sorted(p.name for p in EXAMPLE_DIR.glob("*.yaml") if not p.name.startswith("sweep_"))
)
def test_shipped_examples_load(example):
    load_workload(EXAMPLE_DIR / example)


def test_did_you_mean_uses_the_member_the_data_names(tmp_path):
    # 'dimm' is closest to NMSparsity's 'dim'; a BDWP entry has no 'dim', so no such suggestion.
    path = write(tmp_path, GOOD.replace("{kind: nm, n: 2, m: 4}", "{kind: bdwp, n: 2, m: 4, dimm: in}"))
    message = error_of(path)
    assert "sparsity.dimm: unknown key" in message and "'dim'" not in message
    assert "bp_mask_source" in message


def test_hardware_reference_errors_name_the_workload_line(tmp_path):
    path = write(tmp_path, GOOD.replace("hardware: tiny", "hardware: tinyy"))
    assert error_of(path).startswith(f"{path}:3: hardware: unknown hardware preset 'tinyy'")
    path = write(tmp_path, GOOD.replace("hardware: tiny", "hardware: nothere.yaml"))
    assert error_of(path) == f"{path}:3: hardware: {tmp_path / 'nothere.yaml'}: file not found"
    path = write(tmp_path, GOOD.replace("hardware: tiny", "hardwar: tiny"))
    assert error_of(path) == f"{path}:3: hardwar: unknown key; did you mean 'hardware'?"


def test_a_hardware_file_is_not_a_workload():
    message = error_of(PRESET_DIR / "tiny.yaml")
    assert "this is a hardware file, not a workload" in message


def test_a_spec_hashes_as_its_fields_do_and_remembers_nothing_stale():
    """Spec hashes are remembered per object (the scheduler's memos look them up constantly):
    equal specs hash alike, a copy with a field changed hashes anew, and the value is the
    hash of the field values, as pydantic's own."""
    from workloads.load import load_hardware

    hw = load_hardware("tiny")
    copy = hw.model_copy()
    slower = hw.model_copy(update={"dram": hw.dram.model_copy(update={"latency_cycles": 77})})
    assert hash(hw) == hash(copy) == hash(tuple(hw.__dict__[f] for f in type(hw).model_fields))
    assert hash(slower) != hash(hw) and {hw: 1}.get(slower) is None and {hw: 1}[copy] == 1
    for _ in range(3000):  # past the memo's bound: hashes stay right after it is cleared
        assert hash(hw.model_copy(update={"clock_mhz": 123.0})) == hash(
            hw.model_copy(update={"clock_mhz": 123.0}))
    assert hash(hw) == hash(copy)


def test_setting_the_whole_hardware_says_to_use_the_hardware_option():
    from workloads.errors import SpecError

    for value in ("sat_vcu1525", "tiny", "{}"):
        with pytest.raises(SpecError, match=r"^--set hardware=.*: the hardware as a whole is "
                                            r"chosen with --hardware .*hardware\.array\.rows=8$"):
            load_workload(EXAMPLE_DIR / "tiny_gemm.yaml", overrides=[f"hardware={value}"])


def test_a_workload_or_sweep_given_as_hardware_says_so(tmp_path, capsys):
    """archsim rtl W.yaml (or example:NAME of a workload) listed every key of the workload as
    'unknown key; expected one of: acc_bits, array, ...', and the example as an unknown preset."""
    path = write(tmp_path, GOOD)
    with pytest.raises(SpecError, match=rf"^{re.escape(str(path))}:1: this is a workload, not a "
                                        rf"hardware file; give the hardware instead \(its "
                                        rf"hardware: tiny\)$"):
        load_hardware(path)
    with pytest.raises(SpecError, match=r"this is a workload, not a hardware file"):
        load_workload(path, hardware=path)
    inline = write(tmp_path, GOOD.replace("hardware: tiny", "hardware: {name: x}"), "i.yaml")
    with pytest.raises(SpecError, match=r"copy its inline 'hardware:' into a file of its own"):
        load_hardware(inline)
    assert main(["rtl", "example:sweep_tiny", "--out", str(tmp_path / "r")]) == 2
    assert "this is a DSE sweep file, not a hardware file" in capsys.readouterr().err
    assert main(["rtl", "example:tiny_gemm", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.endswith("tiny_gemm.yaml:1: this is a workload, not a hardware file; give the "
                        "hardware instead (its hardware: tiny)\n") and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
    assert main(["run", "example:tiny_gemm", "--hardware", "example:tiny_gemm", "--out",
                 str(tmp_path / "r")]) == 2
    assert "this is a workload, not a hardware file" in capsys.readouterr().err


def test_a_number_in_exponent_form_is_a_number(tmp_path):
    """PyYAML's YAML 1.1 rules read 2e2 as text (only 2.0e2 is a float): 'clock_mhz: Input
    should be a valid number, got '2e2''. Plain 2e2 is a number, as in YAML 1.2; quoted, text."""
    hw = (PRESET_DIR / "tiny.yaml").read_text()
    path = write(tmp_path, re.sub(r"clock_mhz: [0-9.]+", "clock_mhz: 25e1", hw), "hw.yaml")
    assert load_hardware(path).clock_mhz == 250.0
    assert load_hardware("tiny", overrides=["clock_mhz=2E2"]).clock_mhz == 200.0
    assert load_hardware("tiny", overrides=["clock_mhz=.25e+3"]).clock_mhz == 250.0
    with pytest.raises(SpecError, match="valid number, got '2e2'"):
        load_hardware("tiny", overrides=['clock_mhz="2e2"'])
    quoted = load_workload(write(tmp_path, GOOD.replace("name: t\n", 'name: "1e3"\n')))
    assert quoted.name == "1e3"
