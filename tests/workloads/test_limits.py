"""Sizes, values, names and N:M patterns checked before work starts (issue 15, parts 2-4 and 6)."""

from __future__ import annotations

import json
import math
import os

import pytest

from archsim import size
from archsim.cli import _finite, default_out_dir, main
from workloads.errors import SpecError
from workloads.load import EXAMPLE_DIR, PRESET_DIR, load_workload

TINY_GEMM = str(EXAMPLE_DIR / "tiny_gemm.yaml")


def run(tmp_path, *args: str) -> int:
    return main(["run", TINY_GEMM, "--out", str(tmp_path / "o"), "--quiet", *args])


def test_a_huge_gemm_is_refused_before_scheduling(tmp_path, capsys):
    assert run(tmp_path, "--set", "operations.0.m=1000000000") == 2
    err = capsys.readouterr().err
    # Refused from the shapes alone (a lower bound: no tiling searched), so it says "at least".
    # It points at the --set that grew the operation (it named only the workload file).
    assert err == ("archsim: error: --set operations.0.m=1000000000: operations[0]: the tile "
                   "programs would have at least "
                   "62,500,002 tile steps (dense: at least 62,500,000), above limits.tile_steps "
                   "= 500,000 (at least 52 min and 59 GiB); shrink the workload or raise "
                   "'limits: {tile_steps: ...}' in it\n")
    assert not (tmp_path / "o").exists()
    huge = tmp_path / "huge.yaml"  # from the file: at the operation's line
    huge.write_text("version: 1\nname: h\nhardware: tiny\noperations:\n"
                    "  - {op: gemm, name: small, m: 16, k: 16, n: 8}\n"
                    "  - {op: gemm, name: big, m: 1000000000, k: 16, n: 8}\n")
    assert main(["run", str(huge), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert capsys.readouterr().err.startswith(
        f"archsim: error: {huge}:6: operations[1]: the tile programs would have at least ")


def test_a_huge_batch_is_refused_without_searching_tilings(monkeypatch):
    """ResNet-18 training at batch 100,000: the tiling search alone took minutes (its
    estimates walk every m-tile of a convolution); the shapes refuse it at once."""
    from dataflows import scheduler

    def no_search(*args):
        raise AssertionError("the size check searched a tiling")

    monkeypatch.setattr(scheduler, "tiling_for", no_search)
    huge = load_workload(EXAMPLE_DIR / "resnet18_bdwp.yaml", overrides=["operations.0.batch=100000"])
    with pytest.raises(SpecError, match=r"at least [\d,]+ tile steps \(resnet18\.\S+: at least"):
        size.check_size(huge, "w")


@pytest.mark.parametrize("example", ["resnet18_bdwp.yaml", "tiny_cnn_bdwp.yaml",
                                     "bert_inference_nm.yaml", "attention_model.yaml"])
def test_the_shapes_bound_never_exceeds_the_steps_built(example):
    workload = load_workload(EXAMPLE_DIR / example)
    least, counted = size.least_size(workload), size.program_size(workload)
    assert 0 < least.steps <= counted.steps


def test_tile_steps_limit_is_raised_by_the_workload(tmp_path):
    big = load_workload(TINY_GEMM, overrides=["operations.0.m=1000000000",
                                              "limits={tile_steps: 100000000}"])
    assert size.check_size(big, "w").steps == 62_500_008  # counted, not built
    assert size.check_size(big, "w").exact
    small = load_workload(TINY_GEMM, overrides=["limits={tile_steps: 10}"])
    with pytest.raises(SpecError, match=r"16 tile steps .* above limits\.tile_steps = 10"):
        size.check_size(small, "w")


def test_a_large_run_says_so_up_front(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(size, "NOTICE_STEPS", 10)
    assert main(["run", TINY_GEMM, "--out", str(tmp_path / "o")]) == 0
    assert capsys.readouterr().err.startswith("archsim: large workload: 16 tile steps, about 0 s\n")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("clock_mhz: .inf", r"clock_mhz: Input should be a finite number, got inf"),
        ("clock_mhz: .nan", r"clock_mhz: Input should be a finite number, got nan"),
        ("energy: {mac_pj: .nan}", r"energy\.mac_pj: Input should be a finite number, got nan"),
        ("energy: {dram_read_pj_per_byte: .inf}",
         r"energy\.dram_read_pj_per_byte: Input should be a finite number, got inf"),
        ("energy: {mac_pj: -1.0}",
         r"energy\.mac_pj: Input should be greater than or equal to 0, got -1\.0"),
        ("array: {rows: 4, cols: 18446744073709551616}",
         r"array\.cols: Input should be less than or equal to 4096, got 18446744073709551616"),
        ("buffers: {weight_bytes: 1024, input_bytes: 1208925819614629174706176, "
         "accumulator_bytes: 4096}",
         r"buffers\.input_bytes: Input should be less than or equal to 1099511627776"),
    ],
)
def test_meaningless_values_fail_at_the_loader_with_file_and_line(tmp_path, line, expected):
    key = line.split(":")[0]
    lines = [ln for ln in (PRESET_DIR / "tiny.yaml").read_text().splitlines()
             if not ln.startswith(f"{key}:")]
    hw = tmp_path / "hw.yaml"
    hw.write_text("\n".join([*lines, line]) + "\n")
    with pytest.raises(SpecError, match=rf"hw\.yaml:{len(lines) + 1}: {expected}"):
        load_workload(TINY_GEMM, hardware=str(hw))


def test_results_json_is_always_valid_json(tmp_path, capsys):
    doc = {"a": [1.0, math.inf], "b": {"c": math.nan}}
    assert _finite(doc, "results") == {"a": [1.0, None], "b": {"c": None}}
    assert capsys.readouterr().err == ("archsim: warning: results.a[1] is inf; written as null\n"
                                       "archsim: warning: results.b.c is nan; written as null\n")
    assert run(tmp_path) == 0
    json.loads((tmp_path / "o" / "results.json").read_text(),
               parse_constant=lambda c: pytest.fail(f"{c} in results.json"))


# --------------------------------------------------------------------------------------------
# Output paths
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../../X", "/abs", "a/b", "..", ".hidden", "a\\b", "a\x00b"])
def test_names_that_would_leave_out_are_refused(name):
    with pytest.raises(SpecError, match=r"name: .* cannot name an output folder \(out/<name>\)"):
        load_workload(TINY_GEMM, overrides=[f"name={json.dumps(name)}"])
    with pytest.raises(SpecError, match=r"name: .* cannot name an output folder"):
        load_workload(TINY_GEMM, overrides=[f"hardware.name={json.dumps(name)}"])


def test_default_out_dir_stays_one_level_inside_out():
    assert default_out_dir("tiny-gemm") == default_out_dir("tiny-gemm").parent / "tiny-gemm"
    for name in ("../../../X", "/abs/x", "a/../../b", "..", "", "\x00"):
        out = default_out_dir(name)
        assert out.parent.name == "out" and ".." not in out.parts and not out.is_absolute()


@pytest.mark.parametrize(
    "command",
    [["run", TINY_GEMM], ["dse", str(EXAMPLE_DIR / "sweep_tiny.yaml")], ["report", "x.json"],
     ["rtl", "tiny"]],
    ids=["run", "dse", "report", "rtl"],
)
def test_every_command_checks_out_before_working(tmp_path, capsys, command):
    blocker = tmp_path / "file"
    blocker.write_text("user data")
    assert main([*command, "--out", str(blocker)]) == 2
    assert capsys.readouterr().err == f"archsim: error: --out {blocker}: is a file; expected a folder\n"
    assert main([*command, "--out", str(blocker / "sub")]) == 2
    assert capsys.readouterr().err == (f"archsim: error: --out {blocker / 'sub'}: is inside "
                                       f"{blocker}, a file; expected a folder\n")
    assert blocker.read_text() == "user data"


@pytest.mark.parametrize("command", [["run", TINY_GEMM], ["rtl", "tiny"],
                                     ["baseline", TINY_GEMM, "--device", "cpu"]],
                         ids=["run", "rtl", "baseline"])
def test_an_out_with_a_nul_byte_is_one_line(tmp_path, capsys, monkeypatch, command):
    """Path.exists() answers False to a NUL byte, so the check passed it and the command's mkdir
    (baseline's write test) raised 'ValueError: embedded null byte'; archsim import refused it
    with a check of its own."""
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--out", "a\0b"]) == 2
    assert capsys.readouterr().err == ("archsim: error: --out 'a\\x00b': not a usable path "
                                       "(it holds a NUL byte, which no file name can)\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command, default", [
    (["run", TINY_GEMM], "out/tiny-gemm"),
    (["serve", "example:serve_decoder"], "out/serve-decoder"),
    (["rtl", "tiny"], "out/rtl/tiny"),
], ids=["run", "serve", "rtl"])
def test_a_blocked_default_folder_is_named_as_the_default(tmp_path, capsys, monkeypatch,
                                                           command, default):
    """No --out was given, so the error must not name one: it names the default folder and
    says how to choose another (it read '--out out/tiny-gemm: ...'; rtl gave a traceback)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").write_text("user data")
    assert main(command) == 2
    assert capsys.readouterr().err == (
        f"archsim: error: {default} (the default output folder; choose another with --out): "
        f"is inside out, a file; expected a folder\n")
    assert (tmp_path / "out").read_text() == "user data"


def test_read_only_out(tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() == 0:  # root writes anywhere; make the folder read-only for the check
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: real(p, mode) and str(p) != str(locked))
    for command in (["dse", str(EXAMPLE_DIR / "sweep_tiny.yaml")], ["run", TINY_GEMM]):
        assert main([*command, "--out", str(locked / "o")]) == 2
        assert capsys.readouterr().err == (f"archsim: error: --out {locked / 'o'}: cannot write "
                                           f"there ({locked} is read-only)\n")


# --------------------------------------------------------------------------------------------
# N:M patterns the hardware does not list
# --------------------------------------------------------------------------------------------


def test_unsupported_pattern_is_a_spec_error_listing_the_supported_ones():
    with pytest.raises(SpecError, match=r"tiny_gemm\.yaml:9: operations\[2\]\.sparsity: N:M 3:8 "
                                        r"\(operation 'nm28'\) is not among hardware 'tiny''s "
                                        r"nm_patterns \(1:2, 2:4, 1:4, 2:8\); choose a supported "
                                        r"one, add it to nm_patterns, or set 'unsupported_nm: "
                                        r"masked_dense'"):
        load_workload(TINY_GEMM, overrides=["operations.2.sparsity.n=3"])


def test_workload_default_sparsity_is_blamed_on_its_line():
    with pytest.raises(SpecError, match=r"resnet18_bdwp\.yaml:6: sparsity: N:M 2:8 \(operation "
                                        r"'model'\) is not among hardware 'tiny''s"):
        load_workload(EXAMPLE_DIR / "resnet18_bdwp.yaml", hardware="tiny",
                      overrides=["hardware.nm_patterns=[]"])


def test_masked_dense_opt_in_runs_with_a_warning(tmp_path, capsys):
    args = ("--set", "operations.2.sparsity.n=3", "--set", "unsupported_nm=masked_dense")
    assert run(tmp_path, *args) == 0
    assert capsys.readouterr().err == (
        "archsim: warning: operations[2] (nm28): N:M 3:8 is not among tiny's nm_patterns (1:2, "
        "2:4, 1:4, 2:8); it runs masked-dense, at dense speed (unsupported_nm: masked_dense)\n")


# --------------------------------------------------------------------------------------------
# Attention sizes
# --------------------------------------------------------------------------------------------

ATTENTION = EXAMPLE_DIR / "attention_bert.yaml"


def test_data_dependent_attention_arrays_are_bounded(tmp_path):
    with pytest.raises(SpecError, match=r"attention_bert\.yaml:8: operations\[0\]: its attention "
                                        r"layers: pattern 'topk' needs Q \(batch\*heads\*q_len\*"
                                        r"head_dim\) = 307,200,000 elements, above "
                                        r"limits\.array_elements = 268,435,456"):
        load_workload(ATTENTION, overrides=["operations.0.pattern={kind: topk, tokens: 8}",
                                            "operations.0.seq_len=100000"])
    path = tmp_path / "w.yaml"
    path.write_text("version: 1\nname: t\nhardware: tiny\nlimits: {array_elements: 1000}\n"
                    "operations:\n  - {op: attention, name: a, heads: 1, kv_len: 64, head_dim: 16,"
                    " block_size: 16, pattern: {kind: blasst}}\n")
    with pytest.raises(SpecError, match=r"w\.yaml:6: operations\[0\]: pattern 'blasst' needs Q "
                                        r"\(batch\*heads\*q_len\*head_dim\) = 1,024 elements, "
                                        r"above limits\.array_elements = 1,000"):
        load_workload(path)


def test_attention_blocks_count_as_tile_steps(tmp_path, capsys):
    path = EXAMPLE_DIR / "attention_patterns.yaml"
    assert main(["run", str(path), "--out", str(tmp_path / "o"),
                 "--set", "operations.0.kv_len=1000000000"]) == 2
    assert capsys.readouterr().err.startswith(
        "archsim: error: --set operations.0.kv_len=1000000000: operations[0]: the tile "
        "programs would have 732,421,875,061,440 tile steps "
        "(causal: 732,421,875,000,000), above limits.tile_steps = 500,000")


def test_model_field_errors_keep_their_path():
    with pytest.raises(SpecError, match=r"operations\[0\]\.model: Input should be 'resnet18'"):
        load_workload(EXAMPLE_DIR / "resnet18_bdwp.yaml", overrides=["operations.0.model=resnet19"])
    with pytest.raises(SpecError, match=r"operations\[0\]\.m: unknown key; expected one of: batch, "
                                        r"block_size"):
        load_workload(EXAMPLE_DIR / "resnet18_bdwp.yaml", overrides=["operations.0.m=3"])


def test_model_and_engine_sizes_are_bounded(tmp_path):
    with pytest.raises(SpecError, match=r"--set operations\.0\.layers=2147483648: operations\[0\]\.layers: Input "
                                        r"should be less than or equal to 1024, got 2147483648"):
        load_workload(EXAMPLE_DIR / "attention_model.yaml", overrides=["operations.0.layers=2147483648"])
    with pytest.raises(SpecError, match=r"spgemm\.multipliers: Input should be less than or equal "
                                        r"to 65536"):
        load_workload(TINY_GEMM, overrides=["hardware.spgemm.multipliers=1000000000"])
    path = tmp_path / "w.yaml"
    path.write_text("version: 1\nname: t\nhardware: tiny\noperations:\n  - {op: spgemm, name: s, "
                    "a: {source: rmat, params: {n: 64, nnz: {1: 2, a: 3}}}}\n")
    with pytest.raises(SpecError, match=r"w\.yaml:5: operations\[0\]\.a\.params: params\.nnz: key 1 "
                                        r"must be a name \(text\)"):
        load_workload(path)
    path.write_text("version: 1\nname: t\nhardware: tiny\noperations:\n  - {op: spgemm, name: s, "
                    "a: {source: rmat, params: {n: 64, nnz: 1180591620717411303424}}}\n")
    with pytest.raises(SpecError, match=r"1,180,591,620,717,411,303,424 nonzeros is above"):
        load_workload(path)


def test_set_overrides_join_the_default_output_folder():
    plain = default_out_dir("resnet18-bdwp")
    other = default_out_dir("resnet18-bdwp", ["operations.0.model=resnet50"])
    assert other != plain and other.parent == plain.parent
    assert other.name == "resnet18-bdwp+operations.0.model_resnet50"
    many = default_out_dir("w", [f"hardware.array.rows={i}" for i in range(40)])
    assert len(many.name) <= 100 and many.parent.name == "out"
    assert many != default_out_dir("w", [f"hardware.array.rows={i}" for i in range(41)])


def test_a_weight_buffer_too_small_for_one_tile_says_how_large_it_must_be(tmp_path, capsys):
    assert run(tmp_path, "--set", "hardware.buffers.weight_bytes=1") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(1/2 of buffers.weight_bytes = 1 B)" in err
    assert err.rstrip().endswith("enlarge buffers.weight_bytes to at least 32")


@pytest.mark.parametrize("command, example", [
    (["import", "g.csv"], "model.yaml"),
    (["baseline", TINY_GEMM, "--device", "cpu", "--reps", "1", "--warmup", "0", "--quiet"],
     "baseline.json"),
], ids=["import", "baseline"])
def test_an_out_file_that_ends_in_a_separator_names_a_folder(tmp_path, capsys, monkeypatch,
                                                              command, example):
    """A Path drops the trailing '/': 'import … --out new/' wrote the workload as a file named
    'new', and baseline its JSON the same way."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.csv").write_text("Layer, M, N, K,\nfc1, 8, 8, 8,\n")
    assert main([*command, "--out", "new/"]) == 2
    assert capsys.readouterr().err == (f"archsim: error: --out new/: names a folder; name the "
                                       f"file, e.g. new/{example}\n")
    assert not (tmp_path / "new").exists()
