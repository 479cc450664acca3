"""The long-context benchmark's op (Qwen2.5-7B shape: 28 query / 4 K/V heads of 128 channels,
``repeat: 28``, vertical-slash estimated from synthetic Q and K) at a small size keeps the exact
figures it had before the 1M-token speed work: every speed-up must leave the programs, and so
the cycles, MACs, split and density, as they were — with the block grid and without it."""

from __future__ import annotations

import pytest
from test_attention import op_of, workload

import workloads.generators.attention as A
from archsim import simulate

#: (kv_len, vertical, slash) -> (cycles, dense cycles, MACs, estimate MACs, estimate bytes,
#: K/V bytes, mask bytes, split, density, block density, blocks run, partial, total), as printed
#: before the speed work (commit 8121807).
PINNED = {
    (6000, 200, 700): (
        9128687736, 11927565104, 3473838964736, 48156114944, 3637559296, 217252102144,
        1696210432, {"estimate": 165618432, "qk": 4657776763, "softmax": 1322530524,
                     "pv": 2950049300, "output": 32712717},
        0.08954289484126984, 0.47654077475263534, 3315396, 3315396, 6911632),
    (3000, 60, 3000): (  # every offset: full blocks merged into runs
        1810692688, 3000387600, 954473906176, 24074846208, 1818578944, 59783643136, 50264704,
        {"estimate": 82809216, "qk": 617785565, "softmax": 269853465, "pv": 823637223,
         "output": 16607219},
        0.5001666666666666, 0.5208333333333334, 913360, 99344, 1766016),
}


def _bench_op(kv_len: int, vertical: int, slash: int):
    return op_of(heads=28, kv_heads=4, kv_len=kv_len, head_dim=128, block_size=128, repeat=28,
                 pattern={"kind": "vertical_slash", "vertical": vertical, "slash": slash,
                          "last_q": 64})


def _figures(case: tuple) -> tuple:
    rec = simulate(workload(_bench_op(*case)), engine="fast").attention[0]
    return (rec.cycles, rec.dense_cycles, rec.macs_executed, rec.macs_estimate,
            rec.estimate_bytes, rec.kv_bytes, rec.mask_bytes, dict(rec.phase_cycles),
            rec.density, rec.block_density, rec.blocks_executed, rec.blocks_partial,
            rec.blocks_total)


@pytest.mark.parametrize("case", list(PINNED),
                         ids=["partial", "full-runs"])
@pytest.mark.parametrize("grid", [True, False], ids=["grid", "descriptors"])
def test_bench_op_figures_are_pinned(case, grid, monkeypatch):
    if not grid:
        monkeypatch.setattr(A, "GRID_LIMIT", 0)
    assert _figures(case) == PINNED[case]
