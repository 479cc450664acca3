"""The online softmax's structure: its datapath is per lane, its state per column.

Values and cycles are checked end to end by the attention programs of verification/top (a
chunk-by-chunk ROWMAX tail, per-lane group registers, the multiplexers); this pins what makes
the engine lean, so a change that gives every column its own datapath again fails here rather
than only in a synthesis report.
"""

from __future__ import annotations

import re

import pytest

from rtl.build import verilog_text
from rtl.online_softmax import OnlineSoftmax
from workloads.load import load_hardware


def _names(verilog: str, pattern: str) -> set[str]:
    return set(re.findall(pattern, verilog))


@pytest.mark.parametrize("overrides", [
    [],
    ["array.rows=16", "array.cols=16", "buffers.weight_bytes=2048"],
    ["array.rows=8", "array.cols=8", "vector_unit.lanes=3"],
], ids=["tiny", "tiny-16x16", "8x8-3-lanes"])
def test_exp_tables_selection_and_multipliers_are_per_lane(overrides):
    hw = load_hardware("tiny", overrides=overrides)
    lanes, cols = hw.vector_unit.softmax_width, hw.array.cols
    assert lanes < cols  # several chunks share each lane
    text = verilog_text(OnlineSoftmax(hw), name="online_softmax")
    per_lane = {f"exp{i}_rom" for i in range(lanes)}
    assert _names(text, r"\bexp\d+_rom\b") == per_lane
    assert _names(text, r"\btop(\d+)_rank_0\b") == {str(i) for i in range(lanes)}
    assert _names(text, r"\bscaled_(\d+)\b") == {str(i) for i in range(lanes)}
    assert _names(text, r"\bscaled_sum_(\d+)\b") == {str(i) for i in range(lanes)}
    # The state that outlives a chunk stays per column.
    for state in ("mx", "sum", "corr", "recip"):
        assert _names(text, rf"\b{state}_(\d+)\b") == {str(j) for j in range(cols)}, state


def test_more_softmax_lanes_than_columns_build_one_lane_per_column():
    """sat_vcu1525's 32 softmax lanes on a 4-column array (a small sample of its family)."""
    hw = load_hardware("sat_vcu1525", overrides=[
        "array.rows=4", "array.cols=4", "buffers.input_bytes=16384",
        "buffers.weight_bytes=16384", "buffers.accumulator_bytes=16384"])
    assert hw.vector_unit.softmax_width > hw.array.cols
    text = verilog_text(OnlineSoftmax(hw), name="online_softmax")
    assert _names(text, r"\bexp(\d+)_rom\b") == {"0", "1", "2", "3"}
