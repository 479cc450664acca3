"""The baseline JSON file: what ``archsim baseline`` writes and ``archsim run --baseline`` reads.

One set of pydantic models serves both sides, so the writer cannot drift from the reader. The
schema is documented field by field in ``docs/baselines.md``; bump :data:`SCHEMA_VERSION` when a
field changes meaning. Unknown keys are ignored on reading so that a file from a later archsim
that only *adds* fields still loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from baselines.errors import BaselineError
from workloads.files import read_at_most

__all__ = [
    "SCHEMA_VERSION",
    "METHODS",
    "Provenance",
    "AttentionInfo",
    "OpRow",
    "Totals",
    "WorkloadRef",
    "BaselineDoc",
    "read_baseline",
]

#: Bumped whenever a field of the baseline JSON changes meaning (docs/baselines.md).
SCHEMA_VERSION = 1
#: Read at most this much of a baseline file (``/dev/zero`` must not fill the memory).
MAX_BASELINE_BYTES = 64 << 20

#: How an op was run: plain dense kernels, 2:4 semi-structured sparse kernels (cuSPARSELt or
#: CUTLASS), dense kernels on a weight whose pruned entries are zeros, a sparse-sparse product of
#: CSR matrices (scipy on CPU, torch/cuSPARSE on CUDA), or attention through
#: ``scaled_dot_product_attention`` (no mask, lower-right causal, or a boolean mask) or compiled
#: FlexAttention on the op's block mask.
METHODS = (
    "dense", "semi_structured_2:4", "masked_dense", "spgemm_scipy_csr", "spgemm_torch_csr",
    "sdpa_dense", "sdpa_causal", "sdpa_bool_mask", "flex_attention_compiled",
)
Method = Literal[
    "dense", "semi_structured_2:4", "masked_dense", "spgemm_scipy_csr", "spgemm_torch_csr",
    "sdpa_dense", "sdpa_causal", "sdpa_bool_mask", "flex_attention_compiled",
]

NonNegFloat = Annotated[float, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)


class Provenance(_Model):
    """Where and how the numbers were measured. Deliberately holds no hostname or user name."""

    device: Literal["cpu", "cuda"]
    device_name: str
    compute_capability: str | None
    cuda_runtime_version: str | None
    cuda_driver_version: str | None
    gpu_clocks: str | None = None
    cusparselt_version: int | None
    semi_structured_backend: Literal["cusparselt", "cutlass"] | None
    cpu_capability: str
    torch_version: str
    numpy_version: str
    python_version: str
    archsim_version: str
    platform: str
    dtype: Literal["fp32", "fp16", "bf16"]
    threads: PosInt
    timer: Literal["perf_counter_ns", "cuda_events"]
    l2_flush_bytes: NonNegInt
    reps: PosInt
    warmup: NonNegInt
    min_sample_s: NonNegFloat
    seed: int
    flex_compile: bool
    cpus: PosInt
    load_avg_1m_before: NonNegFloat | None
    load_avg_1m_after: NonNegFloat | None
    date_utc: str


class AttentionInfo(_Model):
    """What an attention row measured: the op's pattern kind, causality, K/V heads and density."""

    pattern: str
    causal: bool
    kv_heads: PosInt
    density: Annotated[float, Field(ge=0, le=1)]


class OpRow(_Model):
    """One GEMM of the workload (one phase of one layer, or one SpGEMM) and its measured time.

    ``median_s``/``p20_s``/``p80_s`` are per call, all ``copies`` included; ``total_s`` is the
    median times ``repeat``. ``flops`` is the dense-equivalent count ``2·m·k·n·copies`` for a
    GEMM (so ``flop_per_s`` of an N:M op is an effective rate) and twice the scalar multiplies
    for an SpGEMM; ``bytes`` counts each operand once as stored (a semi-structured weight in its
    compressed form, CSR matrices with their index arrays). ``nnz_a``/``nnz_b``/``nnz_c`` are
    set for SpGEMM rows only, ``attention`` for attention rows only (whose ``m, k, n`` are
    queries, head_dim, keys and ``copies`` batch × heads). ``graph_*_s`` (CUDA GEMMs only) time
    the same call replayed from a CUDA graph: the GPU's time without the call's host work.
    """

    name: str
    layer: str
    phase: Literal["inference", "ff", "bp", "wg", "spgemm", "prefill", "decode"]
    m: PosInt
    k: PosInt
    n: PosInt
    copies: PosInt
    repeat: PosInt
    nm: str | None
    method: Method
    method_note: str
    median_s: PosFloat
    p20_s: PosFloat
    p80_s: PosFloat
    samples: PosInt
    calls_per_sample: PosInt
    flops: PosInt
    bytes: PosInt
    flop_per_s: PosFloat
    bytes_per_s: PosFloat
    total_s: PosFloat
    reused_from: str | None
    graph_median_s: PosFloat | None = None
    graph_p20_s: PosFloat | None = None
    graph_p80_s: PosFloat | None = None
    nnz_a: NonNegInt | None = None
    nnz_b: NonNegInt | None = None
    nnz_c: NonNegInt | None = None
    attention: AttentionInfo | None = None

    @model_validator(mode="after")
    def _ordered(self) -> OpRow:
        if not self.p20_s <= self.median_s <= self.p80_s:
            raise ValueError(
                f"expected p20_s <= median_s <= p80_s, got {self.p20_s} / {self.median_s} / "
                f"{self.p80_s}"
            )
        return self


class Totals(_Model):
    """Sums over all ops: ``seconds`` is the sum of ``total_s``, ``flops`` counts repeats too."""

    ops: PosInt
    measured_shapes: PosInt
    seconds: PosFloat
    flops: PosInt
    flop_per_s: PosFloat


class WorkloadRef(_Model):
    """The workload the baseline was measured for; ``archsim run --baseline`` checks it."""

    name: str
    mode: Literal["inference", "training"]


class BaselineDoc(_Model):
    """A whole baseline file."""

    schema_version: Literal[1]
    kind: Literal["archsim-baseline"]
    workload: WorkloadRef
    provenance: Provenance
    warnings: tuple[str, ...] = Field(strict=False)
    ops: tuple[OpRow, ...] = Field(min_length=1, strict=False)
    totals: Totals

    def to_json(self) -> str:
        """The file's text: indented JSON with a final newline."""
        return json.dumps(self.model_dump(mode="json"), indent=2) + "\n"


def _where(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def read_baseline(path: str | Path) -> BaselineDoc:
    """Read and validate a baseline file.

    Raises
    ------
    BaselineError
        The file is missing, not JSON, not a baseline, of another schema version, or has a
        field of the wrong type; the message names the file and the first bad field.
    """
    path = Path(path)
    try:
        raw = read_at_most(path, MAX_BASELINE_BYTES)
        if len(raw) > MAX_BASELINE_BYTES:
            raise BaselineError(f"{path}: larger than {MAX_BASELINE_BYTES >> 20} MiB; a baseline "
                                f"file of the largest model is well under a megabyte (is this "
                                f"the right file?)")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise BaselineError(f"{path}: baseline file not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BaselineError(f"{path}: cannot read baseline file: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BaselineError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(data, dict) or data.get("kind") != "archsim-baseline":
        raise BaselineError(
            f"{path}: not an archsim baseline file (expected a JSON object with "
            f"\"kind\": \"archsim-baseline\", as written by 'archsim baseline')"
        )
    if data.get("schema_version") != SCHEMA_VERSION:
        raise BaselineError(
            f"{path}: baseline schema_version {data.get('schema_version')!r} is not supported "
            f"(this archsim reads {SCHEMA_VERSION}); re-measure with 'archsim baseline'"
        )
    try:
        return BaselineDoc.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise BaselineError(f"{path}: {_where(first['loc'])}: {first['msg']}{more}") from None
