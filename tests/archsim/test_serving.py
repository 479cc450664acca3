"""Issue 18, part 4: the serving loop — chunked prefill then decode against a growing KV cache,
TTFT and TPOT, the bounding unit of each phase; decode is bound by the KV stream and its
attention time falls in proportion to the key blocks a pattern skips."""

from __future__ import annotations

import json
import re

import pytest

from archsim.cli import main
from archsim.serving import serve
from workloads.errors import SpecError
from workloads.load import load_workload

HEAD = "version: 1\nname: s\nhardware: sat_vcu1525\nmode: inference\n"
MODEL = ("  - {op: model, model: decoder, batch: 1, layers: 1, hidden: 256, heads: 4, "
         "kv_heads: 4, pattern: %s}\n")


def _workload(tmp_path, pattern="{kind: dense}", serve_line=None, name="w"):
    serve_line = serve_line or "serve: {prompt_tokens: 8192, chunk_tokens: 4096, output_tokens: 3}"
    path = tmp_path / f"{name}.yaml"
    path.write_text(HEAD + serve_line + "\noperations:\n" + MODEL % pattern)
    return path


def test_chunked_prefill_then_decode_with_a_growing_cache(tmp_path):
    result = serve(load_workload(_workload(tmp_path)))
    phases = [(s.phase, s.q_len, s.kv_len) for s in result.steps]
    assert phases == [("prefill", 4096, 4096), ("prefill", 4096, 8192), ("decode", 1, 8193),
                      ("decode", 1, 8194)]
    assert result.ttft_cycles == sum(s.cycles for s in result.steps[:2])
    assert result.tpot_cycles == (result.steps[2].cycles + result.steps[3].cycles) / 2
    # The second chunk attends to twice the keys of the first; the linear layers cost the same.
    a, b = result.steps[:2]
    assert a.linear_cycles == b.linear_cycles and b.attention_cycles > 1.8 * a.attention_cycles
    assert result.bound("decode") == "dma"


@pytest.mark.parametrize("pattern", [
    "{kind: sliding_window, window: 1024, global_tokens: 4}",
    "{kind: block_sparse, density: 0.25, seed: 1}",
])
def test_decode_is_kv_bound_and_falls_with_the_blocks_skipped(tmp_path, pattern):
    # The last decode step reads a cache of 8192 tokens: 64 whole blocks per head.
    line = "serve: {prompt_tokens: 8190, chunk_tokens: 4095, output_tokens: 3}"
    dense = serve(load_workload(_workload(tmp_path, serve_line=line, name="d")))
    sparse = serve(load_workload(_workload(tmp_path, pattern, serve_line=line, name="s")))
    assert dense.steps[-1].kv_len == 8192
    for result in (dense, sparse):
        assert result.bound("decode") == "dma"
    d, s = dense.steps[-1], sparse.steps[-1]
    assert s.kv_blocks < 0.4 * d.kv_blocks
    # K and V bytes are exactly the blocks loaded; attention time follows them within a few %.
    assert s.kv_bytes * d.kv_blocks == d.kv_bytes * s.kv_blocks
    # Every skipped block saves what a block of dense decode costs (a few per-token fixed
    # cycles remain: the Qᵀ load, NORMALIZE, the Oᵀ store).
    saved_per_block = (d.attention_cycles - s.attention_cycles) / (d.kv_blocks - s.kv_blocks)
    assert saved_per_block == pytest.approx(d.attention_cycles / d.kv_blocks, rel=0.1)
    fixed = d.attention_cycles - saved_per_block * d.kv_blocks
    assert 0 <= fixed < 0.1 * d.attention_cycles
    assert sparse.tpot_cycles < dense.tpot_cycles


def test_cli_writes_serve_json(tmp_path, capsys):
    path = _workload(tmp_path, serve_line="serve: {prompt_tokens: 512, output_tokens: 2}")
    assert main(["serve", str(path), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "time to first token" in out and "bound by" in out
    data = json.loads((tmp_path / "o" / "serve.json").read_text())
    assert data["ttft_cycles"] > 0 and data["decode_bound"] == "dma"
    assert [s["phase"] for s in data["steps"]] == ["prefill", "decode"]


@pytest.mark.parametrize(("serve_line", "ops", "message"), [
    ("serve: {prompt_tokens: 0, output_tokens: 2}", None, r":5: serve.prompt_tokens: "),
    ("serve: {prompt_tokens: 8, output_tokens: 2, chunk: 4}", None,
     r":5: serve.chunk: unknown key"),
    ("serve: {prompt_tokens: 8, output_tokens: 2}",
     "  - {op: model, model: bert_base, batch: 1}\n", "serve needs exactly one operation"),
    # a cross-field check names the field it blames: the line is the phase's, not the file's
    ("serve: {prompt_tokens: 8, output_tokens: 2}", MODEL.replace("batch: 1,", "batch: 1, phase: "
     "decode,") % "{kind: dense}", r":7: operations\[0\]\.phase: serve runs its own prefill"),
])
def test_bad_serve_sections_are_one_line_and_exit_2(tmp_path, capsys, serve_line, ops, message):
    path = _workload(tmp_path, serve_line=serve_line)
    if ops:
        path.write_text(HEAD + serve_line + "\noperations:\n" + ops)
    with pytest.raises(SpecError, match=message):
        load_workload(path)
    assert main(["serve", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"archsim: error: {path}:")


def test_serve_needs_a_serve_section(tmp_path, capsys):
    path = tmp_path / "w.yaml"
    path.write_text(HEAD + "operations:\n" + MODEL % "{kind: dense}")
    assert main(["serve", str(path)]) == 2
    assert "no serve: section" in capsys.readouterr().err


def test_a_mask_file_cannot_be_served(tmp_path, capsys):
    import numpy as np

    np.save(tmp_path / "m.npy", np.ones((1, 1, 64, 64), dtype=np.uint8))
    path = _workload(tmp_path, pattern=f"{{kind: element_mask, file: {tmp_path / 'm.npy'}}}")
    assert main(["serve", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be served" in err[0] and str(path) in err[0]


def test_a_one_token_last_prefill_chunk_is_a_prefill_step(tmp_path):
    line = "serve: {prompt_tokens: 129, chunk_tokens: 128, output_tokens: 2}"
    steps = serve(load_workload(_workload(tmp_path, serve_line=line))).steps
    assert [(s.phase, s.q_len, s.kv_len) for s in steps] == [
        ("prefill", 128, 128), ("prefill", 1, 129), ("decode", 1, 130)]


@pytest.mark.parametrize(("serve_line", "sets", "message"), [
    # one huge prefill step: refused from its shapes, before anything is built
    ("serve: {prompt_tokens: 100000000, output_tokens: 2}", ["operations.0.batch=1000"],
     r"the prefill step of 100,000,000 tokens at KV length 100,000,000: the tile programs "
     r"would have at least"),
    # a step whose rows (batch x tokens) leave a linear op's range: one line, no traceback
    ("serve: {prompt_tokens: 100000000, output_tokens: 2}", ["operations.0.batch=100000000"],
     r"LinearOp batch: Input should be less than or equal to .*; use fewer tokens"),
    # millions of small steps: refused from their count
    ("serve: {prompt_tokens: 10000000, chunk_tokens: 1, output_tokens: 8}", [],
     r"\.yaml:5: serve\.chunk_tokens: s takes 10,000,007 serving steps .* above "
     r"limits\.tile_steps = 500,000"),
    # ... pointed at by the --set that made them (the message named only the workload)
    ("serve: {prompt_tokens: 8, output_tokens: 2}", ["serve.output_tokens=100000000"],
     r"^archsim: error: --set serve\.output_tokens=100000000: serve\.output_tokens: s takes "
     r"100,000,000 serving steps"),
])
def test_a_serving_run_too_large_to_finish_is_refused_at_once(tmp_path, capsys, serve_line, sets,
                                                              message):
    """Both ran silently until killed (a new-user trial waited 40 s)."""
    path = _workload(tmp_path, serve_line=serve_line)
    argv = ["serve", str(path), "--out", str(tmp_path / "o")]
    for item in sets:
        argv += ["--set", item]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err
    assert not (tmp_path / "o").exists()


def test_a_second_serve_into_the_same_folder_is_refused_unless_forced(tmp_path, capsys):
    path = _workload(tmp_path, serve_line="serve: {prompt_tokens: 512, output_tokens: 2}")
    out = tmp_path / "o"
    assert main(["serve", str(path), "--out", str(out), "--quiet"]) == 0
    earlier = (out / "serve.json").read_text()
    capsys.readouterr()
    argv = ["serve", str(path), "--out", str(out), "--quiet", "--set", "serve.output_tokens=3"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"archsim: error: {out} already holds the outputs of an earlier run (serve.json); pass "
        f"--force to replace it, or choose another --out\n")
    assert (out / "serve.json").read_text() == earlier
    assert main([*argv, "--force"]) == 0
    assert json.loads((out / "serve.json").read_text())["output_tokens"] == 3


def test_one_output_token_has_no_time_per_token(tmp_path, capsys):
    path = _workload(tmp_path, serve_line="serve: {prompt_tokens: 512, output_tokens: 1}")
    assert main(["serve", str(path), "--out", str(tmp_path / "o")]) == 0
    assert "time per output token: n/a (one output token: no decode step)" in capsys.readouterr().out
