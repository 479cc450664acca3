"""The golden models: interpreter and math agree, and each catches what it must.

The interpreter (docs/isa.md semantics, instruction by instruction) and the plain math
(``C = A·(B ⊙ mask)``, ``compress_nm`` tiles) are independent; agreement on hundreds of random
scheduler programs on two array sizes is the first check every verification run repeats. The
rest pins the semantics on hand-sized examples and shows that corrupting a program, an operand
or a wait is detected.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from archsim.model import run_program
from dataflows.isa import Instr, Op
from dataflows.program import Program
from verification.configs import load_config
from verification.dram import DramImage, build_image, read_dense, to_bytes
from verification.errors import VerificationError
from verification.golden import (
    Interpreter,
    check_capacity,
    check_golden,
    check_hazards,
    decode_outputs,
    gemm_reference,
    prepare,
    requantize,
    run_golden,
    wrap,
)
from verification.programs import KINDS, make_case, random_case
from workloads.generators.nm import compress_nm, nm_mask
from workloads.load import load_hardware
from workloads.lowering import GemmTask
from workloads.spec import SchedulePasses


@pytest.fixture(scope="module")
def tiny():
    return load_hardware("tiny")


@pytest.fixture(scope="module")
def wide():
    # 8x8 array, 16-bit accumulators (products of 8-bit operands overflow them), 16-byte beats.
    return load_config("wide")


def test_wrap_is_twos_complement():
    assert wrap(np.array([32767, 32768, -32769, 65536 + 5]), 16).tolist() == [32767, -32768,
                                                                              32767, 5]
    assert wrap(np.array([2**63 - 1]), 64).tolist() == [2**63 - 1]


@pytest.mark.parametrize("hw_name", ["tiny", "wide"])
def test_interpreter_agrees_with_math_on_random_programs(hw_name, request):
    hw = request.getfixturevalue(hw_name)
    kinds = set()
    for seed in range(150):
        case = random_case(hw, seed)
        kinds.add(case.kind)
        image, ops = build_image(case, np.random.default_rng(seed))
        check_golden(case, ops, image, run_golden(case.program, hw, image))
        check_hazards(case.program, run_program(case.program, hw, trace=True).trace, hw.array.rows)
    assert kinds == set(KINDS)


def test_prepare_runs_every_check(tiny):
    prepared = prepare(random_case(tiny, 11))
    assert prepared.cycles == max(end for _, end in prepared.trace)
    assert prepared.expected.differing(prepared.image.data).size > 0  # outputs were written


def test_wrap_around_is_exercised_and_exact(wide):
    # With 16-bit accumulators the reference must actually wrap, and the interpreter match it.
    hw = wide
    task = GemmTask("g", "g", "inference", 5, 40, 9)
    case = make_case(hw, 7, "dense", (task,), SchedulePasses())
    image, ops = build_image(case, np.random.default_rng(7))
    expected = run_golden(case.program, hw, image)
    check_golden(case, ops, image, expected)
    exact = ops.a[0][0] @ ops.b[0][0]
    assert (np.abs(exact) > 2**15).any()
    # Operands are drawn in the executed orientation (a swapped tiling runs Cᵀ = Bᵀ·Aᵀ), so
    # the program's C tensor is A·B of the drawn operands.
    c = decode_outputs(case, expected.data)["g.C"]
    assert np.array_equal(c, requantize(wrap(exact, 16), hw.requant_shift, 16, hw.data_bits))


def test_compute_nm_picks_activations_by_index(tiny):
    """col(r, j) = (r // N)·M + idx[r][j], products summed in acc_bits."""
    hw = tiny
    a = np.arange(1, 9, dtype=np.int64).reshape(1, 8)  # one row, 8 activations
    w = np.array([[5, 0, 0, 0], [0, 0, 0, 0], [0, 7, 0, 0], [0, 0, 0, -3],
                  [0, 0, 0, 0], [2, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    values, idx = compress_nm(w, 2, 4)  # 8 dense rows -> 4 compressed rows
    image = DramImage(512)
    image.write(0, to_bytes(a, 1).ravel())
    rb = 4 + 1  # 4 values, 4 indices x 2 bits = 1 byte
    for r in range(4):
        packed = sum(int(idx[r, j]) << (2 * j) for j in range(4))
        image.write(64 + r * rb, np.concatenate([to_bytes(values[r], 1).ravel(), [packed]]))
    program = Program(instrs=[
        Instr(Op.LOAD_A, addr=0, stride=8, rows=1, cols=8),
        Instr(Op.LOAD_B, addr=64, stride=rb, rows=4, cols=4, nm_n=2, nm_m=4),
        Instr(Op.COMPUTE, rows=1, cols=4, k=4, m=1, nm_n=2, nm_m=4),
        Instr(Op.STORE_C, addr=256, stride=16, rows=1, cols=4),
    ])
    out = run_golden(program, hw, image)
    c = read_dense(out.data, 256, 1, 4, 16, 4, 32)
    assert c.tolist() == (a @ np.where(nm_mask(w, 2, 4, axis=0), w, 0)).tolist()


def test_reading_undefined_data_is_a_program_defect(tiny):
    program = Program(instrs=[Instr(Op.COMPUTE, rows=2, cols=4, k=4, m=2)])
    with pytest.raises(VerificationError, match=r"instruction 0 \(COMPUTE\): reads undefined"):
        run_golden(program, tiny, DramImage(64))


def test_instruction_fields_are_checked(tiny):
    program = Program(instrs=[Instr(Op.COMPUTE, rows=1, cols=4, k=5, m=1)])
    with pytest.raises(VerificationError, match="exceed the 4x4 array"):
        run_golden(program, tiny, DramImage(64))


def test_corrupted_program_is_caught_by_the_math(tiny):
    case = random_case(tiny, 3, ("dense",))
    image, ops = build_image(case, np.random.default_rng(3))
    i = next(i for i, x in enumerate(case.program.instrs) if x.op == Op.LOAD_A)
    case.program.instrs[i] = replace(case.program.instrs[i], addr=case.program.instrs[i].addr + 1)
    with pytest.raises(VerificationError, match="interpreter and math disagree"):
        check_golden(case, ops, image, run_golden(case.program, tiny, image))


def test_missing_wait_is_a_hazard(tiny):
    case = random_case(tiny, 5, ("nm_ff",))
    program = case.program
    i = next(i for i, x in enumerate(program.instrs) if x.op == Op.COMPUTE)
    program.instrs[i] = replace(program.instrs[i], wait=(0, 0, 0))
    with pytest.raises(VerificationError, match="scheduler hazard .* a wait is missing"):
        check_hazards(program, run_program(program, tiny, trace=True).trace, tiny.array.rows)


def test_pregen_padding_is_dont_care_and_everything_else_defined(tiny):
    # A ragged last column tile: STORE_B writes full-width rows whose padding columns the ISA
    # leaves undefined; exactly those bits carry care 0.
    task = GemmTask("fc", "fc", "ff", 4, 16, 6, (2, 8), "fc.W.ff")
    case = make_case(tiny, 1, "pregen", (task,), SchedulePasses())
    image, ops = build_image(case, np.random.default_rng(1))
    expected = run_golden(case.program, tiny, image)
    check_golden(case, ops, image, expected)
    nm = case.program.tensors["fc.W.ff.nm"]
    care = expected.care[nm.addr:nm.addr + nm.nbytes]
    assert (care == 0xFF).sum() > 0 and (care != 0xFF).sum() > 0


def test_gemm_reference_masks_along_k():
    rng = np.random.default_rng(0)
    a, b = rng.integers(-8, 8, (3, 8)), rng.integers(-8, 8, (8, 5))
    mask = nm_mask(b, 1, 4, axis=0)
    assert (mask.reshape(2, 4, 5).sum(axis=1) == 1).all()
    assert gemm_reference(a, b, 32, mask).tolist() == (a @ (b * mask)).tolist()


def test_buffers_persist_across_runs_like_hardware(tiny):
    interp = Interpreter(tiny)
    image = DramImage(256)
    image.write(0, to_bytes(np.arange(4), 1).ravel())
    interp.run(Program(instrs=[Instr(Op.LOAD_A, addr=0, stride=4, rows=1, cols=4)]), image)
    values, valid = interp.a[0].read(1, 4)
    assert valid.all() and values.tolist() == [[0, 1, 2, 3]]


def test_a_tile_larger_than_a_slot_is_a_program_defect(wide):
    program = Program(instrs=[Instr(Op.LOAD_A, addr=0, stride=8, rows=40, cols=8),
                              Instr(Op.COMPUTE, rows=33, cols=8, k=8, m=33)])
    with pytest.raises(VerificationError, match=r"instruction 0 \(LOAD_A\): its 320-byte tile "
                                                r"exceeds a slot of the input buffer \(half of "
                                                r"buffers.input_bytes = 256 B\)"):
        check_capacity(program, wide)
    program.instrs[0] = replace(program.instrs[0], rows=32)  # 256 B: exactly a slot
    with pytest.raises(VerificationError, match=r"COMPUTE\): its 528-byte tile .* accumulator"):
        check_capacity(program, wide)  # 33 x 8 accumulators of 2 B; a slot is 512 B
    program.instrs[1] = replace(program.instrs[1], rows=32, m=32)
    check_capacity(program, wide)


def test_several_offsets_per_compute_must_lie_in_distinct_bank_groups(tiny):
    """tiny's input buffer: 4 banks of 4 operands; 4-operand pixels sit in 4 bank groups. A 3×3
    kernel's offsets (0, 2) and (1, 0) on 6-pixel lines lie 6 − 2 = 4 rows apart: one group."""
    from dataflows.isa import ConvAddress

    image = DramImage(512)
    image.write(0, np.zeros(512, np.uint8))
    rb = 4 + 1  # 4 values and 4 two-bit indices per compressed row

    def program(in_w: int, k: int = 4) -> Program:
        conv = ConvAddress(1, 3, in_w, 3, in_w, 0, 0, -1, 1, group=2, kw=3, kw0=2)
        return Program(instrs=[
            Instr(Op.LOAD_A, addr=0, stride=4, rows=3 * in_w, cols=4),
            Instr(Op.LOAD_B, addr=256, stride=rb, rows=4, cols=4, nm_n=2, nm_m=4),
            Instr(Op.COMPUTE, rows=4, cols=4, k=k, m=4, nm_n=2, nm_m=4, conv=conv),
        ])

    with pytest.raises(VerificationError, match="share a bank group"):
        run_golden(program(6), tiny, image)
    run_golden(program(5), tiny, image)  # 3 rows apart: distinct groups
    with pytest.raises(VerificationError, match="in 2 parts of 4"):
        run_golden(replace(program(5), instrs=program(5).instrs[:1] + [
            Instr(Op.LOAD_B, addr=256, stride=rb, rows=4, cols=4, nm_n=1, nm_m=4),
            replace(program(5).instrs[2], nm_n=1, nm_m=4)]), tiny, image)
