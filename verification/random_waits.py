"""Random programs for the timing rule: any ops, any shapes the latency formulas accept, and
random completion-count waits — not programs the scheduler would emit, but the inputs on which
the fast timing engine (``archsim.fast``) must still equal the SimPy model, deadlocks included.
Used by ``tests/archsim/test_fast.py`` (a sample) and ``benchmarks/bench_engines.py`` (1,000).
"""

from __future__ import annotations

import numpy as np

from dataflows.isa import UNIT_OF, Instr, Op
from dataflows.program import Program

__all__ = ["random_waits_program"]

_OPS = (Op.LOAD_A, Op.LOAD_B, Op.STORE_C, Op.STORE_B, Op.COMPUTE, Op.COMPRESS, Op.ROWMAX,
        Op.EXP, Op.RESCALE, Op.NORMALIZE, Op.LOAD_MASK)


def random_waits_program(rng: np.random.Generator, forward: bool) -> Program:
    """Random instructions with random waits; ``forward`` also lets waits point ahead (which
    may deadlock — both engines must then say so identically)."""
    n = int(rng.integers(1, 40))
    ops = [_OPS[int(i)] for i in rng.integers(0, len(_OPS), n)]
    totals = [sum(UNIT_OF[o] == u for o in ops) for u in range(3)]
    seen = [0, 0, 0]
    program = Program()
    for op in ops:
        unit = UNIT_OF[op]
        limit = totals if forward else seen
        wait = [0 if u == unit else int(rng.integers(0, limit[u] + 1)) for u in range(3)]
        nm = (2, 4) if op == Op.COMPRESS or rng.random() < 0.3 else (0, 0)
        program.instrs.append(Instr(
            op, tuple(wait), rows=int(rng.integers(1, 9)) * 4, cols=int(rng.integers(1, 5)),
            k=int(rng.integers(1, 5)) * 2, m=int(rng.integers(1, 20)), nm_n=nm[0], nm_m=nm[1],
            accumulate=bool(rng.random() < 0.5)))
        program.tags.append(int(rng.integers(0, 3)))
        seen[unit] += 1
    return program
