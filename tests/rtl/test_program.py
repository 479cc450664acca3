"""Real scheduler programs on ``AccelTop``: values against numpy, cycles against archsim.

Every program comes from ``dataflows.scheduler`` unchanged. For each, the RTL must leave the
golden interpreter's DRAM image bit for bit (the output tensors, which ``verification.golden``
also checks against plain numpy, and every other byte untouched), take exactly
``archsim.model.run_program(...).cycles`` cycles (the ``cycles`` output and the cycles ``busy``
stays high), and start and end every instruction in the very cycle the model's trace says.
"""

from __future__ import annotations

import pytest
from rtl_harness import check_values, prepare_case, run_on_rtl

from dataflows.isa import Op
from dataflows.scheduler import build_segment, pregen_program
from dataflows.tiling import search_tiling
from workloads.layer import ConvShape
from workloads.load import load_hardware
from workloads.lowering import GemmTask
from workloads.spec import HardwareSpec, SchedulePasses

TINY = load_hardware("tiny")
PLAIN = SchedulePasses(offline_tiling=False)


def _variant(hw: HardwareSpec, name: str, **changes) -> HardwareSpec:
    doc = hw.model_dump()
    for key, value in changes.items():
        if isinstance(value, dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return HardwareSpec.model_validate({**doc, "name": name})


#: A 6-byte memory beat (not a power of two: the DMA's beat count uses a reciprocal), 3 cycles
#: of latency, 3 vector lanes over 4 columns (a partial last chunk) and a 1-cycle pipeline.
ODD = _variant(TINY, "tiny_odd", dram={"bandwidth_bytes_per_cycle": 6, "latency_cycles": 3},
               vector_unit={"lanes": 3, "pipeline_cycles": 1})
#: sat_vcu1525's widths and patterns (16-bit operands, 48-bit = 6-byte accumulators) on 4x4.
SATLIKE = _variant(
    load_hardware("sat_vcu1525"), "sat_4x4", array={"rows": 4, "cols": 4},
    dram={"bandwidth_bytes_per_cycle": 16, "latency_cycles": 6},
    buffers={"weight_bytes": 4096, "input_bytes": 8192, "accumulator_bytes": 8192},
    vector_unit={"lanes": 4, "pipeline_cycles": 3},
)


def _task(name, m, k, n, nm=None, phase="inference", copies=1):
    # The scheduler ignores the phase; the golden model prunes "ff"/"bp" weights with BDWP's
    # two masks, which need both weight dimensions to be multiples of M: a plain N:M GEMM is
    # an inference one.
    return GemmTask(name, name, phase, m, k, n, nm, f"{name}.W" if nm else None, copies)


SEARCH = SchedulePasses()


def _conv(conv: ConvShape, n: int, nm=None, phase=None):
    rows, k = conv.batch * conv.out_h * conv.out_w, conv.kh * conv.kw * conv.channels
    phase = phase or ("ff" if nm else "inference")
    weight = f"cv.W.{phase}" if nm else None
    return GemmTask("cv", "cv", phase, rows, k, n, nm, weight, conv=conv)


def _wg(conv: ConvShape, c_out: int):
    pixels, k = conv.batch * conv.out_h * conv.out_w, conv.kh * conv.kw * conv.channels
    return GemmTask("cv.wg", "cv", "wg", c_out, pixels, k,
                    im2col_elems=conv.batch * conv.in_h * conv.in_w * conv.channels, conv=conv)


CASES = {
    # name: (hardware, tasks, passes, compressed_in_dram)
    "dense_two_k_tiles": (TINY, (_task("g", 8, 12, 8),), PLAIN, True),
    "dense_ragged_edges": (TINY, (_task("g", 6, 10, 7),), PLAIN, True),
    "nm_2_4": (TINY, (_task("g", 8, 16, 4, (2, 4)),), PLAIN, True),
    "nm_1_2": (TINY, (_task("g", 5, 8, 6, (1, 2)),), PLAIN, True),
    "nm_2_8": (TINY, (_task("g", 4, 32, 4, (2, 8)),), PLAIN, True),
    "nm_2_4_ragged": (TINY, (_task("g", 5, 12, 6, (2, 4)),), PLAIN, True),
    "compress_on_chip_2_4": (TINY, (_task("g", 6, 16, 8, (2, 4)),), PLAIN, False),
    "compress_on_chip_1_4": (TINY, (_task("g", 3, 24, 5, (1, 4)),), PLAIN, False),
    "interleaved_bp_wg": (TINY, (_task("l.bp", 12, 8, 8, (2, 4), "bp"), _task("l.wg", 8, 12, 8,
                                                                             phase="wg")),
                          PLAIN, True),
    "copies_single_buffer": (TINY, (_task("g", 5, 8, 5, copies=2),),
                             SchedulePasses(offline_tiling=False, double_buffering=False), True),
    "odd_beat_and_lanes": (ODD, (_task("g", 5, 16, 6, (2, 4)),), PLAIN, False),
    "odd_beat_dense_search": (ODD, (_task("g", 7, 9, 6),), SchedulePasses(), True),
    "sat_widths_4_8": (SATLIKE, (_task("g", 6, 16, 4, (4, 8)),), PLAIN, False),
    "sat_widths_1_8": (SATLIKE, (_task("g", 3, 64, 6, (1, 8)),), PLAIN, True),
    # Convolution address mode (docs/isa.md): feature-map patches, zero padding, stride 2,
    # whole images in one tile, bands of output lines with their halo, N:M.
    "conv_3x3_stride2_padded": (TINY, (_conv(ConvShape(2, 5, 6, 8, 3, 3, 2, 1), 6),),
                                SEARCH, True),
    "conv_5x5_bands_2_4": (_variant(TINY, "tiny_small_input", buffers={"input_bytes": 512}),
                           (_conv(ConvShape(1, 9, 5, 8, 5, 5, 1, 2), 4, (2, 4)),), SEARCH, True),
    "conv_sat_widths_3x3": (SATLIKE, (_conv(ConvShape(2, 4, 4, 4, 3, 3, 1, 1), 5),), SEARCH,
                            True),
    # BP of a stride-1 3x3 layer as the transposed convolution of dY (BDWP's BP mask along k).
    "conv_bp_transposed_2_4": (TINY, (_conv(ConvShape(1, 5, 5, 8, 3, 3, 1, 1), 8, (2, 4), "bp"),),
                               SEARCH, True),
    # Weight gradient: X's im2col rows preloaded through the mode on weight rows, k-tiles of
    # 4 pixels starting mid-line (out_w = 3), a stride-2 padded conv over two images.
    "conv_wg_weight_rows": (TINY, (_wg(ConvShape(2, 6, 5, 4, 3, 3, 2, 1), 28),), SEARCH, True),
    # Weight gradient with a short C_out, run swapped through the transposing read: two
    # channel chunks, k-tiles of 4 pixels starting mid-line and crossing into the next image,
    # stride 2 with padding; and a 2x2 stride-1 kernel without padding.
    "conv_wg_transposed": (TINY, (_wg(ConvShape(2, 6, 5, 8, 3, 3, 2, 1), 4),), SEARCH, True),
    "conv_wg_transposed_2x2": (TINY, (_wg(ConvShape(1, 5, 5, 4, 2, 2, 1, 0), 6),), SEARCH,
                               True),
    # Several kernel offsets per COMPUTE (fewer channels than the N:M reduction tile): 2 parts
    # of one bank each, 2 parts of two banks (2 bank groups), 4 parts with stride 2 over two
    # images; the last COMPUTE of each kernel has fewer parts.
    "conv_offsets_2_4": (TINY, (_conv(ConvShape(1, 5, 5, 4, 3, 3, 1, 1), 4, (2, 4)),), SEARCH,
                         True),
    "conv_offsets_2_8_two_banks": (TINY, (_conv(ConvShape(1, 5, 5, 8, 3, 3, 1, 1), 8, (2, 8),
                                                "bp"),), SEARCH, True),
    "conv_offsets_1_4_stride2": (TINY, (_conv(ConvShape(2, 6, 7, 4, 3, 3, 2, 1), 8, (1, 4)),),
                                 SEARCH, True),
}


def _describe_trace(program, model, rtl) -> str:
    bad = [i for i, (a, b) in enumerate(zip(model, rtl)) if a != b]
    first = bad[0]
    return (f"{len(bad)} instructions start or end off the model, first #{first} "
            f"{program.instrs[first].op.name}: RTL {rtl[first]}, archsim {model[first]}")


@pytest.mark.parametrize("name", list(CASES))
def test_program_matches_numpy_and_archsim(name):
    hw, tasks, passes, compressed = CASES[name]
    segment = build_segment(tasks, hw, passes, compressed_in_dram=compressed)
    program = segment.program
    if name.startswith("compress_on_chip") or name == "odd_beat_and_lanes":
        assert any(i.op == Op.COMPRESS for i in program.instrs)
    if name.startswith("conv"):
        tiling = segment.work.tilings[0]
        assert tiling.conv or tiling.conv_b or tiling.conv_t
        assert any(i.conv for i in program.instrs)
    if name.startswith("conv_wg_transposed"):
        assert segment.work.tilings[0].conv_t and all(i.transposing for i in program.instrs
                                                      if i.op == Op.COMPUTE)
    if name.startswith("conv_offsets"):
        assert any(i.conv and i.conv.group > 1 for i in program.instrs)
    if name == "interleaved_bp_wg":
        assert set(program.tags) == {0, 1}
    # prepare() times the program with archsim.model.run_program (prepared.cycles, .trace).
    prepared = prepare_case(hw, program, segment.work.tasks, segment.work.tilings, passes, seed=len(name))
    result = run_on_rtl(prepared)
    check_values(prepared, result)
    assert result.cycles == prepared.cycles, (
        f"RTL took {result.cycles} cycles; archsim predicts {prepared.cycles} (tolerance 0)")
    assert result.busy_cycles == prepared.cycles, (
        f"busy was high for {result.busy_cycles} cycles; archsim predicts {prepared.cycles}")
    assert result.trace == prepared.trace, _describe_trace(program, prepared.trace, result.trace)


def test_pregeneration_stores_compress_nm_tiles():
    """LOAD_B dense → COMPRESS → STORE_B writes exactly ``compress_nm`` of every tile.

    The golden image holds ``compress_nm`` of every tile (``prepare`` checks the interpreter's
    compressed tiles against it), with the padding columns of ragged tiles unspecified.
    """
    hw = TINY
    task = _task("fc", 4, 16, 6, (2, 4))
    tiling = search_tiling(task, hw, True)
    program = pregen_program((task,), (tiling,), hw)
    prepared = prepare_case(hw, program, (task,), (tiling,), PLAIN, seed=7, segment="pregen")
    result = run_on_rtl(prepared)
    assert result.cycles == prepared.cycles and result.trace == prepared.trace
    check_values(prepared, result)
