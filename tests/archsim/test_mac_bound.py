"""``SimResult.mac_bound`` is an upper bound on the speedup over dense, and 1 for dense work.

The speedup is the one ``archsim run --compare-dense`` prints: the dense variant's cycles over
the workload's. Checked on every shipped example with GEMM or attention work and on
MobileNet- and ResNeXt-like workloads, whose depthwise and grouped convolutions execute the
zero blocks of a block-diagonal GEMM in both runs (a dense MobileNet-V2 import printed a MAC
bound of 0.682x); BERT with 2:4 scores beat a plain MAC ratio (1.053x against 1.026x) because
its attention gains more time than MACs; a causal attention's dense run skips blocks too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from archsim.api import simulate
from archsim.cli import _dense_variant
from workloads.arguments import examples
from workloads.load import load_workload

EXAMPLES = sorted(name for name in examples() if not name.startswith("sweep_"))

_CONVS = {  # name: conv2d fields; grouped ones stay dense (N:M on them is refused)
    "stem": "in_channels: 4, out_channels: 16, kernel: 3, stride: 2, padding: 1, input_size: 16",
    "dw1": "in_channels: 16, out_channels: 16, kernel: 3, padding: 1, input_size: 8, groups: 16",
    "pw1": "in_channels: 16, out_channels: 32, kernel: 1, input_size: 8",
    "grouped": "in_channels: 32, out_channels: 32, kernel: 3, padding: 1, input_size: 8, "
               "groups: 4",
    "dw2": "in_channels: 32, out_channels: 32, kernel: 3, stride: 2, padding: 1, input_size: 8, "
           "groups: 32",
    "pw2": "in_channels: 32, out_channels: 64, kernel: 1, input_size: 4",
}


def _grouped_workload(tmp_path: Path, mode: str, sparsity: str) -> Path:
    """A MobileNet-like stack (depthwise + pointwise) with a ResNeXt-like grouped conv."""
    ops = []
    for name, conv in _CONVS.items():
        dense = ", sparsity: {kind: dense}" if "groups" in conv else ""
        ops.append(f"  - {{op: conv2d, name: {name}, batch: 2, {conv}{dense}}}\n")
    ops.append("  - {op: gemm, name: fc, m: 2, k: 1024, n: 16}\n")
    path = tmp_path / f"{mode}.yaml"
    path.write_text(f"version: 1\nname: mobile-{mode}\nhardware: tiny\nmode: {mode}\n"
                    f"sparsity: {sparsity}\noperations:\n{''.join(ops)}")
    return path


def _check(workload) -> tuple[float, float]:
    """(speedup over dense, MAC bound), after checking the dense run's own bound is 1."""
    sparse = simulate(workload, engine="fast")
    dense = simulate(_dense_variant(workload), engine="fast")
    assert dense.mac_bound == 1.0, f"{workload.name}: dense run's MAC bound {dense.mac_bound}"
    return dense.total_cycles / sparse.total_cycles, sparse.mac_bound


@pytest.mark.parametrize("name", EXAMPLES)
def test_no_shipped_example_beats_its_mac_bound(name):
    workload = load_workload(examples()[name])
    if simulate(workload, engine="fast").mac_bound is None:
        pytest.skip(f"{name}: no GEMM or attention work (SpGEMM only)")
    speedup, bound = _check(workload)
    assert speedup <= bound, f"{name}: speedup {speedup:.4f}x above its MAC bound {bound:.4f}x"


@pytest.mark.parametrize(("mode", "sparsity"), [
    ("inference", "{kind: dense}"), ("inference", "{kind: nm, n: 2, m: 4}"),
    ("training", "{kind: dense}"), ("training", "{kind: bdwp, n: 2, m: 4}"),
])
def test_grouped_and_depthwise_workloads_stay_under_their_mac_bound(tmp_path, mode, sparsity):
    workload = load_workload(_grouped_workload(tmp_path, mode, sparsity))
    result = simulate(workload, engine="fast")
    assert sum(r.macs_zero_blocks for r in result.layers) > 0  # the zero blocks are there
    speedup, bound = _check(workload)
    if "dense" in sparsity:
        assert bound == 1.0 and speedup == 1.0
    else:
        assert 1.0 < speedup <= bound


def test_mac_bound_scales_each_row_by_its_own_mac_ratio():
    """The arithmetic on tiny_gemm's three GEMMs: dense, 2:4 and 2:8, each row's cycles scaled
    by dense-run MACs / executed MACs (or its own dense mapping's cycles where larger)."""
    result = simulate(load_workload(examples()["tiny_gemm"]), engine="fast")
    dense = sum(max(r.cycles * r.dense_run_macs / r.macs_executed, r.dense_cycles or 0)
                for r in result.layers)
    rows = sum(r.cycles for r in result.layers)
    assert result.mac_bound == pytest.approx((result.total_cycles - rows + dense)
                                             / result.total_cycles)
    assert [r.dense_run_macs / r.macs_executed for r in result.layers] == [1.0, 2.0, 4.0]


def test_causal_attention_in_training_counts_the_dense_runs_own_blocks(tmp_path):
    """A causal window against causal dense attention, forward and backward: the dense run
    visits the blocks up to the diagonal, not all of them, so its MACs (``macs_dense_run``)
    are those of a causal dense layer and the dense variant's bound is exactly 1."""
    path = tmp_path / "w.yaml"
    path.write_text(
        "version: 1\nname: attn\nhardware: tiny\nmode: training\noperations:\n"
        "  - {op: attention, name: win, heads: 2, kv_len: 64, head_dim: 8, causal: true,"
        " block_size: 8, pattern: {kind: sliding_window, window: 16}}\n")
    workload = load_workload(path)
    sparse = simulate(workload, engine="fast")
    dense = simulate(_dense_variant(workload), engine="fast")
    in_dense = {r.name: r.macs_executed for r in dense.layers}
    assert {r.name: r.macs_dense_run for r in sparse.layers} == in_dense
    assert all(r.macs_dense_run < r.macs_dense_equivalent for r in sparse.layers)  # causal
    speedup, bound = _check(workload)
    assert 1.0 < speedup <= bound
