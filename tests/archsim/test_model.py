"""The SimPy model against cycle counts derived by hand on the tiny preset.

tiny: 4x4 array, 1-byte operands, 4-byte accumulators, DRAM 8 B/beat with 10 cycles latency.
Per-instruction latencies (dataflows/cost.py):
  LOAD_A / LOAD_B of 4 rows x 4 operands: 4 B per row = 1 beat -> 10 + 4 = 14
  COMPUTE streaming m = 4 rows: 4 (stream) + 4 + 4 - 2 (skew; the weight preload hides under it)
          + 3 (pipeline: buffer read, array-edge register, accumulator add) = 13
  STORE_C of 4 rows x 4 accumulators: 16 B per row = 2 beats -> 10 + 8 = 18
"""

from __future__ import annotations

import pytest

from archsim.model import run_program
from dataflows.isa import Instr, Op
from dataflows.program import Program
from dataflows.scheduler import build_segment
from workloads.errors import SimulationError
from workloads.load import load_hardware
from workloads.lowering import GemmTask
from workloads.spec import SchedulePasses

HW = load_hardware("tiny")
PLAIN = SchedulePasses(offline_tiling=False)


def run(m, k, n, passes=PLAIN, nm=None):
    task = GemmTask("g", "g", "ff", m, k, n, nm, "g.W" if nm else None)
    program = build_segment((task,), HW, passes).program
    return program, run_program(program, HW, trace=True)


def test_single_tile():
    # DMA: A [0,14), B [14,28); COMPUTE waits for 2 DMA completions: [28,41);
    # STORE_C waits for the compute: [41,55) (4 requantized 1-byte outputs a row: one beat).
    program, stats = run(4, 4, 4)
    assert [i.op for i in program.instrs] == [Op.LOAD_A, Op.LOAD_B, Op.COMPUTE, Op.STORE_C]
    assert stats.trace == [(0, 14), (14, 28), (28, 41), (41, 55)]
    assert stats.cycles == 55
    # The store was ready at 28 and started at 41; the PE array waited from 0 to 28.
    assert stats.busy == [42, 13, 0] and stats.stall == [13, 28, 0]


def test_two_k_tiles_accumulate():
    # DMA: A0 [0,14) B0 [14,28) A1 [28,42) B1 [42,56) (second slots, nothing to wait for);
    # PE: C0 [28,41), C1 waits for B1: [56,69); STORE [69,83).
    _, stats = run(4, 8, 4)
    assert stats.cycles == 83


def test_third_k_tile_reuses_slot_zero_after_its_reader():
    # As above, then A2 goes to slot 0 whose reader C0 ended at 41; the DMA is busy until 56,
    # so A2 [56,70), B2 [70,84); C2 [84,97); STORE [97,111).
    _, stats = run(4, 12, 4)
    assert stats.cycles == 111


def test_without_double_buffering_loads_wait_for_the_compute():
    # One slot per buffer: A1 must wait for C0 (ends 41): A0 [0,14) B0 [14,28) C0 [28,41)
    # A1 [41,55) B1 [55,69) C1 [69,82) STORE [82,96).
    _, stats = run(4, 8, 4, SchedulePasses(offline_tiling=False, double_buffering=False))
    assert stats.cycles == 96


def test_sparse_tile_covers_m_over_n_more_reduction():
    # 2:4 along k=8: one PE tile holds 4 compressed rows = 8 dense rows, so one k-tile suffices.
    # Compressed LOAD_B: 4 rows of 4 values + 1 index byte = 5 B = 1 beat -> 14 cycles; the
    # A tile has 8-byte rows (1 beat) -> 14. Same as the dense single tile: 55 cycles.
    program, stats = run(4, 8, 4, nm=(2, 4))
    compute = next(i for i in program.instrs if i.op == Op.COMPUTE)
    assert (compute.k, compute.nm_n, compute.nm_m) == (4, 2, 4)
    assert stats.cycles == 55


def test_deadlock_is_reported():
    program = Program(instrs=[Instr(Op.COMPUTE, wait=(1, 0, 0), m=1, k=1, cols=1)], tags=[0])
    with pytest.raises(SimulationError, match="deadlocked: PE waits with 1 instructions left"):
        run_program(program, HW)
