"""MAC conservation: executed MACs equal the analytic count from shapes and sparsity."""

from __future__ import annotations

import pytest

from archsim import simulate
from workloads.layers import Layer, expand
from workloads.load import load_workload
from workloads.spec import MODEL_NAMES

SPARSITIES = {
    "dense": ["sparsity={kind: dense}"],
    "bdwp28": ["sparsity={kind: bdwp, n: 2, m: 8}"],
    "nm24_in": ["sparsity={kind: nm, n: 2, m: 4, dim: in}"],
}


def analytic_macs(layer: Layer, mode: str, fallback: frozenset[str] = frozenset()) -> tuple[int, int]:
    """(executed, dense-equivalent) MACs of one layer, from its shapes alone.

    ``fallback``: GEMMs the scheduler runs dense because their sparse mapping is slower.
    """
    dense = layer.rows * layer.in_features * layer.out_features
    s = layer.sparsity
    ratio = s.n / s.m if s.kind != "dense" else 1.0
    ff_pruned = s.kind == "bdwp" or (s.kind == "nm" and s.dim == "in")
    bp_pruned = s.kind == "bdwp" or (s.kind == "nm" and s.dim == "out")
    copies = layer.batch_count * layer.repeat
    if mode == "inference":
        gemms = [(dense, ff_pruned)]
    elif layer.kind == "matmul":
        gemms = [(dense, False)] * 3
    else:
        gemms = [(dense, ff_pruned), (dense, False)] + ([(dense, bp_pruned)] if layer.needs_input_grad else [])
    pruned_names = (layer.name, "", f"{layer.name}.bp")  # the GEMMs above, in order (WG never pruned)
    gemms = [(d, pruned and name not in fallback) for (d, pruned), name in zip(gemms, pruned_names)]
    executed = sum(int(d * ratio) if pruned else d for d, pruned in gemms)
    return executed * copies, sum(d for d, _ in gemms) * copies


@pytest.mark.parametrize("sparsity", sorted(SPARSITIES))
@pytest.mark.parametrize("mode", ["inference", "training"])
@pytest.mark.parametrize("model", MODEL_NAMES)
def test_executed_macs_match_the_shapes(model, mode, sparsity):
    # A short sequence keeps every model quick; video_dit's tokens are frames x height x width.
    tokens = (["operations.0.frames=2", "operations.0.height=4", "operations.0.width=4"]
              if model == "video_dit" else ["operations.0.seq_len=32"])
    overrides = [f"operations.0.model={model}", f"mode={mode}", "operations.0.batch=1",
                 *tokens, *SPARSITIES[sparsity]]
    workload = load_workload("workloads/examples/resnet18_bdwp.yaml", overrides=overrides)
    result = simulate(workload)
    fallback = frozenset(r.name for r in result.layers if "dense fallback" in r.sparsity)
    expected = [analytic_macs(layer, mode, fallback) for layer in expand(workload)]
    assert result.macs_executed == sum(e for e, _ in expected)
    assert result.macs_dense_equivalent == sum(d for _, d in expected)
    runs_sparse = any(r.dense_cycles is not None and r.name not in fallback for r in result.layers)
    if sparsity == "dense" or not runs_sparse:  # every sparse GEMM may fall back (small batches)
        assert result.macs_executed == result.macs_dense_equivalent
    else:
        assert result.macs_executed < result.macs_dense_equivalent
