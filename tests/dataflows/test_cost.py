"""The latency formulas, checked against hand derivations on the tiny preset.

tiny: 4x4 array, 8-bit operands (1 byte), 32-bit accumulators (4 bytes), DRAM 8 bytes per beat
with 10 cycles latency, vector unit 2 lanes + 2 pipeline cycles.
"""

from __future__ import annotations

from dataflows.cost import (
    compress_cycles,
    compute_cycles,
    dma_cycles,
    latency,
    transposing_compute_cycles,
)
from dataflows.isa import ConvAddress, Instr, Op, decode, encode
from workloads.load import load_hardware

HW = load_hardware("tiny")


def test_dma_pays_latency_once_and_whole_beats_per_row():
    # 4 rows of 12 bytes: each row needs ceil(12/8) = 2 beats -> 10 + 4*2 = 18
    assert dma_cycles(4, 12, HW) == 18
    # 1 row of 8 bytes: exactly one beat -> 11
    assert dma_cycles(1, 8, HW) == 11


def test_compute_stream_and_skew():
    # m (16) streamed + rows + cols - 2 (6) skew, under which the weight preload hides,
    # + 3 pipeline (buffer read, edge register, accumulator add) = 25
    assert compute_cycles(16, HW) == 25


def test_transposing_compute_fills_one_block_first():
    # m (72 = 18 blocks of 4) streamed + 4 fill cycles of the first 4x4 register block (every
    # later block fills while the previous one streams) + 6 skew + 3 pipeline = 85
    # = m + 2·rows + cols + 1.
    assert transposing_compute_cycles(72, HW) == 72 + 2 * 4 + 4 + 1 == 85
    conv = ConvAddress(1, 3, 4, 3, 4, 1, 0, -1, -1, ow0=2, t=True, kh=3, kw=3, chunk_rows=12)
    assert latency(Instr(Op.COMPUTE, m=72, k=4, cols=4, conv=conv), HW) == 85
    assert latency(Instr(Op.COMPUTE, m=72, k=4, cols=4, conv=None), HW) == 81


def test_compress_groups_per_lane():
    # 8 dense rows with M=4 = 2 group rows, each ceil(4 cols / 2 lanes) = 2 cycles, + 2 pipeline
    assert compress_cycles(8, 4, 4, HW) == 6


def test_latency_of_each_kind():
    # compressed 2:4 weight row of 4 columns: 4 values (4 B) + 4 two-bit indices (1 B) = 5 B = 1 beat
    load_b = Instr(Op.LOAD_B, rows=2, cols=4, nm_n=2, nm_m=4)
    assert latency(load_b, HW) == 10 + 2
    # accumulator rows: 4 cols x 4 B = 16 B = 2 beats per row
    assert latency(Instr(Op.STORE_C, rows=3, cols=4), HW) == 10 + 6


def test_encoding_round_trips():
    instr = Instr(Op.COMPUTE, wait=(5, 0, 2), slot=1, b_slot=0, c_slot=1, accumulate=True,
                  rows=7, cols=3, k=4, m=7, nm_n=2, nm_m=4, addr=0xDEADBEEF, stride=96)
    assert decode(encode(instr)) == instr
    assert encode(instr) < 1 << 256
