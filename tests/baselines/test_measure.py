"""``archsim baseline``: method choice per N:M pattern, timers, the JSON document and the CLI.

CPU measurements here are tiny (16×16 GEMMs, a few reps, one thread) so the file stays fast on a
shared 2-core machine; they check structure and arithmetic, never speed. CUDA paths run only
where a GPU is present.
"""

from __future__ import annotations

import itertools
import json
import socket
import textwrap
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch

import workloads.spec
from archsim.cli import main
from baselines.errors import BaselineError
from baselines.measure import (
    SEMI_STRUCTURED_MIN_SHAPE,
    MethodChoice,
    attention_method,
    busy_cpu_warning,
    choose_method,
    fits_2_4,
    low_precision_cpu_warning,
    max_nonzeros_per_4,
    measure,
    workload_tasks,
)
from baselines.schema import BaselineDoc, read_baseline
from baselines.timing import l2_flush_bytes, summarize, time_cpu, time_cuda
from workloads.load import EXAMPLE_DIR, load_workload
from workloads.spec import MAX_M

TINY = EXAMPLE_DIR / "tiny_gemm.yaml"
FAST = {"reps": 3, "warmup": 1, "threads": 1, "min_sample_s": 2e-4}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def write(tmp_path: Path, text: str, name: str = "w.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# --------------------------------------------------------------------------------------------
# Which N:M patterns fit inside 2:4
# --------------------------------------------------------------------------------------------


def _all_patterns() -> list[tuple[int, int]]:
    """Every N:M pattern a workload may name: m a power of two up to MAX_M, 0 < n <= m."""
    ms = [1 << i for i in range(MAX_M.bit_length()) if 1 << i <= MAX_M]
    return [(n, m) for m in ms for n in range(1, m + 1)]


def _brute_force_worst(n: int, m: int) -> int:
    """Most kept weights in an aligned group of 4, over every possible N:M mask of one span."""
    span = max(4, m)  # a span holds whole groups of M and whole groups of 4
    group_masks = [set(c) for c in itertools.combinations(range(m), n)]
    worst = 0
    for choice in itertools.product(group_masks, repeat=span // m):
        kept = {g * m + i for g, idx in enumerate(choice) for i in idx}
        worst = max(worst, *(len(kept & set(range(s, s + 4))) for s in range(0, span, 4)))
    return worst


@pytest.mark.parametrize(("n", "m"), _all_patterns())
def test_fits_2_4_agrees_with_brute_force_for_every_pattern(n, m):
    worst = _brute_force_worst(n, m)
    assert max_nonzeros_per_4(n, m) == worst
    assert fits_2_4(n, m) == (worst <= 2)


@pytest.mark.parametrize(
    ("n", "m", "fits"),
    [(1, 4, True), (2, 4, True), (2, 8, True), (1, 8, True), (1, 2, True), (2, 16, True),
     (4, 8, False), (3, 4, False), (3, 8, False), (1, 1, False), (4, 4, False)],
)
def test_fits_2_4_named_patterns(n, m, fits):
    assert fits_2_4(n, m) is fits


def test_max_nonzeros_rejects_bad_patterns():
    with pytest.raises(ValueError, match="0 < n <= m"):
        max_nonzeros_per_4(5, 4)
    with pytest.raises(ValueError, match="m must divide 4 or be a multiple of 4"):
        max_nonzeros_per_4(1, 6)


# --------------------------------------------------------------------------------------------
# Method choice per op
# --------------------------------------------------------------------------------------------

H100 = {"device": "cuda", "capability": (9, 0), "backend": "cusparselt"}


@pytest.mark.parametrize(("n", "m"), _all_patterns())
def test_method_per_pattern_on_cuda_and_cpu(n, m):
    cuda = choose_method((n, m), dtype="fp16", weight_shape=(64, 128), **H100)
    cpu = choose_method((n, m), device="cpu", dtype="fp32", weight_shape=(64, 128))
    assert cuda.method == ("semi_structured_2:4" if fits_2_4(n, m) else "masked_dense")
    if cuda.method == "masked_dense":
        assert f"{n}:{m} does not fit inside 2:4" in cuda.note
    assert (cpu.method, cpu.note) == ("masked_dense", "2:4 semi-structured kernels are CUDA-only")


def test_dense_ops_are_dense_everywhere():
    assert choose_method(None, dtype="fp16", weight_shape=(8, 8), **H100).method == "dense"
    assert choose_method(None, device="cpu", dtype="fp32", weight_shape=(8, 8)).method == "dense"


def test_semi_structured_note_says_when_a_pattern_runs_at_2_4_speed():
    assert choose_method((2, 4), dtype="bf16", weight_shape=(16, 16), **H100).note == (
        "2:4 stored as 2:4 (cusparselt)")
    assert choose_method((2, 8), dtype="fp16", weight_shape=(16, 16), **H100).note == (
        "2:8 stored as 2:4 (cusparselt, runs at 2:4 speed)")


@pytest.mark.parametrize(
    ("kwargs", "note"),
    [
        ({"dtype": "fp32", "weight_shape": (64, 128), **H100},
         "cusparselt has no fp32 kernel (use --dtype fp16/bf16)"),
        ({"dtype": "fp16", "weight_shape": (24, 128), **H100},
         "cusparselt needs the weight [24, 128] in multiples of [16, 16]"),
        ({"dtype": "fp16", "weight_shape": (64, 128), "copies": 12, **H100},
         "2:4 kernels are 2-D only; this GEMM is batched"),
        ({"dtype": "fp16", "weight_shape": (64, 128), "device": "cuda", "capability": (7, 5),
          "backend": "cusparselt"}, "2:4 kernels need compute capability 8.0+, got 7.5"),
        ({"dtype": "fp16", "weight_shape": (64, 128), "device": "cuda", "capability": (9, 0),
          "backend": "cutlass"},
         "cuSPARSELt is unavailable and the CUTLASS backend only runs on 8.x"),
        ({"dtype": "fp16", "weight_shape": (64, 128), "device": "cuda", "capability": (9, 0),
          "backend": None}, "this torch build has no 2:4 semi-structured backend"),
        ({"dtype": "fp16", "weight_shape": (32, 32), "device": "cuda", "capability": (8, 0),
          "backend": "cutlass"}, "cutlass needs the weight [32, 32] in multiples of [32, 64]"),
    ],
)
def test_masked_dense_fallbacks_say_why(kwargs, note):
    choice = choose_method((2, 4), **kwargs)
    assert (choice.method, choice.note) == ("masked_dense", note)


def test_cutlass_on_ampere_takes_fp32():
    choice = choose_method((1, 4), device="cuda", capability=(8, 6), backend="cutlass",
                           dtype="fp32", weight_shape=(32, 64))
    assert choice.method == "semi_structured_2:4"


def test_shape_limits_mirror_the_installed_torch():
    # The table is copied from torch's source so that method choice stays a pure function; if
    # torch changes its limits, this test says so.
    sparse = torch.sparse
    names = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
    for backend, cls in (("cusparselt", sparse.SparseSemiStructuredTensorCUSPARSELT),
                         ("cutlass", sparse.SparseSemiStructuredTensorCUTLASS)):
        theirs = {names[dt]: (c.sparse_min_rows, c.sparse_min_cols)
                  for dt, c in cls._DTYPE_SHAPE_CONSTRAINTS.items() if dt in names}
        assert SEMI_STRUCTURED_MIN_SHAPE[backend] == theirs


def test_low_precision_cpu_warning():
    assert low_precision_cpu_warning("fp32", frozenset()) is None
    native = low_precision_cpu_warning("bf16", frozenset({"avx512f", "avx512_bf16"}))
    assert "has native bf16 instructions (avx512_bf16)" in native
    emulated = low_precision_cpu_warning("fp16", frozenset({"avx2", "f16c"}))
    assert "without native fp16 instructions (no avx512_fp16/amx_fp16 flag)" in emulated
    assert "use --dtype fp32" in emulated
    assert "could not read the CPU flags" in low_precision_cpu_warning("bf16", None)


def test_busy_cpu_warning():
    assert busy_cpu_warning(None, 2, 1) is None
    assert busy_cpu_warning(0.9, 2, 1) is None
    assert busy_cpu_warning(1.0, 2, 1) is None  # exactly the free core
    assert busy_cpu_warning(1.5, 2, 1) == (
        "the machine is busy (1-minute load average 1.5 on 2 CPUs, measuring with 1 thread): CPU "
        "times will be noisy; measure when it is idle or with fewer --threads, and check p20/p80")
    assert "measuring with 2 threads" in busy_cpu_warning(0.5, 2, 2)


# --------------------------------------------------------------------------------------------
# Timers and statistics
# --------------------------------------------------------------------------------------------


def test_summarize_median_and_percentiles():
    s = summarize([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (s.median_s, s.p20_s, s.p80_s, s.samples) == (3.0, 1.8, 4.2, 5)
    with pytest.raises(ValueError, match="at least one sample"):
        summarize([])


def test_time_cpu_counts_warmup_calibration_and_reps():
    calls = []
    times, per_sample = time_cpu(lambda: calls.append(1), reps=4, warmup=2, min_sample_s=0.0)
    assert per_sample == 1 and len(times) == 4 and all(t >= 0 for t in times)
    assert len(calls) == 2 + 1 + 4  # warm-up, one calibration sample, the timed samples


def test_time_cpu_repeats_short_calls_until_a_sample_is_long_enough():
    times, per_sample = time_cpu(lambda: None, reps=2, warmup=0, min_sample_s=1e-4)
    assert per_sample > 1 and per_sample & (per_sample - 1) == 0  # doubled from 1
    assert len(times) == 2


class _FakeCuda:
    """Records the order of operations a CUDA timer enqueues; each event pair spans 2 ms."""

    def __init__(self):
        self.log: list[str] = []
        self.cuda = self
        outer = self

        class Event:
            def __init__(self, enable_timing: bool):
                assert enable_timing
                self.t = None

            def record(self):
                outer.log.append("record")
                self.t = len(outer.log)

            def elapsed_time(self, end):
                return 2.0 if end.t > self.t else -1.0

        self.Event = Event

    def synchronize(self):
        self.log.append("sync")


def test_time_cuda_flushes_before_every_timed_call_outside_the_events():
    fake = _FakeCuda()
    times = time_cuda(lambda: fake.log.append("fn"), reps=3, warmup=2,
                      flush=lambda: fake.log.append("flush"), torch=fake)
    assert times == [0.002] * 3  # ms → s
    warm = ["flush", "fn"] * 2 + ["sync"]
    timed = ["flush", "record", "fn", "record"] * 3 + ["sync"]
    assert fake.log == warm + timed


def test_l2_flush_is_larger_than_the_l2():
    assert l2_flush_bytes(50 * 2**20) == 256 * 2**20
    assert l2_flush_bytes(200 * 2**20) == 400 * 2**20


# --------------------------------------------------------------------------------------------
# measure(): the document on CPU
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_doc() -> BaselineDoc:
    return measure(load_workload(TINY), device="cpu", **FAST)


def test_cpu_document_provenance(tiny_doc):
    p = tiny_doc.provenance
    assert (p.device, p.dtype, p.threads, p.timer) == ("cpu", "fp32", 1, "perf_counter_ns")
    assert (p.reps, p.warmup, p.l2_flush_bytes, p.seed) == (3, 1, 0, 0)
    assert p.torch_version == torch.__version__ and p.device_name
    assert p.cuda_runtime_version is None and p.compute_capability is None
    assert p.semi_structured_backend is None
    assert datetime.fromisoformat(p.date_utc).utcoffset().total_seconds() == 0
    text = tiny_doc.to_json()
    host = socket.gethostname()
    if len(host) >= 4:  # a very short name could occur by chance inside other fields
        assert host not in text
    assert (tiny_doc.workload.name, tiny_doc.workload.mode) == ("tiny-gemm", "inference")
    assert p.cpus >= 1
    for load in (p.load_avg_1m_before, p.load_avg_1m_after):
        assert load is None or load >= 0
    # fp32 raises no dtype warning; a busy shared machine may add the load warning.
    assert all(w.startswith("the machine is busy") for w in tiny_doc.warnings)


def test_cpu_document_rows(tiny_doc):
    ops = tiny_doc.ops
    assert [(r.name, r.phase, r.nm, r.method) for r in ops] == [
        ("dense", "inference", None, "dense"),
        ("nm24", "inference", "2:4", "masked_dense"),
        ("nm28", "inference", "2:8", "masked_dense"),
    ]
    for r in ops:
        assert 0 < r.p20_s <= r.median_s <= r.p80_s
        assert r.samples == 3 and r.calls_per_sample >= 1 and r.reused_from is None
        assert r.flops == 2 * r.m * r.k * r.n
        assert r.bytes == (r.m * r.k + r.n * r.k + r.m * r.n) * 4  # fp32, each operand once
        assert r.flop_per_s == pytest.approx(r.flops / r.median_s)
        assert r.bytes_per_s == pytest.approx(r.bytes / r.median_s)
        assert r.total_s == r.median_s
        assert r.graph_median_s is None  # CUDA graphs are CUDA-only
    t = tiny_doc.totals
    assert (t.ops, t.measured_shapes) == (3, 3)
    assert t.seconds == pytest.approx(sum(r.total_s for r in ops))
    assert t.flops == sum(r.flops for r in ops)
    assert t.flop_per_s == pytest.approx(t.flops / t.seconds)


def _structure(value):
    """The shape of a JSON value: keys and types, with measured numbers and dates blanked."""
    if isinstance(value, dict):
        return {k: _structure(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_structure(v) for v in value]
    return type(value).__name__


def test_same_command_gives_the_same_structure(tiny_doc):
    again = measure(load_workload(TINY), device="cpu", **FAST)
    a, b = (json.loads(d.to_json()) for d in (tiny_doc, again))
    # The busy-machine warning depends on the load at the time, so warnings are compared by type.
    assert all(isinstance(w, str) for w in a.pop("warnings") + b.pop("warnings"))
    assert _structure(a) == _structure(b)
    labels = ("name", "phase", "m", "k", "n", "nm", "method", "method_note", "reused_from")
    assert [[r[k] for k in labels] for r in a["ops"]] == [[r[k] for k in labels] for r in b["ops"]]
    varying = ("date_utc", "load_avg_1m_before", "load_avg_1m_after")
    assert {k: v for k, v in a["provenance"].items() if k not in varying} == {
        k: v for k, v in b["provenance"].items() if k not in varying}


def test_training_measures_every_phase_and_reuses_identical_gemms(tmp_path):
    # rows = in = out = 16: the FF, BP and WG GEMMs of both dense layers are all 16x16x16.
    path = write(tmp_path, """\
        version: 1
        name: reuse
        hardware: tiny
        mode: training
        operations:
          - {op: linear, name: a, in_features: 16, out_features: 16, batch: 16}
          - {op: linear, name: b, in_features: 16, out_features: 16, batch: 16, repeat: 3}
          - {op: linear, name: c, in_features: 16, out_features: 16, batch: 16,
             sparsity: {kind: bdwp, n: 2, m: 4}}
        """)
    workload = load_workload(path)
    doc = measure(workload, device="cpu", **FAST)
    assert [r.name for r in doc.ops] == [t.name for t in workload_tasks(workload)]
    assert {r.phase for r in doc.ops} == {"ff", "bp", "wg"}
    by_name = {r.name: r for r in doc.ops}
    first = by_name["a"]
    for name in ("a.bp", "a.wg", "b", "b.bp", "b.wg", "c.wg"):
        assert by_name[name].reused_from == "a"
        assert by_name[name].median_s == first.median_s
    # c's FF and BP weights are 2:4: a masked weight is its own measurement, and c.bp reuses c.
    assert by_name["c"].reused_from is None and by_name["c.bp"].reused_from == "c"
    assert doc.totals.measured_shapes == 2
    assert by_name["b"].repeat == 3 and by_name["b"].total_s == pytest.approx(3 * first.median_s)


def test_batched_matmuls_of_a_model_are_measured_with_their_copies():
    # BERT's attention products: batch x heads independent GEMMs in one batched call.
    workload = load_workload(EXAMPLE_DIR / "bert_inference_nm.yaml",
                             overrides=["operations.0.batch=1", "operations.0.seq_len=16"])
    tasks = [t for t in workload_tasks(workload) if t.copies > 1]
    assert tasks and all(t.copies == 12 for t in tasks)  # 1 sequence x 12 heads
    doc = measure(workload, device="cpu", reps=1, warmup=0, threads=1, min_sample_s=0.0)
    scores = next(r for r in doc.ops if r.name == tasks[0].name)
    assert (scores.copies, scores.method) == (12, "dense")
    assert scores.flops == 2 * scores.m * scores.k * scores.n * 12


def test_a_weight_torch_refuses_to_compress_falls_back_to_masked_dense():
    # choose_method mirrors torch's limits; should torch still refuse (here: a CPU tensor), the
    # GEMM runs masked-dense and says why instead of failing the whole measurement.
    from baselines.measure import _build, _Setup

    task = workload_tasks(load_workload(TINY))[1]
    setup = _Setup("cpu", "fp16", 1, 1, 0, 0.0, 0, 0, (9, 0), "cusparselt", None)
    call, moved, used = _build(torch, task, MethodChoice("semi_structured_2:4", "x"), setup,
                               torch.Generator().manual_seed(0))
    assert used.method == "masked_dense"
    assert used.note.startswith("torch refused the 2:4 weight: Error original_tensor.device")
    assert call().shape == (task.m, task.n) and moved == (16 * 16 + 8 * 16 + 16 * 8) * 2


def test_bad_options_are_baseline_errors():
    workload = load_workload(TINY)
    for kwargs, message in (
        ({"reps": 0}, "reps must be at least 1, got 0"),
        ({"warmup": -1}, "warmup must be at least 0, got -1"),
        ({"threads": 0}, "threads must be at least 1, got 0"),
        ({"dtype": "fp8"}, "dtype must be one of fp32, fp16, bf16, got 'fp8'"),
    ):
        with pytest.raises(BaselineError, match=message):
            measure(workload, device="cpu", **kwargs)


def test_cpu_low_precision_is_recorded_as_a_warning():
    doc = measure(load_workload(TINY), device="cpu", dtype="bf16", **FAST)
    assert doc.provenance.dtype == "bf16"
    assert doc.warnings[0].startswith("--dtype bf16 on CPU")
    assert doc.ops[0].bytes == (16 * 16 + 8 * 16 + 16 * 8) * 2


@pytest.mark.skipif(not hasattr(workloads.spec, "SpGEMMOp"),
                    reason="this checkout has no spgemm operation")
def test_spgemm_is_measured_with_scipy_on_cpu(tmp_path):
    path = write(tmp_path, """\
        version: 1
        name: sp
        hardware: tiny
        operations:
          - {op: spgemm, name: s, a: {source: uniform, params: {n_rows: 40, n_cols: 24, nnz: 90}},
             b: {source: uniform, params: {n_rows: 24, n_cols: 32, nnz: 70}, seed: 1}}
        """)
    workload = load_workload(path)
    a, b = (named.matrix for named in workload.operations[0].operands())
    doc = measure(workload, device="cpu", **FAST)
    (row,) = doc.ops
    assert (row.phase, row.method) == ("spgemm", "spgemm_scipy_csr")
    assert (row.m, row.k, row.n) == (40, 24, 32)
    assert row.method_note == "scipy.sparse CSR @ CSR (one thread), fp32 values"
    dense_a, dense_b = a.toarray() != 0, b.toarray() != 0
    # Σ_k nnz(A[:, k]) · nnz(B[k, :])
    multiplies = int((dense_a.sum(axis=0) * dense_b.sum(axis=1)).sum())
    assert row.flops == 2 * multiplies
    assert (row.nnz_a, row.nnz_b) == (90, 70)
    # scipy drops entries that cancel to exactly zero, so nnz_c is the numerical count.
    assert row.nnz_c == np.count_nonzero(a.toarray() @ b.toarray())
    csr_bytes = (41 + 90) * 4 + 90 * 4 + (25 + 70) * 4 + 70 * 4  # int32 indices, fp32 values
    assert row.bytes == csr_bytes + (41 + row.nnz_c) * 4 + row.nnz_c * 4
    assert 0 < row.p20_s <= row.median_s <= row.p80_s and row.total_s == row.median_s
    assert doc.totals.measured_shapes == 1


# --------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------

needs_attention = pytest.mark.skipif(not hasattr(workloads.spec, "AttentionOp"),
                                     reason="this checkout has no attention operation")

ATTENTION = """\
    version: 1
    name: att
    hardware: tiny
    operations:
      - {op: attention, name: dense, heads: 2, kv_len: 32, head_dim: 8}
      - {op: attention, name: dense2, heads: 2, kv_len: 32, head_dim: 8, repeat: 2}
      - {op: attention, name: gqa, heads: 4, kv_heads: 2, kv_len: 32, head_dim: 8, causal: true}
      - {op: attention, name: decode, heads: 2, kv_len: 32, q_len: 4, head_dim: 8, causal: true,
         phase: decode}
      - {op: attention, name: window, heads: 2, kv_len: 32, head_dim: 8, causal: true,
         block_size: 8, pattern: {kind: sliding_window, window: 8, global_tokens: 2}}
      - {op: attention, name: scores, heads: 2, kv_len: 32, head_dim: 8,
         pattern: {kind: nm, n: 2, m: 4}}
    """


@pytest.mark.parametrize("flex", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "kind", ["dense", "nm", "sliding_window", "block_sparse", "blasst", "topk"])
def test_attention_method_per_pattern(kind, causal, flex):
    choice = attention_method(kind, causal, flex)
    if kind in ("dense", "nm"):
        assert choice.method == ("sdpa_causal" if causal else "sdpa_dense")
        assert ("N:M on the scores has no torch kernel" in choice.note) == (kind == "nm")
    else:
        assert choice.method == ("flex_attention_compiled" if flex else "sdpa_bool_mask")
    with pytest.raises(ValueError, match="unknown attention pattern 'other'"):
        attention_method("other", causal, flex)


@needs_attention
def test_attention_rows_on_cpu(tmp_path):
    workload = load_workload(write(tmp_path, ATTENTION))
    doc = measure(workload, device="cpu", **FAST)
    rows = {r.name: r for r in doc.ops}
    assert [r.name for r in doc.ops] == ["dense", "dense2", "gqa", "decode", "window", "scores"]
    assert {n: r.method for n, r in rows.items()} == {
        "dense": "sdpa_dense", "dense2": "sdpa_dense", "gqa": "sdpa_causal",
        "decode": "sdpa_causal", "window": "sdpa_bool_mask", "scores": "sdpa_dense"}
    gqa, decode, window = rows["gqa"], rows["decode"], rows["window"]
    assert (gqa.phase, gqa.m, gqa.k, gqa.n, gqa.copies) == ("prefill", 32, 8, 32, 4)
    assert (decode.phase, decode.m, decode.n) == ("decode", 4, 32)
    assert gqa.attention.kv_heads == 2 and gqa.attention.causal
    assert gqa.attention.density == pytest.approx((32 * 33 / 2) / (32 * 32))
    assert gqa.flops == 4 * 4 * 32 * 32 * 8
    assert gqa.bytes == (4 * 32 * 8 * 2 + 2 * 32 * 8 * 2) * 4  # Q and O, then K and V (2 heads)
    assert window.bytes == 2 * 32 * 8 * 4 * 4 + 2 * 32 * 32  # Q, K, V, O in fp32 + a bool mask
    assert rows["dense2"].reused_from == "dense" and rows["dense2"].total_s == pytest.approx(
        2 * rows["dense"].median_s)
    assert doc.totals.measured_shapes == 5


@needs_attention
def test_causal_attention_is_aligned_bottom_right(tmp_path):
    # Decode's queries are the newest tokens: torch's is_causal would align them top-left.
    from baselines.measure import _attention_call, _Setup
    from workloads.generators.attention import build_mask

    op = next(o for o in load_workload(write(tmp_path, ATTENTION)).operations
              if o.name == "decode")
    setup = _Setup("cpu", "fp32", 1, 1, 0, 0.0, 0, 0, None, None, None)
    mask = build_mask(op)
    call, _ = _attention_call(torch, op, mask, attention_method("dense", True, False), setup,
                              torch.Generator().manual_seed(0))
    bool_call, _ = _attention_call(torch, op, mask, MethodChoice("sdpa_bool_mask"), setup,
                                   torch.Generator().manual_seed(0))
    torch.testing.assert_close(call(), bool_call())


@needs_attention
@pytest.mark.filterwarnings("ignore:.*flex_attention.*:UserWarning")  # "use torch.compile"
def test_flex_path_computes_the_masked_attention(tmp_path, monkeypatch):
    # Compiling FlexAttention on CPU takes about a minute, so our torch.compile(flex_attention)
    # becomes the identity: the eager kernel runs the same BlockMask through the same call (the
    # eager kernel's own torch.compile(..., backend=...) calls still go through).
    from baselines.measure import _attention_call, _Setup
    from workloads.generators.attention import build_mask

    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real(fn, **kw) if kw else fn)
    workload = load_workload(write(tmp_path, ATTENTION))
    op = next(o for o in workload.operations if o.name == "window")
    setup = _Setup("cpu", "fp32", 1, 1, 0, 0.0, 0, 0, None, None, None, True)
    mask = build_mask(op)
    flex, moved = _attention_call(torch, op, mask, attention_method("sliding_window", True, True),
                                  setup, torch.Generator().manual_seed(0))
    sdpa, _ = _attention_call(torch, op, mask, MethodChoice("sdpa_bool_mask"), setup,
                              torch.Generator().manual_seed(0))
    torch.testing.assert_close(flex(), sdpa(), rtol=1e-4, atol=1e-5)
    assert moved > 2 * 32 * 8 * 4 * 4  # the block lists and the element mask count too
    doc = measure(workload, device="cpu", flex_compile=True, **FAST)
    assert {r.name: r.method for r in doc.ops}["window"] == "flex_attention_compiled"
    assert doc.provenance.flex_compile is True
    assert any(w.startswith("--flex-compile on CPU") for w in doc.warnings)


def test_flex_compile_without_block_patterns_says_it_has_no_effect():
    doc = measure(load_workload(TINY), device="cpu", flex_compile=True, **FAST)
    assert ("--flex-compile has no effect: no attention op has a block pattern (any pattern "
            "but dense and N:M on the scores)") in doc.warnings


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------


def test_cli_writes_a_valid_baseline_and_prints_a_table(tmp_path, capsys):
    out = tmp_path / "b.json"
    argv = ["baseline", str(TINY), "--device", "cpu", "--reps", "2", "--warmup", "0",
            "--threads", "1", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    doc = read_baseline(out)
    assert [r.name for r in doc.ops] == ["dense", "nm24", "nm28"]
    assert doc.provenance.threads == 1 and doc.provenance.reps == 2
    for text in ("tiny-gemm (inference)", "masked_dense", "GFLOP/s", "total",
                 "masked_dense (2 ops): 2:4 semi-structured kernels are CUDA-only",
                 f"wrote {out}"):
        assert text in printed


def test_cli_default_output_path(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["baseline", str(TINY.resolve()), "--device", "cpu", "--reps", "1", "--warmup", "0",
            "--threads", "1", "--quiet"]
    assert main(argv) == 0
    path = Path("out") / "tiny-gemm" / "baseline-cpu-fp32.json"
    assert capsys.readouterr().out.strip() == f"wrote {path}"
    assert read_baseline(path).workload.name == "tiny-gemm"


def test_cli_warns_about_cpu_bf16_on_stderr(tmp_path, capsys):
    argv = ["baseline", str(TINY), "--device", "cpu", "--dtype", "bf16", "--reps", "1",
            "--warmup", "0", "--threads", "1", "--out", str(tmp_path / "b.json"), "--quiet"]
    assert main(argv) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("archsim: warning: --dtype bf16 on CPU")
    assert all(line.startswith("archsim: warning: ") for line in lines)


@pytest.mark.parametrize(("flag", "value", "least"), [
    ("--reps", "0", 1), ("--threads", "0", 1), ("--warmup", "-1", 0), ("--rows", "-1", 0),
    ("--reps", "two", 1),
])
def test_cli_bad_counts_are_refused_before_any_file(tmp_path, capsys, flag, value, least):
    # Refused while parsing: the output folder is not even created (--reps 0 used to create
    # it, and --rows -1 was accepted).
    argv = ["baseline", str(TINY), "--device", "cpu", "--out", str(tmp_path / "o" / "b.json"),
            flag, value]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    shown = value if value.lstrip("-").isdigit() else repr(value)
    assert capsys.readouterr().err.splitlines() == [
        f"archsim baseline: error: argument {flag}: expected a whole number >= {least}, "
        f"got {shown} (see 'archsim baseline --help')"]
    assert not (tmp_path / "o").exists()


def test_cli_takes_a_shipped_example_by_name(tmp_path):
    out = tmp_path / "b.json"
    argv = ["baseline", "example:tiny_gemm", "--device", "cpu", "--reps", "1", "--warmup", "0",
            "--threads", "1", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert json.loads(out.read_text())["workload"]["name"] == "tiny-gemm"


def test_cli_misspelled_example_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["baseline", "example:tiny_gem", "--device", "cpu", "--out", str(tmp_path / "b")])
    assert capsys.readouterr().err.splitlines() == [
        "archsim baseline: error: argument workload: example:tiny_gem: no shipped example of "
        "that name; did you mean example:tiny_gemm? 'archsim examples' lists them (see "
        "'archsim baseline --help')"]


def test_cli_unwritable_output_exits_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    argv = ["baseline", str(TINY), "--device", "cpu", "--reps", "1", "--warmup", "0",
            "--threads", "1", "--out", str(blocker / "b.json"), "--quiet"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"archsim: error: --out {blocker / 'b.json'}: is inside {blocker}, a file; expected a "
        f"folder\n")


def test_cli_a_blocked_default_output_is_named_as_the_default(tmp_path, capsys, monkeypatch):
    """No --out was given: the error names the default file and how to choose another, as run's
    does for its default folder (it read 'out/tiny-gemm/baseline-cpu-fp32.json: cannot write
    the baseline: out is not a directory')."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").write_text("user data")
    assert main(["baseline", str(TINY), "--device", "cpu", "--quiet"]) == 2
    assert capsys.readouterr().err == (
        "archsim: error: out/tiny-gemm/baseline-cpu-fp32.json (the default output file; choose "
        "another with --out): is inside out, a file; expected a folder\n")
    assert (tmp_path / "out").read_text() == "user data"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a CUDA device")
def test_cli_cuda_without_a_gpu_exits_2(tmp_path, capsys):
    argv = ["baseline", str(TINY), "--device", "cuda", "--out", str(tmp_path / "b.json")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("archsim: error: --device cuda: no CUDA device is available")
    assert err.endswith("use --device cpu\n") and err.count("\n") == 1


# --------------------------------------------------------------------------------------------
# CUDA (skipped without a GPU)
# --------------------------------------------------------------------------------------------

CUDA_WORKLOAD = """\
    version: 1
    name: cuda-check
    hardware: tiny
    unsupported_nm: masked_dense
    operations:
      - {op: gemm, name: dense, m: 64, k: 128, n: 64}
      - {op: gemm, name: nm28, m: 64, k: 128, n: 64, sparsity: {kind: nm, n: 2, m: 8}}
      - {op: gemm, name: nm48, m: 64, k: 128, n: 64, sparsity: {kind: nm, n: 4, m: 8}}
    """


@needs_cuda
def test_cuda_document(tmp_path):
    workload = load_workload(write(tmp_path, CUDA_WORKLOAD))
    doc = measure(workload, device="cuda", reps=3, warmup=1)
    p = doc.provenance
    assert (p.device, p.dtype, p.timer) == ("cuda", "fp16", "cuda_events")
    assert p.l2_flush_bytes >= 256 * 2**20 and p.compute_capability and p.cuda_runtime_version
    methods = {r.name: r.method for r in doc.ops}
    assert methods["dense"] == "dense" and methods["nm48"] == "masked_dense"
    cc = torch.cuda.get_device_capability()
    expected = choose_method((2, 8), device="cuda", dtype="fp16", weight_shape=(64, 128),
                             capability=cc, backend=p.semi_structured_backend)
    assert methods["nm28"] == expected.method
    for r in doc.ops:
        assert 0 < r.p20_s <= r.median_s <= r.p80_s and r.calls_per_sample == 1
        # Each GEMM is also replayed from a CUDA graph (its GPU time alone), or says why not.
        assert r.graph_median_s is not None or "CUDA graph" in r.method_note
        if r.graph_median_s is not None:
            assert 0 < r.graph_p20_s <= r.graph_median_s <= r.graph_p80_s


@needs_cuda
def test_cuda_semi_structured_result_matches_the_masked_dense_product():
    # The 2:4 kernel must compute the same product as the masked dense weight it came from.
    from baselines.measure import _nm_mask, semi_structured_backend

    backend = semi_structured_backend(torch)
    if choose_method((2, 8), device="cuda", dtype="fp16", weight_shape=(64, 128),
                     capability=torch.cuda.get_device_capability(), backend=backend,
                     ).method != "semi_structured_2:4":
        pytest.skip("no 2:4 kernel on this GPU")

    gen = torch.Generator().manual_seed(0)
    w = torch.randn(64, 128, generator=gen) * _nm_mask(torch, 64, 128, 2, 8, gen)
    a = torch.randn(32, 128, generator=gen)
    w, a = w.cuda().half(), a.cuda().half()
    cls = (torch.sparse.SparseSemiStructuredTensorCUSPARSELT if backend == "cusparselt"
           else torch.sparse.SparseSemiStructuredTensorCUTLASS)
    sparse = cls.from_dense(w)
    got = torch.nn.functional.linear(a, sparse)
    torch.testing.assert_close(got, torch.nn.functional.linear(a, w), rtol=1e-2, atol=1e-2)


SPGEMM_WORKLOAD = """\
    version: 1
    name: sp-cuda
    hardware: tiny
    operations:
      - {op: spgemm, name: s, a: {source: uniform, params: {n_rows: 64, n_cols: 64, nnz: 300}}}
    """


@needs_cuda
@pytest.mark.skipif(not hasattr(workloads.spec, "SpGEMMOp"),
                    reason="this checkout has no spgemm operation")
def test_cuda_spgemm_uses_torch_csr(tmp_path):
    workload = load_workload(write(tmp_path, SPGEMM_WORKLOAD))
    a = workload.operations[0].operands()[0].matrix
    (row,) = measure(workload, device="cuda", reps=3, warmup=1).ops
    assert (row.phase, row.method, row.calls_per_sample) == ("spgemm", "spgemm_torch_csr", 1)
    assert row.nnz_c >= np.count_nonzero(a.toarray() @ a.toarray())
    assert 0 < row.p20_s <= row.median_s <= row.p80_s


@needs_cuda
@needs_attention
def test_cuda_attention_with_sdpa(tmp_path):
    workload = load_workload(write(tmp_path, ATTENTION))
    doc = measure(workload, device="cuda", reps=3, warmup=1)
    methods = {r.name: r.method for r in doc.ops}
    assert methods["gqa"] == "sdpa_causal" and methods["window"] == "sdpa_bool_mask"
    for r in doc.ops:
        assert 0 < r.p20_s <= r.median_s <= r.p80_s and r.calls_per_sample == 1


def test_every_attention_pattern_of_the_spec_has_a_torch_method():
    """A pattern added to the spec must be measurable too (as a mask, or dense/causal)."""
    import typing

    from workloads.spec import AttentionPattern

    union = typing.get_args(AttentionPattern)[0]
    kinds = [typing.get_args(cls.model_fields["kind"].annotation)[0]
             for cls in typing.get_args(union)]
    assert len(kinds) >= 12
    for kind in kinds:
        for causal in (False, True):
            assert attention_method(kind, causal, flex_compile=False).method.startswith("sdpa")


def test_cli_refuses_to_replace_an_earlier_baseline_without_force(tmp_path, capsys):
    """A baseline measured on a lent GPU may not be measurable again."""
    out = tmp_path / "b.json"
    out.write_text('{"measured": "on a GPU"}\n')
    argv = ["baseline", str(TINY), "--device", "cpu", "--reps", "1", "--warmup", "0",
            "--threads", "1", "--quiet", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(b.json); pass --force to replace it" in err
    assert out.read_text() == '{"measured": "on a GPU"}\n'
    assert main([*argv, "--force"]) == 0
    assert read_baseline(out).workload.name == "tiny-gemm"


def test_cli_default_output_path_joins_the_set_overrides(tmp_path, monkeypatch, capsys):
    """As 'archsim run' names its folder: a measurement with other settings lands beside that
    run's results, not over the plain workload's baseline."""
    monkeypatch.chdir(tmp_path)
    argv = ["baseline", str(TINY.resolve()), "--device", "cpu", "--reps", "1", "--warmup", "0",
            "--threads", "1", "--quiet", "--set", "operations.0.m=32"]
    assert main(argv) == 0
    path = Path("out") / "tiny-gemm+operations.0.m_32" / "baseline-cpu-fp32.json"
    assert capsys.readouterr().out.strip() == f"wrote {path}"
    assert not (Path("out") / "tiny-gemm").exists()
