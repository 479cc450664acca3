"""``archsim run W.yaml --baseline B.json``: the comparison table, its totals, and bad baselines.

Most baselines here are built directly from the schema with known times, so every number in the
comparison can be checked exactly; one test measures a real (tiny) CPU baseline end to end.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

import workloads.spec
from archsim.cli import main
from baselines.compare import check_matches, load_baseline_for
from baselines.errors import BaselineError
from baselines.measure import workload_attention, workload_spgemms, workload_tasks
from baselines.schema import (
    SCHEMA_VERSION,
    AttentionInfo,
    BaselineDoc,
    OpRow,
    Provenance,
    Totals,
    WorkloadRef,
)
from workloads.load import EXAMPLE_DIR, load_workload

TINY = EXAMPLE_DIR / "tiny_gemm.yaml"

# Batch 32: with 8 rows the 2:4 mapping of fc is slower than dense, fc falls back to dense
# (docs/scheduler.md) and the pre-generation rows these tests compare disappear.
TRAIN = """\
    version: 1
    name: train
    hardware: tiny
    mode: training
    sparsity: {kind: bdwp, n: 2, m: 4}
    operations:
      - {op: linear, name: fc, in_features: 16, out_features: 16, batch: 32, repeat: 2}
      - {op: gemm, name: g, m: 8, k: 16, n: 8, sparsity: {kind: dense}}
    """

PROVENANCE = Provenance(
    device="cuda", device_name="Test GPU", compute_capability="9.0", cuda_runtime_version="12.8",
    cuda_driver_version="570.00", cusparselt_version=600, semi_structured_backend="cusparselt",
    cpu_capability="AVX512", torch_version="2.13.0", numpy_version="2.0", python_version="3.11",
    archsim_version="0.1.0", platform="Linux", dtype="fp16", threads=1, timer="cuda_events",
    l2_flush_bytes=2**28, reps=5, warmup=1, min_sample_s=0.0, seed=0, flex_compile=False, cpus=16,
    load_avg_1m_before=0.1, load_avg_1m_after=None,
    date_utc="2026-01-01T00:00:00+00:00",
)


def write(tmp_path: Path, text: str, name: str = "w.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def median_of(index: int) -> float:
    """The fake per-call median of the index-th GEMM: distinct, exactly known."""
    return (index + 1) * 1e-6


def fake_baseline(workload, name: str | None = None) -> BaselineDoc:
    """A baseline for ``workload`` with known times, shaped exactly as measure() writes it."""
    rows = []
    for i, t in enumerate(workload_tasks(workload)):
        med, flops = median_of(i), 2 * t.m * t.k * t.n * t.copies
        rows.append(OpRow(
            name=t.name, layer=t.layer, phase=t.phase, m=t.m, k=t.k, n=t.n, copies=t.copies,
            repeat=t.repeat, nm=f"{t.nm[0]}:{t.nm[1]}" if t.nm else None,
            method="semi_structured_2:4" if t.nm else "dense", method_note="",
            median_s=med, p20_s=med * 0.9, p80_s=med * 1.1, samples=5, calls_per_sample=1,
            flops=flops, bytes=1000, flop_per_s=flops / med, bytes_per_s=1000 / med,
            total_s=med * t.repeat, reused_from=None,
        ))
    for item in workload_attention(workload):
        a, med = item.op, median_of(len(rows))
        rows.append(OpRow(
            name=item.name, layer=item.name, phase=a.phase, m=a.queries, k=a.head_dim,
            n=a.kv_len, copies=a.batch * a.heads, repeat=item.repeat, nm=None,
            method="sdpa_causal" if a.causal else "sdpa_dense", method_note="", median_s=med,
            p20_s=med, p80_s=med, samples=5, calls_per_sample=1, flops=4, bytes=1000,
            flop_per_s=4 / med, bytes_per_s=1000 / med, total_s=med * item.repeat,
            reused_from=None, attention=AttentionInfo(pattern=a.pattern.kind, causal=a.causal,
                                                      kv_heads=a.groups, density=1.0),
        ))
    for item in workload_spgemms(workload):
        med = median_of(len(rows))
        rows.append(OpRow(
            name=item.name, layer=item.name, phase="spgemm", m=item.m, k=item.k, n=item.n,
            copies=1, repeat=1, nm=None, method="spgemm_torch_csr", method_note="",
            median_s=med, p20_s=med, p80_s=med, samples=5, calls_per_sample=1, flops=2,
            bytes=1000, flop_per_s=2 / med, bytes_per_s=1000 / med, total_s=med,
            reused_from=None, nnz_a=item.nnz_a, nnz_b=item.nnz_b, nnz_c=1,
        ))
    seconds = sum(r.total_s for r in rows)
    flops = sum(r.flops * r.repeat for r in rows)
    return BaselineDoc(
        schema_version=SCHEMA_VERSION, kind="archsim-baseline",
        workload=WorkloadRef(name=name or workload.name, mode=workload.mode),
        provenance=PROVENANCE, warnings=(), ops=tuple(rows),
        totals=Totals(ops=len(rows), measured_shapes=len(rows), seconds=seconds, flops=flops,
                      flop_per_s=flops / seconds),
    )


def save(tmp_path: Path, doc: BaselineDoc | dict | str, name: str = "b.json") -> Path:
    path = tmp_path / name
    if isinstance(doc, BaselineDoc):
        path.write_text(doc.to_json())
    else:
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def run(workload: Path, baseline: Path, out: Path, *extra: str) -> int:
    return main(["run", str(workload), "--out", str(out), "--baseline", str(baseline), *extra])


# --------------------------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------------------------


def test_comparison_rows_and_totals(tmp_path, capsys):
    path = save(tmp_path, fake_baseline(load_workload(TINY)))
    assert run(TINY, path, tmp_path / "o") == 0
    printed = capsys.readouterr().out
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    cmp = doc["baseline_comparison"]
    assert (cmp["device"], cmp["device_name"], cmp["dtype"]) == ("cuda", "Test GPU", "fp16")
    assert cmp["baseline_file"] == str(path) and cmp["clock_mhz"] == 100.0
    layers = {row["name"]: row for row in doc["layers"]}
    assert [r["name"] for r in cmp["ops"]] == ["dense", "nm24", "nm28"]
    for i, r in enumerate(cmp["ops"]):
        assert r["cycles"] == layers[r["name"]]["cycles"]
        assert r["simulated_s"] == pytest.approx(r["cycles"] / 100e6)
        assert r["measured_s"] == pytest.approx(median_of(i))
        assert r["speedup"] == pytest.approx(r["measured_s"] / r["simulated_s"])
    assert [r["method"] for r in cmp["ops"]] == [
        "dense", "semi_structured_2:4", "semi_structured_2:4"]
    totals = cmp["totals"]
    assert totals["simulated_s"] == pytest.approx(doc["summary"]["seconds"])
    assert totals["measured_s"] == pytest.approx(median_of(0) + median_of(1) + median_of(2))
    assert totals["speedup"] == pytest.approx(totals["measured_s"] / totals["simulated_s"])
    # Every op is on both sides here, so the matched totals are the whole totals.
    assert totals["simulated_matched_s"] == pytest.approx(totals["simulated_s"])
    assert totals["measured_matched_s"] == pytest.approx(totals["measured_s"])
    assert totals["matched_speedup"] == pytest.approx(totals["speedup"])
    for text in ("simulated accelerator (100 MHz) vs measured Test GPU (cuda, fp16)", "nm24",
                 "speedup = measured / simulated", "total"):
        assert text in printed
    assert "total, ops on both sides" not in printed


def test_training_comparison_with_repeats_and_pregen(tmp_path, capsys):
    workload_path = write(tmp_path, TRAIN)
    workload = load_workload(workload_path)
    baseline = fake_baseline(workload)
    path = save(tmp_path, baseline)
    assert run(workload_path, path, tmp_path / "o") == 0
    printed = capsys.readouterr().out
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    cmp = doc["baseline_comparison"]
    pregen = [r for r in cmp["ops"] if r["phase"] == "pregen"]
    gemms = [r for r in cmp["ops"] if r["phase"] != "pregen"]
    assert {r["name"] for r in pregen} == {"fc.W.ff.pregen", "fc.W.bp.pregen"}
    assert all(r["measured_s"] is None and r["speedup"] is None and r["method"] is None
               for r in pregen)
    measured = {op.name: op.total_s for op in baseline.ops}
    assert {r["name"]: r["measured_s"] for r in gemms} == pytest.approx(measured)
    # fc repeats twice: the measured total doubles the median, as the simulated cycles do.
    fc = next(op for op in baseline.ops if op.name == "fc")
    assert fc.repeat == 2 and measured["fc"] == pytest.approx(2 * fc.median_s)
    totals = cmp["totals"]
    pregen_s = sum(r["simulated_s"] for r in pregen)
    assert totals["simulated_s"] == pytest.approx(doc["summary"]["seconds"])
    assert totals["simulated_matched_s"] == pytest.approx(totals["simulated_s"] - pregen_s)
    assert totals["measured_s"] == pytest.approx(sum(measured.values()))
    assert totals["measured_matched_s"] == pytest.approx(totals["measured_s"])
    assert totals["matched_speedup"] == pytest.approx(
        totals["measured_s"] / totals["simulated_matched_s"])
    assert "total, ops on both sides" in printed


def test_comparison_table_rows_follow_layers_flag(tmp_path, capsys):
    workload_path = write(tmp_path, TRAIN)
    path = save(tmp_path, fake_baseline(load_workload(workload_path)))
    assert run(workload_path, path, tmp_path / "o", "--layers", "2") == 0
    assert "top 2 of 8 by time" in capsys.readouterr().out


def test_without_baseline_the_key_is_null(tmp_path):
    assert main(["run", str(TINY), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    assert doc["baseline_comparison"] is None


def test_quiet_run_writes_the_comparison_without_tables(tmp_path, capsys):
    path = save(tmp_path, fake_baseline(load_workload(TINY)))
    assert run(TINY, path, tmp_path / "o", "--quiet") == 0
    assert "speedup" not in capsys.readouterr().out
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    assert len(doc["baseline_comparison"]["ops"]) == 3


def test_measured_cpu_baseline_end_to_end(tmp_path, capsys):
    baseline = tmp_path / "cpu.json"
    assert main(["baseline", str(TINY), "--device", "cpu", "--reps", "2", "--warmup", "0",
                 "--threads", "1", "--out", str(baseline), "--quiet"]) == 0
    assert run(TINY, baseline, tmp_path / "o", "--quiet") == 0
    cmp = json.loads((tmp_path / "o" / "results.json").read_text())["baseline_comparison"]
    assert cmp["device"] == "cpu" and cmp["threads"] == 1
    assert [r["method"] for r in cmp["ops"]] == ["dense", "masked_dense", "masked_dense"]
    assert all(r["measured_s"] > 0 and r["speedup"] > 0 for r in cmp["ops"])


# --------------------------------------------------------------------------------------------
# Bad baselines: one line on stderr, exit 2, no results written
# --------------------------------------------------------------------------------------------


def _good_dict() -> dict:
    return json.loads(fake_baseline(load_workload(TINY)).to_json())


def _edited(change) -> dict:
    data = _good_dict()
    change(data)
    return data


BAD_FILES = [
    ("missing", None, "b.json: baseline file not found"),
    ("not json", "{\"kind\": ", "b.json:1: invalid JSON: Expecting value"),
    ("a list", "[]", "b.json: not an archsim baseline file (expected a JSON object"),
    ("results.json", {"schema_version": 1, "summary": {}},
     "b.json: not an archsim baseline file"),
    ("future schema", _edited(lambda d: d.update(schema_version=2)),
     "b.json: baseline schema_version 2 is not supported (this archsim reads 1)"),
    ("wrong type", _edited(lambda d: d["ops"][1].update(median_s="fast")),
     "b.json: ops[1].median_s: Input should be a valid number"),
    ("missing field", _edited(lambda d: d["provenance"].pop("dtype")),
     "b.json: provenance.dtype: Field required"),
    ("unknown method", _edited(lambda d: d["ops"][0].update(method="sparse")),
     "b.json: ops[0].method: Input should be 'dense', 'semi_structured_2:4', 'masked_dense', "),
    ("bad spread", _edited(lambda d: d["ops"][2].update(p20_s=1.0)),
     "b.json: ops[2]: Value error, expected p20_s <= median_s <= p80_s"),
    ("no ops", _edited(lambda d: d.update(ops=[])),
     "b.json: ops: Tuple should have at least 1 item"),
]


@pytest.mark.parametrize(("label", "content", "message"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_baseline_files(tmp_path, capsys, label, content, message):
    path = tmp_path / "b.json" if content is None else save(tmp_path, content)
    assert run(TINY, path, tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"archsim: error: {tmp_path}/{message}"), err
    assert err.count("\n") == 1
    assert not (tmp_path / "o" / "results.json").exists()


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no named pipes here")
def test_a_baseline_that_never_ends_is_refused_at_once(tmp_path):
    """--baseline on a named pipe nobody writes to hung (open() waits for a writer), and on
    /dev/zero read until the memory ran out."""
    import os
    import subprocess
    import sys

    fifo = tmp_path / "b.json"
    os.mkfifo(fifo)
    code = "import sys; from archsim.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, "run", str(TINY), "--baseline", str(fifo),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "a named pipe that nothing was written to in 5 s" in proc.stderr
    with pytest.raises(BaselineError, match=r"^/dev/zero: larger than 64 MiB"):
        load_baseline_for("/dev/zero", load_workload(TINY))


def test_baseline_of_another_workload(tmp_path, capsys):
    path = save(tmp_path, fake_baseline(load_workload(TINY), name="resnet18-dense"))
    assert run(TINY, path, tmp_path / "o") == 2
    assert capsys.readouterr().err == (
        f"archsim: error: {path}: baseline was measured for workload 'resnet18-dense', not "
        f"'tiny-gemm'\n")


def test_baseline_of_another_mode(tmp_path, capsys):
    path = save(tmp_path, fake_baseline(load_workload(TINY)))
    assert run(TINY, path, tmp_path / "o", "--set", "mode=training") == 2
    assert capsys.readouterr().err == (
        f"archsim: error: {path}: baseline was measured for inference, but workload 'tiny-gemm' "
        f"runs training; re-measure it with 'archsim baseline'\n")


def test_baseline_after_a_shape_change(tmp_path, capsys):
    path = save(tmp_path, fake_baseline(load_workload(TINY)))
    assert run(TINY, path, tmp_path / "o", "--set", "operations.1.m=32") == 2
    assert capsys.readouterr().err == (
        f"archsim: error: {path}: op 'nm24' is 32x16x8, 2:4 in the workload but 16x16x8, 2:4 "
        f"in the baseline; measure the workload as simulated (pass the same --set options to "
        f"'archsim baseline')\n")


def test_baseline_after_a_sparsity_change(tmp_path, capsys):
    path = save(tmp_path, fake_baseline(load_workload(TINY)))
    assert run(TINY, path, tmp_path / "o", "--set", "operations.1.sparsity.n=1") == 2
    assert "op 'nm24' is 16x16x8, 1:4 in the workload but 16x16x8, 2:4 in the baseline" in (
        capsys.readouterr().err)


def test_baseline_missing_or_extra_gemms(tmp_path):
    workload = load_workload(TINY)
    full = fake_baseline(workload)
    fewer = full.model_copy(update={"ops": full.ops[:2]})
    with pytest.raises(BaselineError, match=r"b.json: the baseline has no op 'nm28' of workload "
                       r"'tiny-gemm' \(1 missing\); the workload changed since it was measured"):
        check_matches(fewer, workload, "b.json")
    renamed = full.model_copy(update={"ops": (*full.ops[:2], full.ops[2].model_copy(
        update={"name": "other"}))})
    with pytest.raises(BaselineError, match="the baseline has no op 'nm28'"):
        check_matches(renamed, workload, "b.json")
    extra = full.model_copy(update={"ops": (*full.ops, full.ops[0].model_copy(
        update={"name": "more"}))})
    with pytest.raises(BaselineError, match=r"the baseline has op 'more', which workload "
                       r"'tiny-gemm' does not have \(1 extra\)"):
        check_matches(extra, workload, "b.json")


# --------------------------------------------------------------------------------------------
# SpGEMM ops: measured, not simulated by the GEMM model
# --------------------------------------------------------------------------------------------

needs_spgemm = pytest.mark.skipif(not hasattr(workloads.spec, "SpGEMMOp"),
                                  reason="this checkout has no spgemm operation")

MIXED = """\
    version: 1
    name: mixed
    hardware: tiny
    operations:
      - {op: gemm, name: g, m: 16, k: 16, n: 8}
      - {op: spgemm, name: s, a: {source: uniform, params: {n_rows: 48, n_cols: 48, nnz: 150}}}
    """


@needs_spgemm
def test_spgemm_rows_pair_with_the_fastest_simulated_dataflow(tmp_path, capsys):
    workload_path = write(tmp_path, MIXED)
    baseline = fake_baseline(load_workload(workload_path))
    assert [op.phase for op in baseline.ops] == ["inference", "spgemm"]
    assert run(workload_path, save(tmp_path, baseline), tmp_path / "o") == 0
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    rows = {r["name"]: r for r in doc["baseline_comparison"]["ops"]}
    assert set(rows) == {"g", "s"}
    s, sim = rows["s"], {op["name"]: op for op in doc["spgemm"]}["s"]
    assert (s["phase"], s["m"], s["k"], s["n"]) == ("spgemm", 48, 48, 48)
    assert s["cycles"] == sim["cycles"]  # the fastest dataflow, as in the simulated total
    assert s["sparsity"] == f"spgemm: {sim['winner']} (fastest dataflow)"
    assert s["simulated_s"] == pytest.approx(sim["cycles"] / 100e6)
    assert s["measured_s"] == pytest.approx(baseline.ops[1].total_s)
    assert s["speedup"] == pytest.approx(s["measured_s"] / s["simulated_s"])
    totals = doc["baseline_comparison"]["totals"]
    assert totals["simulated_s"] == pytest.approx(doc["summary"]["seconds"])
    assert totals["simulated_matched_s"] == pytest.approx(totals["simulated_s"])


@needs_spgemm
def test_ops_the_simulation_does_not_report_are_measured_only(tmp_path):
    from dataclasses import replace

    from archsim.api import simulate
    from baselines.compare import compare

    workload = load_workload(write(tmp_path, MIXED))
    baseline = fake_baseline(workload)
    result = replace(simulate(workload), spgemm=())  # as if the model skipped SpGEMM ops
    cmp = compare(baseline, workload, result, "b.json")
    s = next(r for r in cmp["ops"] if r["name"] == "s")
    assert s["simulated_s"] is None and s["cycles"] is None and s["speedup"] is None
    assert s["measured_s"] == pytest.approx(baseline.ops[1].total_s) and s["method"]
    totals = cmp["totals"]
    assert totals["measured_s"] == pytest.approx(baseline.totals.seconds)
    assert totals["measured_matched_s"] == pytest.approx(baseline.ops[0].total_s)
    g = next(r for r in cmp["ops"] if r["name"] == "g")
    assert totals["simulated_matched_s"] == pytest.approx(g["simulated_s"])


@needs_spgemm
def test_spgemm_mismatch_names_the_nonzero_counts(tmp_path, capsys):
    workload_path = write(tmp_path, MIXED)
    path = save(tmp_path, fake_baseline(load_workload(workload_path)))
    assert run(workload_path, path, tmp_path / "o", "--set", "operations.1.a.params.nnz=200") == 2
    assert capsys.readouterr().err == (
        f"archsim: error: {path}: op 's' is SpGEMM 48x48x48 with nnz(A)=200, nnz(B)=200 in the "
        f"workload but SpGEMM 48x48x48 with nnz(A)=150, nnz(B)=150 in the baseline; measure the "
        f"workload as simulated (pass the same --set options to 'archsim baseline')\n")


# --------------------------------------------------------------------------------------------
# Attention layers
# --------------------------------------------------------------------------------------------

needs_attention = pytest.mark.skipif(not hasattr(workloads.spec, "AttentionOp"),
                                     reason="this checkout has no attention operation")

ATTENTION = """\
    version: 1
    name: att
    hardware: tiny
    operations:
      - {op: gemm, name: g, m: 16, k: 16, n: 8}
      - {op: attention, name: causal, heads: 2, kv_len: 32, head_dim: 16, causal: true}
      - {op: attention, name: blocks, heads: 2, kv_len: 32, head_dim: 16, block_size: 16,
         pattern: {kind: block_sparse, density: 0.5}}
    """


@needs_attention
def test_attention_layers_pair_with_the_simulated_attention_rows(tmp_path):
    workload_path = write(tmp_path, ATTENTION)
    baseline = fake_baseline(load_workload(workload_path))
    assert [op.name for op in baseline.ops] == ["g", "causal", "blocks"]
    assert run(workload_path, save(tmp_path, baseline), tmp_path / "o", "--quiet") == 0
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    layers = {row["name"]: row for row in doc["layers"]}
    measured = {op.name: op.total_s for op in baseline.ops}
    for r in doc["baseline_comparison"]["ops"]:
        assert r["cycles"] == layers[r["name"]]["cycles"]
        assert r["simulated_s"] == pytest.approx(r["cycles"] / 100e6)
        assert r["measured_s"] == pytest.approx(measured[r["name"]])
    rows = {r["name"]: r for r in doc["baseline_comparison"]["ops"]}
    assert (rows["causal"]["phase"], rows["causal"]["m"], rows["causal"]["n"]) == (
        "prefill", 32, 32)


@needs_attention
def test_attention_mismatch_describes_the_op(tmp_path, capsys):
    workload_path = write(tmp_path, ATTENTION)
    path = save(tmp_path, fake_baseline(load_workload(workload_path)))
    assert run(workload_path, path, tmp_path / "o", "--set", "operations.1.kv_heads=1") == 2
    assert capsys.readouterr().err == (
        f"archsim: error: {path}: op 'causal' is attention of 32 queries over 32 keys (head_dim "
        f"16, 2 batch x heads, 1 K/V heads), dense causal in the workload but attention of 32 "
        f"queries over 32 keys (head_dim 16, 2 batch x heads, 2 K/V heads), dense causal in the "
        f"baseline; measure the workload as simulated (pass the same --set options to 'archsim "
        f"baseline')\n")


def test_load_baseline_for_round_trips(tmp_path):
    workload = load_workload(TINY)
    doc = fake_baseline(workload)
    assert load_baseline_for(save(tmp_path, doc), workload) == doc
