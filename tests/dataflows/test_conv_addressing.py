"""Convolution without im2col in DRAM (issue 13, part 2): COMPUTE's convolution address mode,
the scheduler's feature-map patches, and DRAM traffic against compulsory traffic."""

from __future__ import annotations

import pytest

from archsim.stats import compulsory_bytes
from dataflows.cost import transfer_bytes
from dataflows.isa import (
    ConvAddress,
    Instr,
    Op,
    conv_part_rows,
    conv_parts,
    conv_parts_conflict_free,
    conv_rows,
    conv_t_rows,
    decode,
    encode,
)
from dataflows.scheduler import build_segment
from dataflows.tiling import (
    Tiling,
    conv_mappable,
    conv_t_mappable,
    dram_read_bytes,
    m_tiles,
    patch_lines,
)
from workloads.layer import ConvShape, conv_input_extent
from workloads.load import load_hardware
from workloads.lowering import GemmTask
from workloads.spec import SchedulePasses

BIG = 1 << 30


def _hw(rows: int = 4, cols: int = 4, *extra: str):
    return load_hardware("tiny", overrides=[
        f"array.rows={rows}", f"array.cols={cols}", f"buffers.input_bytes={BIG}",
        f"buffers.weight_bytes={BIG}", f"buffers.accumulator_bytes={BIG}", *extra])


def _conv_task(conv: ConvShape, n: int, nm=None, phase="inference") -> GemmTask:
    rows = conv.batch * conv.out_h * conv.out_w
    k = conv.kh * conv.kw * conv.channels
    read = (conv_input_extent(conv.in_h, conv.kh, conv.stride, conv.padding)
            * conv_input_extent(conv.in_w, conv.kw, conv.stride, conv.padding))
    return GemmTask("cv", "cv", phase, rows, k, n, nm, "cv.W.ff" if nm else None,
                    im2col_elems=conv.batch * read * conv.channels, conv=conv)


def _traffic(program, hw) -> tuple[int, int]:
    reads = sum(transfer_bytes(i, hw) for i in program.instrs if i.op in (Op.LOAD_A, Op.LOAD_B))
    writes = sum(transfer_bytes(i, hw) for i in program.instrs if i.op == Op.STORE_C)
    return reads, writes


def test_the_conv_fields_round_trip_with_negative_offsets():
    conv = ConvAddress(stride=2, in_h=7, in_w=9, out_h=4, out_w=5, oh0=1, lo=1, dh=-3, dw=-1)
    instr = Instr(Op.COMPUTE, m=10, k=4, cols=4, a_row=12, conv=conv)
    assert decode(encode(instr)) == instr
    with pytest.raises(ValueError, match="conv_dh"):
        encode(Instr(Op.COMPUTE, conv=ConvAddress(1, 3, 3, 3, 3, 0, 0, -129, 0)))


def test_conv_rows_worked_example():
    """3×3, stride 1, padding 1 on a 3×4 image: output line 1 (oh0 = 1) read at kernel offset
    (0, 0), i.e. (dh, dw) = (−1, −1), from a patch holding input lines 0..2 (lo = 0) at slot
    row 5. Pixel (ih, iw) = (oh − 1, ow − 1): ow = 0 is in the padding; ow = 1..3 read input
    line 0, columns 0..2, which are slot rows 5..7. Then the next output line (oh = 2) reads
    input line 1: rows 9..11."""
    conv = ConvAddress(1, 3, 4, 3, 4, 1, 0, -1, -1)
    assert conv_rows(conv, 5, 8) == [None, 5, 6, 7, None, 9, 10, 11]
    # Crossing into the next image: oh wraps to 0 (ih = −1: padding), image 1's lines follow
    # image 0's three lines in the slot.
    assert conv_rows(conv, 5, 16)[8:12] == [None] * 4
    assert conv_rows(conv, 5, 16)[12:] == [None, 5 + 12, 6 + 12, 7 + 12]


def test_patches_are_whole_input_lines_of_one_band_or_whole_images():
    conv = ConvShape(2, 8, 6, 8, 3, 3, 2, 1)  # out 4 × 3
    task = _conv_task(conv, 4)
    band = Tiling(2 * conv.out_w, 4, 4, conv=True, kb=9)
    assert m_tiles(task, band) == [(0, 6), (6, 6), (12, 6), (18, 6)]
    # Output lines 0-1 read input lines −1..3 (line −1 is padding): lines 0..3.
    assert patch_lines(task, 0, 6) == (0, 0, 4)
    # Output lines 2-3 read input lines 3..7.
    assert patch_lines(task, 6, 6) == (0, 3, 5)
    images = Tiling(2 * conv.out_h * conv.out_w, 4, 4, conv=True, kb=9)
    assert m_tiles(task, images) == [(0, 24)]
    assert patch_lines(task, 0, 24) == (0, 0, 16)


@pytest.mark.parametrize("conv", [
    ConvShape(2, 8, 8, 8, 3, 3, 1, 1),   # 3×3, stride 1, padding
    ConvShape(2, 9, 7, 8, 3, 3, 2, 1),   # 3×3, stride 2, odd sizes
    ConvShape(1, 8, 8, 8, 3, 3, 1, 0),   # no padding
    ConvShape(2, 12, 12, 8, 7, 7, 2, 3),  # 7×7, stride 2 (a stem with channels in array tiles)
    ConvShape(1, 6, 6, 16, 5, 5, 1, 2),
    ConvShape(2, 8, 8, 8, 2, 2, 2, 0),   # kernel = stride: im2col reads every pixel once too
])
@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_a_conv_whose_working_set_fits_moves_exactly_its_compulsory_traffic(conv, nm):
    """Feature map read once (no halo: the tile is every image), weights once, outputs written
    once at operand width: DRAM traffic equals compulsory traffic, byte for byte."""
    hw = _hw()
    task = _conv_task(conv, 12, nm, "inference")
    segment = build_segment((task,), hw, SchedulePasses())
    tiling = segment.work.tilings[0]
    assert tiling.conv or conv.kh == conv.stride  # equal reads: the faster one is chosen
    assert _traffic(segment.program, hw) == compulsory_bytes(task, tiling, hw.data_bytes)


@pytest.mark.parametrize("conv", [
    ConvShape(2, 8, 8, 4, 1, 1, 1, 0),   # 1×1: the im2col matrix is the feature map
    ConvShape(2, 8, 8, 4, 1, 1, 2, 0),   # 1×1 stride 2: a subsample, read row by row
])
def test_one_by_one_convolutions_keep_their_im2col_matrix_which_is_compulsory(conv):
    hw = _hw()
    task = _conv_task(conv, 8)
    assert not conv_mappable(task, 4)
    segment = build_segment((task,), hw, SchedulePasses())
    assert _traffic(segment.program, hw) == compulsory_bytes(task, segment.work.tilings[0], 1)


def test_a_three_channel_stem_keeps_im2col():
    task = _conv_task(ConvShape(1, 16, 16, 3, 7, 7, 2, 3), 8)
    assert not conv_mappable(task, 4)  # 3 channels cannot fill 4 PE rows per kernel offset


def test_bands_read_each_input_line_once_plus_the_halo():
    """With an input slot that holds only part of an image, the tile is a band of output
    lines and its patch adds the kh − stride halo lines its neighbour also reads."""
    conv = ConvShape(1, 16, 8, 4, 3, 3, 1, 1)
    task = _conv_task(conv, 4)
    hw = _hw(4, 4, "buffers.input_bytes=512")  # 64 pixel rows per slot: 8 input lines
    segment = build_segment((task,), hw, SchedulePasses())
    tiling = segment.work.tilings[0]
    assert tiling.conv and tiling.tm < task.m
    loads = [i for i in segment.program.instrs if i.op == Op.LOAD_A]
    lines = sum(i.rows for i in loads) // conv.in_w
    bands = len(m_tiles(task, tiling))
    assert lines == conv.in_h + 2 * (bands - 1)  # each inner band boundary re-reads 2 lines
    assert dram_read_bytes(task, tiling, hw) == _traffic(segment.program, hw)[0]


def _conv_layer(batch, size, c_in, c_out, kernel, stride, padding):
    from workloads.layers import expand
    from workloads.spec import WorkloadSpec
    conv = {"op": "conv2d", "name": "cv", "in_channels": c_in, "out_channels": c_out,
            "kernel": kernel, "stride": stride, "padding": padding, "input_size": size,
            "batch": batch}
    spec = WorkloadSpec.model_validate({"version": 1, "name": "t", "hardware": _hw(),
                                        "mode": "training", "operations": [conv]})
    (layer,) = expand(spec)
    return layer


def test_a_same_size_stride_1_convolutions_bp_is_the_transposed_convolution():
    """dX of Y = conv(X, W) (stride 1, padding p, same size) is conv(dY, W flipped and
    transposed) with padding kh − 1 − p: the BP GEMM is that convolution's im2col GEMM, and
    its result equals the scatter-add of the gradient's definition."""
    import numpy as np

    from verification.dram import conv_matrix
    from workloads.lowering import lower_layer

    batch, size, c_in, c_out, kernel, pad = 2, 5, 4, 8, 3, 1
    layer = _conv_layer(batch, size, c_in, c_out, kernel, 1, pad)
    ff, bp, wg = lower_layer(layer, "training")
    assert (bp.m, bp.k, bp.n) == (batch * size * size, kernel * kernel * c_out, c_in)
    assert bp.macs_dense == ff.macs_dense
    assert bp.conv == ConvShape(batch, size, size, c_out, kernel, kernel, 1, kernel - 1 - pad)
    assert bp.distinct_elems() == (batch * size * size * c_out, bp.k * bp.n, bp.m * bp.n)
    rng = np.random.default_rng(0)
    w = rng.integers(-4, 5, (kernel, kernel, c_in, c_out))
    dy = rng.integers(-4, 5, (batch, size, size, c_out))
    dx = np.zeros((batch, size + 2 * pad, size + 2 * pad, c_in), np.int64)
    for kh in range(kernel):
        for kw in range(kernel):
            dx[:, kh:kh + size, kw:kw + size] += dy @ w[kh, kw].T
    reference = dx[:, pad:pad + size, pad:pad + size].reshape(-1, c_in)
    # B rows in the scheduler's order (chunk of tk channels, kh, kw, channel); one chunk here.
    b = w[::-1, ::-1].transpose(0, 1, 3, 2).reshape(-1, c_in)
    a = conv_matrix(dy.reshape(-1, c_out), bp.conv, c_out)
    assert np.array_equal(a @ b, reference)


@pytest.mark.parametrize("stride, kernel, padding", [(2, 3, 1), (1, 1, 0), (1, 3, 0)])
def test_other_convolutions_keep_the_im2col_bp(stride, kernel, padding):
    from workloads.lowering import lower_layer
    layer = _conv_layer(1, 8, 4, 8, kernel, stride, padding)
    bp = [t for t in lower_layer(layer, "training") if t.phase == "bp"][0]
    assert bp.conv is None and (bp.m, bp.k, bp.n) == (layer.rows, 8, layer.in_features)


@pytest.mark.parametrize("kernel", [3, 5, 7])
@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_a_transposed_conv_bp_whose_working_set_fits_moves_exactly_its_compulsory_traffic(kernel,
                                                                                          nm):
    """BP of a stride-1 "same" convolution: dY read once, W once, dX written once."""
    from dataclasses import replace

    from workloads.lowering import lower_layer
    hw = _hw()
    layer = _conv_layer(2, 9, 4, 8, kernel, 1, kernel // 2)
    bp = [t for t in lower_layer(layer, "training") if t.phase == "bp"][0]
    if nm:
        bp = replace(bp, nm=nm, weight="cv.W.bp")
    segment = build_segment((bp,), hw, SchedulePasses())
    tiling = segment.work.tilings[0]
    assert tiling.conv
    assert _traffic(segment.program, hw) == compulsory_bytes(bp, tiling, hw.data_bytes)


def test_a_short_weight_gradient_runs_swapped_with_the_transposing_read():
    """C_out = 8 rows streamed per COMPUTE on a 4×4 array would leave it half idle in the
    weight-side mode; the swapped GEMM streams im2col(X)ᵀ through the transposing read."""
    from workloads.lowering import lower_layer
    layer = _conv_layer(2, 9, 8, 8, 3, 1, 1)
    wg = [t for t in lower_layer(layer, "training") if t.phase == "wg"][0]
    tiling = build_segment((wg,), _hw(), SchedulePasses()).work.tilings[0]
    assert not tiling.conv_b and tiling.conv_t and tiling.swap
    assert conv_t_mappable(wg, _hw())
    # Not offered where the weight-side mode is (C_out long enough to stream), nor for FF.
    long = [t for t in lower_layer(_conv_layer(2, 9, 8, 28, 3, 1, 1), "training")
            if t.phase == "wg"][0]
    assert not conv_t_mappable(long, _hw())
    assert not conv_t_mappable([t for t in lower_layer(layer, "training") if t.phase == "ff"][0],
                               _hw())


def test_conv_t_rows_worked_example():
    """3×3, stride 1, padding 1 on a 3×4 image (docs/isa.md, "The transposing read"): the
    k-tile's 4 pixels from output (1, 2) are (1, 2), (1, 3), (2, 0), (2, 1); the patch holds
    input lines 0..2 (12 slot rows per channel chunk) from slot row 0; 2 chunks × 9 offsets."""
    conv = ConvAddress(1, 3, 4, 3, 4, 1, 0, -1, -1, ow0=2, t=True, kh=3, kw=3, chunk_rows=12)
    blocks = conv_t_rows(conv, 0, 4, 18)
    assert blocks[0] == [1, 2, None, 4]  # offset (0, 0): (0, 1), (0, 2), (1, −1) padding, (1, 0)
    assert blocks[4] == [6, 7, 8, 9]  # offset (1, 1): the pixels themselves
    assert blocks[8] == [11, None, None, None]  # offset (2, 2): (2, 3), then below the image
    assert blocks[9] == [13, 14, None, 16]  # chunk 1, offset (0, 0): 12 rows further
    instr = Instr(Op.COMPUTE, m=72, k=4, cols=4, conv=conv)
    assert decode(encode(instr)) == instr


@pytest.mark.parametrize("kernel, stride, c_out", [(3, 1, 8), (3, 2, 4), (5, 1, 8), (7, 2, 8),
                                                   (2, 1, 4)])
def test_a_transposed_weight_gradient_whose_working_set_fits_moves_exactly_its_compulsory_traffic(
        kernel, stride, c_out):
    """WG with a short C_out, swapped: X read once through the transposing read (two channel
    chunks of 4), dY read once, dWᵀ written once."""
    from workloads.lowering import lower_layer
    hw = _hw()
    layer = _conv_layer(2, 9, 8, c_out, kernel, stride, kernel // 2)
    wg = [t for t in lower_layer(layer, "training") if t.phase == "wg"][0]
    segment = build_segment((wg,), hw, SchedulePasses())
    tiling = segment.work.tilings[0]
    assert tiling.conv_t and any(i.transposing for i in segment.program.instrs)
    assert _traffic(segment.program, hw) == compulsory_bytes(wg, tiling, hw.data_bytes)


def test_conv_rows_from_a_pixel_inside_a_line():
    """Row 0 may be any pixel (``ow0``): the weight-side mode's k-tiles start mid-line."""
    conv = ConvAddress(1, 3, 4, 3, 4, 1, 0, -1, -1, ow0=2)
    assert conv_rows(conv, 5, 4) == [6, 7, None, 9]


@pytest.mark.parametrize("kernel, stride", [(3, 1), (3, 2), (5, 1), (7, 2)])
def test_a_weight_gradient_whose_working_set_fits_moves_exactly_its_compulsory_traffic(kernel,
                                                                                       stride):
    """WG: dY (as dYᵀ) read once, X read once through the weight-side address mode, dW written
    once."""
    from workloads.lowering import lower_layer
    hw = _hw()
    layer = _conv_layer(2, 9, 8, 28, kernel, stride, kernel // 2)  # C_out ≥ 3·(4 + 4 + 1)
    wg = [t for t in lower_layer(layer, "training") if t.phase == "wg"][0]
    segment = build_segment((wg,), hw, SchedulePasses())
    tiling = segment.work.tilings[0]
    assert tiling.conv_b and not tiling.conv
    assert _traffic(segment.program, hw) == compulsory_bytes(wg, tiling, hw.data_bytes)


def test_equal_gemm_shapes_of_different_convolutions_get_their_own_programs():
    """ResNet-50's layer4.0.conv2 (3×3, stride 2, 14×14) and layer4.1.conv2 (3×3, stride 1,
    7×7) have the same weight-gradient GEMM shape; a program cache keyed by the shape alone
    gave the first one the second one's patches (found by test_mapping_figures)."""
    from workloads.lowering import lower_layer
    hw = _hw()
    first = [t for t in lower_layer(_conv_layer(2, 14, 4, 28, 3, 2, 1), "training")
             if t.phase == "wg"][0]
    second = [t for t in lower_layer(_conv_layer(2, 7, 4, 28, 3, 1, 1), "training")
              if t.phase == "wg"][0]
    assert (first.m, first.k, first.n) == (second.m, second.k, second.n)
    for task in (first, second):
        segment = build_segment((task,), hw, SchedulePasses())
        assert segment.work.tilings[0].conv_b
        assert _traffic(segment.program, hw) == compulsory_bytes(task, segment.work.tilings[0], 1)


# --------------------------------------------------------------------------------------------
# Several kernel offsets per COMPUTE (fewer channels than the N:M reduction tile)
# --------------------------------------------------------------------------------------------


def test_conv_parts_worked_example():
    """A 3×3 kernel, padding 1, on 5-pixel lines; a COMPUTE of three offsets from kernel
    column 2 of kernel row 0 (dh, dw) = (−1, 1): then (0, −1) and (0, 0) after the wrap. Their
    rows lie 0, 5 − 2 = 3 and 4 slot rows from the first: residues 0, 3, 0 mod 4 bank groups
    (offsets 1 and 3 share a group), 0, 3, 4 mod 8 (distinct)."""
    conv = ConvAddress(1, 5, 5, 5, 5, 0, 0, -1, 1, group=3, kw=3, kw0=2)
    assert conv_parts(conv) == [(-1, 1), (0, -1), (0, 0)]
    assert not conv_parts_conflict_free(conv, 4)
    assert conv_parts_conflict_free(conv, 8)
    # Output pixel (0, 0) at slot row 10: part 0 reads input (−1, 1), padding; part 1 input
    # (0, −1), padding; part 2 input (0, 0), slot row 10. Pixel (0, 1): (−1, 2), (0, 0), (0, 1).
    assert [rows[:2] for rows in conv_part_rows(conv, 10, 2)] == [[None, None], [None, 10],
                                                                  [10, 11]]
    instr = Instr(Op.COMPUTE, m=4, k=8, cols=4, conv=conv)
    assert decode(encode(instr)) == instr


def test_several_offsets_per_compute_need_parts_in_distinct_bank_groups():
    """64 channels under 2:8 on a 32-row array: 128-deep tiles, two offsets per COMPUTE, each
    pixel two of the 8 banks (4 bank groups). A 3×3 kernel pairs (kh, 2) with (kh+1, 0), which
    lie in_w − 2 rows apart: conflict-free unless in_w ≡ 2 mod 4."""
    hw = load_hardware("sat_vcu1525")
    for in_w, ok in ((56, True), (57, True), (58, False), (54, False)):
        task = _conv_task(ConvShape(1, 8, in_w, 64, 3, 3, 1, 1), 64, (2, 8), "ff")
        assert conv_mappable(task, 128, hw) is ok, in_w
    assert not conv_mappable(_conv_task(ConvShape(1, 8, 56, 64, 3, 3, 1, 1), 64, (2, 8), "ff"),
                             128)  # (no hardware: bank groups unknown)
    # 48 channels do not fill a power of two of banks; 3 channels fill none.
    assert not conv_mappable(_conv_task(ConvShape(1, 8, 56, 48, 3, 3, 1, 1), 64, (2, 8), "ff"),
                             96, hw)


@pytest.mark.parametrize("conv,nm", [
    (ConvShape(2, 7, 7, 4, 3, 3, 1, 1), (2, 4)),    # 2 offsets of one bank, padding
    (ConvShape(2, 9, 7, 4, 3, 3, 2, 1), (1, 4)),    # 4 offsets, stride 2
    (ConvShape(1, 8, 9, 8, 3, 3, 1, 0), (2, 8)),    # 2 offsets of two banks, no padding
    (ConvShape(2, 12, 13, 4, 7, 7, 2, 3), (1, 2)),  # 7×7 stride 2
    (ConvShape(1, 6, 7, 4, 5, 5, 1, 2), (2, 4)),
])
@pytest.mark.parametrize("phase", ["ff", "bp"])
def test_several_offsets_per_compute_move_exactly_the_compulsory_traffic(conv, nm, phase):
    """With the working set in the buffers, a convolution whose channels are fewer than its
    N:M tile reads its feature map once through COMPUTEs of several kernel offsets, FF and
    (stride 1) as the transposed convolution's BP."""
    if phase == "bp" and conv.stride != 1:
        pytest.skip("a strided layer's BP keeps im2col")
    hw = _hw(4, 8)  # 8 columns: a compressed row's indices fill whole bytes (as compulsory counts)
    task = _conv_task(conv, 8, nm, phase)
    segment = build_segment((task,), hw, SchedulePasses())
    tiling = segment.work.tilings[0]
    computes = [i for i in segment.program.instrs if i.op == Op.COMPUTE]
    assert tiling.conv and any(i.conv.group > 1 for i in computes)
    assert _traffic(segment.program, hw) == compulsory_bytes(task, tiling, hw.data_bytes)
