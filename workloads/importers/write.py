"""An :class:`ImportedModel` as an editable workload YAML, and its coverage table.

The YAML is written as text (one flow mapping per op, notes as comments) so that it stays
readable and editable; ``workloads.load`` is what reads it back, strictly, like any workload.
"""

from __future__ import annotations

import json
from collections import defaultdict

from workloads.importers.graph import ImportedModel, MappedOp, Mode, ModelImportError
from workloads.spec import untrainable_attention

__all__ = ["parse_sparsity", "workload_text", "coverage_rows", "format_coverage", "why_dense"]


#: What may follow ``nm:N:M:`` (the pruned dimension) and ``bdwp:N:M:`` (the BP mask's source).
_FOURTH = {"nm": ("in", "out"), "bdwp": ("dense", "forward_masked")}


def parse_sparsity(text: str | None) -> dict | None:
    """``dense``, ``nm:N:M[:in|out]`` or ``bdwp:N:M[:dense|forward_masked]`` → a sparsity
    mapping. N and M are checked here, by the spec's own rule, so that an invalid pattern is
    refused before a model is built and traced; whether the hardware runs it, and whether a
    layer's dimensions fit it, is checked when the workload loads."""
    if text is None:
        return None
    parts = text.split(":")
    kind = parts[0]
    if kind == "dense" and len(parts) == 1:
        return {"kind": "dense"}
    if kind in ("nm", "bdwp") and len(parts) in (3, 4):
        try:
            n, m = int(parts[1]), int(parts[2])
        except ValueError:
            pass
        else:
            out: dict = {"kind": kind, "n": n, "m": m}
            if len(parts) == 4 and parts[3] in _FOURTH[kind]:
                out["dim" if kind == "nm" else "bp_mask_source"] = parts[3]
                return _valid(text, out)
            if len(parts) == 3:
                return _valid(text, out)
    raise ModelImportError(f"--sparsity {text!r}: expected dense, nm:N:M[:in|out] or "
                       f"bdwp:N:M[:dense|forward_masked]")


def _valid(text: str, sparsity: dict) -> dict:
    """``sparsity`` if the spec accepts it; else a one-line error blamed on ``--sparsity``."""
    from pydantic import ValidationError

    from workloads.spec import BDWPSparsity, NMSparsity

    try:
        (NMSparsity if sparsity["kind"] == "nm" else BDWPSparsity).model_validate(sparsity)
    except ValidationError as exc:
        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ModelImportError(f"--sparsity {text}: {message}") from None
    return sparsity


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a YAML double-quoted scalar
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {x if k in ('op', 'kind') else _value(x)}"
                               for k, x in v.items()) + "}"
    return str(v)


def _comment(text: str) -> str:
    """``text`` safe as one YAML comment line: a newline or control character (from a file name
    or an argument) is written escaped; raw, it would end the comment or fail the YAML."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _weight_dims(op: MappedOp) -> dict[str, tuple[str, int]]:
    f = op.fields
    if op.kind == "conv2d":
        return {"in": ("in_channels", f["in_channels"]), "out": ("out_channels", f["out_channels"])}
    if op.kind == "linear":
        return {"in": ("in_features", f["in_features"]), "out": ("out_features", f["out_features"])}
    return {"in": ("k", f["k"]), "out": ("n", f["n"])}


def why_dense(op: MappedOp, sparsity: dict) -> str:
    """Empty when ``sparsity`` applies to ``op``; else why the op stays dense."""
    if not op.weights:
        return "no weights to prune"
    if op.fields.get("groups", 1) != 1:
        return "grouped convolution: N:M on grouped weights is not supported yet"
    dims = ("in", "out") if sparsity["kind"] == "bdwp" else (sparsity.get("dim", "in"),)
    sizes = _weight_dims(op)
    for dim in dims:
        field, size = sizes[dim]
        if size % sparsity["m"]:
            return f"{field}={size} is not a multiple of m={sparsity['m']}"
    return ""


def _training_attention(op: MappedOp) -> list[MappedOp]:
    """An attention op in a training workload: kept where training runs it; else its two
    products as dense ``gemm`` ops, so that the step still counts their work."""
    why = untrainable_attention(op.fields.get("phase", "prefill"), None)  # no pattern is written
    if not why:
        return [op]
    f = op.fields
    q_len = 1 if f.get("phase") == "decode" else f.get("q_len", f["kv_len"])
    repeat = f["batch"] * f["heads"]
    note = "; ".join(filter(None, (op.note, f"attention as two dense products: {why}")))
    out = []
    for suffix, (m, k, n) in (("scores", (q_len, f["head_dim"], f["kv_len"])),
                              ("context", (q_len, f["kv_len"], f["head_dim"]))):
        fields = {"op": "gemm", "name": f"{f['name']}.{suffix}", "m": m, "k": k, "n": n}
        if repeat != 1:
            fields["repeat"] = repeat
        out.append(MappedOp(fields, m * k * n * repeat, op.source, weights=False, note=note))
    return out


def workload_text(model: ImportedModel, mode: Mode = "inference", sparsity: dict | None = None,
                  hardware: str = "sat_vcu1525", command: str = "",
                  per_layer: dict[str, tuple[dict | None, str]] | None = None) -> str:
    """The workload YAML of ``model``: one op per layer, in execution order.

    ``per_layer`` maps a layer name to its own sparsity (None: the workload's) and a note, as
    a checkpoint gives them (:func:`workloads.importers.checkpoint.checkpoint_sparsity`).
    """
    per_layer = per_layer or {}
    ops = [x for op in model.ops
           for x in (_training_attention(op) if mode == "training" and op.kind == "attention"
                     else [op])]
    lines = [_comment(f"# Imported from {model.source}" + (f" by `{command}`" if command else "")
                      + "."),
             f"# {len(ops)} ops, {model.macs:,} MACs per forward pass"
             + (f" at input shape {list(model.input_shape)}" if model.input_shape else "") + ".",
             "# Not mapped (no GEMM work): " + (", ".join(
                 f"{row[0]} {row[1]} ops" for row in coverage_rows(model) if row[3] == "not mapped")
                 or "nothing") + " (`archsim import` prints the table).",
             *_unsupported_header(model),
             "version: 1", f"name: {_value(model.name)}", f"hardware: {_value(hardware)}",
             f"mode: {mode}"]
    sparse = sparsity is not None and sparsity["kind"] != "dense"
    if sparsity is not None:
        lines.append(f"sparsity: {_value(sparsity)}")
    lines.append("operations:")
    for op in ops:
        fields = dict(op.fields)
        notes = [op.note] if op.note else []
        own, own_note = per_layer.get(op.name, (None, ""))
        notes += [own_note] if own_note else []
        if own is not None:
            fields["sparsity"] = own
        elif sparse and op.kind != "attention":
            why = why_dense(op, sparsity)
            if why:
                fields["sparsity"] = {"kind": "dense"}
                notes.append(f"dense: {why}")
        comment = _comment(f"  # {'; '.join(notes)}") if notes else ""
        lines.append(f"  - {_value(fields)}{comment}")
    return "\n".join(lines) + "\n"


def coverage_rows(model: ImportedModel) -> list[tuple[str, int, int, str]]:
    """(category, ops, MACs or elements, ``mapped``/``not mapped``/``unsupported``)."""
    mapped: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for op in model.ops:
        key = {"conv2d": "convolution", "linear": "GEMM (linear)", "gemm": "GEMM (activations)",
               "attention": "attention"}[op.kind]
        mapped[key][0] += 1
        mapped[key][1] += op.macs
    other: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for u in model.unmapped:
        other[u.category][0] += 1
        other[u.category][1] += u.elements
    rows = [(k, v[0], v[1], "mapped") for k, v in mapped.items()]
    rows += [(k, v[0], v[1], "unsupported" if k == "unsupported" else "not mapped")
             for k, v in other.items()]
    return rows


def _unsupported_header(model: ImportedModel) -> list[str]:
    """A header line naming the operators whose work the workload lacks (none: no line)."""
    names = sorted({u.source for u in model.unmapped if u.category == "unsupported"})
    if not names:
        return []
    return [f"# Unsupported, so their work is NOT in this workload: {', '.join(names)}."]


def format_coverage(model: ImportedModel) -> list[str]:
    """The coverage table as lines of text."""
    rows = coverage_rows(model)
    out = [f"{'':22}{'ops':>6}  {'MACs / elements':>18}  status"]
    for cat, count, amount, status in rows:
        unit = "MACs" if status == "mapped" else "elements"
        out.append(f"{cat:22}{count:>6}  {amount:>13,} {unit:<8} {status}")
    unsupported = sorted({u.source for u in model.unmapped if u.category == "unsupported"})
    if unsupported:
        out.append("unsupported operators: " + ", ".join(unsupported)
                   + " (their work is not in the workload; --strict makes this an error)")
    return out
