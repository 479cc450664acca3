"""Buffer-level tiles in the verification cases: the CI sample's seeds draw every addressing
mode of docs/isa.md's row offsets, and each prepares cleanly (golden model, hazards, capacity).

The seeds are ``verification/top/test_top.py``'s ``MIXED_SEEDS`` that draw buffer-level tiles;
if the scheduler's choices change, pick new ones here and there.
"""

from __future__ import annotations

import pytest

from dataflows.isa import Op
from verification.configs import load_config
from verification.golden import prepare
from verification.programs import random_case

SEEDS = (23, 39, 57, 96)


def _features(program) -> set[str]:
    found = set()
    for i in program.instrs:
        if i.op == Op.COMPUTE and i.a_row:
            found.add("k-chunks")
        if i.op == Op.COMPUTE and i.c_row:
            found.add("n-chunks")
        if i.op == Op.LOAD_A and i.k > i.cols:
            found.add("narrow last k-chunk")
        if i.op == Op.LOAD_B and i.b_row:
            found.add("compressed sub-tiles" if i.nm_n else "dense sub-tiles")
    return found


def test_the_ci_sample_covers_every_buffer_tile_addressing_mode():
    found = set()
    for config in ("tiny", "wide"):
        hw = load_config(config)
        for seed in SEEDS:
            found |= _features(random_case(hw, seed).program)
    assert found == {"k-chunks", "n-chunks", "narrow last k-chunk", "compressed sub-tiles",
                     "dense sub-tiles"}


@pytest.mark.parametrize("config", ["tiny", "wide"])
@pytest.mark.parametrize("seed", SEEDS)
def test_buffer_tile_cases_prepare(config, seed):
    case = random_case(load_config(config), seed)
    assert _features(case.program), "no buffer-level tile: pick another seed"
    prepare(case)
