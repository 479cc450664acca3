"""Bring your own model: torch modules, ONNX files and SCALE-Sim topologies → workload YAML.

``import_model(source)`` reads a model into an :class:`ImportedModel` (mapped ops and the work
that is not a GEMM); :func:`workload_text` writes it as an editable workload YAML that
``archsim run`` loads like any other; :func:`format_coverage` is the coverage table
(docs/import.md). torch and onnx are imported only when a source needs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from workloads.importers.graph import ImportedModel, MappedOp, ModelImportError, Unmapped
from workloads.importers.write import coverage_rows, format_coverage, parse_sparsity, workload_text

__all__ = [
    "import_model",
    "import_to_file",
    "detect_format",
    "ImportedModel",
    "ModelImportError",
    "MappedOp",
    "Unmapped",
    "workload_text",
    "format_coverage",
    "coverage_rows",
    "parse_sparsity",
    "parse_shape",
    "FORMATS",
]

Format = Literal["scalesim", "onnx", "torch"]
FORMATS: tuple[str, ...] = ("scalesim", "onnx", "torch")


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """``1,3,224,224`` → ``(1, 3, 224, 224)``."""
    if text is None:
        return None
    try:
        shape = tuple(int(x) for x in text.replace("x", ",").split(",") if x.strip())
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise ModelImportError(f"--input-shape {text!r}: expected positive integers separated by "
                           f"commas, e.g. 1,3,224,224")
    return shape


def detect_format(source: str) -> Format:
    """The format of ``source``: ``torch`` for ``torchvision:NAME`` and ``module:factory``,
    ``onnx`` for ``.onnx`` files, ``scalesim`` for ``.csv`` files."""
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".csv":
        return "scalesim"
    if source.startswith("torchvision:") or (":" in source and not path.exists()):
        return "torch"
    if path.is_file():
        from workloads.importers.scalesim import looks_like_scalesim

        return "scalesim" if looks_like_scalesim(path) else "onnx"
    raise ModelImportError(f"{source}: no such file, and not a torch source (torchvision:NAME or "
                       f"package.module:factory)")


def import_model(source: str, input_shape: tuple[int, ...] | None = None,
                 fmt: Format | None = None, strict: bool = False) -> ImportedModel:
    """Read ``source`` (format detected unless ``fmt`` is given) at ``input_shape``.

    Raises
    ------
    ModelImportError
        One line naming the source and the problem: a file that is not ONNX, a CSV with a
        missing column, an unknown torchvision model (with a did-you-mean), a forward pass that
        fails, and with ``strict`` an operator that is neither mapped nor known non-GEMM work.
    """
    fmt = fmt or detect_format(source)
    if fmt == "scalesim":
        from workloads.importers.scalesim import import_scalesim

        return import_scalesim(Path(source), input_shape[0] if input_shape else 1)
    if fmt == "onnx":
        from workloads.importers.onnx_graph import import_onnx

        return import_onnx(Path(source), input_shape, strict)
    if fmt == "torch":
        from workloads.importers.torch_trace import import_torch

        return import_torch(source, input_shape, strict)
    raise ModelImportError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")


def import_to_file(source: str, out: Path | str, *, input_shape: str | None = None,
                   mode: str = "inference", sparsity: str | None = None, strict: bool = False,
                   fmt: Format | None = None, hardware: str = "sat_vcu1525",
                   masks: str | None = None, command: str = "", force: bool = False) -> list[str]:
    """``archsim import``: read ``source``, write its workload YAML to ``out`` and check that it
    loads back; returns the coverage table (and the checkpoint table with ``masks``) as lines.
    Arguments are the command line's strings (``input_shape`` ``1,3,224,224``, ``sparsity``
    ``bdwp:2:8``, ``masks`` a state_dict file). Arguments are checked before the model is
    read (``--sparsity``'s pattern against ``--hardware``'s too), and the workload is written
    only once it loads (``output.write_checked``); an existing ``out`` only with ``force``."""
    from workloads.importers.output import hardware_entry, write_checked
    from workloads.outputs import check_out_file

    # Missing folders above it are fine: write_checked creates them once the workload loads.
    out = check_out_file(out, force, example="model.yaml",
                         what="a workload you may have written or edited")
    shape, default = parse_shape(input_shape), parse_sparsity(sparsity)
    hw = _hardware(hardware)
    _refuse_unsupported_pattern(hw, default, sparsity)
    patterns = [(p.n, p.m) for p in hw.nm_patterns]
    model = import_model(source, shape, fmt, strict)
    per_layer, table = {}, []
    if masks:
        from workloads.importers.checkpoint import checkpoint_sparsity, format_checkpoint

        rows = checkpoint_sparsity(model, Path(masks), default, patterns)
        per_layer, table = {r.name: (r.sparsity, r.note) for r in rows}, format_checkpoint(rows)
    text = workload_text(model, mode, default, hardware_entry(hardware, out), command, per_layer)
    blame = {"hardware": f"--hardware {hardware}", "sparsity": f"--sparsity {sparsity}",
             "mode": f"--mode {mode}", **({"operations": f"--masks {masks}"} if masks else {})}
    write_checked(out, text, blame)
    return format_coverage(model) + table + [
        f"wrote {out}: {len(model.ops)} ops, {model.macs:,} MACs per forward pass"]


def _hardware(hardware: str):
    """``--hardware`` loaded as the command line names it, before the model is read."""
    from workloads.errors import SpecError
    from workloads.load import load_hardware

    try:
        return load_hardware(hardware)
    except SpecError as exc:
        message = str(exc).removeprefix(f"{hardware}: ")  # the argument is named once
        raise ModelImportError(f"--hardware {hardware}: {message}") from None


def _refuse_unsupported_pattern(hardware, sparsity: dict | None, text: str | None) -> None:
    """``--sparsity``'s N:M pattern must be one ``--hardware`` runs sparse. Checked before the
    model is read: it was found only when the traced workload loaded, after a large model's
    trace. (A workload may opt in to running it dense, ``unsupported_nm``; an import may not.)"""
    if sparsity is None or sparsity["kind"] == "dense":
        return
    if not hardware.supports(sparsity["n"], sparsity["m"]):
        raise ModelImportError(
            f"--sparsity {text}: N:M {sparsity['n']}:{sparsity['m']} is not among hardware "
            f"{hardware.name!r}'s nm_patterns ({hardware.patterns_text()}); choose one of them, "
            f"or a --hardware that runs it")
