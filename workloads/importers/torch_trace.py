"""torch modules: ``torchvision:NAME`` or ``package.module:factory``, traced on the meta device.

The model is built under ``torch.device("meta")`` (weights take no memory, so a 7B-parameter
decoder imports on a laptop) and run once on a meta tensor of the given shape. A
``TorchFunctionMode`` sees every torch function the forward pass calls at the top level
(``conv2d``, ``linear``, ``matmul``, ``scaled_dot_product_attention``,
``multi_head_attention_forward``, ``relu``, ``add``...) with the shapes of its operands, and
module hooks name each call by the module that made it (``layer1.0.conv1``).

Why eager tracing rather than ``torch.fx`` / ``torch.export``: it runs the model's own Python,
so control flow on shapes, asserts on shapes and non-traceable helpers (the usual reasons an
fx trace or an export fails) do not stop an import, and it needs no example weights; the cost
is that only one input shape is seen, which is what the workload describes anyway. Meta
tensors hold no values, so control flow on data (``if x.sum() > 0``, ``.item()``) cannot run:
that is a one-line error saying so.
"""

from __future__ import annotations

import difflib
import importlib
import math
import sys
from pathlib import Path

from workloads.importers.graph import (
    ImportedModel,
    ModelImportError,
    WeightRef,
    attention,
    conv2d,
    linear,
    matmul,
)
from workloads.version import install_hint

__all__ = ["import_torch", "build_module", "DEFAULT_INPUT_SHAPE"]

DEFAULT_INPUT_SHAPE = (1, 3, 224, 224)


def _torch():
    try:
        import torch
    except ModuleNotFoundError:
        raise ModelImportError(
            f"importing a torch model needs torch: {install_hint('import')}") from None
    return torch


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _torchvision_module(name: str):
    try:
        import torchvision.models as tvm
    except Exception as exc:  # an ABI mismatch raises RuntimeError, not ImportError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelImportError(
            f"torchvision:{name}: torchvision does not import here ({first}); install the "
            f"release built for this torch (torchvision 0.28 for torch 2.13): "
            f"{install_hint('import')}") from None
    known = sorted(tvm.list_models())
    if name not in known:
        raise ModelImportError(f"torchvision:{name}: no such torchvision model{_suggest(name, known)}")
    return tvm.get_model(name, weights=None)


def _factory(source: str):
    module_name, _, attr = source.partition(":")
    if not module_name or not attr:
        raise ModelImportError(f"{source}: expected torchvision:NAME or package.module:factory")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # the user's own code, as `python -m` would find it
    try:
        obj = importlib.import_module(module_name)
    except Exception as exc:
        raise ModelImportError(f"{source}: cannot import {module_name!r}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = [n for n in dir(obj) if not n.startswith("_")]
            raise ModelImportError(f"{source}: {module_name} has no {part!r}{_suggest(part, public)}")
        obj = getattr(obj, part)
    return obj


def build_module(source: str):
    """(name, module) for a torch source, built on the meta device, in eval mode."""
    torch = _torch()
    with torch.device("meta"):
        if source.startswith("torchvision:"):
            name = source.split(":", 1)[1]
            module = _torchvision_module(name)
        else:
            obj = _factory(source)
            name = source.partition(":")[2].split(".")[-1]
            try:
                module = obj if isinstance(obj, torch.nn.Module) else obj()
            except Exception as exc:
                raise ModelImportError(f"{source}: calling the factory failed: {exc}") from None
    if not isinstance(module, torch.nn.Module):
        raise ModelImportError(f"{source}: the factory returned a {type(module).__name__}, not a "
                           f"torch.nn.Module")
    return name, module.eval()


def _arg(args: tuple, kwargs: dict, i: int, key: str, default=None):
    if len(args) > i:
        return args[i]
    return kwargs.get(key, default)


def _pair(v, n: int = 2) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    v = tuple(int(x) for x in v)
    return v * n if len(v) == 1 else v


class _Tracer:
    """Records the model's top-level torch calls into an :class:`ImportedModel`."""

    def __init__(self, torch, model: ImportedModel, module, strict: bool) -> None:
        self.torch, self.model, self.strict = torch, model, strict
        self.stack: list[tuple[str, object]] = [("", module)]
        #: Qualified names of the model's parameters, by id: where a checkpoint holds them
        #: (a tied parameter has several, and a state_dict holds each).
        self.params: dict[int, list[str]] = {}
        for name, p in module.named_parameters(remove_duplicate=False):
            self.params.setdefault(id(p), []).append(name)
        #: Transposes of 2-D parameters (``W.T``, ``W.t()``, ``W.transpose(0, 1)``...), by id:
        #: (the view, kept alive so its id is not reused; the parameter; whether the view is
        #: the parameter transposed, False again for ``W.T.T``).
        self.views: dict[int, tuple[object, object, bool]] = {}
        self.handles = []
        for name, mod in module.named_modules():
            self.handles.append(mod.register_forward_pre_hook(self._enter(name)))
            self.handles.append(mod.register_forward_hook(self._leave, always_call=True))

    def _enter(self, name: str):
        def hook(mod, _args):
            self.stack.append((name, mod))
        return hook

    def _leave(self, mod, _args, _out):
        if len(self.stack) > 1:
            self.stack.pop()

    def close(self) -> None:
        for h in self.handles:
            h.remove()

    def _name(self, func_name: str) -> str:
        """The op's name: its module's, or ``module.function`` for a call in a module's own
        code (an attention block's matmul) rather than a leaf layer's."""
        name, mod = self.stack[-1]
        leaf = not any(True for _ in mod.children()) or isinstance(
            mod, self.torch.nn.MultiheadAttention)
        if leaf and name:
            return self.model.unique(name)
        return self.model.unique(f"{name}.{func_name}" if name else func_name)

    def _param(self, t) -> tuple[object, bool] | None:
        """(parameter, flipped) when ``t`` is a parameter (flipped False) or a transpose of a
        2-D one (True); None for an activation."""
        if isinstance(t, self.torch.nn.Parameter):
            return t, False
        view = self.views.get(id(t))
        return (view[1], view[2]) if view is not None and view[0] is t else None

    def _is_weight(self, t) -> bool:
        return self._param(t) is not None

    def _track_transpose(self, key: str, args, kwargs, out) -> None:
        """Remember ``out`` as the transpose of a 2-D parameter (a view: no work of its own,
        but the matmul that takes it has a weight)."""
        src = self._param(args[0]) if args else None
        if src is None or args[0].dim() != 2 or not isinstance(out, self.torch.Tensor):
            return
        if key in ("transpose", "swapaxes", "swapdims"):
            dims = [_arg(args, kwargs, 1, "dim0"), _arg(args, kwargs, 2, "dim1")]
            if None in dims or int(dims[0]) % 2 == int(dims[1]) % 2:
                return  # transpose(0, 0): the parameter itself, not a view of interest
        elif key == "permute":
            dims = args[1] if len(args) == 2 and not isinstance(args[1], int) else args[1:]
            if [int(d) % 2 for d in dims] != [1, 0]:
                return
        self.views[id(out)] = (out, src[0], not src[1])

    def _ref(self, w, transposed: bool = False, part: tuple[int, int] = (0, 1)) -> WeightRef | None:
        """Where weight ``w`` is in the model's state_dict: its parameter's qualified name
        (``block.W`` for a bare parameter, not ``block.matmul.weight``; of a tied one, the
        name under the calling module, ``lm_head.weight`` rather than ``embed.weight``); None
        for a tensor that is no parameter of the model (a computed weight: its layer's name
        applies). ``transposed`` is how the op uses ``w``; a transpose of a parameter (``W.T``)
        flips it, as the parameter is stored the other way round."""
        src = self._param(w)
        names = self.params.get(id(src[0]), []) if src else []
        if not names:
            return None
        caller = self.stack[-1][0]
        key = next((n for n in names if n.rpartition(".")[0] == caller), names[0])
        return WeightRef(key, transposed != src[1], part)

    def record(self, func, args: tuple, kwargs: dict, out) -> None:
        torch = self.torch
        fname = getattr(func, "__name__", "") or str(func)
        if fname == "__get__":  # a tensor property (x.T, x.mT, x.data): the property's name
            fname = getattr(getattr(func, "__self__", None), "__name__", fname)
        tensors = out if isinstance(out, (tuple, list)) else (out,)
        if not any(isinstance(t, torch.Tensor) for t in tensors):
            return  # size(), dim(), shape: no work
        key = fname.strip("_")
        if key in _TRANSPOSES:
            self._track_transpose(key, args, kwargs, out)
        handler = getattr(self, f"_on_{key}", None)
        if handler is not None:
            handler(key, args, kwargs, out)
            return
        elements = sum(t.numel() for t in tensors if isinstance(t, torch.Tensor))
        self.model.skip(self.stack[-1][0], key, elements, self.strict)

    # ---- convolutions ------------------------------------------------------------------

    def _conv(self, key: str, args, kwargs, spatial: int) -> None:
        x, w = args[0], args[1]
        stride = _pair(_arg(args, kwargs, 3, "stride", 1), spatial)
        padding = _arg(args, kwargs, 4, "padding", 0)
        dilation = _pair(_arg(args, kwargs, 5, "dilation", 1), spatial)
        groups = int(_arg(args, kwargs, 6, "groups", 1))
        ks = tuple(w.shape[2:])
        if isinstance(padding, str):
            pads = []
            for k, d in zip(ks, dilation):
                total = d * (k - 1) if padding == "same" else 0
                pads.append((total // 2, total - total // 2))
        else:
            pads = [(p, p) for p in _pair(padding, spatial)]
        if spatial == 1:  # a 1-D convolution is a 2-D one over a 1×L input
            ks, stride, dilation, pads = (1, *ks), (1, *stride), (1, *dilation), [(0, 0), *pads]
        size = tuple(x.shape[-2:]) if spatial == 2 else (1, x.shape[-1])
        batch = x.shape[0] if x.dim() == spatial + 2 else 1
        c_in = x.shape[-spatial - 1]
        (top, bottom), (left, right) = pads
        self.model.add(conv2d(self._name(key), int(batch), int(c_in), tuple(map(int, size)),
                              int(w.shape[0]), tuple(map(int, ks)), tuple(stride),
                              (top, left, bottom, right), tuple(dilation), groups, source=key))

    def _on_conv2d(self, key, args, kwargs, out) -> None:
        self._conv(key, args, kwargs, 2)

    def _on_conv1d(self, key, args, kwargs, out) -> None:
        self._conv(key, args, kwargs, 1)

    # ---- GEMMs -------------------------------------------------------------------------

    def _on_linear(self, key, args, kwargs, out) -> None:
        x, w = args[0], _arg(args, kwargs, 1, "weight")
        self.model.add(linear(self._name(key), tuple(x.shape), int(w.shape[1]), int(w.shape[0]),
                              source=key), self._ref(w))

    def _on_matmul(self, key, args, kwargs, out) -> None:
        a, b = args[0], args[1]
        if self._is_weight(b) and b.dim() == 2:  # x @ W, W[in, out] (x @ W.T: W[out, in])
            self.model.add(linear(self._name(key), tuple(a.shape), int(b.shape[0]),
                                  int(b.shape[1]), source=key), self._ref(b, transposed=True))
            return
        if self._is_weight(a) and a.dim() == 2:
            # W @ x, W[out, in], x[..., in, n]: (W·x)ᵀ = xᵀ·Wᵀ, the linear layer over the n
            # columns of x (the same GEMM, reducing over in, with W stored as nn.Linear's).
            rows = (*b.shape[:-2], b.shape[-1], b.shape[-2]) if b.dim() > 1 else tuple(b.shape)
            self.model.add(linear(self._name(key), tuple(int(d) for d in rows), int(a.shape[1]),
                                  int(a.shape[0]), source=key), self._ref(a))
            return
        a_shape = tuple(a.shape) if a.dim() > 1 else (1, *a.shape)
        b_shape = tuple(b.shape) if b.dim() > 1 else (*b.shape, 1)
        self.model.add(matmul(self._name(key), a_shape, b_shape, source=key))

    _on_mm = _on_bmm = _on_matmul

    def _on_rmatmul(self, key, args, kwargs, out) -> None:
        self._on_matmul(key, (args[1], args[0]), kwargs, out)

    def _on_addmm(self, key, args, kwargs, out) -> None:
        self._on_matmul(key, (args[1], args[2]), kwargs, out)

    _on_baddbmm = _on_addmm

    # ---- attention ---------------------------------------------------------------------

    def _on_scaled_dot_product_attention(self, key, args, kwargs, out) -> None:
        q, k = args[0], args[1]
        causal = bool(_arg(args, kwargs, 5, "is_causal", False))
        mask = _arg(args, kwargs, 3, "attn_mask")
        heads, q_len, head_dim = (int(d) for d in q.shape[-3:])
        kv_heads, kv_len = int(k.shape[-3]), int(k.shape[-2])
        batch = math.prod(int(d) for d in q.shape[:-3])
        op = attention(self._name("attention"), batch, heads, kv_heads, q_len, kv_len, head_dim,
                       causal, key)
        if mask is not None:
            op = type(op)(op.fields, op.macs, op.source, op.weights,
                          "the model's attention mask is not imported: dense scores")
        self.model.add(op)

    def _mha(self, key: str, query, key_t, value, num_heads: int, in_w, out_w, batch_first: bool,
             causal: bool, qkv_w: tuple | None = None) -> None:
        """``nn.MultiheadAttention``: its in-projection (one linear for self-attention, q, k
        and v for cross-attention or ``qkv_w``, the separate weights of kdim/vdim), attention
        and out-projection. The in-projection's weights are ``in_proj_weight`` (q, k, v
        stacked) or ``qkv_w``; k and v take kdim and vdim features."""
        base = self.stack[-1][0] or "attention"
        shape = tuple(int(d) for d in query.shape)
        if len(shape) == 2:
            shape = (shape[0], 1, shape[1]) if not batch_first else (1, *shape)
        batch, q_len, embed = (shape[0], shape[1], shape[2]) if batch_first else (
            shape[1], shape[0], shape[2])
        kv_len = int(key_t.shape[1 if batch_first else 0]) if key_t.dim() == 3 else int(key_t.shape[0])
        rows_q = (batch, q_len, embed)
        if query is key_t and key_t is value and qkv_w is None:
            self.model.add(linear(self.model.unique(f"{base}.in_proj"), rows_q, embed,
                                  int(in_w.shape[0]), source=key), self._ref(in_w))
        else:
            for i, (part, x, length) in enumerate(
                    (("q_proj", query, q_len), ("k_proj", key_t, kv_len), ("v_proj", value, kv_len))):
                ref = self._ref(qkv_w[i]) if qkv_w else self._ref(in_w, part=(i, 3))
                features = int(x.shape[-1])
                self.model.add(linear(self.model.unique(f"{base}.{part}"), (batch, length, features),
                                      features, embed, source=key), ref)
        self.model.add(attention(self.model.unique(base), batch, num_heads, num_heads, q_len,
                                 kv_len, embed // num_heads, causal, key))
        self.model.add(linear(self.model.unique(f"{base}.out_proj"), rows_q, embed,
                              int(out_w.shape[0]), source=key), self._ref(out_w))

    def _on_multi_head_attention_forward(self, key, args, kwargs, out) -> None:
        q, k, v = args[0], args[1], args[2]
        qkv_w = None
        if _arg(args, kwargs, 17, "use_separate_proj_weight", False):
            qkv_w = tuple(_arg(args, kwargs, 18 + i, f"{p}_proj_weight") for i, p in enumerate("qkv"))
        self._mha(key, q, k, v, int(_arg(args, kwargs, 4, "num_heads")),
                  _arg(args, kwargs, 5, "in_proj_weight"), _arg(args, kwargs, 11, "out_proj_weight"),
                  False, bool(kwargs.get("is_causal", False)), qkv_w)

    def _on_native_multi_head_attention(self, key, args, kwargs, out) -> None:
        q, k, v = args[0], args[1], args[2]
        self._mha(key, q, k, v, int(args[4]), args[5], args[7], True, False)


#: Torch functions and tensor properties that can transpose a 2-D parameter (as their
#: ``record`` key).
_TRANSPOSES = frozenset("t T mT transpose swapaxes swapdims permute".split())


def _example_input(torch, module, shape: tuple[int, ...]):
    if any(isinstance(m, torch.nn.Embedding) for m in module.modules()):
        return torch.zeros(shape, dtype=torch.long, device="meta")  # token ids
    return torch.empty(shape, device="meta")


def import_torch(source: str, input_shape: tuple[int, ...] | None = None,
                 strict: bool = False) -> ImportedModel:
    """Trace a torch model once at ``input_shape`` and map its layers."""
    torch = _torch()
    from torch.overrides import TorchFunctionMode

    name, module = build_module(source)
    if input_shape is None and any(isinstance(m, torch.nn.Embedding) for m in module.modules()):
        raise ModelImportError(f"{source}: the model takes token ids (it has an nn.Embedding), so "
                               f"the default image shape does not apply; give --input-shape "
                               f"BATCH,SEQ_LEN, e.g. 1,128")
    shape = tuple(input_shape or DEFAULT_INPUT_SHAPE)
    model = ImportedModel(name, source, shape)
    tracer = _Tracer(torch, model, module, strict)

    class _Mode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            tracer.record(func, args, kwargs, out)
            return out

    try:
        with _Mode():
            module(_example_input(torch, module, shape))
    except ModelImportError:
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "meta tensor" in first:  # .item(), bool(), a print of values: data, not shapes
            raise ModelImportError(
                f"{source}: the model has data-dependent control flow, which tracing cannot "
                f"follow: the forward pass reads tensor values ({first}), and the model is "
                f"traced on the meta device, without data; make the branch shape-based, or "
                f"import an ONNX export"
            ) from None
        raise ModelImportError(f"{source}: the forward pass failed at input shape {list(shape)}: "
                               f"{first}") from None
    finally:
        tracer.close()
    if not model.ops:
        raise ModelImportError(f"{source}: no convolution, GEMM or attention found")
    return model
