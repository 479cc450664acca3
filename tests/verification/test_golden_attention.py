"""The golden interpreter on attention programs (ops 7-11): defects are reported by instruction.

One interpreter runs every program on the byte-exact DRAM image. For attention it tracks, like
buffer entries, whether the mask slots and the vector unit's running max, sum and correction
are defined; a program that reads something undefined, or whose fields the vector unit cannot
execute, is a defective program and the error names the instruction's index and op.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from dataflows.isa import Instr, Op
from dataflows.program import Program
from verification.configs import load_config
from verification.dram import DramImage, build_attention_image, to_bytes
from verification.errors import VerificationError
from verification.golden import Interpreter, run_golden
from verification.programs import ATTENTION, random_case


@pytest.fixture(scope="module")
def tiny():
    return load_config("tiny")  # 4x4 array, 8-bit operands, 32-bit accumulators


@pytest.fixture(scope="module")
def case(tiny):
    # Dense prefill: LOAD_B, LOAD_A, COMPUTE (Sᵀ), ROWMAX, then EXP/LOAD_A/COMPUTE (PV)
    # steps, NORMALIZE and STORE_C.
    return random_case(tiny, 0, (ATTENTION,))


def _run(case, instrs):
    program = replace(case.program, instrs=instrs)
    image, _ = build_attention_image(case, np.random.default_rng(case.seed))
    return run_golden(program, case.hw, image)


def _without(case, op: Op, which: int = 0) -> list[Instr]:
    """The case's instructions less the ``which``-th one of ``op``."""
    at = [i for i, instr in enumerate(case.program.instrs) if instr.op == op][which]
    return case.program.instrs[:at] + case.program.instrs[at + 1:]


def _scores(interp: Interpreter, rows: int, cols: int, slot: int = 0) -> None:
    """Define ``rows × cols`` scores (whole log2 units ``i - j``) in accumulator ``slot``."""
    fmt = interp.fmt
    x = np.subtract.outer(np.arange(rows), np.arange(cols))
    interp.acc[slot].write((x << fmt.frac_bits) << fmt.score_shift)


def test_scores_never_computed_are_reported_at_rowmax(case):
    instrs = _without(case, Op.COMPUTE)  # the Sᵀ = K·Qᵀ product
    at = next(i for i, instr in enumerate(instrs) if instr.op == Op.ROWMAX)
    with pytest.raises(VerificationError, match=rf"instruction {at} \(ROWMAX\): reads undefined "
                                                r"accumulator entry \(0, 0\)"):
        _run(case, instrs)


def test_exp_of_rows_past_the_score_tile_names_the_row(case):
    instrs = list(case.program.instrs)
    at = next(i for i, instr in enumerate(instrs) if instr.op == Op.EXP)
    rows = next(instr.rows for instr in instrs if instr.op == Op.ROWMAX)
    instrs[at] = replace(instrs[at], k=rows)  # the rows just below the tile COMPUTE wrote
    with pytest.raises(VerificationError, match=rf"instruction {at} \(EXP\): reads undefined "
                                                rf"accumulator entry \({rows}, 0\)"):
        _run(case, instrs)


def test_exp_without_rowmax_has_no_running_max(case):
    instrs = _without(case, Op.ROWMAX)
    at = next(i for i, instr in enumerate(instrs) if instr.op == Op.EXP)
    with pytest.raises(VerificationError, match=rf"instruction {at} \(EXP\): the running max and "
                                                r"sum of query column 0 is undefined \(no ROWMAX "
                                                r"with accumulate=0"):
        _run(case, instrs)


def test_normalize_and_rescale_before_any_softmax_are_defects(tiny):
    for op, what in ((Op.NORMALIZE, "running max and sum"), (Op.RESCALE, "correction")):
        interp = Interpreter(tiny)
        _scores(interp, 4, 2, slot=1)  # an output tile that is defined
        program = Program(instrs=[Instr(op, slot=1, rows=4, cols=2)])
        with pytest.raises(VerificationError,
                           match=rf"instruction 0 \({op.name}\): the {what} of query column 0"):
            interp.run(program, DramImage(0))


def test_rowmax_continuing_into_columns_no_reset_covered(tiny):
    interp = Interpreter(tiny)
    _scores(interp, 4, 4)
    program = Program(instrs=[Instr(Op.ROWMAX, rows=4, cols=2),
                              Instr(Op.ROWMAX, rows=4, cols=3, accumulate=True)])
    with pytest.raises(VerificationError, match=r"instruction 1 \(ROWMAX\): the running max and "
                                                r"sum of query column 2 is undefined"):
        interp.run(program, DramImage(0))


def test_a_mask_slot_never_loaded_or_loaded_from_undefined_bits(tiny):
    interp = Interpreter(tiny)
    _scores(interp, 4, 4)
    rowmax = Instr(Op.ROWMAX, rows=4, cols=4, mask=True, slot=1)
    with pytest.raises(VerificationError, match=r"instruction 0 \(ROWMAX\): reads undefined mask "
                                                r"slot 1 entry \(0, 0\)"):
        interp.run(Program(instrs=[rowmax]), DramImage(0))
    image = DramImage(64)
    image.care[2] = 0b1111_0111  # row 2's column 3 is undefined; bits past cols=4 do not matter
    load = Instr(Op.LOAD_MASK, slot=1, addr=0, stride=1, rows=4, cols=4)
    with pytest.raises(VerificationError, match=r"instruction 1 \(ROWMAX\): reads undefined mask "
                                                r"slot 1 entry \(2, 3\)"):
        interp.run(Program(instrs=[load, rowmax]), image)
    image.care[2] = 0b0000_1111
    interp.run(Program(instrs=[load, rowmax]), image)


def test_load_mask_unpacks_little_endian_rows(tiny):
    interp = Interpreter(tiny)
    image = DramImage(64)
    image.write(8, np.array([0b0101, 0b1110, 0xF1], np.uint8))  # bits past cols=3 ignored
    interp.run(Program(instrs=[Instr(Op.LOAD_MASK, slot=0, addr=8, stride=1, rows=3, cols=3)]),
               image)
    bits, valid = interp.masks[0].read(3, 3)
    assert valid.all() and bits.tolist() == [[1, 0, 1], [0, 1, 1], [1, 0, 0]]


@pytest.mark.parametrize("instr, message", [
    (Instr(Op.ROWMAX, rows=4, cols=5), r"a 4x5 tile; the vector unit and its mask store take 1 "
                                       r"or more rows of 1 to 4 columns \(array.cols\)"),
    (Instr(Op.EXP, rows=0, cols=2), r"a 0x2 tile"),
    (Instr(Op.NORMALIZE, rows=4, cols=0), r"a 4x0 tile"),
    (Instr(Op.LOAD_MASK, rows=2, cols=9), r"a 2x9 tile"),
    (Instr(Op.RESCALE, rows=4, cols=2, mask=True), r"mask=1, but only ROWMAX and EXP apply"),
    (Instr(Op.EXP, rows=4, cols=2, nm_n=2, nm_m=3), r"invalid N:M pattern 2:3"),
])
def test_softmax_instruction_fields_are_checked(tiny, instr, message):
    with pytest.raises(VerificationError, match=rf"instruction 0 \({instr.op.name}\): {message}"):
        Interpreter(tiny).run(Program(instrs=[instr]), DramImage(64))


def test_a_cut_nm_group_multiplies_the_bytes_past_a_row_by_zero(tiny):
    """EXP 2:4 over 5 key rows pads the cut second group with 3 masked rows; with one real row
    kept the group's second choice is padding row 5, P̃ = 0. The PV LOAD_A reads whole groups,
    8 columns of 5-key Vᵀ rows, so its last row reads 3 bytes past the tensor: real bytes, as
    in the RTL, that the product multiplies by 0. Whatever they hold, the output is the same
    (docs/verification.md, "Attention on the byte image")."""
    program = Program(instrs=[
        Instr(Op.ROWMAX, rows=5, cols=2),
        Instr(Op.EXP, b_slot=0, k=0, rows=5, cols=2, nm_n=2, nm_m=4),
        Instr(Op.LOAD_A, slot=0, addr=0, stride=5, rows=2, cols=8),
        Instr(Op.COMPUTE, slot=0, b_slot=0, c_slot=1, rows=2, cols=2, k=4, m=2, nm_n=2, nm_m=4),
        Instr(Op.STORE_C, slot=1, addr=64, stride=8, rows=2, cols=2),
    ])
    v = to_bytes(np.random.default_rng(0).integers(-128, 128, 10), 1).ravel()  # 2 rows of 5
    outputs = []
    for past_the_end in (0x7F, 0x80):
        interp = Interpreter(tiny)
        _scores(interp, 5, 2)  # every score kept
        image = DramImage(128)
        image.write(0, v)
        image.write(10, np.full(3, past_the_end, np.uint8))
        outputs.append(interp.run(program, image).data[64:80].copy())
        idx, _ = interp.idx[0].read(4, 2)
        p, _ = interp.w[0].read(4, 2)
        assert idx[2:].T.tolist() == [[0, 1], [0, 1]] and (p[3] == 0).all()
    assert np.array_equal(*outputs)
