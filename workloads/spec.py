"""Typed, frozen, validated descriptions of hardware and workloads.

Everything downstream of the loader receives these objects, never YAML dicts. They are pydantic
v2 models (frozen, unknown keys forbidden, strict types) so that the loader gets every error with
its path for free; the loader then maps that path back to a line of the user's file.

Conventions: sizes carry their unit in the name (``*_bytes``, ``*_cycles``, ``*_bits``); DRAM
bandwidth is an integer number of bytes per cycle because the memory bus of the RTL moves whole
beats, and the SimPy model must count cycles exactly as the RTL does.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from workloads.arith import ceil_div
from workloads.errors import SpecError
from workloads.limits import MAX_INT, Limits

__all__ = [
    "untrainable_attention",
    "SpecError",
    "NMPattern",
    "ArraySpec",
    "BufferSpec",
    "DramSpec",
    "VectorUnitSpec",
    "ControllerSpec",
    "EnergySpec",
    "SpGEMMEngineSpec",
    "HardwareSpec",
    "DenseSparsity",
    "NMSparsity",
    "BDWPSparsity",
    "Sparsity",
    "SchedulePasses",
    "GemmOp",
    "LinearOp",
    "Conv2dOp",
    "ModelOp",
    "MatrixSource",
    "SpGEMMOp",
    "SPGEMM_DATAFLOWS",
    "Operation",
    "WorkloadSpec",
    "ServeSpec",
    "SERVABLE_MODELS",
    "MODEL_NAMES",
    "QWEN2_5_7B",
    "VIDEO_DIT",
    "MAX_M",
    "QKData",
    "DenseAttention",
    "SlidingWindowAttention",
    "BlockSparseAttention",
    "BlasstAttention",
    "TopKAttention",
    "ScoreNMAttention",
    "VerticalSlashAttention",
    "DiagonalAttention",
    "MultiDiagonalAttention",
    "VerticalStripeAttention",
    "GatedBlockAttention",
    "ElementMaskAttention",
    "AttentionPattern",
    "AttentionOp",
    "TRANSFORMER_NAMES",
]

#: Largest group size M the unified N:M datapath supports (the PE's activation mux is M:1).
MAX_M = 16

#: Most blocks of a zoo ``decoder`` (GPT-3 has 96).
MAX_MODEL_LAYERS = 1024

#: Largest PE array side: 16 times a TPU's, far beyond what an FPGA holds.
MAX_ARRAY_DIM = 4096

PositiveInt = Annotated[int, Field(gt=0, le=MAX_INT)]
# Hardware sizes: far beyond any real design, small enough that products of two stay in int64.
Bytes = Annotated[int, Field(gt=0, le=1 << 40)]
Count = Annotated[int, Field(gt=0, le=1 << 16)]
NonNegativeInt = Annotated[int, Field(ge=0, le=MAX_INT)]
# Infinity and NaN mean nothing in a clock or an energy, and would reach results.json.
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def _folder_name(value: str) -> str:
    """A name that also names an output folder (``out/<name>``) and must stay inside it."""
    if not value or value.startswith(".") or any(c in value for c in "/\\") or any(
        ord(c) < 32 for c in value
    ):
        raise ValueError(
            f"{value!r} cannot name an output folder (out/<name>); use letters, digits, '-', "
            f"'_' and '.', not starting with '.', without '/', '\\' or control characters"
        )
    return value


#: The name of a workload or a hardware description (it names the output folder).
FolderName = Annotated[str, Field(max_length=200), AfterValidator(_folder_name)]
_Pair = Annotated[list[PositiveInt], Field(min_length=2, max_length=2)]


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    def __hash__(self) -> int:
        # The same value as pydantic's hash of a frozen model (its fields' values), computed
        # once per object: the scheduler's and the timing engines' memos are keyed by hardware
        # specs, and pydantic would hash every nested model again on each lookup (about 4 %
        # of a design-space point). A spec never changes once built (frozen; ``model_copy``
        # makes a new object), and an object stays alive while its hash is remembered, so
        # its id() is not reused meanwhile.
        known = _HASHES.get(id(self))
        if known is not None and known[0] is self:
            return known[1]
        value = hash(tuple(self.__dict__[name] for name in type(self).__pydantic_fields__))
        if len(_HASHES) >= _MAX_HASHES:
            _HASHES.clear()
        _HASHES[id(self)] = (self, value)
        return value


#: Hashes of spec objects, by id(): (the object, its hash).
_HASHES: dict[int, tuple[_Spec, int]] = {}
_MAX_HASHES = 1024


def _check_n_m(n: int, m: int) -> None:
    if not 0 < n <= m:
        raise ValueError(f"n must satisfy 0 < n <= m, got n={n}, m={m}")
    if m & (m - 1) or m > MAX_M:
        raise ValueError(f"m must be a power of two no larger than {MAX_M}, got m={m}")


# --------------------------------------------------------------------------------------------
# Hardware
# --------------------------------------------------------------------------------------------


class NMPattern(_Spec):
    """One N:M pattern the PE datapath supports: N kept weights in every group of M."""

    n: int
    m: int

    @model_validator(mode="after")
    def _valid(self) -> NMPattern:
        _check_n_m(self.n, self.m)
        return self


class ArraySpec(_Spec):
    """The systolic PE array, ``rows × cols`` PEs. Weight-stationary: a PE holds a weight, ``rows``
    along the reduction dimension, ``cols`` along outputs. Output-stationary: a PE holds an
    output's sum while operands stream past it (docs/isa.md, "Output-stationary COMPUTE")."""

    rows: Annotated[int, Field(gt=0, le=MAX_ARRAY_DIM)]
    cols: Annotated[int, Field(gt=0, le=MAX_ARRAY_DIM)]
    dataflow: Literal["weight_stationary", "output_stationary"] = "weight_stationary"

    @property
    def output_stationary(self) -> bool:
        """Whether the PEs keep outputs (docs/isa.md, "Output-stationary COMPUTE")."""
        return self.dataflow == "output_stationary"


class BufferSpec(_Spec):
    """On-chip SRAM sizes. Each buffer is split in two halves (ping-pong) for double buffering."""

    weight_bytes: Bytes
    input_bytes: Bytes
    accumulator_bytes: Bytes


class DramSpec(_Spec):
    """Off-chip memory as the DMA engine sees it.

    ``bandwidth_bytes_per_cycle`` is the width of one memory beat; ``latency_cycles`` is the time
    from a request to its first beat.
    """

    bandwidth_bytes_per_cycle: Annotated[int, Field(gt=0, le=1 << 20)]
    latency_cycles: Annotated[int, Field(ge=0, le=1 << 32)]


class VectorUnitSpec(_Spec):
    """The vector unit: N:M compression and the fixed-point softmax of attention.

    COMPRESS handles ``lanes`` groups of M weights per cycle, plus ``pipeline_cycles``. The
    softmax datapath (docs/attention.md, ``rtl/softmax.py``) has ``softmax_lanes`` lanes (default
    ``lanes``), one query column each, so a score tile streams one key row per cycle per
    ``softmax_lanes`` queries. Scores enter as ``score_bits``-bit two's complement in log2 units
    with ``score_frac_bits`` fraction bits (the exp table has ``2**score_frac_bits`` entries);
    exponentials and running sums carry ``exp_bits`` fraction bits; ``exp_latency_cycles`` is
    the depth of the exp stage (table read and shift, at least 2; the RTL pads to it).
    """

    lanes: Count
    pipeline_cycles: Annotated[int, Field(ge=0, le=1 << 16)] = 4
    softmax_lanes: Count | None = None
    score_bits: Annotated[int, Field(ge=4, le=32)] = 16
    score_frac_bits: Annotated[int, Field(ge=1, le=12)] = 8
    exp_bits: Annotated[int, Field(ge=4, le=24)] = 16
    exp_latency_cycles: Annotated[int, Field(ge=2, le=16)] = 2

    @model_validator(mode="after")
    def _score_format(self) -> VectorUnitSpec:
        if self.score_frac_bits >= self.score_bits:
            raise ValueError(
                f"score_frac_bits={self.score_frac_bits} must be below score_bits="
                f"{self.score_bits} (scores need at least one integer bit)"
            )
        return self

    @property
    def softmax_width(self) -> int:
        """Query columns the softmax datapath handles per cycle."""
        return self.softmax_lanes or self.lanes


class ControllerSpec(_Spec):
    """The instruction controller: each unit's instruction memory holds ``instruction_depth`` words.

    The host writes a whole program before starting it, so one program (one segment) may hold at
    most this many instructions per unit on the RTL.
    """

    instruction_depth: Annotated[int, Field(gt=0, le=1 << 24)] = 1024


class EnergySpec(_Spec):
    """Energy per action in picojoules (defaults: 16-bit fixed point, see docs/energy.md)."""

    mac_pj: NonNegativeFloat = 0.9
    sram_read_pj_per_byte: NonNegativeFloat = 1.2
    sram_write_pj_per_byte: NonNegativeFloat = 1.4
    dram_read_pj_per_byte: NonNegativeFloat = 160.0
    dram_write_pj_per_byte: NonNegativeFloat = 160.0
    vector_group_pj: NonNegativeFloat = 2.0


def _power_of_two(value: int) -> bool:
    return value > 0 and not value & (value - 1)


class SpGEMMEngineSpec(_Spec):
    """The SpGEMM engine (docs/spgemm.md); DRAM is shared with the GEMM array (``hw.dram``).

    Attributes
    ----------
    multipliers
        Partial products per cycle: B-row elements per stream beat, multipliers, hash lanes and
        merger width (every dataflow gets the same peak rate, so they compare fairly).
    merger_radix
        Sorted lists one merge-tree pass combines (row-wise and outer-product merging).
    hash_entries, hash_banks, hash_ways
        Hash accumulator: ``hash_entries`` (key, value) entries in ``hash_banks`` banks, grouped
        in buckets of ``hash_ways`` entries scanned one per cycle; a key that finds its bucket
        full of other keys spills to DRAM. All three are powers of two.
    scratchpad_bytes
        On-chip staging: half holds two chunk slots (double-buffered fetch), half holds merge
        intermediates (docs/spgemm.md).
    index_bits
        Width of column indices and CSR offsets in DRAM and on the engine's streams.
    """

    multipliers: Count = 4
    merger_radix: Annotated[int, Field(ge=2, le=1 << 16)] = 16
    hash_entries: Annotated[int, Field(gt=0, le=1 << 32)] = 4096
    hash_banks: Count = 4
    hash_ways: Count = 4
    scratchpad_bytes: Annotated[int, Field(ge=64, le=1 << 40)] = 262144
    index_bits: Annotated[int, Field(ge=4, le=32)] = 32

    @model_validator(mode="after")
    def _geometry(self) -> SpGEMMEngineSpec:
        for name in ("hash_entries", "hash_banks", "hash_ways"):
            if not _power_of_two(getattr(self, name)):
                raise ValueError(f"{name} must be a power of two, got {getattr(self, name)}")
        if self.hash_entries < self.hash_banks * self.hash_ways:
            raise ValueError(
                f"hash_entries={self.hash_entries} must hold at least one bucket of "
                f"hash_ways={self.hash_ways} per bank (hash_banks={self.hash_banks})"
            )
        return self

    @property
    def hash_buckets(self) -> int:
        return self.hash_entries // self.hash_ways

    @property
    def index_bytes(self) -> int:
        return ceil_div(self.index_bits, 8)


class HardwareSpec(_Spec):
    """A SAT-like accelerator. Every RTL parameter and every model latency derives from it.

    Attributes
    ----------
    data_bits, acc_bits
        Operand and accumulator widths (two's complement integers / fixed point).
    nm_patterns
        N:M patterns the unified PE datapath runs sparse; any other pattern runs dense.
    output_shift
        Finished GEMM outputs are requantized on the store path: shifted right by this many
        bits, rounded half to even and saturated to ``data_bits`` (docs/isa.md). ``None``: the
        operands' ``data_bits // 2`` fraction bits (attention's convention), so an output has
        its inputs' fixed-point format. See :attr:`requant_shift`.
    """

    version: Literal[1] = 1
    name: FolderName
    clock_mhz: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)]
    array: ArraySpec
    data_bits: Annotated[int, Field(ge=2, le=32)] = 16
    acc_bits: Annotated[int, Field(ge=8, le=64)] = 32
    nm_patterns: Annotated[tuple[NMPattern, ...], Field(strict=False)] = ()
    output_shift: Annotated[int | None, Field(ge=0, le=63)] = None
    buffers: BufferSpec
    dram: DramSpec
    vector_unit: VectorUnitSpec
    controller: ControllerSpec = ControllerSpec()
    energy: EnergySpec = EnergySpec()
    spgemm: SpGEMMEngineSpec = SpGEMMEngineSpec()

    @model_validator(mode="after")
    def _widths(self) -> HardwareSpec:
        if self.acc_bits < 2 * self.data_bits:
            raise ValueError(
                f"acc_bits must be at least 2*data_bits={2 * self.data_bits} so a single product "
                f"fits, got acc_bits={self.acc_bits}"
            )
        if self.output_shift is not None and self.output_shift >= self.acc_bits:
            raise ValueError(
                f"output_shift must be below acc_bits={self.acc_bits} (a larger shift leaves only "
                f"zeros), got output_shift={self.output_shift}"
            )
        for p in self.nm_patterns:
            if self.array.rows % p.n:
                raise ValueError(
                    f"array.rows={self.array.rows} must be a multiple of n={p.n} for pattern "
                    f"{p.n}:{p.m} (each PE row holds one kept weight of a group)"
                )
        return self

    @property
    def data_bytes(self) -> int:
        return ceil_div(self.data_bits, 8)

    @property
    def acc_bytes(self) -> int:
        return ceil_div(self.acc_bits, 8)

    @property
    def requant_shift(self) -> int:
        """The shift of a GEMM output's requantizing STORE_C (``output_shift`` or its default)."""
        return self.data_bits // 2 if self.output_shift is None else self.output_shift

    def supports(self, n: int, m: int) -> bool:
        """True when the PE datapath can skip the pruned weights of an ``n:m`` pattern."""
        return any(p.n == n and p.m == m for p in self.nm_patterns)

    def patterns_text(self) -> str:
        """The N:M patterns, for messages (``1:2, 2:4`` or ``none``)."""
        return ", ".join(f"{p.n}:{p.m}" for p in self.nm_patterns) or "none"


# --------------------------------------------------------------------------------------------
# Sparsity
# --------------------------------------------------------------------------------------------


class DenseSparsity(_Spec):
    kind: Literal["dense"] = "dense"


class NMSparsity(_Spec):
    """Weights pruned N:M along one weight dimension (``in`` = reduction of the forward GEMM)."""

    kind: Literal["nm"]
    n: int
    m: int
    dim: Literal["in", "out"] = "in"

    @model_validator(mode="after")
    def _valid(self) -> NMSparsity:
        _check_n_m(self.n, self.m)
        return self


class BDWPSparsity(_Spec):
    """Bidirectional weight pruning: FF N:M along ``in``, BP N:M along ``out``, WG dense."""

    kind: Literal["bdwp"]
    n: int
    m: int
    bp_mask_source: Literal["dense", "forward_masked"] = "dense"

    @model_validator(mode="after")
    def _valid(self) -> BDWPSparsity:
        _check_n_m(self.n, self.m)
        return self


Sparsity = Annotated[DenseSparsity | NMSparsity | BDWPSparsity, Field(discriminator="kind")]


def pruned_dims(sparsity: DenseSparsity | NMSparsity | BDWPSparsity) -> tuple[str, ...]:
    """Weight dimensions whose size must be a multiple of M under this sparsity."""
    if isinstance(sparsity, NMSparsity):
        return (sparsity.dim,)
    if isinstance(sparsity, BDWPSparsity):
        return ("in", "out")
    return ()


# --------------------------------------------------------------------------------------------
# Operations
# --------------------------------------------------------------------------------------------


class _WeightedOp(_Spec):
    name: str
    sparsity: Sparsity | None = None  # None: the workload-wide default applies
    repeat: PositiveInt = 1  # identical copies (e.g. repeated blocks); simulated once, counted N times

    def group_dims(self) -> dict[str, tuple[str, int]]:
        """Per weight dimension, the field that N:M groups must divide and its size."""
        raise NotImplementedError

    @model_validator(mode="after")
    def _divisible(self):
        if self.sparsity is None:
            return self
        dims = self.group_dims()
        for dim in pruned_dims(self.sparsity):
            field, size = dims[dim]
            if size % self.sparsity.m:
                raise ValueError(
                    f"{field}={size} is not a multiple of m={self.sparsity.m} (N:M groups along "
                    f"'{dim}'); pad the layer or choose another M"
                )
        return self


class GemmOp(_WeightedOp):
    """Y[m, n] = X[m, k] · W[k, n]; the weight W has dims ``in`` (= k) and ``out`` (= n)."""

    op: Literal["gemm"]
    m: PositiveInt
    k: PositiveInt
    n: PositiveInt

    def group_dims(self) -> dict[str, tuple[str, int]]:
        return {"in": ("k", self.k), "out": ("n", self.n)}


class LinearOp(_WeightedOp):
    """A fully connected layer applied to ``batch`` × ``tokens`` rows."""

    op: Literal["linear"]
    in_features: PositiveInt
    out_features: PositiveInt
    batch: PositiveInt
    tokens: PositiveInt = 1

    def group_dims(self) -> dict[str, tuple[str, int]]:
        return {
            "in": ("in_features", self.in_features),
            "out": ("out_features", self.out_features),
        }


class Conv2dOp(_WeightedOp):
    """A 2-D convolution, lowered to GEMM by im2col.

    N:M groups along ``in`` lie along C_in (weights permuted to [C_out, kh, kw, C_in] as SR-STE
    does), so ``in_channels`` must be a multiple of M.

    ``groups`` > 1 splits the channels into independent convolutions of C_in/groups → C_out/groups
    channels (depthwise: groups = C_in); each is one GEMM of the same shape
    (docs/workloads.md, "Grouped and depthwise convolution"). They run dense: N:M on grouped
    weights is not supported yet (pre-generation compresses one weight copy per GEMM).
    """

    op: Literal["conv2d"]
    in_channels: PositiveInt
    out_channels: PositiveInt
    kernel: PositiveInt | _Pair
    stride: PositiveInt = 1
    padding: NonNegativeInt = 0
    input_size: PositiveInt | _Pair
    batch: PositiveInt
    groups: PositiveInt = 1

    def group_dims(self) -> dict[str, tuple[str, int]]:
        return {
            "in": ("in_channels", self.in_channels),
            "out": ("out_channels", self.out_channels),
        }

    @model_validator(mode="after")
    def _grouped(self) -> Conv2dOp:
        g = self.groups
        for field in ("in_channels", "out_channels"):
            if getattr(self, field) % g:
                raise ValueError(
                    f"{field}={getattr(self, field)} is not a multiple of groups={g} (each group "
                    f"convolves {field}/groups channels)"
                )
        if g > 1 and self.sparsity is not None and self.sparsity.kind != "dense":
            raise ValueError(
                f"N:M sparsity on a grouped convolution (groups={g}) is not supported yet; give "
                f"this op sparsity: {{kind: dense}}"
            )
        return self

    @model_validator(mode="after")
    def _output_positive(self) -> Conv2dOp:
        (h, w), (kh, kw) = _pair(self.input_size), _pair(self.kernel)
        if h + 2 * self.padding < kh or w + 2 * self.padding < kw:
            raise ValueError(
                f"kernel {kh}x{kw} does not fit the padded input {h}x{w} (padding {self.padding})"
            )
        return self


# --------------------------------------------------------------------------------------------
# Attention (docs/attention.md)
# --------------------------------------------------------------------------------------------


def _existing_file(value: str | None, info: ValidationInfo) -> str | None:
    """``value`` resolved against the workload file's folder (the loader passes it in)."""
    if value is None:
        return None
    path = Path((info.context or {}).get("base_dir") or Path.cwd()) / value
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    # The resolved path travels in the frozen spec, so later stages need no base directory.
    return str(path.resolve())


class QKData(_Spec):
    """The Q and K tensors a data-dependent attention pattern is computed from.

    ``synthetic``: seeded tensors with the structure of trained attention (local bias, attention
    sinks, a few outlier channels; ``workloads.generators.attention.synthetic_qk``); ``random``:
    seeded i.i.d. Gaussians; ``npy``: the user's arrays, ``q`` of shape [batch, heads, q_len,
    head_dim] and ``k`` of shape [batch, kv_heads, kv_len, head_dim], paths relative to the
    workload file.
    """

    source: Literal["synthetic", "random", "npy"] = "synthetic"
    seed: NonNegativeInt = 0
    q: str | None = None
    k: str | None = None

    @field_validator("q", "k")
    @classmethod
    def _file(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _existing_file(value, info)

    @model_validator(mode="after")
    def _paths(self) -> QKData:
        if self.source != "npy" and (self.q is not None or self.k is not None):
            raise ValueError(f"q and k files are read only with source: npy, not {self.source}")
        if self.source == "npy" and (self.q is None or self.k is None):
            raise ValueError("source: npy needs both 'q' and 'k' (.npy paths)")
        return self


class DenseAttention(_Spec):
    """Every (query, key) pair the op's causal flag allows."""

    kind: Literal["dense"] = "dense"


class SlidingWindowAttention(_Spec):
    """A causal-style window of ``window`` keys per query (one span per head, MoA-style) plus
    ``global_tokens`` keys at the start of the sequence that every query sees (attention sinks).
    """

    kind: Literal["sliding_window"]
    window: PositiveInt | Annotated[tuple[PositiveInt, ...], Field(min_length=1, strict=False)]
    global_tokens: NonNegativeInt = 0


class BlockSparseAttention(_Spec):
    """A block mask: ``density`` of the blocks kept at random (seeded; the diagonal is always
    kept), or read from ``file``, an ``.npz`` in FlexAttention BlockMask form (``kv_num_blocks``,
    ``kv_indices`` and optionally ``full_kv_num_blocks``, ``full_kv_indices``)."""

    kind: Literal["block_sparse"]
    density: Annotated[float, Field(gt=0, le=1)] | None = None
    seed: NonNegativeInt = 0
    file: str | None = None

    @field_validator("file")
    @classmethod
    def _file(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _existing_file(value, info)

    @model_validator(mode="after")
    def _source(self) -> BlockSparseAttention:
        if (self.density is None) == (self.file is None):
            raise ValueError("give exactly one of 'density' (random blocks) and 'file' (.npz)")
        return self


class BlasstAttention(_Spec):
    """BLASST-style skipping: a key block is skipped when, for every query of the query block,
    ``exp(block max − running max) < threshold`` (the online-softmax max, blocks in order)."""

    kind: Literal["blasst"]
    threshold: Annotated[float, Field(gt=0, lt=1)] = 1e-3
    data: QKData = QKData()


class TopKAttention(_Spec):
    """Double-Sparsity-style token selection: each query keeps the ``tokens`` keys with the
    largest approximate scores, computed on the ``channels`` heaviest channels of Q and K."""

    kind: Literal["topk"]
    tokens: PositiveInt
    channels: PositiveInt = 16
    data: QKData = QKData()


class ScoreNMAttention(_Spec):
    """N:M on the attention scores (DFSS): the vector unit keeps the top-N of every M consecutive
    scores of a query, so P·V skips the rest on the N:M datapath."""

    kind: Literal["nm"]
    n: int
    m: int

    @model_validator(mode="after")
    def _valid(self) -> ScoreNMAttention:
        _check_n_m(self.n, self.m)
        return self


class VerticalSlashAttention(_Spec):
    """MInference's vertical-slash pattern: per head, ``vertical`` key columns and ``slash``
    diagonals (offsets ``query position − key``), chosen from the softmax of the last ``last_q``
    queries against every key (the estimation, charged as accelerator work). Key 0 and the main
    diagonal are always among them. ``indices``: an ``.npz`` of per-head ``vertical`` and
    ``slash`` index arrays ([heads, n] integers) taken instead of estimating them from ``data``
    (as if dumped from a run of MInference; the estimation is still charged)."""

    kind: Literal["vertical_slash"]
    vertical: PositiveInt
    slash: PositiveInt
    last_q: PositiveInt = 64
    data: QKData = QKData()
    indices: str | None = None

    @field_validator("indices")
    @classmethod
    def _file(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _existing_file(value, info)


class DiagonalAttention(_Spec):
    """Sparse-vDiT's diagonal pattern: each query attends to the keys within ``window`` tokens of
    its own position (``|query position − key| < window``)."""

    kind: Literal["diagonal"]
    window: PositiveInt


class MultiDiagonalAttention(_Spec):
    """Sparse-vDiT's multi-diagonal pattern over frames × height × width tokens: the diagonal
    band of ``window`` tokens repeated at every multiple of ``frame_tokens`` (height × width),
    i.e. the same spatial neighbourhood in other frames, up to ``frames`` frames away (all when
    omitted)."""

    kind: Literal["multi_diagonal"]
    window: PositiveInt
    frame_tokens: PositiveInt
    frames: PositiveInt | None = None


class VerticalStripeAttention(_Spec):
    """Sparse-vDiT's vertical-stripe pattern: every query attends to all key tokens of the
    frames in ``stripe_frames`` (frames of ``frame_tokens`` tokens) plus the keys within
    ``window`` tokens of its own position."""

    kind: Literal["vertical_stripe"]
    frame_tokens: PositiveInt
    stripe_frames: Annotated[tuple[NonNegativeInt, ...], Field(min_length=1, strict=False)] = (0,)
    window: PositiveInt = 1


class GatedBlockAttention(_Spec):
    """SeerAttention-style block gating: Q and K average-pooled per block, block scores
    ``softmax(pooled q · pooled k / √d)`` per query block, and the ``top_k`` best key blocks or
    those scoring at least ``threshold`` kept (the block holding the query block's last
    position always). The gate's pooling and scoring are charged as accelerator work."""

    kind: Literal["gated_block"]
    top_k: PositiveInt | None = None
    threshold: Annotated[float, Field(gt=0, lt=1)] | None = None
    data: QKData = QKData()

    @model_validator(mode="after")
    def _rule(self) -> GatedBlockAttention:
        if (self.top_k is None) == (self.threshold is None):
            raise ValueError("give exactly one of 'top_k' (blocks per query block) and "
                             "'threshold' (gate probability)")
        return self


class ElementMaskAttention(_Spec):
    """An element mask read from ``file``: a boolean (or 0/1) array [batch or 1, heads or 1,
    q_len, kv_len] as ``.npy``, as the array ``mask`` of an ``.npz``, or a tensor saved with
    ``torch.save`` (``.pt``)."""

    kind: Literal["element_mask"]
    file: str

    @field_validator("file")
    @classmethod
    def _file(cls, value: str, info: ValidationInfo) -> str:
        if Path(value).suffix not in (".npy", ".npz", ".pt"):
            raise ValueError(f"{value}: expected a .npy, .npz or .pt file")
        return _existing_file(value, info)


AttentionPattern = Annotated[
    DenseAttention | SlidingWindowAttention | BlockSparseAttention | BlasstAttention
    | TopKAttention | ScoreNMAttention | VerticalSlashAttention | DiagonalAttention
    | MultiDiagonalAttention | VerticalStripeAttention | GatedBlockAttention
    | ElementMaskAttention,
    Field(discriminator="kind"),
]


class AttentionOp(_Spec):
    """Scaled dot-product attention of ``heads`` query heads over ``kv_heads`` key/value heads.

    ``prefill`` processes ``q_len`` new tokens (default ``kv_len``) against ``kv_len`` keys;
    ``decode`` processes ``q_len`` new tokens (default 1) against a KV cache of ``kv_len`` tokens.
    Query ``i`` sits at position ``kv_len − q_len + i``; ``causal`` hides keys after it.
    ``q_len`` may exceed ``kv_len`` only where positions do not matter: non-causal, dense
    prefill (cross-attention of a decoder to a shorter encoder output).
    ``kv_heads`` below ``heads`` is GQA (MQA at 1): a group of ``heads / kv_heads`` query heads
    shares one K/V head. ``block_size`` is the mask block (FlexAttention's 128 by default) and
    the key-block step of the mapping.
    """

    op: Literal["attention"]
    name: str
    batch: PositiveInt = 1
    heads: PositiveInt
    kv_heads: PositiveInt | None = None
    q_len: PositiveInt | None = None
    kv_len: PositiveInt
    head_dim: PositiveInt
    causal: bool = False
    phase: Literal["prefill", "decode"] = "prefill"
    pattern: AttentionPattern = DenseAttention()
    block_size: PositiveInt = 128
    repeat: PositiveInt = 1

    @model_validator(mode="after")
    def _shape(self, info: ValidationInfo) -> AttentionOp:
        kv_heads = self.kv_heads or self.heads
        if self.heads % kv_heads:
            raise ValueError(
                f"heads={self.heads} must be a multiple of kv_heads={kv_heads} (each K/V head "
                f"serves a group of query heads)"
            )
        if self.queries > self.kv_len and self._positioned():
            raise ValueError(
                f"q_len={self.queries} exceeds kv_len={self.kv_len} with {self._positioned()}: "
                f"query i sits at position kv_len - q_len + i, before key 0 for the first "
                f"{self.queries - self.kv_len}; more queries than keys is allowed only for "
                f"non-causal dense prefill (cross-attention to a shorter memory)"
            )
        window = self.pattern.window if isinstance(self.pattern, SlidingWindowAttention) else 1
        if isinstance(window, tuple) and len(window) != self.heads:
            raise ValueError(
                f"pattern.window lists {len(window)} spans; give one per head ({self.heads}) or "
                f"a single integer"
            )
        if isinstance(self.pattern, ScoreNMAttention) and self.block_size % self.pattern.m:
            # Groups of M keys count from key 0; the mapping computes them block by block.
            raise ValueError(
                f"block_size={self.block_size} must be a multiple of pattern.m="
                f"{self.pattern.m} (N:M groups of keys must not straddle mask blocks)"
            )
        if isinstance(self.pattern, TopKAttention) and self.pattern.channels > self.head_dim:
            raise ValueError(
                f"pattern.channels={self.pattern.channels} exceeds head_dim={self.head_dim}"
            )
        if isinstance(self.pattern, VerticalSlashAttention) and not self.causal:
            raise ValueError("pattern 'vertical_slash' needs causal: true (MInference's slashes "
                             "are diagonals below the query's position)")
        self._check_arrays(limits_of(info).array_elements)
        return self

    def _positioned(self) -> str:
        """What makes the queries' positions matter (``causal: true``, a pattern, decode: a
        step whose queries are the newest tokens of its KV cache), or ``""``: non-causal dense
        prefill, where every query sees every key wherever it sits."""
        if self.causal:
            return "causal: true"
        if not isinstance(self.pattern, DenseAttention):
            return f"pattern {self.pattern.kind!r}"
        return "phase: decode" if self.phase == "decode" else ""

    def _check_arrays(self, limit: int) -> None:
        """The arrays a data-dependent pattern allocates (Q, K, one head's scores) fit the limit."""
        if isinstance(self.pattern, ElementMaskAttention):
            count = self.batch * self.heads * self.queries * self.kv_len
            if count > limit:
                raise ValueError(
                    f"pattern 'element_mask' needs the mask (batch*heads*q_len*kv_len) = "
                    f"{count:,} elements, above limits.array_elements = {limit:,}; use a block "
                    f"mask (block_sparse with an .npz) or raise the limit")
            return
        scored = self.queries
        if isinstance(self.pattern, VerticalSlashAttention):
            if self.pattern.indices is not None:
                return
            scored = min(self.pattern.last_q, self.queries)  # only the last queries are scored
        elif not isinstance(self.pattern, (BlasstAttention, TopKAttention, GatedBlockAttention)):
            return
        queries = scored if getattr(self.pattern.data, "source", "") != "npy" else self.queries
        arrays = {
            "Q (batch*heads*q_len*head_dim)": self.batch * self.heads * queries * self.head_dim,
            "K (batch*kv_heads*kv_len*head_dim)": self.batch * self.groups * self.kv_len
            * self.head_dim,
            "the scores of one head (q_len*kv_len)": scored * self.kv_len,
        }
        for what, count in arrays.items():
            if count > limit:
                raise ValueError(
                    f"pattern {self.pattern.kind!r} needs {what} = {count:,} elements, above "
                    f"limits.array_elements = {limit:,}; shrink the op or raise the limit"
                )

    @property
    def groups(self) -> int:
        """K/V heads (``kv_heads``, or ``heads`` when omitted)."""
        return self.kv_heads or self.heads

    @property
    def queries(self) -> int:
        """New tokens per sequence: ``q_len``, else ``kv_len`` (prefill) or 1 (decode)."""
        if self.q_len is not None:
            return self.q_len
        return self.kv_len if self.phase == "prefill" else 1


MODEL_NAMES = ("resnet18", "resnet50", "vgg16", "vit_b16", "bert_base", "decoder",
               "qwen2_5_7b", "video_dit")

#: Zoo models with attention: they accept an attention ``pattern``.
TRANSFORMER_NAMES = ("vit_b16", "bert_base", "decoder", "qwen2_5_7b", "video_dit")

#: ``model: qwen2_5_7b``: Qwen2.5-7B's shape (layers, hidden, heads, kv_heads, mlp; gated MLP).
QWEN2_5_7B = (28, 3584, 28, 4, 18944)

#: ``model: video_dit``: a small video DiT (DiT-B width: layers, hidden, heads, mlp) over
#: frames × height × width latent tokens (after 2×2 patches of a 16-channel latent).
VIDEO_DIT = (12, 768, 12, 3072)

#: ``model: decoder`` when its shape is omitted: GPT-2 small (layers, hidden, heads); mlp 4·hidden.
DECODER_DEFAULT = (12, 768, 12)


class ModelOp(_Spec):
    """A whole model from the zoo, expanded into its layers by ``workloads.zoo``.

    Transformers take an attention ``pattern``: each block's attention then runs as one
    ``attention`` layer on the FlashAttention-style mapping (docs/attention.md) instead of two
    dense matmul layers. ``decoder`` is a GPT-2/Llama-style causal decoder given by its shape
    (``layers``, ``hidden``, ``heads``, ``kv_heads``, ``mlp``; GPT-2 small when omitted);
    ``gated_mlp`` gives it Llama's gate/up/down MLP. In ``phase: decode`` it processes one new
    token per sequence against a KV cache of ``seq_len`` tokens. ``qwen2_5_7b`` is that decoder
    with Qwen2.5-7B's shape (:data:`QWEN2_5_7B`; ``phase`` applies). ``video_dit`` is a small
    video diffusion transformer (:data:`VIDEO_DIT`) whose non-causal attention spans all
    ``frames × height × width`` latent tokens.
    """

    op: Literal["model"]
    model: Literal["resnet18", "resnet50", "vgg16", "vit_b16", "bert_base", "decoder",
                   "qwen2_5_7b", "video_dit"]
    name: str | None = None
    batch: PositiveInt
    seq_len: PositiveInt = 128  # BERT and decoder (decode: the KV-cache length)
    image_size: PositiveInt = 224  # CNNs and ViT
    sparsity: Sparsity | None = None
    pattern: AttentionPattern | None = None  # None: attention stays two dense matmul layers
    block_size: PositiveInt = 128
    phase: Literal["prefill", "decode"] = "prefill"
    # Bounded so that expanding the model stays cheap; sizes beyond GPT-3's are refused here.
    layers: Annotated[int, Field(gt=0, le=MAX_MODEL_LAYERS)] | None = None
    hidden: Annotated[int, Field(gt=0, le=1 << 20)] | None = None
    heads: Annotated[int, Field(gt=0, le=1 << 14)] | None = None
    kv_heads: Annotated[int, Field(gt=0, le=1 << 14)] | None = None
    mlp: Annotated[int, Field(gt=0, le=1 << 22)] | None = None
    gated_mlp: bool = False
    # video_dit: latent tokens per frame are height × width; attention spans all frames.
    frames: Annotated[int, Field(gt=0, le=1 << 12)] = 8
    height: Annotated[int, Field(gt=0, le=1 << 12)] = 16
    width: Annotated[int, Field(gt=0, le=1 << 12)] = 16

    @model_validator(mode="after")
    def _transformer_fields(self) -> ModelOp:
        shape = ("layers", "hidden", "heads", "kv_heads", "mlp", "gated_mlp")
        if self.model != "decoder":
            takes_phase = ("phase",) if self.model != "qwen2_5_7b" else ()
            given = [f for f in shape + takes_phase if f in self.model_fields_set]
            if given:
                raise ValueError(f"{', '.join(given)}: only model: decoder takes these fields")
        video = [f for f in ("frames", "height", "width") if f in self.model_fields_set]
        if video and self.model != "video_dit":
            raise ValueError(f"{', '.join(video)}: only model: video_dit takes these fields")
        if self.model == "video_dit" and "seq_len" in self.model_fields_set:
            raise ValueError("video_dit attends over frames x height x width tokens; give those, "
                             "not seq_len")
        frame = getattr(self.pattern, "frame_tokens", None)
        if self.model == "video_dit" and frame is not None and frame != self.height * self.width:
            raise ValueError(f"pattern.frame_tokens={frame} must be height x width = "
                             f"{self.height * self.width} (the tokens of one frame)")
        if self.pattern is not None and self.model not in TRANSFORMER_NAMES:
            raise ValueError(
                f"model {self.model!r} has no attention; pattern applies to "
                f"{', '.join(TRANSFORMER_NAMES)}"
            )
        if self.model == "decoder":
            _, hidden, heads, _ = self.decoder_shape()
            kv_heads = self.kv_heads or heads
            if hidden % heads or heads % kv_heads:
                raise ValueError(
                    f"decoder needs hidden % heads == 0 and heads % kv_heads == 0, got hidden="
                    f"{hidden}, heads={heads}, kv_heads={kv_heads}"
                )
        return self

    def decoder_shape(self) -> tuple[int, int, int, int]:
        """(layers, hidden, heads, mlp) of ``model: decoder``, defaults filled in."""
        layers, hidden, heads = DECODER_DEFAULT
        hidden = self.hidden or hidden
        return (self.layers or layers, hidden, self.heads or heads, self.mlp or 4 * hidden)


#: SpGEMM dataflows the model compares (docs/spgemm.md), in report order.
SPGEMM_DATAFLOWS = ("inner", "outer", "gustavson", "hash")


def limits_of(info: ValidationInfo) -> Limits:
    """The workload's limits while it is validated (the loader passes them in the context)."""
    limits = (info.context or {}).get("limits")
    return limits if isinstance(limits, Limits) else Limits()


class MatrixSource(_Spec):
    """A sparse matrix for SpGEMM: a name or ``.mtx`` path, generator parameters and a seed.

    ``source`` is anything :func:`workloads.matrices.resolve_matrix` accepts; relative ``.mtx``
    paths are resolved against the workload file's folder (the loader passes it in).
    """

    source: str
    params: dict[str, Any] = {}
    seed: NonNegativeInt = 0
    _base_dir: Path | None = PrivateAttr(default=None)
    _limits: Limits | None = PrivateAttr(default=None)

    @field_validator("params")
    @classmethod
    def _plain(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Parameters are cached by their JSON text, which needs text keys all the way down.
        def check(node: Any, at: str) -> None:
            if isinstance(node, dict):
                for key, item in node.items():
                    if not isinstance(key, str):
                        raise ValueError(f"params{at}: key {key!r} must be a name (text)")
                    check(item, f"{at}.{key}")
            elif isinstance(node, list):
                for i, item in enumerate(node):
                    check(item, f"{at}[{i}]")

        check(value, "")
        return value

    @model_validator(mode="after")
    def _resolvable(self, info: ValidationInfo) -> MatrixSource:
        base = (info.context or {}).get("base_dir")
        self._base_dir = Path(base) if base is not None else None
        self._limits = limits_of(info)
        try:
            matrix = self.resolve().matrix
        except SpecError as exc:  # the loader adds file:line and the field path
            raise ValueError(str(exc)) from None
        if matrix.nnz == 0:
            raise ValueError(
                f"matrix {self.source!r} has no nonzeros (shape {matrix.shape[0]}x"
                f"{matrix.shape[1]}); SpGEMM needs at least one"
            )
        return self

    def resolve(self):
        """The matrix as a :class:`workloads.matrices.NamedMatrix` (cached; treat as read-only)."""
        base = self._base_dir if self._base_dir is not None else Path.cwd()
        # JSON text is a hashable cache key for the YAML scalars, lists and mappings in params.
        params = json.dumps(self.params, sort_keys=True)
        return _resolve_cached(self.source, params, self.seed, str(base), self._limits)


@functools.lru_cache(maxsize=8)
def _resolve_cached(source: str, params: str, seed: int, base_dir: str, limits: Limits | None):
    # Validation and simulation both need the matrix; generating a large one twice would double
    # the load time, so the few most recent ones are kept.
    from workloads.matrices import resolve_matrix  # numpy/scipy only when a workload needs it

    return resolve_matrix(source, json.loads(params), seed, Path(base_dir), limits)


class SpGEMMOp(_Spec):
    """C = A·B on the SpGEMM engine, simulated with each listed dataflow (``b`` omitted: A·A)."""

    op: Literal["spgemm"]
    name: str
    a: MatrixSource
    b: MatrixSource | None = None
    dataflows: Annotated[
        tuple[Literal["inner", "outer", "gustavson", "hash"], ...],
        Field(min_length=1, strict=False),
    ] = SPGEMM_DATAFLOWS
    functional_check: bool = True  # run each dataflow's functional model and compare with scipy

    @model_validator(mode="after")
    def _shapes(self) -> SpGEMMOp:
        if len(set(self.dataflows)) != len(self.dataflows):
            raise ValueError(f"dataflows lists a dataflow twice: {list(self.dataflows)}")
        a = self.a.resolve().matrix
        if self.b is None:
            if a.shape[0] != a.shape[1]:
                raise ValueError(
                    f"C = A·A needs a square A, got {self.a.source!r} of shape "
                    f"{a.shape[0]}x{a.shape[1]}; give 'b:' for a rectangular product"
                )
            return self
        b = self.b.resolve().matrix
        if a.shape[1] != b.shape[0]:
            raise ValueError(
                f"C = A·B needs columns of A == rows of B, got A {a.shape[0]}x{a.shape[1]} "
                f"({self.a.source!r}) and B {b.shape[0]}x{b.shape[1]} ({self.b.source!r})"
            )
        return self

    def operands(self):
        """(A, B) as :class:`workloads.matrices.NamedMatrix`; B is A for C = A·A."""
        a = self.a.resolve()
        return a, (a if self.b is None else self.b.resolve())


Operation = Annotated[
    GemmOp | LinearOp | Conv2dOp | ModelOp | SpGEMMOp | AttentionOp, Field(discriminator="op")
]


def _pair(v: int | list[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (v[0], v[1])


class SchedulePasses(_Spec):
    """SAT's dataflow optimizations as switchable scheduler passes (see docs/isa.md)."""

    interleave: bool = True
    pregenerate_sparse_weights: bool = True
    offline_tiling: bool = True
    double_buffering: bool = True


class ServeSpec(_Spec):
    """A serving run (``archsim serve``, docs/serving.md): the workload's one decoder model
    prefills ``prompt_tokens`` in chunks of ``chunk_tokens`` (the whole prompt at once when
    omitted), then decodes ``output_tokens`` tokens one at a time against a growing KV cache."""

    prompt_tokens: PositiveInt
    output_tokens: PositiveInt
    chunk_tokens: PositiveInt | None = None


#: Zoo models ``archsim serve`` runs (causal decoders with a KV cache).
SERVABLE_MODELS = ("decoder", "qwen2_5_7b")


def untrainable_attention(phase: str, pattern: Any) -> str:
    """Why training cannot run attention of this ``phase`` and score ``pattern`` ("" when it
    can): training runs an attention op's forward and its FlashAttention-2 backward
    (dataflows/attention_backward.py) over prefill, and what that backward does not model is
    refused rather than silently dropped. ``archsim import`` asks it too (decode layers become
    dense products there)."""
    if phase == "decode":
        return "phase: decode needs mode: inference (training runs attention over prefill only)"
    if isinstance(pattern, ScoreNMAttention):
        return ("the attention backward does not model N:M pruning of the scores (kind: nm); "
                "use mode: inference or another pattern")
    return ""


class WorkloadSpec(_Spec):
    """A workload: operations, a training/inference mode, a default sparsity and the hardware."""

    version: Literal[1]
    name: FolderName
    hardware: HardwareSpec
    mode: Literal["inference", "training"] = "inference"
    sparsity: Sparsity = DenseSparsity()
    schedule: SchedulePasses = SchedulePasses()
    limits: Limits = Limits()
    # What an N:M pattern the hardware does not list does: "error" (the default: a spec error
    # listing the supported patterns) or "masked_dense" (run the masked weights at dense speed;
    # the CLI warns). Never silently dense.
    unsupported_nm: Literal["error", "masked_dense"] = "error"
    # Lax only for list → tuple; the elements are strict models.
    operations: Annotated[tuple[Operation, ...], Field(min_length=1, strict=False)]
    serve: ServeSpec | None = None  # read by ``archsim serve`` only

    @model_validator(mode="before")
    @classmethod
    def _inherit_sparsity(cls, data: object) -> object:
        # Explicit ops without their own sparsity take the workload default *before* validation,
        # so a dimension that M does not divide is reported at the op's own line. Model ops keep
        # None: the zoo leaves layers that M does not divide dense (docs/workloads.md).
        if not isinstance(data, dict) or "sparsity" not in data:
            return data
        ops = data.get("operations")
        if not isinstance(ops, (list, tuple)):
            return data
        data = dict(data)
        data["operations"] = [
            {**op, "sparsity": data["sparsity"]}
            if isinstance(op, dict) and op.get("op") not in ("model", "spgemm", "attention")
            and op.get("sparsity") is None
            else op
            for op in ops
        ]
        return data

    def unsupported_patterns(self) -> list[tuple[int, str, str]]:
        """``(operation index, operation name, "n:m")`` for each weight pattern the hardware
        does not run sparse (those run masked-dense, at dense speed)."""
        found = []
        for i, op in enumerate(self.operations):
            sparsity = getattr(op, "sparsity", None)
            if isinstance(op, ModelOp):
                sparsity = sparsity or self.sparsity
            if isinstance(sparsity, (NMSparsity, BDWPSparsity)):
                if not self.hardware.supports(sparsity.n, sparsity.m):
                    found.append((i, getattr(op, "name", None) or op.op,
                                  f"{sparsity.n}:{sparsity.m}"))
        return found

    def supported_patterns_text(self) -> str:
        """The hardware's N:M patterns, for messages (``1:2, 2:4`` or ``none``)."""
        return self.hardware.patterns_text()

    @model_validator(mode="after")
    def _servable(self) -> WorkloadSpec:
        if self.serve is None:
            return self
        op = self.operations[0]
        if len(self.operations) != 1 or not isinstance(op, ModelOp) or \
                op.model not in SERVABLE_MODELS:
            raise ValueError(f"serve needs exactly one operation, an op: model with model "
                             f"{' or '.join(SERVABLE_MODELS)} (the decoder it serves)")
        if self.mode != "inference":
            raise ValueError("mode: serve runs its own prefill and decode phases: use mode: "
                             "inference")
        if op.phase != "prefill":
            raise ValueError("operations[0].phase: serve runs its own prefill and decode phases: "
                             "leave the model's phase at prefill")
        fixed = isinstance(op.pattern, ElementMaskAttention) or (
            isinstance(op.pattern, VerticalSlashAttention) and op.pattern.indices is not None)
        if fixed:  # a file holds one [q_len, kv_len] shape; serving changes both every step
            raise ValueError(f"serve changes the query and KV lengths every step, so a pattern "
                             f"read from a file ({op.pattern.kind} with a file) cannot be served; "
                             f"use a pattern computed per step")
        return self

    @model_validator(mode="after")
    def _attention_training(self) -> WorkloadSpec:
        # Training runs an attention op's forward and its FlashAttention-2 backward
        # (dataflows/attention_backward.py) over prefill; what that backward does not model
        # is refused rather than silently dropped.
        if self.mode == "training":
            for i, op in enumerate(self.operations):
                if isinstance(op, (AttentionOp, ModelOp)):
                    why = untrainable_attention(op.phase, op.pattern)
                    if why:
                        raise ValueError(f"operations[{i}]: {why}")
        return self
