"""DRAM images: random operands placed per ``Program.tensors``, results read back.

Layouts follow docs/isa.md: little-endian two's complement elements (operands ``data_bytes``
wide, accumulators ``acc_bytes`` wide, sign-extended; outputs ``*.C`` and ``*.OT`` leave
requantized at operand width, so a tensor's own ``elem_bytes`` decodes it), rows ``stride``
bytes apart, and for ``nm_tiles`` tensors compressed weight tiles (``cols`` values then a
packed index region of ⌈cols·⌈log2 M⌉/8⌉ bytes per row) stored tile by tile, each padded to the
full array width.

Attention cases (``Case.attention``) place Qᵀ, K, Vᵀ as operands, Oᵀ in operand width and
the packed element masks of every partial block (``dataflows.attention``'s layout); the golden
interpreter runs their programs on this image like any other. :func:`build_attention_image`
also returns the operands as logical integer tensors, for the float cross-check.

An image carries a *care* bit mask beside its bytes: expected images (from the golden
interpreter) leave bits the instruction set does not define at 0, so a comparison checks every
defined bit and nothing else. Input images define every bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dataflows.attention import AttentionPlan, item_mask
from dataflows.program import ALIGN, Tensor
from dataflows.scheduler import compressed_tile_geometry
from dataflows.softmax_format import SoftmaxFormat
from dataflows.tiling import conv_chunk
from verification.errors import VerificationError
from verification.programs import Case
from workloads.arith import ceil_div, index_bits
from workloads.generators.attention import synthetic_qk
from workloads.generators.nm import compress_nm, random_weights
from workloads.spec import HardwareSpec

__all__ = [
    "DramImage",
    "Operands",
    "to_bytes",
    "from_bytes",
    "pack_indices",
    "unpack_indices",
    "compressed_rows",
    "nm_tiles",
    "build_image",
    "place_dense",
    "quantize",
    "pack_masks",
    "attention_tensors",
    "place_attention",
    "attention_image",
    "build_attention_image",
    "read_dense",
    "conv_matrix",
]


class DramImage:
    """A byte-addressed DRAM image and a per-bit mask of which bits are specified.

    Parameters
    ----------
    size
        Bytes in the image.

    Attributes
    ----------
    data
        ``uint8[size]``: the bytes.
    care
        ``uint8[size]``: 1 bits mark specified bits (all of them for an input image).
    """

    def __init__(self, size: int) -> None:
        self.data = np.zeros(size, dtype=np.uint8)
        self.care = np.full(size, 0xFF, dtype=np.uint8)

    @property
    def size(self) -> int:
        return int(self.data.size)

    def copy(self) -> DramImage:
        image = DramImage(0)
        image.data, image.care = self.data.copy(), self.care.copy()
        return image

    def _check(self, addr: int, nbytes: int) -> None:
        if addr < 0 or addr + nbytes > self.size:
            raise VerificationError(
                f"DRAM access [{addr:#x}, {addr + nbytes:#x}) lies outside the image of "
                f"{self.size:#x} bytes"
            )

    def write(self, addr: int, raw: np.ndarray, care: np.ndarray | None = None) -> None:
        """Write bytes at ``addr``; ``care`` (default: all bits) says which of them are defined."""
        raw = np.asarray(raw, dtype=np.uint8).ravel()
        self._check(addr, raw.size)
        self.data[addr:addr + raw.size] = raw
        self.care[addr:addr + raw.size] = 0xFF if care is None else np.asarray(care).ravel()

    def read(self, addr: int, nbytes: int) -> np.ndarray:
        self._check(addr, nbytes)
        return self.data[addr:addr + nbytes]

    def read_care(self, addr: int, nbytes: int) -> np.ndarray:
        self._check(addr, nbytes)
        return self.care[addr:addr + nbytes]

    def differing(self, actual: np.ndarray) -> np.ndarray:
        """Addresses whose specified bits differ in ``actual`` (a byte array of the same size)."""
        actual = np.asarray(actual, dtype=np.uint8)
        if actual.size != self.size:
            raise VerificationError(f"image sizes differ: {actual.size} vs {self.size} bytes")
        return np.flatnonzero((actual ^ self.data) & self.care)


# --------------------------------------------------------------------------------------------
# Element and row encodings
# --------------------------------------------------------------------------------------------


def to_bytes(values: np.ndarray, nbytes: int) -> np.ndarray:
    """Little-endian two's complement bytes of integers: shape ``values.shape + (nbytes,)``."""
    v = np.asarray(values, dtype=np.int64).astype(np.uint64)
    shifts = np.arange(nbytes, dtype=np.uint64) * np.uint64(8)
    return ((v[..., None] >> shifts) & np.uint64(0xFF)).astype(np.uint8)


def from_bytes(raw: np.ndarray, bits: int) -> np.ndarray:
    """Signed integers from little-endian bytes (last axis), using the low ``bits`` bits."""
    raw = np.asarray(raw, dtype=np.uint8)
    shifts = np.arange(raw.shape[-1], dtype=np.uint64) * np.uint64(8)
    u = (raw.astype(np.uint64) << shifts).sum(axis=-1, dtype=np.uint64)
    shift = np.uint64(64 - bits)
    # Shift the field's sign bit to bit 63, then back arithmetically: sign extension.
    return ((u << shift).view(np.int64) >> np.int64(64 - bits)).astype(np.int64)


def pack_indices(idx: np.ndarray, ib: int) -> np.ndarray:
    """Index regions of compressed rows: index ``j`` at bits ``[j·ib, (j+1)·ib)``, LSB first.

    ``idx`` is ``[rows, cols]``; the result is ``uint8[rows, ⌈cols·ib/8⌉]`` with spare bits 0.
    """
    idx = np.asarray(idx, dtype=np.uint64)
    rows, cols = idx.shape
    bits = ((idx[..., None] >> np.arange(ib, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8)
    bits = bits.reshape(rows, cols * ib)
    return np.packbits(bits, axis=1, bitorder="little")


def unpack_indices(raw: np.ndarray, cols: int, ib: int) -> np.ndarray:
    """Inverse of :func:`pack_indices`: ``int64[rows, cols]``."""
    raw = np.asarray(raw, dtype=np.uint8)
    bits = np.unpackbits(raw, axis=1, bitorder="little")[:, :cols * ib].reshape(-1, cols, ib)
    return (bits.astype(np.int64) << np.arange(ib, dtype=np.int64)).sum(axis=2)


def compressed_rows(values: np.ndarray, idx: np.ndarray, hw: HardwareSpec, m: int,
                    values_valid: np.ndarray | None = None,
                    idx_valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bytes and care bits of compressed weight rows (values, then the packed index region).

    ``*_valid`` mark defined entries (default: all); bits of undefined entries and the spare bits
    at the end of each index region get care 0.
    """
    values = np.asarray(values, dtype=np.int64)
    rows, cols = values.shape
    ib, db = index_bits(m), hw.data_bytes
    value_bytes = to_bytes(values, db).reshape(rows, cols * db)
    index_bytes = pack_indices(np.where(idx_valid if idx_valid is not None else True, idx, 0), ib)
    valid_v = np.ones((rows, cols), bool) if values_valid is None else np.asarray(values_valid)
    valid_i = np.ones((rows, cols), bool) if idx_valid is None else np.asarray(idx_valid)
    value_care = np.repeat(np.where(valid_v, 0xFF, 0).astype(np.uint8), db, axis=1)
    # Care bits of the index region: the bits of defined indices, nothing else.
    index_care = pack_indices(np.where(valid_i, (1 << ib) - 1, 0), ib)
    return (np.concatenate([value_bytes, index_bytes], axis=1),
            np.concatenate([value_care, index_care], axis=1))


# --------------------------------------------------------------------------------------------
# Building the image of a case
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Operands:
    """The random operands of a case, per task (tag order), as ``[copies, rows, cols]`` arrays.

    ``a[t]`` is task ``t``'s A as executed (``m × k``) and ``b[t]`` its dense B (``k × n``)
    before any N:M pruning. A pre-generation case has only ``b`` (the dense weight copies).
    """

    a: tuple[np.ndarray | None, ...]
    b: tuple[np.ndarray, ...]


def _place(image: DramImage, addr: int, stride: int, rows: np.ndarray,
           care: np.ndarray | None = None) -> None:
    for r in range(rows.shape[0]):
        image.write(addr + r * stride, rows[r], None if care is None else care[r])


def nm_tiles(b: np.ndarray, case: Case, tag: int) -> list[tuple[int, np.ndarray]]:
    """(byte offset, row bytes) of every compressed tile of task ``tag``'s weights ``b``.

    ``b`` is ``[copies, k, n]`` dense; each tile is pruned and compressed with
    :func:`~workloads.generators.nm.compress_nm` and padded with zero columns to the array width.
    Offsets are relative to the tensor and follow the scheduler's tile order (copy, k, n).
    """
    task, t, hw = case.tasks[tag], case.tilings[tag], case.hw
    nm_n, nm_m = task.nm
    _, k, n = t.dims(task)
    kc, rb = compressed_tile_geometry(t, task.nm, hw)
    nk, nn = ceil_div(k, t.tk), ceil_div(n, t.tn)
    width = hw.array.cols
    tiles = []
    for copy in range(task.copies):
        for ki in range(nk):
            for ni in range(nn):
                tile = b[copy, ki * t.tk:(ki + 1) * t.tk, ni * t.tn:(ni + 1) * t.tn]
                values, idx = compress_nm(tile, nm_n, nm_m)
                pad = ((0, 0), (0, width - tile.shape[1]))
                raw, _ = compressed_rows(np.pad(values, pad), np.pad(idx, pad), hw, nm_m)
                tiles.append((((copy * nk + ki) * nn + ni) * kc * rb, raw))
    return tiles


def _image_size(tensors: dict[str, Tensor], hw: HardwareSpec) -> int:
    end = max(t.addr + t.nbytes for t in tensors.values())
    # Slack: a row's last beat may read up to one beat past the row (rows start on beats).
    return ceil_div(end + 2 * hw.dram.bandwidth_bytes_per_cycle, ALIGN) * ALIGN + ALIGN


def _random_image(case: Case, rng: np.random.Generator) -> DramImage:
    size = _image_size(case.program.tensors, case.hw)
    image = DramImage(size)
    image.data[:] = rng.integers(0, 256, size=size, dtype=np.uint8)
    return image


def build_image(case: Case, rng: np.random.Generator) -> tuple[DramImage, Operands]:
    """The DRAM image of a case: random operands in range for ``data_bits`` at their tensors.

    Every byte no tensor holds (alignment gaps, the slack after the last tensor, the output
    tensors) is random too, so an RTL that reads or keeps the wrong bytes cannot pass by luck.
    """
    hw, program = case.hw, case.program
    image = _random_image(case, rng)
    db = hw.data_bytes
    a_ops: list[np.ndarray | None] = []
    b_ops: list[np.ndarray] = []
    for tag, (task, t) in enumerate(zip(case.tasks, case.tilings)):
        m, k, n = t.dims(task)
        if t.conv_b:  # B is the NHWC feature map; the GEMM's B is its im2col matrix
            tb = program.tensors[f"{task.name}.B"]
            x = random_weights((tb.rows, tb.cols), hw.data_bits, rng)
            place_dense(image, tb, x)
            b = conv_matrix(x, task.conv, t.tn)[None]
        else:
            b = random_weights((task.copies, k, n), hw.data_bits, rng)
        b_ops.append(b)
        if case.segment == "pregen":
            dense = program.tensors[f"{task.weight}.dense"]
            _place(image, dense.addr, dense.stride, to_bytes(b[0], db).reshape(k, n * db))
            a_ops.append(None)
            continue
        ta, tb = program.tensors[f"{task.name}.A"], program.tensors[f"{task.name}.B"]
        if t.conv:  # A is the NHWC feature map; the GEMM's A is its im2col matrix
            x = random_weights((ta.rows, ta.cols), hw.data_bits, rng)
            place_dense(image, ta, x)
            a_ops.append(conv_matrix(x, task.conv, conv_chunk(task, t.tk)[1])[None])
        elif t.conv_t:  # A is X; the swapped GEMM's A is X's im2col matrix transposed
            x = random_weights((ta.rows, ta.cols), hw.data_bits, rng)
            place_dense(image, ta, x)
            a_ops.append(conv_matrix(x, task.conv, t.tk).T[None])
        else:
            a = random_weights((task.copies, m, k), hw.data_bits, rng)
            a_ops.append(a)
            _place(image, ta.addr, ta.stride, to_bytes(a.reshape(-1, k), db).reshape(-1, k * db))
        if tb.fmt == "nm_tiles":
            image.write(tb.addr, np.zeros(tb.nbytes, np.uint8))
            _, rb = compressed_tile_geometry(t, task.nm, hw)
            for offset, raw in nm_tiles(b, case, tag):
                _place(image, tb.addr + offset, rb, raw)
        elif not t.conv_b:  # (X, the feature map, is in place already)
            _place(image, tb.addr, tb.stride, to_bytes(b.reshape(-1, n), db).reshape(-1, n * db))
    return image, Operands(tuple(a_ops), tuple(b_ops))


def conv_matrix(x: np.ndarray, conv, tk: int) -> np.ndarray:
    """The im2col matrix a convolution tiling computes with (``Tiling.conv``): rows are output
    pixels (image, oh, ow); columns are ordered (channel chunk of ``tk``, kh, kw, channel), as
    the scheduler orders B's rows; padding is zero. ``x`` is the NHWC feature map as
    ``batch·in_h·in_w`` rows of ``channels``. Independent of the address mode's arithmetic:
    strided slices of the zero-padded map."""
    img = np.asarray(x).reshape(conv.batch, conv.in_h, conv.in_w, conv.channels)
    p = conv.padding
    padded = np.pad(img, ((0, 0), (p, p), (p, p), (0, 0)))
    s, oh, ow = conv.stride, conv.out_h, conv.out_w
    cols = []
    for chunk in range(conv.channels // tk):
        for dh in range(conv.kh):
            for dw in range(conv.kw):
                window = padded[:, dh:dh + s * (oh - 1) + 1:s, dw:dw + s * (ow - 1) + 1:s,
                                chunk * tk:(chunk + 1) * tk]
                cols.append(window.reshape(-1, tk))
    return np.concatenate(cols, axis=1)


def place_dense(image: DramImage, tensor: Tensor, values: np.ndarray) -> None:
    """Write a dense tensor's ``rows × cols`` integers at its rows (its element width)."""
    rows, cols = values.shape
    _place(image, tensor.addr, tensor.stride,
           to_bytes(values, tensor.elem_bytes).reshape(rows, cols * tensor.elem_bytes))


def quantize(x: np.ndarray, frac: int, bits: int) -> np.ndarray:
    """Reals → ``bits``-bit two's complement with ``frac`` fraction bits (round half up,
    saturating): attention's Q, K and V operands."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return np.clip(np.floor(x * (1 << frac) + 0.5), lo, hi).astype(np.int64)


def pack_masks(plan: AttentionPlan, rng: np.random.Generator | None = None) -> np.ndarray:
    """The packed element masks of every partial block of a plan, in its order (the layout of
    ``dataflows.attention``). Bits past ``cols`` in a row's last byte are undefined
    (docs/isa.md): random with ``rng``, so an RTL that reads them fails; else zero."""
    out = []
    for item in plan.items:
        for block in item.blocks:
            if block.partial:
                bits = item_mask(plan.op, plan.mask, item, block)
                spare = (rng.random((block.rows, -item.cols % 8)) < 0.5 if rng is not None
                         else np.zeros((block.rows, -item.cols % 8), bool))
                rows = np.concatenate([bits, spare], axis=1)
                out.append(np.packbits(rows, axis=1, bitorder="little").ravel())
    masks = np.concatenate(out) if out else np.zeros(0, np.uint8)
    if masks.size != plan.layout.mask_bytes:
        raise VerificationError(f"the masks take {masks.size} bytes; the layout reserves "
                                f"{plan.layout.mask_bytes}")
    return masks


def attention_tensors(plan: AttentionPlan, q: np.ndarray, k: np.ndarray, v: np.ndarray,
                      rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """An op's tensors by name as the logical matrices of ``dataflows.attention``'s layout:
    Qᵀ, K, Vᵀ from integer ``q[b, heads, q_len, d]``, ``k``/``v[b, kv_heads, kv_len, d]``, a
    zero Oᵀ and the packed masks (:func:`pack_masks`)."""
    op = plan.op
    b, g, d, name = op.batch, op.heads // op.groups, op.head_dim, op.name
    qt = q.reshape(b, op.groups, g, op.queries, d).transpose(0, 1, 4, 2, 3)
    return {
        f"{name}.QT": qt.reshape(b * op.groups * d, g * op.queries).copy(),
        f"{name}.K": k.reshape(b * op.groups * op.kv_len, d).copy(),
        f"{name}.VT": v.transpose(0, 1, 3, 2).reshape(b * op.groups * d, op.kv_len).copy(),
        f"{name}.OT": np.zeros((b * op.groups * d, g * op.queries), np.int64),
        f"{name}.masks": pack_masks(plan, rng),
    }


def place_attention(image: DramImage, tensors: dict[str, Tensor], name: str,
                    values: dict[str, np.ndarray]) -> None:
    """Write attention op ``name``'s operands Qᵀ, K, Vᵀ and its packed masks from ``values``
    (:func:`attention_tensors`) at their ``tensors``; Oᵀ keeps whatever the image holds."""
    for key in (f"{name}.QT", f"{name}.K", f"{name}.VT"):
        place_dense(image, tensors[key], values[key])
    image.write(tensors[f"{name}.masks"].addr, values[f"{name}.masks"])


def attention_image(plan: AttentionPlan, hw: HardwareSpec, values: dict[str, np.ndarray]
                    ) -> DramImage:
    """A zero image of a plan's tensors (and the slack a DMA row may read past the last one)
    holding the operands and masks of ``values`` (:func:`attention_tensors`)."""
    tensors = plan.layout.tensors
    image = DramImage(_image_size(tensors, hw))
    place_attention(image, tensors, plan.op.name, values)
    return image


def build_attention_image(case: Case, rng: np.random.Generator
                          ) -> tuple[DramImage, dict[str, np.ndarray]]:
    """The DRAM image of an attention case and its operands by name (logical integers).

    Q and K are the seeded synthetic tensors of ``workloads.generators.attention.synthetic_qk``
    (the ones a top-k pattern of the case was chosen on), V uniform: quantized as
    tests/dataflows/test_attention.py does, so scores are a few log2 units, as in real
    attention. V is scaled down half the time when the accumulator is too narrow to hold the
    unnormalised output of every key (``wide``: 16 bits), so both wrapping and exact outputs
    occur. Oᵀ and every byte outside the operands stay random in the image (Oᵀ's logical
    tensor is zero and unused: no instruction reads Oᵀ).
    """
    hw, plan = case.hw, case.attention.plan
    op = plan.op
    fmt = SoftmaxFormat.of(hw)
    frac = fmt.operand_frac_bits
    image = _random_image(case, rng)
    q, k = synthetic_qk(op.batch, op.heads, op.groups, op.queries, op.kv_len, op.head_dim,
                        case.seed)
    vmax = 1.0
    if rng.random() < 0.5:
        vmax = min(1.0, 2.0 ** (hw.acc_bits - 1 - fmt.prob_bits - frac) / op.kv_len)
    v = rng.uniform(-vmax, vmax, size=(op.batch, op.groups, op.kv_len, op.head_dim))
    # Q carries log2(e)/√d, so the unit's base-2 softmax is the usual one.
    scale = np.log2(np.e) / np.sqrt(op.head_dim) / 4
    values = attention_tensors(plan, quantize(q * scale, frac, hw.data_bits),
                               quantize(k / 4, frac, hw.data_bits),
                               quantize(v, frac, hw.data_bits), rng)
    place_attention(image, case.program.tensors, op.name, values)
    return image, values


def read_dense(data: np.ndarray, addr: int, rows: int, cols: int, stride: int, elem_bytes: int,
               bits: int) -> np.ndarray:
    """A dense ``rows × cols`` tensor of ``elem_bytes``-byte elements from a byte array."""
    out = np.empty((rows, cols), dtype=np.int64)
    for r in range(rows):
        start = addr + r * stride
        out[r] = from_bytes(data[start:start + cols * elem_bytes].reshape(cols, elem_bytes), bits)
    return out
