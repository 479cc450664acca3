"""Per-layer sparsity from a real checkpoint (a torch ``state_dict`` file).

For every imported layer with weights, its parameter is looked up: ``<layer>.weight``, or
where the importer recorded another (:class:`~workloads.importers.graph.WeightRef`) that one:
``nn.MultiheadAttention``'s ``in_proj_weight`` (the rows of q, k or v for a cross-attention's
projections) or ``q/k/v_proj_weight``, a bare parameter's own name (``block.W``, stored
``[in, out]`` when the model computes ``x @ W`` or ``W.T @ x``, ``[out, in]`` for ``x @ W.T``
or ``W @ x``), also when the model uses it through its transpose (``x @ fc.weight.t()``). A ``torch.nn.utils.prune`` mask
``<parameter>_mask`` wins over the weight's zeros (and the weight is ``<parameter>_orig``):

* **N:M-structured** weights (every group of M along ``in`` holds at most N nonzeros, for a
  pattern the hardware runs) get that pattern; BDWP when they are also N:M along ``out`` and
  the workload asks for BDWP. Groups lie along C_in for convolutions, as SR-STE's do.
* **Unstructured** zeros are reported with their density and mapped to the sparsest supported
  pattern that still keeps at least that density (N/M ≥ density), with a note of the nonzeros
  such a mask would drop; dense when no pattern keeps enough.
* **Dense** weights under a requested N:M or BDWP sparsity keep it, and their masks are the
  top-N of each group of the real weights (not of random ones): the note gives the share of
  ``|W|`` that the FF (and BDWP's BP) mask keeps.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from workloads.importers.graph import ImportedModel, MappedOp, ModelImportError, WeightRef
from workloads.importers.write import why_dense
from workloads.version import install_hint

__all__ = ["LayerSparsity", "checkpoint_sparsity", "format_checkpoint"]


@dataclass(frozen=True, slots=True)
class LayerSparsity:
    """What a checkpoint says about one layer's weights."""

    name: str
    density: float | None  # None: the layer's weight is not in the checkpoint
    structure: str  # "2:4 along in", "unstructured", "dense", "not in checkpoint"
    sparsity: dict | None  # the op's sparsity (None: the workload default)
    note: str


#: How ``torch.save`` files begin: a zip archive (torch >= 1.6) or a legacy pickle.
_ZIP, _PICKLE = b"PK\x03\x04", b"\x80"
_SAVE = "save one with torch.save(model.state_dict(), path)"


def _load(path: Path) -> dict:
    try:
        import torch
    except ModuleNotFoundError:
        raise ModelImportError(f"--masks needs torch: {install_hint('import')}") from None
    head = _head(path)
    try:
        with warnings.catch_warnings():  # torch's beta and pickle-protocol notices are noise here
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelImportError(f"--masks {path}: {_unreadable(path, head, exc)}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelImportError(f"--masks {path}: not a torch state_dict (expected a mapping of "
                               f"names to tensors; {_SAVE})")
    state = {k: v for k, v in state.items() if isinstance(k, str)}
    # DataParallel / compiled checkpoints prefix every key.
    for prefix in ("module.", "_orig_mod."):
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _head(path: Path) -> bytes:
    """The first bytes of the checkpoint, or a one-line error for a file that is no candidate:
    a folder, a missing or unreadable file, an empty one, a text file."""
    if path.is_dir():
        raise ModelImportError(f"--masks {path}: is a folder; expected a torch state_dict file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except FileNotFoundError:
        raise ModelImportError(f"--masks {path}: file not found") from None
    except OSError as exc:
        raise ModelImportError(f"--masks {path}: cannot read it: {exc.strerror or exc}") from None
    if not head:
        raise ModelImportError(f"--masks {path}: the file is empty; expected a torch state_dict "
                               f"({_SAVE})")
    if not head.startswith((_ZIP, _PICKLE)) and b"\0" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError:
            return head
        raise ModelImportError(f"--masks {path}: is a text file, not a torch state_dict ({_SAVE})")
    return head


def _unreadable(path: Path, head: bytes, exc: Exception) -> str:
    """Why ``torch.load`` refused a file that has ``head`` for its first bytes."""
    import zipfile

    first = (str(exc).split(". ")[0].splitlines() or [type(exc).__name__])[0]
    if head.startswith(_ZIP) and not zipfile.is_zipfile(path):
        return (f"a torch zip archive that is truncated or damaged (its zip directory is "
                f"missing); copy it again, or {_SAVE}")
    if head.startswith(_ZIP):
        return f"a torch zip archive that torch cannot read ({first})"
    if head.startswith(_PICKLE) and "weights only" in str(exc).lower():
        return (f"a pickle that torch's weights-only loader refuses (it holds objects besides "
                f"tensors, which are not loaded as that could run code); {_SAVE}")
    if head.startswith(_PICKLE):
        return f"a pickle that torch cannot read: truncated or damaged? ({first})"
    return f"not a torch state_dict (it is neither a torch zip archive nor a pickle; {_SAVE})"


def _groups(w, along: str, m: int):
    """``[groups, m]`` view of a weight ``[out, in(, kh, kw)]`` with groups of ``m`` along
    ``in`` (C_in, kernel positions outermost) or ``out``."""
    if w.dim() == 4:
        w = w.permute(0, 2, 3, 1) if along == "in" else w.permute(1, 2, 3, 0)
    elif along == "out":
        w = w.t()
    w = w.reshape(-1, w.shape[-1])
    return w.reshape(w.shape[0], w.shape[1] // m, m)


def _fits(nonzero, along: str, n: int, m: int) -> bool:
    return bool((_groups(nonzero, along, m).sum(-1) <= n).all())


def _kept_share(w, along: str, n: int, m: int) -> float:
    """Share of ``Σ|w|`` that the top-N-of-M mask along ``along`` keeps."""
    g = _groups(w.abs().float(), along, m)
    total = float(g.sum())
    return float(g.topk(n, dim=-1).values.sum()) / total if total else 1.0


def _dims(op: MappedOp) -> dict[str, int]:
    f = op.fields
    if op.kind == "conv2d":
        return {"in": f["in_channels"], "out": f["out_channels"]}
    if op.kind == "linear":
        return {"in": f["in_features"], "out": f["out_features"]}
    return {"in": f["k"], "out": f["n"]}


def _layer(op: MappedOp, ref: WeightRef, state: dict, default: dict | None,
           patterns: list[tuple[int, int]]) -> LayerSparsity:
    """What the checkpoint says about ``op``, whose weight is ``ref``."""
    w = state.get(ref.key, state.get(f"{ref.key}_orig"))
    if w is None:
        return LayerSparsity(op.name, None, "not in checkpoint", None,
                             f"no {ref.key} in the checkpoint")
    w = _check_tensor(op, ref, ref.key, w)
    mask = state.get(f"{ref.key}_mask")
    if mask is not None:
        mask = _check_tensor(op, ref, f"{ref.key}_mask", mask)
    nonzero = (mask != 0) if mask is not None else (w != 0)
    density = float(nonzero.float().mean())
    dims = _dims(op)
    divisible = [(n, m) for n, m in patterns
                 if dims["in"] % m == 0 and op.fields.get("groups", 1) == 1]
    if density < 1.0:
        bdwp = default is not None and default["kind"] == "bdwp"
        # The sparsest pattern the weights fit; on a tie the smallest group, which is their
        # structure (a 2:4 mask also fits 4:8, a looser constraint with wider indices).
        for n, m in sorted(divisible, key=lambda p: (p[0] / p[1], p[1])):
            if _fits(nonzero, "in", n, m):
                both = bdwp and dims["out"] % m == 0 and _fits(nonzero, "out", n, m)
                sparsity = {"kind": "bdwp", "n": n, "m": m} if both else {
                    "kind": "nm", "n": n, "m": m, "dim": "in"}
                where = "in and out" if both else "in"
                return LayerSparsity(op.name, density, f"{n}:{m} along {where}", sparsity,
                                     f"checkpoint is {n}:{m} along {where}")
        keeps = [(n, m) for n, m in divisible if n / m >= density]
        if not keeps:
            return LayerSparsity(op.name, density, "unstructured", {"kind": "dense"},
                                 f"unstructured, density {density:.2f}: no supported N:M keeps "
                                 f"that many weights; dense")
        n, m = min(keeps, key=lambda p: (p[0] / p[1], -p[1]))
        g = _groups(nonzero.float(), "in", m).sum(-1)
        dropped = float((g - n).clamp(min=0).sum()) / max(float(g.sum()), 1.0)
        return LayerSparsity(op.name, density, "unstructured", {"kind": "nm", "n": n, "m": m,
                                                                "dim": "in"},
                             f"unstructured, density {density:.2f}: nearest supported N:M is "
                             f"{n}:{m}, whose mask drops {dropped:.1%} of the nonzeros")
    if default is None or default["kind"] == "dense" or why_dense(op, default):
        return LayerSparsity(op.name, 1.0, "dense", None, "")
    n, m = default["n"], default["m"]
    ff = "in" if default["kind"] == "bdwp" else default.get("dim", "in")
    kept = f"the {ff} mask keeps {_kept_share(w, ff, n, m):.0%} of |W|"
    if default["kind"] == "bdwp":
        kept = (f"FF mask keeps {_kept_share(w, 'in', n, m):.0%} of |W|, BP mask "
                f"{_kept_share(w, 'out', n, m):.0%}")
    return LayerSparsity(op.name, 1.0, "dense", None, f"masks from the checkpoint: {kept}")


def _expected_shape(op: MappedOp, ref: WeightRef) -> tuple[int, ...]:
    """The shape of ``op``'s weight ``ref`` in a torch checkpoint: ``[out, in]`` for a linear
    layer (``[in, out]`` transposed; ``[n * out, in]`` for a part of n), ``[out, in/groups,
    kh, kw]`` for a convolution (``[out, in/groups, k]`` for a Conv1d, which the op states as a
    1 x k convolution)."""
    f, dims = op.fields, _dims(op)
    if op.kind != "conv2d":
        shape = dims["out"] * ref.part[1], dims["in"]
        return shape[::-1] if ref.transposed else shape
    kh, kw = (f["kernel"],) * 2 if isinstance(f["kernel"], int) else f["kernel"]
    per_group = dims["in"] // f.get("groups", 1)
    return (dims["out"], per_group, kw) if op.source == "conv1d" else (
        dims["out"], per_group, kh, kw)


def _check_tensor(op: MappedOp, ref: WeightRef, key: str, t):
    """Checkpoint entry ``key`` (``op``'s weight ``ref`` or its mask) as a dense real tensor,
    ``[out, in]`` for a linear layer (transposed, or its rows of ``ref.part``, as ``ref``
    says) and 4-D for a convolution; a one-line error unless it is shaped like the weight and
    holds finite values. A sparse or quantized tensor is read as its values."""
    import torch

    if not isinstance(t, torch.Tensor):
        raise ModelImportError(f"checkpoint entry {key} is a {type(t).__name__}; expected a tensor")
    if t.layout != torch.strided:
        t = t.to_dense()
    if t.is_quantized:
        t = t.dequantize()
    if t.dtype == torch.bool:  # a mask, or a weight saved as one: arithmetic needs numbers
        t = t.float()
    if t.is_complex():
        raise ModelImportError(f"checkpoint entry {key} is {t.dtype}; expected real weights")
    want = _expected_shape(op, ref)
    if op.kind in ("linear", "conv2d") and tuple(t.shape) != want:
        how = (" ([in, out], as x @ W and W.T @ x use it)" if ref.transposed else
               f" ({ref.part[1]} projections stacked)" if ref.part[1] > 1 else "")
        raise ModelImportError(f"checkpoint entry {key} has shape {list(t.shape)}; the model's "
                               f"{op.kind} {op.name} needs {list(want)}{how}")
    # float() first: isfinite has no kernel for the float8 types.
    if t.is_floating_point() and not bool(torch.isfinite(t.float()).all()):
        bad = int((~torch.isfinite(t.float())).sum())
        raise ModelImportError(f"checkpoint entry {key} holds NaN or infinite values ({bad} of "
                               f"{t.numel()}); its zeros cannot tell its sparsity")
    if ref.transposed:
        t = t.t()
    part, parts = ref.part
    if parts > 1:
        rows = t.shape[0] // parts
        t = t[part * rows:(part + 1) * rows]
    return t.unsqueeze(2) if t.dim() == 3 else t  # Conv1d: [out, in, 1, k]


def checkpoint_sparsity(model: ImportedModel, path: Path, default: dict | None,
                        patterns: list[tuple[int, int]]) -> list[LayerSparsity]:
    """Per weighted layer of ``model``, what the checkpoint at ``path`` says; ``default`` is
    the workload's sparsity (``--sparsity``), ``patterns`` the hardware's N:M patterns."""
    state = _load(Path(path))
    refs = [(op, model.weight_of(op.name)) for op in model.ops if op.weights]
    rows = [_layer(op, ref, state, default, patterns) for op, ref in refs]
    if all(r.density is None for r in rows):
        raise ModelImportError(f"--masks {path}: none of the model's layers is in the checkpoint (expected "
                           f"keys like {refs[0][1].key if refs else 'NAME.weight'!r})")
    return rows


def format_checkpoint(rows: list[LayerSparsity]) -> list[str]:
    """The per-layer checkpoint table as lines of text."""
    width = max(len(r.name) for r in rows)
    out = ["", f"{'layer':{width}}  density  {'checkpoint':20}  sparsity      note"]
    for r in rows:
        density = "-" if r.density is None else f"{r.density:.3f}"
        s = r.sparsity
        label = "workload's" if s is None else s["kind"] if s["kind"] == "dense" else (
            f"{s['kind']} {s['n']}:{s['m']}")
        out.append(f"{r.name:{width}}  {density:>7}  {r.structure:20}  {label:12}  {r.note}")
    return out
