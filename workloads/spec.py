"""Typed, frozen, validated descriptions of hardware and workloads.

Everything downstream of the loader receives these objects, never YAML dicts. They are pydantic
v2 models (frozen, unknown keys forbidden, strict types) so that the loader gets every error with
its path for free; the loader then maps that path back to a line of the user's file.

Conventions: sizes carry their unit in the name (``*_bytes``, ``*_cycles``, ``*_bits``); DRAM
bandwidth is an integer number of bytes per cycle because the memory bus of the RTL moves whole
beats, and the SimPy model must count cycles exactly as the RTL does.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from workloads.errors import SpecError

__all__ = [
    "SpecError",
    "NMPattern",
    "ArraySpec",
    "BufferSpec",
    "DramSpec",
    "VectorUnitSpec",
    "ControllerSpec",
    "EnergySpec",
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
    "Operation",
    "WorkloadSpec",
    "MODEL_NAMES",
    "MAX_M",
]

#: Largest group size M the unified N:M datapath supports (the PE's activation mux is M:1).
MAX_M = 16

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
_Pair = Annotated[list[PositiveInt], Field(min_length=2, max_length=2)]


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


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
    """The systolic PE array: ``rows`` PEs along the reduction dimension, ``cols`` along outputs."""

    rows: PositiveInt
    cols: PositiveInt
    dataflow: Literal["weight_stationary"] = "weight_stationary"


class BufferSpec(_Spec):
    """On-chip SRAM sizes. Each buffer is split in two halves (ping-pong) for double buffering."""

    weight_bytes: PositiveInt
    input_bytes: PositiveInt
    accumulator_bytes: PositiveInt


class DramSpec(_Spec):
    """Off-chip memory as the DMA engine sees it.

    ``bandwidth_bytes_per_cycle`` is the width of one memory beat; ``latency_cycles`` is the time
    from a request to its first beat.
    """

    bandwidth_bytes_per_cycle: PositiveInt
    latency_cycles: NonNegativeInt


class VectorUnitSpec(_Spec):
    """The vector unit: ``lanes`` groups of M weights compressed per cycle, plus a fixed pipeline."""

    lanes: PositiveInt
    pipeline_cycles: NonNegativeInt = 4


class ControllerSpec(_Spec):
    """The instruction controller: each unit's instruction memory holds ``instruction_depth`` words.

    The host writes a whole program before starting it, so one program (one segment) may hold at
    most this many instructions per unit on the RTL.
    """

    instruction_depth: PositiveInt = 1024


class EnergySpec(_Spec):
    """Energy per action in picojoules (defaults: 16-bit fixed point, see docs/energy.md)."""

    mac_pj: float = 0.9
    sram_read_pj_per_byte: float = 1.2
    sram_write_pj_per_byte: float = 1.4
    dram_read_pj_per_byte: float = 160.0
    dram_write_pj_per_byte: float = 160.0
    vector_group_pj: float = 2.0


class HardwareSpec(_Spec):
    """A SAT-like accelerator. Every RTL parameter and every model latency derives from it.

    Attributes
    ----------
    data_bits, acc_bits
        Operand and accumulator widths (two's complement integers / fixed point).
    nm_patterns
        N:M patterns the unified PE datapath runs sparse; any other pattern runs dense.
    """

    version: Literal[1] = 1
    name: str
    clock_mhz: PositiveFloat
    array: ArraySpec
    data_bits: Annotated[int, Field(ge=2, le=32)] = 16
    acc_bits: Annotated[int, Field(ge=8, le=64)] = 32
    nm_patterns: Annotated[tuple[NMPattern, ...], Field(strict=False)] = ()
    buffers: BufferSpec
    dram: DramSpec
    vector_unit: VectorUnitSpec
    controller: ControllerSpec = ControllerSpec()
    energy: EnergySpec = EnergySpec()

    @model_validator(mode="after")
    def _widths(self) -> HardwareSpec:
        if self.acc_bits < 2 * self.data_bits:
            raise ValueError(
                f"acc_bits must be at least 2*data_bits={2 * self.data_bits} so a single product "
                f"fits, got acc_bits={self.acc_bits}"
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
        return -(-self.data_bits // 8)

    @property
    def acc_bytes(self) -> int:
        return -(-self.acc_bits // 8)

    def supports(self, n: int, m: int) -> bool:
        """True when the PE datapath can skip the pruned weights of an ``n:m`` pattern."""
        return any(p.n == n and p.m == m for p in self.nm_patterns)


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
    """A 2-D convolution (groups=1), lowered to GEMM by im2col.

    N:M groups along ``in`` lie along C_in (weights permuted to [C_out, kh, kw, C_in] as SR-STE
    does), so ``in_channels`` must be a multiple of M.
    """

    op: Literal["conv2d"]
    in_channels: PositiveInt
    out_channels: PositiveInt
    kernel: PositiveInt | _Pair
    stride: PositiveInt = 1
    padding: NonNegativeInt = 0
    input_size: PositiveInt | _Pair
    batch: PositiveInt
    groups: Literal[1] = 1

    def group_dims(self) -> dict[str, tuple[str, int]]:
        return {
            "in": ("in_channels", self.in_channels),
            "out": ("out_channels", self.out_channels),
        }

    @model_validator(mode="after")
    def _output_positive(self) -> Conv2dOp:
        (h, w), (kh, kw) = _pair(self.input_size), _pair(self.kernel)
        if h + 2 * self.padding < kh or w + 2 * self.padding < kw:
            raise ValueError(
                f"kernel {kh}x{kw} does not fit the padded input {h}x{w} (padding {self.padding})"
            )
        return self


MODEL_NAMES = ("resnet18", "resnet50", "vgg16", "vit_b16", "bert_base")


class ModelOp(_Spec):
    """A whole model from the zoo, expanded into its layers by ``workloads.zoo``."""

    op: Literal["model"]
    model: Literal["resnet18", "resnet50", "vgg16", "vit_b16", "bert_base"]
    name: str | None = None
    batch: PositiveInt
    seq_len: PositiveInt = 128  # BERT only
    image_size: PositiveInt = 224  # CNNs and ViT
    sparsity: Sparsity | None = None


Operation = Annotated[GemmOp | LinearOp | Conv2dOp | ModelOp, Field(discriminator="op")]


def _pair(v: int | list[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (v[0], v[1])


class SchedulePasses(_Spec):
    """SAT's dataflow optimizations as switchable scheduler passes (see docs/isa.md)."""

    interleave: bool = True
    pregenerate_sparse_weights: bool = True
    offline_tiling: bool = True
    double_buffering: bool = True


class WorkloadSpec(_Spec):
    """A workload: operations, a training/inference mode, a default sparsity and the hardware."""

    version: Literal[1]
    name: str
    hardware: HardwareSpec
    mode: Literal["inference", "training"] = "inference"
    sparsity: Sparsity = DenseSparsity()
    schedule: SchedulePasses = SchedulePasses()
    # Lax only for list → tuple; the elements are strict models.
    operations: Annotated[tuple[Operation, ...], Field(min_length=1, strict=False)]

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
            if isinstance(op, dict) and op.get("op") != "model" and op.get("sparsity") is None
            else op
            for op in ops
        ]
        return data
