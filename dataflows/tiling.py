"""Tile sizes, loop orders and operand orientation for one GEMM on the array.

The *array tile* is fixed by the array: ``tk`` = PE rows (× M/N when the array skips pruned
weights, since each PE row then holds one kept weight of a group) and ``tn`` = PE columns; one
COMPUTE streams ``tm`` activation rows through it. A *buffer tile* spans ``kb × nb`` array
tiles: the input slot holds ``tm × kb·tk`` activations (``kb`` k-chunks of ``tm`` rows), the
weight slot ``kb·tk × nb·tn`` weights (``kb·nb`` sub-tiles) and the accumulator slot ``tm ×
nb·tn`` outputs (``nb`` n-chunks), which accumulate across the whole reduction before they are
stored. Loops over buffer tiles run m-n-k or n-m-k (k innermost, so partial sums never leave
the accumulator); a buffer tile that the next step needs again stays resident.

What remains to choose is ``tm``, ``kb``, ``nb``, the loop order and, for dense GEMMs, which
operand is stationary (``swap`` computes Cᵀ = Bᵀ·Aᵀ). The default heuristic takes the largest
``tm`` the buffers hold with one array tile per buffer tile; the *offline tiling* pass searches
all of it (:func:`search_tiling`, docs/scheduler.md).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from dataflows.cost import (
    GemmEstimate,
    compress_cycles,
    dma_cycles,
    os_compute_cycles,
    tile_compute_cycles,
)
from dataflows.isa import ROW_OFFSET_BITS, SLOTS_PER_BUFFER, ConvAddress, conv_parts_conflict_free
from workloads.arith import ceil_div, index_bits, next_pow2
from workloads.errors import MappingError
from workloads.layer import ConvShape
from workloads.lowering import GemmTask
from workloads.spec import DramSpec, HardwareSpec

__all__ = [
    "Tiling",
    "bands_per_image",
    "default_tiling",
    "search_tiling",
    "search_tilings",
    "fits",
    "estimate",
    "max_tm",
    "input_row_bytes",
    "input_banks",
    "weight_slot_rows",
    "accumulator_slot_rows",
    "dram_read_bytes",
    "MAX_TILE_ROWS",
    "MAX_CHUNKS",
    "chunked",
    "pe_cycles",
    "conv_mappable",
    "conv_group",
    "conv_chunk",
    "conv_k_per_chunk",
    "conv_b_mappable",
    "conv_t_mappable",
    "b_patches",
    "m_tiles",
    "m_widths",
    "patch_lines",
]

#: ``rows``/``m`` instruction fields are 16 bits wide.
MAX_TILE_ROWS = (1 << 16) - 1

#: Most reduction chunks one output-stationary COMPUTE covers (the 12-bit ``chunks`` field).
MAX_CHUNKS = (1 << 12) - 1

#: Largest row offset within a slot (the ``a_row``/``b_row``/``c_row`` fields).
MAX_ROW_OFFSET = (1 << ROW_OFFSET_BITS) - 1


# Not frozen (as isa.Instr is not): the tiling search builds tens of thousands of candidates
# (20 k for a ResNet-50 iteration), and a frozen dataclass sets each field through
# object.__setattr__. Hashable (a memo key) and treated as an immutable value all the same.
@dataclass(slots=True, unsafe_hash=True)
class Tiling:
    """How one GEMM is cut into tiles.

    Attributes
    ----------
    swap
        Run the GEMM as Cᵀ = Bᵀ·Aᵀ (dense GEMMs only), so the larger of m and n streams.
    sparse
        The array skips pruned weights (N:M mode).
    compressed_in_dram
        Weights are loaded already compressed (pre-generated, or deployed compressed for
        inference); otherwise dense weights are loaded and compressed on chip before each use.
    kb, nb
        Array tiles per buffer tile along k and n (the buffer tile is ``tm × kb·tk × nb·tn``).
    conv
        A convolution's A rows are generated on chip from its feature map (COMPUTE's
        convolution address mode): the k-tiles are ordered (channel chunk of ``tk``, kernel
        offset), ``kb`` is a multiple of kh·kw (whole channel chunks) or divides it (some
        kernel offsets of one chunk), and an m-tile is
        ``tm // out_w`` whole output lines of one image, or whole images (:func:`m_tiles`).
    conv_b
        A weight-gradient GEMM's B (the im2col matrix of X: ``k`` = output pixels, ``n`` =
        (channel chunk of ``tn``, kernel offset, channel)) is generated on chip: per channel
        chunk, the patch of input lines a k-buffer tile's ``kb·tk`` pixels read sits in the
        weight slot, and each COMPUTE preloads its ``tk`` rows through the address mode;
        ``nb`` is a multiple or a divisor of kh·kw (:func:`b_patches`).
    conv_t
        A weight-gradient GEMM run swapped (``swap``: ``dWᵀ = im2col(X)ᵀ · dY``) whose A,
        ``im2col(X)ᵀ``, is generated on chip by the transposing read: per channel chunk of
        ``tk`` (the PE rows), the patch of input lines a k-buffer tile's ``kb·tk`` pixels read
        sits in the input slot (:func:`b_patches`), and each COMPUTE streams the transposed
        ``tk × tk`` blocks of its m-tile's (chunk, kernel offset)s; ``tm`` is a multiple of
        ``kh·kw·tk`` (whole channel chunks).
    """

    tm: int
    tk: int
    tn: int
    order: Literal["mnk", "nmk"] = "mnk"
    swap: bool = False
    sparse: bool = False
    compressed_in_dram: bool = False
    kb: int = 1
    nb: int = 1
    conv: bool = False
    conv_b: bool = False
    conv_t: bool = False

    def dims(self, task: GemmTask) -> tuple[int, int, int]:
        """(m, k, n) as executed."""
        return (task.n, task.k, task.m) if self.swap else (task.m, task.k, task.n)


#: Largest value of the 12-bit geometry fields of COMPUTE's convolution address mode.
_MAX_CONV_EXTENT = (1 << 12) - 1


def conv_mappable(task: GemmTask, tk: int, hw: HardwareSpec | None = None) -> bool:
    """Whether ``task``'s A can come from its feature map through the convolution address mode
    with array tiles ``tk`` deep: an ungrouped convolution's GEMM (forward, or a transposed
    convolution's BP, ``workloads.lowering``) whose channels fill whole array tiles — or, on
    ``hw``, divide one (several kernel offsets per COMPUTE, :func:`_groupable`; a 3-channel
    first layer keeps im2col) — whose kernel covers more than one pixel (a 1×1
    convolution's im2col matrix is the feature map, or a subsample of it) and reads every input
    pixel (a patch holds whole input lines), within the fields' widths (``dh``/``dw`` are 8-bit
    two's complement)."""
    c = task.conv
    if c is None or task.copies != 1 or task.phase == "wg":
        return False
    return (c.kh * c.kw > 1 and (c.channels % tk == 0 or _groupable(task, tk, hw))
            and c.reads_every_pixel
            and task.k == c.kh * c.kw * c.channels and 1 <= c.stride <= 7
            and max(c.in_h, c.in_w, c.out_h, c.out_w) <= _MAX_CONV_EXTENT
            and c.padding < 64 and max(c.kh, c.kw) < 64)


#: Most kernel offsets one COMPUTE may cover (the 4-bit ``conv_group`` field).
_MAX_CONV_GROUP = 15


def conv_group(task: GemmTask, tk: int) -> int:
    """Kernel offsets one array tile along k covers under a convolution tiling: one where the
    channels fill whole ``tk``-deep tiles, else ``tk / channels`` pixels side by side."""
    c = task.conv.channels
    return 1 if c >= tk else tk // c


def conv_chunk(task: GemmTask, tk: int) -> tuple[int, int]:
    """(channel chunks, channels per chunk) of a convolution tiling's patches."""
    c = task.conv.channels
    return (c // tk, tk) if c >= tk else (1, c)


def conv_k_per_chunk(task: GemmTask, tk: int) -> int:
    """Array tiles along k per channel chunk: its kernel offsets, ``conv_group`` at a time."""
    return ceil_div(task.conv.kh * task.conv.kw, conv_group(task, tk))


def _groupable(task: GemmTask, tk: int, hw: HardwareSpec | None) -> bool:
    """Whether each COMPUTE can read ``tk / channels`` kernel offsets of a patch side by side
    (docs/isa.md, "Several kernel offsets per COMPUTE"): the channels fill a power of two of
    input banks exactly (a part is one slot row), and every group of consecutive offsets
    (row-major) lies in distinct bank groups for this line width."""
    c = task.conv
    if hw is None or tk % c.channels or c.channels % hw.array.rows:
        return False
    span = c.channels // hw.array.rows
    g = tk // c.channels
    if span & (span - 1) or g > _MAX_CONV_GROUP:
        return False
    groups = input_banks(hw) // span
    kk = c.kh * c.kw
    return all(conv_parts_conflict_free(ConvAddress(
        c.stride, c.in_h, c.in_w, c.out_h, c.out_w, 0, 0, o // c.kw - c.padding,
        o % c.kw - c.padding, 0, False, min(g, kk - o), c.kw, o % c.kw), groups)
        for o in range(0, kk, g))


#: The weight-side mode streams dYᵀ's C_out rows through every COMPUTE (the orientation cannot
#: swap), so it is offered only where a COMPUTE keeps the array at least this busy:
#: ``m / (m + rows + cols + 1) ≥ 3/4``, i.e. ``m ≥ 3·(rows + cols + 1)``. A fixed rule of the
#: GEMM and the array, not of the buffers, so a larger buffer still only adds candidates.
_CONV_B_MIN_STREAM = 3


def conv_b_mappable(task: GemmTask, tn: int, hw: HardwareSpec) -> bool:
    """Whether a weight-gradient GEMM's B (X's im2col matrix) can come from X through the
    convolution address mode on weight rows: as :func:`conv_mappable`, with channel chunks of
    ``tn`` (the array's columns), dense (the weight-side mode has no N:M indices), and, on the
    weight-stationary array, C_out (``m``) long enough to keep the array busy
    (``_CONV_B_MIN_STREAM``). The output-stationary array reduces over all of a buffer tile's
    pixels in one COMPUTE (:func:`chunked`), so a short C_out costs it no more than elsewhere."""
    c = task.conv
    if c is None or task.copies != 1 or task.phase != "wg" or task.nm is not None:
        return False
    if not hw.array.output_stationary and task.m < _CONV_B_MIN_STREAM * (hw.array.rows + tn + 1):
        return False
    return _conv_wg_shape(task, tn)


def _conv_wg_shape(task: GemmTask, tile: int) -> bool:
    """Whether a weight gradient's im2col matrix can be read from X through the address mode
    in channel chunks of ``tile``: an ungrouped convolution with a kernel of more than one
    pixel that reads every pixel, within the fields' widths."""
    c = task.conv
    return (c.kh * c.kw > 1 and c.channels % tile == 0 and c.reads_every_pixel
            and task.n == c.kh * c.kw * c.channels and task.k == c.batch * c.out_h * c.out_w
            and 1 <= c.stride <= 7 and max(c.in_h, c.in_w, c.out_h, c.out_w) <= _MAX_CONV_EXTENT
            and c.padding < 64 and max(c.kh, c.kw) < 64)


def conv_t_mappable(task: GemmTask, hw: HardwareSpec) -> bool:
    """Whether a weight-gradient GEMM runs swapped with the transposing read (``Tiling.conv_t``,
    docs/isa.md): dense, channel chunks of ``array.rows``, wherever the weight-side mode is not
    offered (on ResNet's layers: C_out too short to stream, ``_CONV_B_MIN_STREAM``). A rule of the GEMM and the
    array, not of the buffers, so a larger buffer still only adds candidates."""
    c, rows = task.conv, hw.array.rows
    if c is None or task.copies != 1 or task.phase != "wg" or task.nm is not None:
        return False
    if hw.array.output_stationary:  # the OS array streams A's rows as they are stored
        return False
    if conv_b_mappable(task, hw.array.cols, hw):
        return False
    return _conv_wg_shape(task, rows) and c.kh * c.kw * rows <= MAX_TILE_ROWS


def b_patches(task: GemmTask, tiling: Tiling) -> tuple[tuple[int, int, int], ...]:
    """Per k-buffer tile of a ``conv_b`` or ``conv_t`` tiling (``kb·tk`` consecutive output
    pixels), its patch: (first image, first input line in it, slot rows = lines · in_w)."""
    return _conv_b_patches(task.conv, tiling.kb * tiling.tk)


@lru_cache(maxsize=4096)
def _conv_b_patches(c: ConvShape, pixels: int) -> tuple[tuple[int, int, int], ...]:
    total = c.batch * c.out_h * c.out_w
    out = []
    for p0 in range(0, total, pixels):
        n0, lo, lines = _patch(c, p0, min(pixels, total - p0))
        out.append((n0, lo, lines * c.in_w))
    return tuple(out)


def m_tiles(task: GemmTask, tiling: Tiling) -> list[tuple[int, int]]:
    """(first row, rows) of every m-tile as executed. A convolution tile (``tiling.conv``) is
    ``tm // out_w`` output lines of one image (the last band of an image may be shorter), or
    ``tm // (out_h·out_w)`` whole images when ``tm`` covers more than an image."""
    m = tiling.dims(task)[0]
    if not tiling.conv:
        return [(i, min(tiling.tm, m - i)) for i in range(0, m, tiling.tm)]
    return list(_conv_m_tiles(task.conv, tiling.tm))


@lru_cache(maxsize=4096)
def _conv_m_tiles(c: ConvShape, tm: int) -> tuple[tuple[int, int], ...]:
    image, lines, m = c.out_h * c.out_w, tm // c.out_w, c.batch * c.out_h * c.out_w
    if lines > c.out_h:
        step = lines // c.out_h * image
        return tuple((i, min(step, m - i)) for i in range(0, m, step))
    return tuple((n * image + oh * c.out_w, min(lines, c.out_h - oh) * c.out_w)
                 for n in range(c.batch) for oh in range(0, c.out_h, lines))


def patch_lines(task: GemmTask, m0: int, rows: int) -> tuple[int, int, int]:
    """(first image, first input line within it, input lines) of the feature-map patch that
    output rows ``m0 .. m0+rows-1`` (whole output lines) read: from the first line any of them
    reads to the last, images back to back, padding lines excluded."""
    return _patch(task.conv, m0, rows)


def _patch(c: ConvShape, m0: int, rows: int) -> tuple[int, int, int]:
    first, last = m0 // c.out_w, (m0 + rows - 1) // c.out_w
    n0, oh0 = divmod(first, c.out_h)
    n1, oh1 = divmod(last, c.out_h)
    lo = max(0, oh0 * c.stride - c.padding)
    hi = min(c.in_h, oh1 * c.stride - c.padding + c.kh)
    return n0, lo, (n1 - n0) * c.in_h + hi - lo


def _stationary_tile(task: GemmTask, hw: HardwareSpec, sparse: bool) -> tuple[int, int]:
    rows, cols = hw.array.rows, hw.array.cols
    tk = rows // task.nm[0] * task.nm[1] if sparse else rows
    return tk, cols


def input_row_bytes(width: int, hw: HardwareSpec) -> int:
    """Bytes of an input-buffer slot that one activation row of ``width`` operands occupies.

    The input buffer is banked ``array.rows`` operands wide and a row takes a power-of-two
    number of banks, so that a COMPUTE reads any row in one cycle (docs/isa.md, "Slot
    capacity"): a row of 12 operands on 8 PE rows takes 16 operand places, not 12.
    """
    rows = hw.array.rows
    return next_pow2(ceil_div(width, rows)) * rows * hw.data_bytes


def input_banks(hw: HardwareSpec) -> int:
    """Banks of ``array.rows`` operands in one input-buffer slot: enough for the widest
    reduction tile any supported pattern streams (``rows·M/N``), rounded up to a power of two
    (``rtl.params.Geometry.a_banks``). A row of ``2^p`` banks sits in bank group ``row mod
    (banks / 2^p)``; distinct groups are read at distinct addresses in one cycle."""
    rows = hw.array.rows
    widest = max([rows] + [rows // p.n * p.m for p in hw.nm_patterns])
    return next_pow2(ceil_div(widest, rows))


def max_tm(task: GemmTask, tk: int, tn: int, hw: HardwareSpec) -> int:
    """Largest ``tm`` whose A tile and accumulator tile fit one buffer slot each."""
    by_input = hw.buffers.input_bytes // SLOTS_PER_BUFFER // input_row_bytes(tk, hw)
    by_acc = hw.buffers.accumulator_bytes // SLOTS_PER_BUFFER // (tn * hw.acc_bytes)
    tm = min(by_input, by_acc, MAX_TILE_ROWS)
    if tm < 1:
        # Name the buffer that is too small (the CLI points at its line or --set).
        field, what, row = (("input_bytes", f"an input row of {tk} elements",
                             input_row_bytes(tk, hw)) if by_input < 1 else
                            ("accumulator_bytes", f"an accumulator row of {tn} elements",
                             tn * hw.acc_bytes))
        size = getattr(hw.buffers, field)
        raise MappingError(
            f"{task.name}: {what} ({row:,} B) does not fit a buffer slot of {hw.name} "
            f"(1/{SLOTS_PER_BUFFER} of buffers.{field} = {size:,} B); enlarge buffers.{field} "
            f"to at least {SLOTS_PER_BUFFER * row:,}"
        )
    return tm


def _check_weight_slot(task: GemmTask, tiling: Tiling, hw: HardwareSpec) -> None:
    dense_bytes = tiling.tk * tiling.tn * hw.data_bytes
    if hw.buffers.weight_bytes // SLOTS_PER_BUFFER < dense_bytes:
        raise MappingError(
            f"{task.name}: a weight tile of {tiling.tk}x{tiling.tn} elements ({dense_bytes} B) "
            f"does not fit a weight buffer slot of {hw.name} (1/{SLOTS_PER_BUFFER} of "
            f"buffers.weight_bytes = {hw.buffers.weight_bytes:,} B); enlarge buffers.weight_bytes "
            f"to at least {SLOTS_PER_BUFFER * dense_bytes:,}"
        )


def _base(task: GemmTask, hw: HardwareSpec) -> tuple[bool, int, int]:
    """Whether the array runs the task sparse, and the stationary tile (tk, tn) that follows."""
    sparse = task.sparse_on(hw)
    tk, tn = _stationary_tile(task, hw, sparse)
    return sparse, tk, tn


def default_tiling(task: GemmTask, hw: HardwareSpec, compressed_in_dram: bool) -> Tiling:
    """The largest ``tm`` that fits, loop order m-n-k, no operand swap."""
    sparse, tk, tn = _base(task, hw)
    tm = min(task.m, max_tm(task, min(tk, task.k), tn, hw))
    tiling = Tiling(tm, tk, tn, "mnk", False, sparse, compressed_in_dram and sparse)
    _check_weight_slot(task, tiling, hw)
    return tiling


def weight_slot_rows(hw: HardwareSpec) -> int:
    """Weight rows of ``array.cols`` dense operands one weight slot holds (docs/isa.md)."""
    return hw.buffers.weight_bytes // SLOTS_PER_BUFFER // (hw.array.cols * hw.data_bytes)


def accumulator_slot_rows(hw: HardwareSpec) -> int:
    """Accumulator rows (``array.cols`` accumulators each) one accumulator slot holds."""
    return hw.buffers.accumulator_bytes // SLOTS_PER_BUFFER // (hw.array.cols * hw.acc_bytes)


def _compressed_row_bytes(nm_m: int, hw: HardwareSpec) -> int:
    cols = hw.array.cols
    return cols * hw.data_bytes + ceil_div(cols * index_bits(nm_m), 8)


def _widths(total: int, tile: int) -> list[tuple[int, int]]:
    """Extents of the tiles of ``tile`` that cover ``total``, as (extent, how many)."""
    full, rest = divmod(total, tile)
    return [(tile, full)] * bool(full) + [(rest, 1)] * bool(rest)


@dataclass(slots=True)  # not frozen: one per candidate tiling (see Tiling)
class _Shape:
    """A GEMM as executed, and the quantities every candidate tiling shares."""

    m: int
    k: int
    n: int
    nk: int
    nn: int
    b_rows: int  # weight-slot rows of one B sub-tile (dense tk, or compressed)
    b_row_bytes: int  # bytes of one of those rows in DRAM


def _shape(task: GemmTask, tiling: Tiling, hw: HardwareSpec) -> _Shape:
    m, k, n = tiling.dims(task)
    b_rows, b_row_bytes = tiling.tk, tiling.tn * hw.data_bytes
    if tiling.sparse and tiling.compressed_in_dram:
        b_rows = tiling.tk // task.nm[1] * task.nm[0]
        b_row_bytes = _compressed_row_bytes(task.nm[1], hw)
    return _Shape(m, k, n, ceil_div(k, tiling.tk), ceil_div(n, tiling.tn), b_rows, b_row_bytes)


def fits(task: GemmTask, tiling: Tiling, hw: HardwareSpec) -> bool:
    """Whether a buffer tile of ``tiling`` fits one slot of each buffer (docs/isa.md)."""
    sh = _shape(task, tiling, hw)
    kb, nb = min(tiling.kb, sh.nk), min(tiling.nb, sh.nn)
    tm = min(tiling.tm, sh.m)
    slot = SLOTS_PER_BUFFER
    if tiling.conv:
        patch = _patch_row_counts(task, tiling)[0][0]  # the largest
        a_rows = _conv_chunks_per_tile(task, kb, tiling.tk) * patch
        width = conv_chunk(task, tiling.tk)[1]
        a_ok = (a_rows * input_row_bytes(width, hw) <= hw.buffers.input_bytes // slot
                and patch <= MAX_TILE_ROWS and tm <= MAX_TILE_ROWS
                and a_rows <= MAX_ROW_OFFSET)
    elif tiling.conv_t:
        rows = _b_patch_row_counts(task, tiling)[0][0]  # the largest patch
        a_rows = _conv_t_chunks(task, tm, tiling.tk) * rows
        a_ok = (a_rows * input_row_bytes(tiling.tk, hw) <= hw.buffers.input_bytes // slot
                and rows <= MAX_TILE_ROWS and a_rows <= MAX_ROW_OFFSET and tm <= MAX_TILE_ROWS
                and tm % (task.conv.kh * task.conv.kw * tiling.tk) == 0)
    else:
        width = tiling.tk if kb > 1 else min(tiling.tk, sh.k)
        a_ok = (kb * tm * input_row_bytes(width, hw) <= hw.buffers.input_bytes // slot
                and kb * tm <= MAX_ROW_OFFSET)
    if tiling.conv_b:
        rows = _b_patch_row_counts(task, tiling)[0][0]  # the largest patch
        b_rows = _conv_chunks_per_tile(task, nb) * rows
        b_ok = (b_rows <= weight_slot_rows(hw) and rows <= MAX_TILE_ROWS
                and b_rows <= MAX_ROW_OFFSET)
    else:
        b_ok = (kb * nb * sh.b_rows * sh.b_row_bytes <= hw.buffers.weight_bytes // slot
                and kb * nb * sh.b_rows <= MAX_ROW_OFFSET)
    return (a_ok and b_ok and (kb <= MAX_CHUNKS or not chunked(tiling, hw))
            and nb * tm <= accumulator_slot_rows(hw)
            and nb * tm <= MAX_ROW_OFFSET)


def _conv_t_chunks(task: GemmTask, tm: int, tk: int) -> int:
    """Channel chunks (of ``tk`` channels) an m-tile of a ``conv_t`` tiling covers."""
    return max(1, tm // (task.conv.kh * task.conv.kw * tk))


def _conv_chunks_per_tile(task: GemmTask, kb: int, tk: int | None = None) -> int:
    """Channel chunks whose patches a convolution buffer tile of ``kb`` array tiles holds:
    ``kb`` is a multiple of the array tiles per chunk (whole chunks) or divides it (kernel
    offsets of one chunk; the chunk's patch stays resident across the buffer tiles that share
    it). Per chunk: kh·kw tiles, or :func:`conv_k_per_chunk` along k with array tiles ``tk``."""
    per = task.conv.kh * task.conv.kw if tk is None else conv_k_per_chunk(task, tk)
    return max(1, kb // per)


def _patch_rows(task: GemmTask, tiling: Tiling) -> tuple[int, ...]:
    """Input-slot rows of each m-tile's feature-map patch (one per pixel) under a convolution
    tiling: whole input lines of ``in_w`` pixels."""
    return _conv_patch_rows(task.conv, tiling.tm)


def bands_per_image(c: ConvShape, tm: int) -> int:
    """The m-tiles of each image where a convolution's m-tiles of ``tm`` rows are bands of
    output lines (:func:`m_tiles`: every image has the same ones); 0 where each is whole
    images."""
    lines = tm // c.out_w
    return ceil_div(c.out_h, lines) if lines <= c.out_h else 0


@lru_cache(maxsize=4096)
def _conv_patch_rows(c: ConvShape, tm: int) -> tuple[int, ...]:
    tiles = _conv_m_tiles(c, tm)
    per_image = bands_per_image(c, tm)
    if per_image:
        first = tuple(_patch(c, m0, rows)[2] * c.in_w for m0, rows in tiles[:per_image])
        return first * c.batch
    return tuple(_patch(c, m0, rows)[2] * c.in_w for m0, rows in tiles)


def _patch_row_counts(task: GemmTask, tiling: Tiling) -> tuple[tuple[int, int], ...]:
    """(slot rows, count) of :func:`_patch_rows`, largest first: the estimate's sums and the
    largest patch, without walking every m-tile's patch for each candidate."""
    return _conv_patch_row_counts(task.conv, tiling.tm)


def _b_patch_row_counts(task: GemmTask, tiling: Tiling) -> tuple[tuple[int, int], ...]:
    """(slot rows, count) of the patches of :func:`b_patches`, largest first."""
    return _conv_b_patch_row_counts(task.conv, tiling.kb * tiling.tk)


@lru_cache(maxsize=4096)
def _conv_patch_row_counts(c: ConvShape, tm: int) -> tuple[tuple[int, int], ...]:
    return _histogram(_conv_patch_rows(c, tm))


@lru_cache(maxsize=4096)
def _conv_b_patch_row_counts(c: ConvShape, pixels: int) -> tuple[tuple[int, int], ...]:
    return _histogram(p[2] for p in _conv_b_patches(c, pixels))


def _histogram(rows: Iterable[int]) -> tuple[tuple[int, int], ...]:
    return tuple(sorted(Counter(rows).items(), reverse=True))


def _passes(nmb: int, nkb: int, nnb: int, order: str, slots: int) -> tuple[int, int]:
    """(full reads of A, full reads of B) per copy, as the scheduler's resident-tile reuse gives
    them: a buffer tile is loaded again unless every tile the loop between two of its uses
    touches fits the slots (round-robin claims; a cyclic run longer than the slots always
    misses)."""
    if order == "mnk":
        a = 1 if (nkb <= slots or nnb == 1) else nnb
        b = 1 if (nkb * nnb <= slots or nmb == 1) else nmb
    else:
        b = 1 if (nkb <= slots or nmb == 1) else nmb
        a = 1 if (nmb * nkb <= slots or nnb == 1) else nnb
    return a, b


def _dma_sum(extents: list[tuple[int, int]], other: list[tuple[int, int]], row_bytes_of,
             hw: HardwareSpec) -> int:
    """DMA cycles of one transfer per (extent, other) pair: ``extent`` rows of
    ``row_bytes_of(other)`` bytes each."""
    return sum(ce * co * dma_cycles(e, row_bytes_of(o), hw) for e, ce in extents for o, co in other)


def _count(extents: list[tuple[int, int]]) -> int:
    return sum(c for _, c in extents)


def _a_dma(task: GemmTask, tiling: Tiling, hw: HardwareSpec, ms, ks) -> tuple[int, int]:
    """DMA cycles of one full read of A and of its first chunk: ``ms``/``ks`` extents of the
    im2col matrix, or each m-tile's feature-map patch per channel chunk (a convolution
    tiling)."""
    db = hw.data_bytes
    if tiling.conv_t:  # per channel chunk of tk, the patch of every k-buffer tile
        chunks = task.conv.channels // tiling.tk
        dma = chunks * _patches_dma(_b_patch_row_counts(task, tiling), tiling.tk * db, hw)
        return dma, dma_cycles(b_patches(task, tiling)[0][2], tiling.tk * db, hw)
    if not tiling.conv:
        return _dma_sum(ms, ks, lambda w: w * db, hw), dma_cycles(ms[0][0], ks[0][0] * db, hw)
    chunks, width = conv_chunk(task, tiling.tk)
    dma = chunks * _patches_dma(_patch_row_counts(task, tiling), width * db, hw)
    return dma, dma_cycles(_patch_rows(task, tiling)[0], width * db, hw)


def _patches_dma(counts: tuple[tuple[int, int], ...], row_bytes: int, hw: HardwareSpec) -> int:
    """DMA cycles of loading every patch once: ``counts`` of (slot rows, patches)."""
    return sum(n * dma_cycles(rows, row_bytes, hw) for rows, n in counts)


def _patches_rows(counts: tuple[tuple[int, int], ...]) -> int:
    """Slot rows of every patch together: ``counts`` of (slot rows, patches)."""
    return sum(rows * n for rows, n in counts)


def _a_bytes(task: GemmTask, tiling: Tiling, hw: HardwareSpec) -> int:
    """DRAM bytes of one full read of A (a convolution's: its patches, see :func:`_a_dma`)."""
    db = hw.data_bytes
    if tiling.conv_t:
        return _patches_rows(_b_patch_row_counts(task, tiling)) * task.conv.channels * db
    if not tiling.conv:
        m, k, _ = tiling.dims(task)
        return m * k * db
    return _patches_rows(_patch_row_counts(task, tiling)) * task.conv.channels * db


def _compressed_ks(task: GemmTask, ks: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(rows, count) of the compressed B sub-tiles of k-extents ``ks`` (N of every M rows)."""
    nm_n, nm_m = task.nm
    return [(w // nm_m * nm_n, c) for w, c in ks]


@dataclass(slots=True)  # not frozen: one per candidate tiling (see Tiling)
class _Loads:
    """What a candidate tiling loads, before any DMA cycle is counted: its extents, how often
    A and B are read in full (``a_pass``, ``b_pass``) and the DRAM bytes that reads. The search
    ranks by ``read_bytes`` first, so it rates every candidate's loads and estimates cycles
    only for those that read the least (:func:`_least_read`)."""

    sh: _Shape
    nb: int  # n-chunks per buffer tile, at most the GEMM's
    ms: list[tuple[int, int]]
    ks: list[tuple[int, int]]
    ns: list[tuple[int, int]]
    a_pass: int
    b_pass: int
    read_bytes: int


def _loads(task: GemmTask, tiling: Tiling, hw: HardwareSpec, slots: int) -> _Loads:
    sh = _shape(task, tiling, hw)
    kb, nb = min(tiling.kb, sh.nk), min(tiling.nb, sh.nn)
    ms, ks, ns = m_widths(task, tiling, sh.m), _widths(sh.k, tiling.tk), _widths(sh.n, tiling.tn)
    nms = _count(ms)
    a_pass, b_pass = _passes(nms, ceil_div(sh.nk, kb), ceil_div(sh.nn, nb), tiling.order, slots)
    if tiling.conv:  # A tiles along k: the channel chunks' patches, not the buffer tiles
        chunks = conv_chunk(task, tiling.tk)[0]
        a_pass = _passes(nms, ceil_div(chunks, _conv_chunks_per_tile(task, kb, tiling.tk)),
                         ceil_div(sh.nn, nb), tiling.order, slots)[0]
    db = hw.data_bytes
    if tiling.conv_b:
        groups = ceil_div(task.conv.channels // tiling.tn, _conv_chunks_per_tile(task, nb))
        nkb = ceil_div(sh.nk, kb)  # distinct patch sets: groups
        b_pass = _passes(nms, nkb, groups, tiling.order, slots)[1]
        if nkb > slots:  # n-buffer tiles of one chunk's offsets share its patches, but the
            # k-run between two of them evicts them: each is read again
            b_pass *= ceil_div(sh.nn, nb) // groups
        b_read = _patches_rows(_b_patch_row_counts(task, tiling)) * task.conv.channels * db
    elif tiling.sparse and tiling.compressed_in_dram:
        b_read = sum(w * c for w, c in _compressed_ks(task, ks)) * _count(ns) * sh.b_row_bytes
    else:
        b_read = sh.k * sh.n * db
    read = a_pass * _a_bytes(task, tiling, hw) + b_pass * b_read
    return _Loads(sh, nb, ms, ks, ns, a_pass, b_pass, read)


def m_widths(task: GemmTask, tiling: Tiling, m: int) -> list[tuple[int, int]]:
    """(rows, count) of the m-tiles of ``tiling`` over ``m`` rows, largest first."""
    if not tiling.conv:
        return _widths(m, min(tiling.tm, m))
    return list(_conv_m_widths(task.conv, tiling.tm))


@lru_cache(maxsize=4096)
def _conv_m_widths(c: ConvShape, tm: int) -> tuple[tuple[int, int], ...]:
    return _histogram(rows for _, rows in _conv_m_tiles(c, tm))


def chunked(tiling: Tiling, hw: HardwareSpec) -> bool:
    """Whether one COMPUTE covers all the reduction chunks of a buffer tile: on the
    output-stationary array (the transposing read is weight-stationary only). Through the
    address mode on A rows the chunks are kernel offsets it walks
    (``isa.os_conv_chunks``); through the weight-side mode its pixels simply continue
    from one chunk to the next."""
    return hw.array.output_stationary and not tiling.conv_t


def pe_cycles(ms: list[tuple[int, int]], nk: int, nn: int, tiling: Tiling,
              hw: HardwareSpec) -> int:
    """PE-array busy cycles of one copy of a GEMM: every COMPUTE's latency summed, for m-tiles
    ``ms`` ((rows, count) pairs), ``nk`` array tiles along k and ``nn`` along n. Weight-
    stationary: one COMPUTE per array tile, streaming its m-tile's rows. Output-stationary:
    one per buffer tile and n-tile when :func:`chunked` (else per array tile), ``rows`` cycles
    per block of ``rows`` outputs and k-chunk (:func:`dataflows.cost.os_compute_cycles`)."""
    if not hw.array.output_stationary:
        return nk * nn * sum(n * tile_compute_cycles(w, hw, tiling.conv_t) for w, n in ms)
    r = hw.array.rows
    computes = ceil_div(nk, min(tiling.kb, nk)) if chunked(tiling, hw) else nk
    fixed = os_compute_cycles(0, 1, hw)
    return nn * sum(n * (ceil_div(w, r) * r * nk + computes * fixed) for w, n in ms)


def estimate(task: GemmTask, tiling: Tiling, hw: HardwareSpec,
             slots: int = SLOTS_PER_BUFFER) -> GemmEstimate:
    """Analytic busy cycles per unit and DRAM read bytes of one copy of ``task`` under
    ``tiling`` (exact load counts; ``slots`` per buffer)."""
    return _estimate(task, tiling, hw, _loads(task, tiling, hw, slots))


def _estimate(task: GemmTask, tiling: Tiling, hw: HardwareSpec, loads: _Loads) -> GemmEstimate:
    sh, ms, ks, ns, b_pass = loads.sh, loads.ms, loads.ks, loads.ns, loads.b_pass
    db = hw.data_bytes
    a_dma, first_a = _a_dma(task, tiling, hw, ms, ks)
    dma = loads.a_pass * a_dma
    dma += _dma_sum(ms, ns, lambda w: w * db, hw)  # outputs leave requantized, at operand width
    vec, first_b = 0, dma_cycles(sh.b_rows, sh.b_row_bytes, hw)
    if tiling.conv_b:
        chunks = task.conv.channels // tiling.tn
        dma += b_pass * chunks * _patches_dma(_b_patch_row_counts(task, tiling),
                                              tiling.tn * db, hw)
        first_b = dma_cycles(b_patches(task, tiling)[0][2], tiling.tn * db, hw)
    elif tiling.sparse and tiling.compressed_in_dram:
        dma += b_pass * _dma_sum(_compressed_ks(task, ks), ns, lambda _: sh.b_row_bytes, hw)
    else:
        dma += b_pass * _dma_sum(ks, ns, lambda w: w * db, hw)
        if tiling.sparse:
            vec = b_pass * sum(ck * cn * compress_cycles(w, c, task.nm[1], hw)
                               for w, ck in ks for c, cn in ns)
    pe = pe_cycles(ms, _count(ks), _count(ns), tiling, hw)
    # Before the first COMPUTE: its A chunk and B sub-tile; after the last: the last output
    # tile's stores, which wait for all of its COMPUTEs.
    exposed = first_a + first_b + loads.nb * dma_cycles(ms[-1][0], tiling.tn * db, hw)
    return GemmEstimate(dma=dma, pe=pe, vec=vec, read_bytes=loads.read_bytes, exposed=exposed)


def _tm_candidates(m: int, limit: int) -> list[int]:
    top = min(m, limit)
    cands = {top, max(1, top // 2), max(1, top // 4)}
    cands.update(ceil_div(m, j) for j in (1, 2, 3, 4, 8) if ceil_div(m, j) <= limit)
    return sorted(cands, reverse=True)


def _span_candidates(count: int, allowed: bool) -> list[int]:
    """Array tiles per buffer tile along one dimension: one, all, or a half or quarter."""
    if not allowed:
        return [1]
    return sorted({1, count, ceil_div(count, 2), ceil_div(count, 4)})


def _tm_limit(task: GemmTask, tiling: Tiling, hw: HardwareSpec) -> int:
    """The largest ``tm`` for which ``tiling``'s buffer tile fits (0: none)."""
    sh = _shape(task, tiling, hw)
    kb, nb = min(tiling.kb, sh.nk), min(tiling.nb, sh.nn)
    width = tiling.tk if kb > 1 else min(tiling.tk, sh.k)
    limit = min(hw.buffers.input_bytes // SLOTS_PER_BUFFER // (kb * input_row_bytes(width, hw)),
                accumulator_slot_rows(hw) // nb, MAX_TILE_ROWS, MAX_ROW_OFFSET // max(kb, nb))
    if kb * nb * sh.b_rows * sh.b_row_bytes > hw.buffers.weight_bytes // SLOTS_PER_BUFFER:
        return 0
    return limit


def search_tilings(task: GemmTask, hw: HardwareSpec, compressed_in_dram: bool,
                   slots: int = SLOTS_PER_BUFFER, top: int = 2) -> list[Tiling]:
    """Offline tiling: the ``top`` best (tm, kb, nb, loop order, orientation) by the analytic
    estimate, best first.

    Candidates are ranked by DRAM read bytes first (so a larger buffer, which only adds
    candidates, never raises them), then by estimated cycles, DMA time and larger ``tm``; only
    candidates with the least read bytes are returned. The caller times them exactly.

    Which tilings fit and what they read do not depend on DRAM (only DMA cycles do), so the
    least-read candidates are remembered per hardware less its DRAM (:func:`_least_read`), with
    their loads, and for another DRAM only their DMA and cycles are estimated again (ranked by
    the same key, in the same order): a sweep over DRAM bandwidth searches each GEMM once.
    """
    key = (task, hw.model_copy(update={"dram": _ANY_DRAM}), compressed_in_dram, slots)
    found = _LEAST_READ.get(key)
    if found is None:
        if len(_LEAST_READ) > 4096:
            _LEAST_READ.clear()
        found = _LEAST_READ[key] = (hw.dram, _least_read(task, hw, compressed_in_dram, slots))
    dram, ranked = found
    if not ranked:
        return [default_tiling(task, hw, compressed_in_dram)]
    if dram != hw.dram:  # the keys were rated under another DRAM: rate them under this one
        ranked = [_rated(task, t, hw, loads) for _, t, loads in ranked]
    ranked = sorted(ranked, key=lambda item: item[0])  # stable: ties keep the enumeration order
    return [t for _, t, _ in ranked][:top]


#: The least-read tilings of a search with their ranking keys and loads (which no DRAM
#: changes), and the DRAM they were rated under, by task, hardware less DRAM, compression and
#: slots.
_LEAST_READ: dict[tuple, tuple[DramSpec, list[tuple[tuple, Tiling, _Loads]]]] = {}
_ANY_DRAM = DramSpec(bandwidth_bytes_per_cycle=1, latency_cycles=0)


def _rated(task: GemmTask, tiling: Tiling, hw: HardwareSpec, loads: _Loads
           ) -> tuple[tuple, Tiling, _Loads]:
    """``(ranking key, tiling, loads)`` of a candidate whose loads are known."""
    return _key_of(tiling, _estimate(task, tiling, hw, loads)), tiling, loads


def _key_of(tiling: Tiling, est: GemmEstimate) -> tuple:
    """The search's ranking key: least read bytes, then cycles, DMA, larger ``tm``."""
    return (est.read_bytes, est.cycles, est.dma, -tiling.tm, tiling.kb, tiling.nb)


def _least_read(task: GemmTask, hw: HardwareSpec, compressed_in_dram: bool,
                slots: int) -> list[tuple[tuple, Tiling, _Loads]]:
    """Every fitting candidate with the least DRAM read bytes, with its ranking key
    (:func:`_key_of`) and loads, in enumeration order (none: nothing fits, the default tiling
    stands).
    Every candidate's loads are rated (:func:`_loads`, no DMA cycles counted); only those that
    read the least are estimated in full, about a tenth of them."""
    rated = [(_loads(task, t, hw, slots), t) for t in _candidates(task, hw, compressed_in_dram)]
    if not rated:
        return []
    least = min(loads.read_bytes for loads, _ in rated)
    return [_rated(task, t, hw, loads) for loads, t in rated if loads.read_bytes == least]


def _candidates(task: GemmTask, hw: HardwareSpec, compressed_in_dram: bool) -> Iterator[Tiling]:
    """The search's fitting candidates, in enumeration order: (tm, kb, nb, loop order,
    orientation) of the im2col GEMM, then the convolution address modes' tilings."""
    sparse, tk, tn = _base(task, hw)
    on_chip = sparse and not compressed_in_dram  # COMPRESS works on one sub-tile at row 0
    for swap in (False, True) if not sparse else (False,):
        m, k, n = (task.n, task.k, task.m) if swap else (task.m, task.k, task.n)
        for kb in _span_candidates(ceil_div(k, tk), not on_chip):
            for nb in _span_candidates(ceil_div(n, tn), not on_chip):
                probe = Tiling(1, tk, tn, "mnk", swap, sparse, compressed_in_dram and sparse, kb, nb)
                limit = _tm_limit(task, probe, hw)
                for order in ("mnk", "nmk"):
                    for tm in _tm_candidates(m, limit) if limit else ():
                        yield Tiling(tm, tk, tn, order, swap, sparse,
                                     compressed_in_dram and sparse, kb, nb)
    if not on_chip and conv_mappable(task, tk, hw):
        yield from _conv_candidates(task, hw, compressed_in_dram)
    if conv_b_mappable(task, tn, hw):
        yield from _conv_b_candidates(task, hw)
    if conv_t_mappable(task, hw):
        yield from _conv_t_candidates(task, hw)


def _conv_candidates(task: GemmTask, hw: HardwareSpec, compressed_in_dram: bool
                     ) -> Iterator[Tiling]:
    """Convolution tilings (A rows generated from the feature map) that fit: whole channel
    chunks per buffer tile (``kb`` a multiple of kh·kw), m-tiles of a half, quarter, ... of an
    image's output lines or of a share of the batch's images."""
    sparse, tk, tn = _base(task, hw)
    c = task.conv
    kk = conv_k_per_chunk(task, tk)  # array tiles per channel chunk
    lines = {ceil_div(c.out_h, j) for j in (1, 2, 4, 8, 16)} | {1}
    lines |= {j * c.out_h for j in {c.batch, ceil_div(c.batch, 2), ceil_div(c.batch, 4), 2}
              if 1 < j <= c.batch}
    spans = {d for d in range(1, kk) if kk % d == 0}
    spans |= {cb * kk for cb in _span_candidates(conv_chunk(task, tk)[0], True)}
    for kb in sorted(spans):
        for nb in _span_candidates(ceil_div(task.n, tn), True):
            for order in ("mnk", "nmk"):
                for th in sorted(lines, reverse=True):
                    tm = th * c.out_w
                    tiling = Tiling(tm, tk, tn, order, False, sparse,
                                    compressed_in_dram and sparse, kb, nb, True)
                    if fits(task, tiling, hw):
                        yield tiling


def _kb_ladder(top: int, nk: int) -> list[int]:
    """k-buffer tiles of a weight-gradient tiling to rate: the powers of two and the shares
    of all ``nk`` k-tiles (a whole, a half, ... an eighth: the run of k-buffer tiles then fits
    the slots) up to ``top``, the most that fit. A fixed ladder cut at ``top``, so a larger
    buffer only adds candidates and never raises the reads."""
    ladder = {1 << i for i in range(top.bit_length())} | {ceil_div(nk, j) for j in (1, 2, 3, 4, 8)}
    return sorted(kb for kb in ladder if kb <= top)


def _conv_b_candidates(task: GemmTask, hw: HardwareSpec) -> Iterator[Tiling]:
    """Weight-gradient tilings whose B comes from X through the address mode that fit:
    k-buffer tiles of up to the most pixels whose patches fit the weight slot
    (:func:`_kb_ladder`), ``nb`` whole channel chunks or some kernel offsets of one."""
    _, tk, tn = _base(task, hw)
    c = task.conv
    kk, nk, chunks = c.kh * c.kw, ceil_div(task.k, tk), c.channels // tn
    spans = {d for d in range(1, kk) if kk % d == 0} | {cb * kk for cb in _span_candidates(chunks, True)}
    for nb in sorted(spans):
        per = _conv_chunks_per_tile(task, nb)
        lines = max(1, weight_slot_rows(hw) // per // c.in_w - c.kh)  # input lines a patch may hold
        top = max(1, min(nk, lines * c.out_w // (c.stride * tk)))
        for kb in _kb_ladder(top, nk):
            probe = Tiling(1, tk, tn, "mnk", False, False, False, kb, nb, False, True)
            if not fits(task, probe, hw):
                continue
            limit = min(hw.buffers.input_bytes // SLOTS_PER_BUFFER // (kb * input_row_bytes(tk, hw)),
                        accumulator_slot_rows(hw) // nb, MAX_TILE_ROWS,
                        MAX_ROW_OFFSET // max(kb, nb))
            for order in ("mnk", "nmk"):
                for tm in _tm_candidates(task.m, limit) if limit else ():
                    yield Tiling(tm, tk, tn, order, False, False, False, kb, nb, False, True)


def _conv_t_candidates(task: GemmTask, hw: HardwareSpec) -> Iterator[Tiling]:
    """Swapped weight-gradient tilings with the transposing read that fit: m-tiles of whole
    channel chunks (one, all, a half or a quarter of them), k-buffer tiles of up to the most
    pixels whose patches fit the input slot and whose dY rows (``nb`` n-tiles wide) fit the
    weight slot (:func:`_kb_ladder`)."""
    _, tk, tn = _base(task, hw)
    c = task.conv
    chunks, nk, nn = c.channels // tk, ceil_div(task.k, tk), ceil_div(task.m, tn)
    slot_rows = hw.buffers.input_bytes // SLOTS_PER_BUFFER // input_row_bytes(tk, hw)
    for per, nb in itertools.product(_span_candidates(chunks, True), _span_candidates(nn, True)):
        tm = per * c.kh * c.kw * tk
        lines = max(1, slot_rows // per // c.in_w - c.kh)  # input lines a patch may hold
        by_b = weight_slot_rows(hw) // (nb * tk)  # k-tiles of dY the weight slot holds
        top = max(1, min(nk, lines * c.out_w // (c.stride * tk), by_b))
        for kb in _kb_ladder(top, nk):
            for order in ("mnk", "nmk"):
                tiling = Tiling(tm, tk, tn, order, True, False, False, kb, nb, conv_t=True)
                if fits(task, tiling, hw):
                    yield tiling


def search_tiling(task: GemmTask, hw: HardwareSpec, compressed_in_dram: bool,
                  slots: int = SLOTS_PER_BUFFER) -> Tiling:
    """The best tiling by the analytic estimate alone (:func:`search_tilings`' first)."""
    tiling = search_tilings(task, hw, compressed_in_dram, slots, top=1)[0]
    _check_weight_slot(task, tiling, hw)
    return tiling


def dram_read_bytes(task: GemmTask, tiling: Tiling, hw: HardwareSpec,
                    slots: int = SLOTS_PER_BUFFER) -> int:
    """DRAM bytes the GEMM's loads read under ``tiling`` (all copies)."""
    return task.copies * estimate(task, tiling, hw, slots).read_bytes
