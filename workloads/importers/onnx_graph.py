"""ONNX files, read with the ``onnx`` package alone (no runtime): shapes come from
``onnx.shape_inference`` at the given input shape.

``Conv`` becomes a convolution (grouped, strided, padded or dilated; ``auto_pad`` resolved from
the inferred output shape), ``Gemm`` and ``MatMul`` with a constant weight become linear layers
(the weight on either side, also through a 2-D ``Transpose``, as the torch importer maps
``x @ W.T`` and ``W @ x``), and a ``MatMul`` of two activations a ``gemm`` op. Layers are named after the module scopes of
the node name (``/layer1/layer1.0/conv1/Conv`` → ``layer1.0.conv1``), as a torch import names
them, so the two imports of one model agree.
"""

from __future__ import annotations

from pathlib import Path

from workloads.importers.graph import (
    ImportedModel,
    ModelImportError,
    WeightRef,
    conv2d,
    linear,
    matmul,
    module_path,
)
from workloads.version import install_hint

__all__ = ["import_onnx"]


def _onnx():
    try:
        import onnx
    except ModuleNotFoundError:
        raise ModelImportError(
            f"importing ONNX needs the onnx package: {install_hint('import')}") from None
    return onnx


def _load(onnx, path: Path):
    if not path.is_file():
        raise ModelImportError(f"{path}: file not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelImportError(f"{path}: not an ONNX model ({first})") from None
    if not model.graph.node:
        raise ModelImportError(f"{path}: not an ONNX model (no graph nodes)")
    return model


def _set_input_shape(model, path: Path, shape: tuple[int, ...] | None) -> tuple[int, ...]:
    consts = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in consts]
    if not inputs:
        raise ModelImportError(f"{path}: the graph has no input")
    dims = inputs[0].type.tensor_type.shape.dim
    if shape is not None:
        if len(shape) != len(dims):
            raise ModelImportError(f"{path}: --input-shape has {len(shape)} dims, the model's input "
                               f"{inputs[0].name!r} has {len(dims)}")
        for d, v in zip(dims, shape):
            d.ClearField("dim_param")
            d.dim_value = int(v)
    for i, d in enumerate(dims):
        if not d.HasField("dim_value"):
            if i > 0:
                raise ModelImportError(f"{path}: input {inputs[0].name!r} has a symbolic dimension "
                                   f"{d.dim_param!r}; give --input-shape")
            d.dim_value = 1  # a symbolic batch: one sample
    return tuple(int(d.dim_value) for d in dims)


def _shapes(onnx, model) -> dict[str, tuple[int, ...]]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:
        raise ModelImportError(f"shape inference failed: {str(exc).splitlines()[0]}") from None
    g = inferred.graph
    shapes = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(int(d.dim_value) for d in dims)
    for init in g.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
    return shapes


def _attrs(onnx, node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _node_name(node, weight: str | None = None) -> str:
    """The module path of a node: from its weight's name when that is a parameter's
    (``layer1.0.conv1.weight``, as both torch exporters keep unfolded parameters), else from
    its scopes (``/layer1/layer1.0/conv1/Conv`` → ``layer1.0.conv1``)."""
    if weight and weight.endswith(".weight") and "::" not in weight:
        return weight[: -len(".weight")]
    parts = [p for p in node.name.split("/") if p]
    if len(parts) >= 2:
        return module_path(parts[:-1])
    return node.name or node.op_type.lower()


class _Reader:
    def __init__(self, onnx, model, path: Path, shapes: dict, imported: ImportedModel,
                 strict: bool) -> None:
        self.onnx, self.path, self.shapes, self.m, self.strict = onnx, path, shapes, imported, strict
        self.inits = {i.name for i in model.graph.initializer}
        self.consts = set(self.inits)
        # Constant nodes are weights too (some exporters emit weights as Constant nodes).
        self.consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
        self.transposes = {n.output[0]: n.input[0] for n in model.graph.node
                           if n.op_type == "Transpose" and _swaps_two_dims(self.onnx, n, shapes)}

    def shape(self, node, name: str) -> tuple[int, ...]:
        if name not in self.shapes:
            raise ModelImportError(f"{self.path}: {node.name or node.op_type}: the shape of {name!r} "
                               f"is unknown after shape inference; give --input-shape")
        return self.shapes[name]

    def node(self, node) -> None:
        op = node.op_type
        handler = getattr(self, f"_on_{op}", None)
        if handler is not None and node.domain in ("", "ai.onnx"):
            handler(node)
            return
        out = self.shapes.get(node.output[0]) if node.output else None
        elements = 1
        for d in out or (0,):
            elements *= d
        self.m.skip(_node_name(node), op, elements, self.strict)

    def _on_Conv(self, node) -> None:
        a = _attrs(self.onnx, node)
        x, w = self.shape(node, node.input[0]), self.shape(node, node.input[1])
        y = self.shape(node, node.output[0])
        spatial = len(w) - 2
        if spatial not in (1, 2):
            self.m.skip(_node_name(node), f"Conv{spatial}d", _prod(y), self.strict)
            return
        ks = tuple(w[2:])
        strides = tuple(a.get("strides", [1] * spatial))
        dil = tuple(a.get("dilations", [1] * spatial))
        pads = list(a.get("pads", [0] * 2 * spatial))
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            pads = []
            for i in range(spatial):
                total = max(0, (y[2 + i] - 1) * strides[i] + dil[i] * (ks[i] - 1) + 1 - x[2 + i])
                small, big = total // 2, total - total // 2
                pads.append((small, big) if auto == "SAME_UPPER" else (big, small))
            pads = [p[0] for p in pads] + [p[1] for p in pads]
        size = tuple(x[2:])
        if spatial == 1:
            ks, strides, dil, size = (1, *ks), (1, *strides), (1, *dil), (1, *size)
            pads = [0, pads[0], 0, pads[1]]
        top, left, bottom, right = pads
        self.m.add(conv2d(self.m.unique(_node_name(node, node.input[1])), x[0], x[1], size, w[0], ks,
                          strides, (top, left, bottom, right), dil, int(a.get("group", 1)),
                          source="Conv"))

    def weight(self, name: str) -> tuple[str, bool] | None:
        """(initializer, flipped) when tensor ``name`` is a constant weight (flipped False) or
        a 2-D ``Transpose`` of one, also of a transpose (True when the count is odd); None for
        an activation. Exporters keep ``x @ W.T`` as ``Transpose(W)`` without constant folding."""
        flipped = False
        while name in self.transposes:
            name, flipped = self.transposes[name], not flipped
        return (name, flipped) if name in self.consts else None

    def _linear(self, node, weight: tuple[str, bool], rows: tuple[int, ...], in_features: int,
                out_features: int, stored_in_out: bool) -> None:
        """A linear op named after its weight. ``stored_in_out``: the initializer is stored
        ``[in, out]`` (``x @ W``), not ``[out, in]`` as ``nn.Linear`` stores it; a parameter's
        own name is where a checkpoint holds it (a folded constant, ``onnx::MatMul_17``, is
        none: its layer's ``<name>.weight`` applies)."""
        init, flipped = weight
        name = self.m.unique(_node_name(node, init))
        stored_in_out ^= flipped
        ref = WeightRef(init, stored_in_out) if "::" not in init and init in self.inits else None
        self.m.add(linear(name, rows, in_features, out_features, source=node.op_type), ref)

    def _on_Gemm(self, node) -> None:
        """``Y = A'·B'`` (``A' = Aᵀ`` with ``transA``, ``B'`` likewise): a linear op when B or A
        is a weight, reducing over ``k``; with the weight on the left, over the ``n`` columns
        of ``B'`` (``(W·x)ᵀ = xᵀ·Wᵀ``, as torch's ``W @ x``)."""
        a = _attrs(self.onnx, node)
        trans_a, trans_b = bool(a.get("transA", 0)), bool(a.get("transB", 0))
        sa, sb = self.shape(node, node.input[0]), self.shape(node, node.input[1])
        m, k = (sa[1], sa[0]) if trans_a else sa
        n = sb[0] if trans_b else sb[1]
        right, left = self.weight(node.input[1]), self.weight(node.input[0])
        if right is not None:
            self._linear(node, right, (m, k), k, n, stored_in_out=not trans_b)
        elif left is not None:
            self._linear(node, left, (n, k), k, m, stored_in_out=trans_a)
        else:
            self.m.add(matmul(self.m.unique(_node_name(node, node.input[1])), (m, k), (k, n),
                              source="Gemm"))

    def _on_MatMul(self, node) -> None:
        """``x @ W`` (``W`` ``[in, out]``) or ``W @ x`` (``W`` ``[out, in]``, ``x``
        ``[..., in, n]``: the linear op over the ``n`` columns of ``x``), either possibly
        through a ``Transpose`` of the weight; else a product of two activations."""
        sa, sb = self.shape(node, node.input[0]), self.shape(node, node.input[1])
        right, left = self.weight(node.input[1]), self.weight(node.input[0])
        if right is not None and len(sb) == 2:
            self._linear(node, right, sa, sb[0], sb[1], stored_in_out=True)
            return
        if left is not None and len(sa) == 2:
            rows = (*sb[:-2], sb[-1], sb[-2]) if len(sb) > 1 else sb  # W @ v: one row
            self._linear(node, left, rows, sa[1], sa[0], stored_in_out=False)
            return
        sa = sa if len(sa) > 1 else (1, *sa)
        sb = sb if len(sb) > 1 else (*sb, 1)
        self.m.add(matmul(self.m.unique(_node_name(node, node.input[1])), sa, sb,
                          source="MatMul"))


def _swaps_two_dims(onnx, node, shapes: dict) -> bool:
    """A ``Transpose`` of a 2-D tensor that swaps its dimensions (no ``perm``: reversed)."""
    if len(shapes.get(node.input[0], ())) != 2:
        return False
    return list(_attrs(onnx, node).get("perm", [1, 0])) == [1, 0]


def _prod(shape) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


def import_onnx(path: Path, input_shape: tuple[int, ...] | None = None,
                strict: bool = False) -> ImportedModel:
    """Map the layers of an ONNX file at ``input_shape`` (default: the file's own, batch 1)."""
    onnx = _onnx()
    model = _load(onnx, path)
    shape = _set_input_shape(model, path, input_shape)
    try:
        shapes = _shapes(onnx, model)
    except ModelImportError as exc:
        raise ModelImportError(f"{path}: {exc}") from None
    name = model.graph.name if model.graph.name and model.graph.name != "main_graph" else path.stem
    imported = ImportedModel(name, str(path), shape)
    reader = _Reader(onnx, model, path, shapes, imported, strict)
    for node in model.graph.node:
        reader.node(node)
    if not imported.ops:
        raise ModelImportError(f"{path}: no convolution, GEMM or attention found")
    return imported
