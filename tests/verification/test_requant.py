"""Requantizing stores (docs/isa.md, "Requantizing stores"): finished outputs leave at operand
width, shifted, rounded half to even and saturated. The rule on hand-worked values, the golden
interpreter against an independent numpy reference, the instruction fields and the bytes a
STORE_C writes; the RTL's datapath is pinned in tests/rtl/test_requant.py."""

from __future__ import annotations

import numpy as np
import pytest

from dataflows.cost import latency, transfer_bytes
from dataflows.isa import MAX_SHIFT, Instr, Op, decode, encode, row_bytes
from dataflows.program import Program
from verification.configs import load_config
from verification.dram import DramImage, read_dense, to_bytes
from verification.golden import requantize, run_golden
from workloads.errors import SpecError
from workloads.load import load_hardware

# (accumulator, shift, stored operand) for 8-bit operands: quarters round to nearest, halves to
# the even neighbour on both sides of zero, and the rounded value saturates.
HAND_WORKED = [
    (5, 2, 1), (7, 2, 2), (6, 2, 2), (10, 2, 2), (14, 2, 4), (2, 2, 0),  # 1.25 1.75 1.5 2.5 3.5 .5
    (-5, 2, -1), (-7, 2, -2), (-6, 2, -2), (-10, 2, -2), (-14, 2, -4), (-2, 2, 0),
    (3, 1, 2), (-3, 1, -2), (1, 1, 0), (-1, 1, 0),  # ±1.5, ±0.5
    (510, 2, 127), (-514, 2, -128), (-518, 2, -128),  # 127.5 → 128 → 127; -128.5 → -128; -129.5
    (1000, 2, 127), (-1000, 2, -128),  # saturation
    (127, 0, 127), (128, 0, 127), (-128, 0, -128), (-129, 0, -128),  # shift 0: saturation only
    (2**31 - 1, 31, 1), (-(2**31), 31, -1), (2**30, 31, 0), (3 * 2**29, 31, 1),  # 0.5 → 0, .75
    (2**31 - 1, 32, 0), (-(2**31), 40, 0), (-(2**31), 63, 0),  # a shift ≥ acc_bits leaves 0
]


@pytest.mark.parametrize(("acc", "shift", "want"), HAND_WORKED)
def test_rounding_and_saturation_on_hand_worked_values(acc, shift, want):
    assert requantize(np.array([acc]), shift, 32, 8).tolist() == [want]


def _numpy_reference(acc: np.ndarray, shift: int, data_bits: int) -> np.ndarray:
    """Exact division by a power of two in float64, ``np.rint`` (half to even), then clip."""
    limit = 1 << (data_bits - 1)
    return np.clip(np.rint(acc / 2.0**shift), -limit, limit - 1).astype(np.int64)


@pytest.mark.parametrize(("acc_bits", "data_bits"), [(32, 8), (16, 8), (48, 16), (24, 12)])
def test_golden_agrees_with_a_numpy_reference(acc_bits, data_bits):
    rng = np.random.default_rng(acc_bits * data_bits)
    half = 1 << (acc_bits - 1)
    acc = np.concatenate([rng.integers(-half, half, 4000), [-half, half - 1, 0, -1, 1]])
    ties = rng.integers(-(1 << 10), 1 << 10, 500)
    for shift in range(acc_bits):
        # Exact halves at this shift, besides random values.
        values = np.concatenate([acc, (2 * ties + 1) << max(shift - 1, 0)]) if shift else acc
        values = np.clip(values, -half, half - 1)
        got = requantize(values, shift, acc_bits, data_bits)
        assert np.array_equal(got, _numpy_reference(values, shift, data_bits)), shift


def test_fields_encode_and_set_the_row_width():
    hw = load_hardware("sat_vcu1525")
    store = Instr(Op.STORE_C, rows=3, cols=32, requant=True, shift=MAX_SHIFT, addr=64, stride=64)
    assert decode(encode(store)) == store
    assert row_bytes(store, hw) == 32 * hw.data_bytes
    wide_store = Instr(Op.STORE_C, rows=3, cols=32, addr=64, stride=192)
    assert row_bytes(wide_store, hw) == 32 * hw.acc_bytes  # partial sums: accumulator width
    assert transfer_bytes(store, hw) == 3 * 64 and transfer_bytes(wide_store, hw) == 3 * 192
    with pytest.raises(ValueError, match="shift"):
        encode(Instr(Op.STORE_C, requant=True, shift=MAX_SHIFT + 1))


def test_latency_counts_operand_beats():
    hw = load_config("wide")  # 16-byte beats, 16-bit accumulators, 8-bit operands
    lat = hw.dram.latency_cycles
    store = Instr(Op.STORE_C, rows=4, cols=8, requant=True, shift=3)
    assert latency(store, hw) == lat + 4 * 1  # 8 bytes per row: one beat
    assert latency(Instr(Op.STORE_C, rows=4, cols=8), hw) == lat + 4 * 1  # 16 bytes: one beat
    assert latency(Instr(Op.STORE_C, rows=4, cols=9), hw) == lat + 4 * 2
    assert latency(Instr(Op.STORE_C, rows=4, cols=9, requant=True), hw) == lat + 4 * 1


def test_a_requantizing_store_writes_operands_and_nothing_else():
    hw = load_hardware("tiny")  # 8-bit operands, 32-bit accumulators
    a = np.array([[100, -100, 3, -3]], dtype=np.int64)
    image = DramImage(512)
    image.write(0, to_bytes(a, 1).ravel())
    w = np.eye(4, dtype=np.int64) * np.array([[50], [50], [1], [1]])
    image.write(64, to_bytes(w, 1).ravel())
    before = image.copy()
    program = Program(instrs=[
        Instr(Op.LOAD_A, addr=0, stride=4, rows=1, cols=4),
        Instr(Op.LOAD_B, addr=64, stride=4, rows=4, cols=4),
        Instr(Op.COMPUTE, rows=1, cols=4, k=4, m=1),
        Instr(Op.STORE_C, addr=256, stride=4, rows=1, cols=4, requant=True, shift=1),
    ])
    out = run_golden(program, hw, image)
    # 5000/2 → 127, -5000/2 → -128, 3/2 = 1.5 → 2, -3/2 → -2: four bytes, one per element.
    assert read_dense(out.data, 256, 1, 4, 4, 1, 8).tolist() == [[127, -128, 2, -2]]
    changed = np.flatnonzero(out.data != before.data)
    assert changed.min() >= 256 and changed.max() < 260


def test_output_shift_defaults_to_the_operand_fraction_bits_and_is_checked():
    hw = load_hardware("sat_vcu1525")
    assert hw.output_shift is None and hw.requant_shift == hw.data_bits // 2
    assert load_hardware("tiny", ["output_shift=0"]).requant_shift == 0
    with pytest.raises(SpecError, match="output_shift must be below acc_bits=32"):
        load_hardware("tiny", ["output_shift=32"])
