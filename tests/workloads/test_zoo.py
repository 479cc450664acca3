"""Model zoo shapes against published per-image MAC and weight counts."""

from __future__ import annotations

import pytest

from workloads.layers import expand
from workloads.load import load_workload
from workloads.spec import ModelOp
from workloads.zoo import model_layers

# (layers, GMACs per image, millions of GEMM weights): torchvision / HuggingFace reference models.
PUBLISHED = {
    "resnet18": (21, 1.814, 11.68),
    "resnet50": (54, 4.089, 25.50),
    "vgg16": (16, 15.47, 138.34),
    "vit_b16": (74, 17.56, 86.29),
    "bert_base": (73, 11.17, 85.52),
}


@pytest.mark.parametrize("model", sorted(PUBLISHED))
def test_macs_and_weights_match_the_reference(model):
    layers = model_layers(ModelOp(op="model", model=model, batch=1))
    count, gmacs, mweights = PUBLISHED[model]
    macs = sum(lay.rows * lay.in_features * lay.out_features * lay.batch_count for lay in layers)
    weights = sum(lay.in_features * lay.out_features for lay in layers if lay.kind != "matmul")
    assert len(layers) == count
    assert macs / 1e9 == pytest.approx(gmacs, rel=2e-3)
    assert weights / 1e6 == pytest.approx(mweights, rel=2e-3)


def test_batch_and_sequence_length_scale_rows():
    one = model_layers(ModelOp(op="model", model="bert_base", batch=1, seq_len=64))
    four = model_layers(ModelOp(op="model", model="bert_base", batch=4, seq_len=128))
    assert four[0].rows == one[0].rows * 8


def test_model_sparsity_skips_layers_m_does_not_divide():
    w = load_workload("workloads/examples/resnet18_bdwp.yaml")
    layers = expand(w)
    stem = layers[0]
    assert stem.name == "resnet18.conv1" and stem.sparsity.kind == "dense"
    assert "in group size 3 is not a multiple of m=8" in stem.note
    assert all(lay.sparsity.kind == "bdwp" for lay in layers[1:])
    assert not stem.needs_input_grad and all(lay.needs_input_grad for lay in layers[1:])


def test_a_models_layers_are_remembered_by_op_and_each_caller_gets_its_own_list():
    """``model_layers`` is remembered (loading, sizing and scheduling each expand a workload):
    an equal op gets equal layers, another op its own, and a caller's list is its own."""
    first = model_layers(ModelOp(op="model", model="resnet18", batch=2))
    first.clear()
    again = model_layers(ModelOp(op="model", model="resnet18", batch=2))
    assert again and again == model_layers(ModelOp(op="model", model="resnet18", batch=2))
    other = model_layers(ModelOp(op="model", model="resnet18", batch=4))
    assert [lay.rows for lay in other] == [2 * lay.rows for lay in again]
