"""ONNX MatMul and Gemm with a weight used transposed or on the left are linear layers.

Before, only ``x @ W`` (MatMul with the initializer second) and Gemm with the initializer as
B were: ``W @ x``, Gemm with the weight as A, and a weight reaching the product through a
``Transpose`` node (the TorchScript exporter without constant folding keeps ``x @ W.T`` so)
were weight-free ``gemm`` ops, never pruned by ``--sparsity`` and read from no checkpoint entry.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from workloads.importers import import_model

onnx = pytest.importorskip("onnx")
np = pytest.importorskip("numpy")


def _graph(path: Path, nodes: list, x_shape: list[int], weights: dict[str, tuple]) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.zeros(shape, np.float32), name)
             for name, shape in weights.items()]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    path.write_bytes(helper.make_model(graph).SerializeToString())
    return path


def _node(op: str, inputs: list[str], output: str, name: str, **attrs):
    return onnx.helper.make_node(op, inputs, [output], name, **attrs)


def _transpose(weight: str, output: str, **attrs):
    return _node("Transpose", [weight], output, f"/{output}/Transpose", **attrs)


# (nodes, x shape, weights) → the linear op's fields and where its weight is: (key, stored
# [in, out]). Every case is the 64 → 32 layer over 8 rows (2 × 8 with a batch dim).
CASES = {
    "Gemm x*W^T (transB)": ([_node("Gemm", ["x", "fc.weight"], "y", "/fc/Gemm", transB=1)],
                           [8, 64], {"fc.weight": (32, 64)}, ("fc.weight", False)),
    "Gemm W*x": ([_node("Gemm", ["fc.weight", "x"], "y", "/fc/Gemm")],
                 [64, 8], {"fc.weight": (32, 64)}, ("fc.weight", False)),
    "Gemm W^T*x (transA)": ([_node("Gemm", ["W", "x"], "y", "/fc/Gemm", transA=1)],
                           [64, 8], {"W": (64, 32)}, ("W", True)),
    "Gemm x*Transpose(W)": ([_transpose("fc.weight", "wt"),
                             _node("Gemm", ["x", "wt"], "y", "/fc/Gemm")],
                            [8, 64], {"fc.weight": (32, 64)}, ("fc.weight", False)),
    "MatMul x*Transpose(W)": ([_transpose("fc.weight", "wt", perm=[1, 0]),
                               _node("MatMul", ["x", "wt"], "y", "/fc/MatMul")],
                              [2, 8, 64], {"fc.weight": (32, 64)}, ("fc.weight", False)),
    "MatMul x*Transpose(Transpose(W))": ([_transpose("W", "wt"), _transpose("wt", "wtt"),
                                          _node("MatMul", ["x", "wtt"], "y", "/fc/MatMul")],
                                         [2, 8, 64], {"W": (64, 32)}, ("W", True)),
    "MatMul W*x": ([_node("MatMul", ["W", "x"], "y", "/fc/MatMul")],
                   [2, 64, 8], {"W": (32, 64)}, ("W", False)),
    "MatMul Transpose(W)*x": ([_transpose("W", "wt"),
                               _node("MatMul", ["wt", "x"], "y", "/fc/MatMul")],
                              [2, 64, 8], {"W": (64, 32)}, ("W", True)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_transposed_or_left_weight_is_a_linear_layer(tmp_path, case):
    nodes, x_shape, weights, (key, stored_in_out) = CASES[case]
    model = import_model(str(_graph(tmp_path / "g.onnx", nodes, x_shape, weights)))
    (op,) = model.ops
    rows = {"batch": 2, "tokens": 8} if len(x_shape) == 3 else {"batch": 8}
    assert op.fields == {"op": "linear", "name": "fc", "in_features": 64, "out_features": 32,
                         **rows}
    assert op.weights and op.macs == 16 * 64 * 32 // (2 if len(x_shape) == 2 else 1)
    ref = model.weight_of("fc")
    assert (ref.key, ref.transposed) == (key, stored_in_out)
    assert model.unmapped == []  # the Transpose of a weight is layout, not work


def test_a_product_of_activations_through_a_transpose_stays_a_gemm(tmp_path):
    nodes = [_node("Transpose", ["x"], "xt", "/attn/Transpose"),
             _node("MatMul", ["x", "xt"], "y", "/attn/MatMul")]
    (op,) = import_model(str(_graph(tmp_path / "g.onnx", nodes, [8, 64], {}))).ops
    assert op.fields == {"op": "gemm", "name": "attn", "m": 8, "k": 64, "n": 8}
    assert not op.weights
