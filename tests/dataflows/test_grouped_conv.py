"""Grouped and depthwise convolution: spec, lowering, schedule, model and golden programs.

A grouped convolution is ``groups`` independent convolutions; lowering makes each phase one GEMM
of one group's shape with ``copies = groups``. The golden test places a real feature map (im2col
per group) and real grouped weights in the DRAM image of the program the scheduler emits, runs
the ISA interpreter, and compares its output tensor with a direct grouped convolution.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from archsim.api import simulate
from archsim.model import run_program
from dataflows.cost import program_cycles
from dataflows.scheduler import build_segment, schedule
from verification.dram import build_image, place_dense
from verification.golden import (
    check_capacity,
    check_golden,
    check_hazards,
    decode_outputs,
    requantize,
    run_golden,
)
from verification.programs import make_case
from workloads.errors import SpecError
from workloads.layers import Layer, expand, groups_per_gemm
from workloads.load import load_hardware, load_workload
from workloads.lowering import lower_layer
from workloads.spec import DenseSparsity, SchedulePasses

TINY = load_hardware("tiny")


def _workload(tmp_path: Path, conv: str, mode: str = "inference", extra: str = "") -> Path:
    path = tmp_path / "w.yaml"
    path.write_text(f"version: 1\nname: g\nhardware: tiny\nmode: {mode}\n{extra}operations:\n"
                    f"  - {{op: conv2d, name: dw, {conv}}}\n")
    return path


def _conv_macs(batch, c_in, c_out, k, ho, wo, groups):
    return batch * ho * wo * c_out * (c_in // groups) * k * k


@pytest.mark.parametrize("conv, message", [
    ("in_channels: 6, out_channels: 8, kernel: 3, input_size: 5, batch: 1, groups: 4",
     "in_channels=6 is not a multiple of groups=4"),
    ("in_channels: 8, out_channels: 6, kernel: 3, input_size: 5, batch: 1, groups: 4",
     "out_channels=6 is not a multiple of groups=4"),
    ("in_channels: 8, out_channels: 8, kernel: 3, input_size: 5, batch: 1, groups: 0",
     "greater than 0"),
])
def test_groups_must_divide_the_channels(tmp_path, conv, message):
    path = _workload(tmp_path, conv)
    with pytest.raises(SpecError, match=message) as err:
        load_workload(path)
    assert str(err.value).startswith(f"{path}:6: operations[0]")


def test_nm_on_grouped_convolution_is_refused_with_the_fix(tmp_path):
    conv = "in_channels: 16, out_channels: 16, kernel: 3, input_size: 5, batch: 1, groups: 2"
    path = _workload(tmp_path, conv, extra="sparsity: {kind: nm, n: 2, m: 4}\n")
    with pytest.raises(SpecError, match=r"groups=2\) is not supported yet; give this op sparsity"):
        load_workload(path)
    dense = conv + ", sparsity: {kind: dense}"
    assert load_workload(_workload(tmp_path, dense, extra="sparsity: {kind: nm, n: 2, m: 4}\n"))


def test_groups_per_gemm_fills_the_columns_with_a_divisor():
    # (groups, outputs per group, array columns) → groups per GEMM
    cases = {(96, 1, 32): 32, (144, 1, 32): 24, (240, 1, 32): 30, (6, 1, 4): 3, (4, 3, 4): 1,
             (64, 2, 32): 16, (4, 32, 32): 1, (7, 1, 4): 1}
    assert {key: groups_per_gemm(*key) for key in cases} == cases


@pytest.mark.parametrize("c_in, c_out, groups, k, stride, pad, packed", [
    (32, 32, 32, 3, 1, 1, 4),   # depthwise 3x3: 4 groups fill tiny's 4 columns
    (16, 16, 16, 5, 2, 2, 4),   # depthwise 5x5, stride 2 (EfficientNet)
    (16, 16, 8, 3, 1, 1, 2),    # 2 output channels per group: 2 groups per GEMM
    (16, 32, 4, 3, 1, 1, 1),    # 8 outputs per group already exceed the columns
    (8, 24, 8, 3, 1, 0, 1),     # depthwise with channel multiplier 3
])
def test_every_phase_is_one_block_diagonal_gemm_per_packed_groups(tmp_path, c_in, c_out, groups, k,
                                                                   stride, pad, packed):
    size, batch = 9, 2
    conv = (f"in_channels: {c_in}, out_channels: {c_out}, kernel: {k}, stride: {stride}, "
            f"padding: {pad}, input_size: {size}, batch: {batch}, groups: {groups}")
    (layer,) = expand(load_workload(_workload(tmp_path, conv, "training")))
    ho = (size + 2 * pad - k) // stride + 1
    rows, kin, nout = batch * ho * ho, packed * c_in // groups * k * k, packed * c_out // groups
    copies = groups // packed
    ff, bp, wg = lower_layer(layer, "training")
    assert [(t.phase, t.m, t.k, t.n, t.copies) for t in (ff, bp, wg)] == [
        ("ff", rows, kin, nout, copies), ("bp", rows, nout, kin, copies),
        ("wg", nout, rows, kin, copies)]
    # Each phase is exactly the grouped convolution's MACs (1/groups of the ungrouped ones);
    # the array also computes the zero blocks: `packed` times as many.
    macs = _conv_macs(batch, c_in, c_out, k, ho, ho, groups)
    assert macs * groups == _conv_macs(batch, c_in, c_out, k, ho, ho, 1)
    for task in (ff, bp, wg):
        assert task.macs_dense * task.copies == macs
        assert task.macs_executed(TINY) * task.copies == packed * macs
        assert task.nm is None and task.weight is None


def test_packing_never_adds_passes_and_saves_cycles(tmp_path):
    conv = "in_channels: 32, out_channels: 32, kernel: 3, padding: 1, input_size: 8, batch: 1, groups: 32"
    (packed,) = expand(load_workload(_workload(tmp_path, conv, "training")))
    alone = replace(packed, in_features=9, out_features=1, batch_count=32, block_diagonal=1)
    for phase in ("ff", "bp", "wg"):
        (p,) = [t for t in lower_layer(packed, "training") if t.phase == phase]
        (a,) = [t for t in lower_layer(alone, "training") if t.phase == phase]
        assert p.macs_dense * p.copies == a.macs_dense * a.copies
        cycles = [program_cycles(build_segment((t,), TINY).program, TINY) for t in (p, a)]
        assert cycles[0] < cycles[1], (phase, cycles)


def test_grouped_convolution_simulates_with_exact_macs_and_cycles(tmp_path):
    conv = "in_channels: 12, out_channels: 12, kernel: 3, padding: 1, input_size: 6, batch: 2, groups: 12"
    for mode in ("inference", "training"):
        workload = load_workload(_workload(tmp_path, conv, mode))
        result = simulate(workload)
        phases = 1 if mode == "inference" else 3
        assert result.macs_dense_equivalent == phases * _conv_macs(2, 12, 12, 3, 6, 6, 12)
        # 4 depthwise groups per GEMM on 4 columns: the zero blocks are executed too
        assert result.macs_executed == 4 * result.macs_dense_equivalent
        # ... in the dense run as well: the MAC bound on the speedup over dense is 1, not 1/4
        assert sum(r.macs_zero_blocks for r in result.layers) == 3 * result.macs_dense_equivalent
        assert result.mac_bound == 1.0
        sched = schedule(workload)
        assert result.total_cycles == sum(program_cycles(s.program, TINY) * s.repeat
                                          for s in sched.segments)


def _im2col(x: np.ndarray, k: int, stride: int, pad: int) -> np.ndarray:
    """[batch, c, h, w] → [batch·ho·wo, c·k·k] rows, columns ordered (c, kh, kw)."""
    b, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    cols = np.empty((b, ho, wo, c, k, k), dtype=np.int64)
    for i in range(ho):
        for j in range(wo):
            cols[:, i, j] = xp[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
    return cols.reshape(b * ho * wo, c * k * k)


def _direct_conv(x: np.ndarray, w: np.ndarray, stride: int, pad: int, groups: int) -> np.ndarray:
    """Grouped convolution by its definition: [batch, c_out, ho, wo] in int64."""
    b, c_in, h, _ = x.shape
    c_out, cg, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))).astype(np.int64)
    ho = (h + 2 * pad - k) // stride + 1
    y = np.zeros((b, c_out, ho, ho), dtype=np.int64)
    per_out = c_out // groups
    for o in range(c_out):
        g = o // per_out
        for i in range(ho):
            for j in range(ho):
                patch = xp[:, g * cg:(g + 1) * cg, i * stride:i * stride + k, j * stride:j * stride + k]
                y[:, o, i, j] = (patch * w[o]).sum(axis=(1, 2, 3))
    return y


@pytest.mark.parametrize("c_in, c_out, groups, k, stride, pad, double", [
    (6, 6, 6, 3, 1, 1, True),    # depthwise: 3 groups per GEMM, 2 copies
    (6, 6, 6, 3, 2, 1, False),   # depthwise, stride 2, single buffering
    (8, 8, 4, 3, 1, 1, True),    # grouped, 2 → 2 channels: 2 groups per GEMM
    (8, 12, 4, 3, 1, 0, True),   # grouped, 2 → 3 channels: one group per GEMM
])
def test_golden_program_computes_the_grouped_convolution(tmp_path, c_in, c_out, groups, k, stride,
                                                         pad, double):
    """The scheduler's FF program for the layer, run by the ISA interpreter on a real feature
    map and real weights (block-diagonal where groups share a GEMM), equals the grouped
    convolution; and the program passes the hazard and capacity checks that precede an RTL
    run."""
    rng = np.random.default_rng(groups + k + stride)
    batch, size = 1, 5
    x = rng.integers(-128, 128, size=(batch, c_in, size, size))
    w = rng.integers(-128, 128, size=(c_out, c_in // groups, k, k))
    y = _direct_conv(x, w, stride, pad, groups)
    ho = y.shape[2]
    cg, og = c_in // groups, c_out // groups
    conv = (f"in_channels: {c_in}, out_channels: {c_out}, kernel: {k}, stride: {stride}, "
            f"padding: {pad}, input_size: {size}, batch: {batch}, groups: {groups}")
    (layer,) = expand(load_workload(_workload(tmp_path, conv)))
    (task,) = lower_layer(layer, "inference")
    p = layer.block_diagonal
    assert task.copies * p == groups
    case = make_case(TINY, 0, "dense", (task,), SchedulePasses(double_buffering=double))
    (tiling,) = case.tilings
    image, operands = build_image(case, rng)
    a = np.stack([np.concatenate([_im2col(x[:, g * cg:(g + 1) * cg], k, stride, pad)
                                  for g in range(c * p, (c + 1) * p)], axis=1)
                  for c in range(task.copies)])
    b = np.zeros((task.copies, p * cg * k * k, p * og), dtype=np.int64)
    for c in range(task.copies):
        for j in range(p):
            g = c * p + j
            b[c, j * cg * k * k:(j + 1) * cg * k * k, j * og:(j + 1) * og] = \
                w[g * og:(g + 1) * og].reshape(og, -1).T
    if tiling.swap:  # the program runs Cᵀ = Bᵀ·Aᵀ: operands in the executed orientation
        a, b = b.transpose(0, 2, 1), a.transpose(0, 2, 1)
    tensors = case.program.tensors
    place_dense(image, tensors["dw.A"], a.reshape(-1, a.shape[2]))
    place_dense(image, tensors["dw.B"], b.reshape(-1, b.shape[2]))
    expected = run_golden(case.program, TINY, image)
    check_golden(case, type(operands)((a,), (b,)), image, expected)
    c = decode_outputs(case, expected.data)["dw.C"].reshape(task.copies, a.shape[1], b.shape[2])
    if tiling.swap:
        c = c.transpose(0, 2, 1)
    # C[copy][row, j·og + o] is output channel (copy·p + j)·og + o at pixel `row`.
    got = c.transpose(1, 0, 2).reshape(batch, ho, ho, c_out).transpose(0, 3, 1, 2)
    # Outputs leave requantized to operand width (docs/isa.md, "Requantizing stores").
    want = requantize(y, TINY.requant_shift, TINY.acc_bits, TINY.data_bits)
    assert np.abs(y).max() > 0 and len(np.unique(want)) > 2 and np.array_equal(got, want)
    stats = run_program(case.program, TINY, trace=True)
    check_hazards(case.program, stats.trace, case.hw.array.rows)
    check_capacity(case.program, TINY)
    assert stats.cycles == program_cycles(case.program, TINY)


@pytest.mark.parametrize("phase", ["bp", "wg"])
def test_backward_programs_of_a_depthwise_layer_pass_the_golden_checks(phase):
    layer = Layer("dw", "conv2d", 2 * 4 * 4, 9, 1, DenseSparsity(), 1, 1, batch_count=5)
    (task,) = [t for t in lower_layer(layer, "training") if t.phase == phase]
    assert task.copies == 5
    case = make_case(TINY, 3, "wg" if phase == "wg" else "dense", (task,), SchedulePasses())
    image, operands = build_image(case, np.random.default_rng(3))
    check_golden(case, operands, image, run_golden(case.program, TINY, image))
    check_hazards(case.program, run_program(case.program, TINY, trace=True).trace, TINY.array.rows)


@pytest.mark.skipif(os.environ.get("ARCHSIM_SLOW_TESTS") != "1",
                    reason="builds the tiny RTL with Verilator (minutes); ARCHSIM_SLOW_TESTS=1")
def test_grouped_programs_are_bit_and_cycle_exact_on_the_rtl(tmp_path):
    """FF, BP and WG of a depthwise and two grouped layers (three and two groups per
    block-diagonal GEMM, and one), single and double buffered, on the tiny accelerator under
    cocotb: values equal the golden model, cycles the SimPy model."""
    pytest.importorskip("cocotb")
    pytest.importorskip("amaranth")
    from verification.programs import case_spec
    from verification.session import TOP_TESTS, build_accelerator, program_plan, run_plan

    cases = []
    for c_in, c_out, groups, size in ((6, 6, 6, 5), (8, 8, 4, 3), (8, 12, 4, 3)):
        conv = (f"in_channels: {c_in}, out_channels: {c_out}, kernel: 3, padding: 1, "
                f"input_size: {size}, batch: 1, groups: {groups}")
        (layer,) = expand(load_workload(_workload(tmp_path, conv, "training")))
        for task in lower_layer(layer, "training"):
            for double in (True, False):
                cases.append(case_spec("wg" if task.phase == "wg" else "dense", (task,),
                                       SchedulePasses(double_buffering=double),
                                       seed=100 + len(cases)))
    root = Path(os.environ.get("ARCHSIM_VERIFY_BUILD_DIR") or tmp_path / "build")
    dut = build_accelerator(TINY, root)
    results = run_plan(dut, TOP_TESTS, program_plan(TINY, [], cases=cases), tmp_path / "runs")
    assert len(results) == len(cases) == 18
    for r in results:
        assert r.ok and r.value_mismatches == 0, r.summary()
        assert r.cycle_diff == 0 and r.rtl_cycles == r.model_cycles, r.summary()


def test_the_mac_bound_never_falls_below_a_grouped_workloads_speedup(tmp_path):
    """BDWP beside a depthwise convolution: the dense run executes the zero blocks too, so the
    MAC bound stays an upper bound on the speedup over dense (it counted them as sparse
    work: a dense import of MobileNet-V2 printed a MAC bound of 0.682x)."""
    from archsim.cli import _dense_variant

    path = tmp_path / "w.yaml"
    path.write_text(
        "version: 1\nname: g\nhardware: tiny\nmode: training\n"
        "sparsity: {kind: bdwp, n: 2, m: 4}\noperations:\n"
        "  - {op: conv2d, name: dw, in_channels: 16, out_channels: 16, kernel: 3, padding: 1,"
        " input_size: 8, batch: 2, groups: 16, sparsity: {kind: dense}}\n"
        "  - {op: conv2d, name: pw, in_channels: 16, out_channels: 32, kernel: 1, input_size: 8,"
        " batch: 2}\n")
    workload = load_workload(path)
    sparse, dense = simulate(workload), simulate(_dense_variant(workload))
    assert dense.mac_bound == 1.0
    assert 1.0 < sparse.mac_bound
    assert 1.0 < dense.total_cycles / sparse.total_cycles <= sparse.mac_bound
