"""The golden interpreter's vector-unit semantics on hand-sized tiles (docs/isa.md)."""

from __future__ import annotations

import numpy as np

from dataflows.isa import Instr, Op
from dataflows.program import Program
from dataflows.softmax_format import SoftmaxFormat
from verification.dram import DramImage
from verification.golden import Interpreter
from workloads.load import load_hardware


def test_exp_nm_keeps_the_top_kept_scores_of_each_group():
    """EXP with 2:4: masked rows and a cut group's padding rank below every kept score, ties go
    to the lower row. (Masking with int64's minimum once ranked them *first*: negating it in
    the descending sort overflows back to the minimum.)"""
    hw = load_hardware("tiny")
    fmt = SoftmaxFormat.of(hw)
    # Six key rows (a group of 4, then a cut group of 2 padded to 4), three query columns.
    scores = np.array([[5, 4, 1], [9, 4, 2], [7, 4, 3], [3, 4, 4], [2, 4, 8], [1, 4, 8]])
    keep = np.array([[1, 1, 0], [0, 1, 0], [0, 1, 1], [1, 1, 0], [1, 1, 1], [1, 1, 1]], bool)
    golden = Interpreter(hw)
    # Whole log2 units in the accumulator.
    golden.acc[0].write((scores << fmt.frac_bits) << fmt.score_shift)
    golden.masks[1].write(keep.astype(np.int64))
    tile = {"c_slot": 0, "rows": 6, "cols": 3, "mask": True, "slot": 1}
    golden.run(Program(instrs=[
        Instr(Op.ROWMAX, **tile),
        Instr(Op.EXP, b_slot=0, k=0, nm_n=2, nm_m=4, **tile),
    ]), DramImage(0))
    p, p_valid = golden.w[0].read(4, 3)
    idx, idx_valid = golden.idx[0].read(4, 3)
    assert p_valid.all() and idx_valid.all()
    # Column 0: masked 9 and 7 lose to kept 5 and 3; the cut group keeps its two real rows.
    # Column 1: all tied, the lower rows win. Column 2: one kept row in the first group, the
    # other choice is the lowest masked row (probability 0).
    assert idx.T.tolist() == [[0, 3, 0, 1], [0, 1, 0, 1], [0, 2, 0, 1]]
    # P̃ = 2^(x - max) with 7 fraction bits, the maximum saturating at 127.
    assert p.T.tolist() == [[127, 32, 16, 8], [127, 127, 127, 127], [0, 4, 127, 127]]
