"""Hostile YAML: every construct the loader does not accept is one `file:line: path: message`
SpecError, and sizes are bounded before anything is built (issue 15, part 1)."""

from __future__ import annotations

import re
import resource
import time
from pathlib import Path

import pytest

from archsim.cli import main
from workloads.errors import SpecError
from workloads.load import MAX_DEPTH, MAX_FILE_BYTES, load_hardware, load_workload

HEAD = "version: 1\nname: t\nhardware: tiny\n"
OPS = "operations: [{op: gemm, name: g, m: 8, k: 16, n: 8}]\n"

# The 538-byte "billion laughs" of the issue: nine levels of nine aliases each.
BOMB = HEAD + 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{x}: &{x} [{', '.join([f'*{p}'] * 9)}]\n" for p, x in zip("abcdefgh", "bcdefghi")
)


def error_of(tmp_path: Path, content: str | bytes) -> str:
    """The one-line error of loading ``content`` as a workload file."""
    path = tmp_path / "w.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(SpecError) as info:
        load_workload(path)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_alias_bomb_fails_fast_with_little_memory(tmp_path):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    message = error_of(tmp_path, BOMB)
    assert time.perf_counter() - start < 2
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB
    assert message.startswith(f"{tmp_path / 'w.yaml'}:")
    assert "aliases expand this to more than 100,000 nodes" in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("version: 1\na: &a [1, *a]\n", r"w\.yaml:2: a\[1\]: recursive alias"),
        ("version: 1\na: &a {b: *a}\n", r"w\.yaml:2: a\.b: recursive alias"),
        ("version: 1\na: " + "[" * 200 + "]" * 200 + "\n", r"w\.yaml:2: .*nest"),
        ("version: 1\n" + "".join("  " * i + f"k{i}:\n" for i in range(100)) + "  " * 100 + "x: 1\n",
         rf"w\.yaml:{MAX_DEPTH + 2}: the document is nested deeper than {MAX_DEPTH} levels"),
        # Aliases can nest a document deeper than its text.
        ("version: 1\na: &a " + "[" * 40 + "1" + "]" * 40 + "\nb: " + "[" * 40 + "*a" + "]" * 40 + "\n",
         rf"w\.yaml:2: b(\[0\])+: aliases nest this deeper than {MAX_DEPTH} levels"),
        ("version: 1\n? [1, 2]\n: 3\n", r"w\.yaml:2: <top level>: a list cannot be a key"),
        ("version: 1\nx:\n  {a: 1}: 3\n", r"w\.yaml:3: x: a mapping cannot be a key"),
        ("version: 1\nbase: &b {x: 1}\nhw:\n  <<: *b\n",
         r"w\.yaml:4: hw: merge keys \('<<'\) are not supported"),
        ("version: 1\nname: !foo t\n", r"w\.yaml:2: name: unsupported YAML tag '!foo'"),
        ("version: 1\nname: !!python/object/apply:os.system [echo]\n",
         r"w\.yaml:2: name: unsupported YAML tag '!!python/object/apply:os\.system'"),
        ("version: 1\nname: !!binary aGk=\n", r"w\.yaml:2: name: unsupported YAML tag '!!binary'"),
        ("version: 1\nname: !!int abc\n", r"w\.yaml:2: name: 'abc' is not a valid int"),
        ("version: 1\nname: !!float x\n", r"w\.yaml:2: name: 'x' is not a valid float"),
        ("version: 1\nname: a\x01b\n", r"w\.yaml:2: invalid YAML: character '\\x01'"),
        (b"version: 1\nname: a\x00b\n", r"w\.yaml:2: NUL byte at offset 18"),
        (b"version: 1\n\nname: caf\xe9\n", r"w\.yaml:3: byte 0xe9 is not UTF-8"),
        ("version: 1\na: [" + ",".join(["1"] * 100_001) + "]\n",
         r"w\.yaml:2: the document is more than 100,000 values"),
    ],
    ids=["recursive-list", "recursive-map", "deep-flow", "deep-block", "deep-by-alias",
         "list-key", "map-key", "merge", "unknown-tag", "python-tag", "binary-tag", "bad-int",
         "bad-float", "control-char", "nul", "latin1", "too-many-values"],
)
def test_unaccepted_yaml_is_one_line(tmp_path, content, expected):
    assert re.search(expected, error_of(tmp_path, content))


def test_oversized_file_and_dev_zero(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_FILE_BYTES + "\n")
    with pytest.raises(SpecError, match=r"big\.yaml: larger than 1 MiB"):
        load_workload(big)
    with pytest.raises(SpecError, match=r"/dev/zero: larger than 1 MiB"):
        load_workload("/dev/zero")


def test_utf8_bom_and_utf16_are_read(tmp_path):
    for encoded in ((HEAD + OPS).encode("utf-8-sig"), (HEAD + OPS).encode("utf-16")):
        path = tmp_path / "w.yaml"
        path.write_bytes(encoded)
        assert load_workload(path).name == "t"


def test_dates_stay_text(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(HEAD.replace("name: t", "name: 2024-01-01") + OPS)
    assert load_workload(path).name == "2024-01-01"


def test_nul_in_a_path(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(HEAD.replace("tiny", '"tiny\\0.yaml"') + OPS)
    with pytest.raises(SpecError, match=r"w\.yaml:3: hardware: .*NUL byte"):
        load_workload(path)
    with pytest.raises(SpecError, match=r"^'a\\x00\.yaml': file not found"):
        load_hardware("a\0.yaml")


def test_missing_hardware_argument_is_blamed_on_the_argument(tmp_path, capsys):
    path = tmp_path / "w.yaml"
    path.write_text(HEAD + OPS)
    with pytest.raises(SpecError, match=r"^missing\.yaml: file not found \(expected a hardware "
                                        r"YAML file or a preset name: sat_vcu1525, tiny\)"):
        load_workload(path, hardware="missing.yaml")
    assert main(["run", str(path), "--hardware", "tinny", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith(
        "archsim: error: unknown hardware preset 'tinny'; known presets: sat_vcu1525, tiny; did "
        "you mean 'tiny'?")


def test_set_value_with_an_alias_bomb_stays_text(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(HEAD + OPS)
    bomb = "&a [1,1,1,1,1,1,1,1,1]"  # valid YAML, but an anchor only: kept as the text itself
    with pytest.raises(SpecError, match=r"--set name=&a"):
        load_workload(path, overrides=[f"name={bomb}", "operations.0.m=[*a]"])


def test_cli_exit_code_for_bomb(tmp_path, capsys):
    path = tmp_path / "w.yaml"
    path.write_text(BOMB)
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


# --set into sections the file left out: they apply as if written with their defaults.

TINY_GEMM = Path(__file__).resolve().parents[2] / "workloads" / "examples" / "tiny_gemm.yaml"


@pytest.mark.parametrize("override, read", [
    ("schedule.interleave=false", lambda w: w.schedule.interleave is False),
    ("limits.tile_steps=1000", lambda w: w.limits.tile_steps == 1000),
    ("hardware.energy.mac_pj=2.5", lambda w: w.hardware.energy.mac_pj == 2.5),
    ("hardware.controller.instruction_depth=64",
     lambda w: w.hardware.controller.instruction_depth == 64),
])
def test_set_reaches_a_section_the_file_omitted(override, read):
    # tiny_gemm.yaml and the tiny preset write none of these sections.
    assert "schedule" not in TINY_GEMM.read_text()
    workload = load_workload(TINY_GEMM, overrides=[override])
    assert read(workload)
    untouched = load_workload(TINY_GEMM)
    assert workload.model_copy(update={"schedule": untouched.schedule, "limits": untouched.limits,
                                       "hardware": untouched.hardware}) == untouched


def test_set_reaches_an_omitted_sparsity_from_its_dense_default():
    workload = load_workload(TINY_GEMM, overrides=["sparsity.kind=bdwp", "sparsity.n=1",
                                                   "sparsity.m=4", "operations.0.sparsity.kind=nm",
                                                   "operations.0.sparsity.n=1",
                                                   "operations.0.sparsity.m=2"])
    assert (workload.sparsity.kind, workload.sparsity.n, workload.sparsity.m) == ("bdwp", 1, 4)
    assert (workload.operations[0].sparsity.n, workload.operations[0].sparsity.m) == (1, 2)
    # The dense default has no n: said of the field, at the override.
    with pytest.raises(SpecError, match=r"^--set sparsity\.n=2: sparsity\.n: unknown key"):
        load_workload(TINY_GEMM, overrides=["sparsity.n=2"])


def test_an_omitted_section_s_missing_field_blames_the_override():
    with pytest.raises(SpecError, match=r"^--set serve\.chunk_tokens=4: serve\.prompt_tokens: "
                                        r"required field is missing$"):
        load_workload(TINY_GEMM, overrides=["serve.chunk_tokens=4"])


@pytest.mark.parametrize("override, message", [
    ("schedul.interleave=false", r"--set schedul\.interleave=false: schedul does not exist in "),
    ("hardware.energyy.mac_pj=1", r"--set hardware\.energyy\.mac_pj=1: energyy does not exist "),
    ("hardware.energy.mac_pjj=1", r"--set hardware\.energy\.mac_pjj=1: energy\.mac_pjj: unknown "
                                  r"key; did you mean 'mac_pj'\?"),
    ("acc_bits=8", r"--set acc_bits=8: acc_bits does not exist in .*tiny_gemm\.yaml; did you "
                   r"mean 'hardware\.acc_bits'\?"),
    ("mode=trainig", r"--set mode=trainig: mode: Input should be 'inference' or 'training', got "
                     r"'trainig'; did you mean 'training'\?"),
])
def test_a_bad_override_key_is_still_refused(override, message):
    with pytest.raises(SpecError, match=message):
        load_workload(TINY_GEMM, overrides=[override])


@pytest.mark.parametrize("overrides", [
    ["hardware.data_bits=8", "hardware.acc_bits=8"],
    ["hardware.acc_bits=8", "hardware.data_bits=8"],
])
def test_a_cross_field_check_blames_the_field_it_is_about(overrides):
    # "acc_bits must be at least 2*data_bits": acc_bits, whichever override came first.
    with pytest.raises(SpecError, match=r"^--set hardware\.acc_bits=8: acc_bits: acc_bits must "
                                        r"be at least 2\*data_bits=16"):
        load_workload(TINY_GEMM, overrides=overrides)


def test_a_whole_document_check_points_at_the_field_it_names(tmp_path):
    """A cross-field check pydantic locates at the top level ("array.rows=3 must be a
    multiple of n=2") is reported at the line of the field its message names, not line 2."""
    from workloads.load import PRESET_DIR

    text = (PRESET_DIR / "tiny.yaml").read_text()
    assert "array: {rows: 4, cols: 4}" in text
    path = tmp_path / "hw.yaml"
    path.write_text(text.replace("array: {rows: 4, cols: 4}", "array: {rows: 3, cols: 4}"))
    line = 1 + text.splitlines().index(next(ln for ln in text.splitlines() if ln.startswith("array:")))
    with pytest.raises(SpecError, match=rf"hw\.yaml:{line}: array\.rows: array\.rows=3 must be"):
        load_hardware(path)


_WINDOWED = """\
version: 1
name: a1
hardware: tiny
operations:
  - {op: attention, name: attn, batch: 1, heads: 2, q_len: 64, kv_len: 64, head_dim: 16,
     block_size: 16, pattern: {kind: sliding_window, window: 32}}
"""


def test_an_override_of_a_kind_says_the_old_kinds_fields_stayed(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(_WINDOWED)
    with pytest.raises(SpecError, match=re.escape(
            "operations[0].pattern.window: not a field of kind dense: --set "
            "operations.0.pattern.kind=dense changed the kind and kept the file's other fields; "
            "replace the whole mapping instead: --set 'operations.0.pattern={kind: dense}'")):
        load_workload(path, overrides=["operations.0.pattern.kind=dense"])
    load_workload(path, overrides=["operations.0.pattern={kind: dense}"])


def test_a_union_members_name_stays_out_of_the_field_path(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(_WINDOWED)
    with pytest.raises(SpecError) as err:
        load_workload(path, overrides=["operations.0.pattern.window=0"])
    assert str(err.value).endswith(
        "operations[0].pattern.window: Input should be greater than 0, got 0")


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no named pipes here")
def test_a_named_pipe_is_read_and_one_nobody_writes_to_does_not_hang(tmp_path):
    """open() of a FIFO without a writer blocks for good: `archsim run fifo` hung until killed."""
    import os
    import subprocess
    import sys
    import threading

    fifo = tmp_path / "w.yaml"
    os.mkfifo(fifo)
    code = "import sys; from archsim.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, "run", str(fifo), "--out",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr == (f"archsim: error: {fifo}: cannot read file: a named pipe that "
                           f"nothing was written to in 5 s\n")

    def write() -> None:  # a writer that comes after the reader, within the wait
        time.sleep(0.5)
        with open(fifo, "w") as fh:
            fh.write(HEAD + OPS)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    assert load_workload(fifo).name == "t"
    writer.join(timeout=10)
    with pytest.raises(SpecError, match=r"/dev/zero: larger than 1 MiB"):  # not 'not found'
        load_hardware("/dev/zero")


@pytest.mark.parametrize(("entry", "expected"), [
    ("  - {kind: gemm, name: g, m: 8, k: 16, n: 8}\n",
     r"w\.yaml:5: operations\[0\]\.op: required field is missing \(it says which kind of entry "
     r"this is\); did you mean 'op: gemm' for 'kind: gemm'\?$"),
    ("  - {name: g, m: 8, k: 16, n: 8}\n",
     r"w\.yaml:5: operations\[0\]\.op: required field is missing .*; got name, m, k, n$"),
    ("  - {op: gemm, name: g, m: 8, k: 16, n: 8, sparsity: {pattern: nm, n: 2, m: 4}}\n",
     r"w\.yaml:5: operations\[0\]\.sparsity\.kind: required field is missing .*; "
     r"got pattern, n, m$"),
])
def test_a_mapping_without_its_kind_names_the_key(tmp_path, entry, expected):
    """A mapping that lacks the key saying which kind it is gets that key named (pydantic's
    'Unable to extract tag using discriminator' is not the user's language), and the line
    meant where another key holds a kind."""
    assert re.search(expected, error_of(tmp_path, HEAD + "operations:\n" + entry))
