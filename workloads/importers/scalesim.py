"""SCALE-Sim topology CSVs: the convolution format and the GEMM (M, N, K) format.

Convolution rows are ``Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width,
Channels, Num Filter, Strides,`` (SCALE-Sim v2 also writes ``Stride height, Stride width``).
SCALE-Sim has no padding column: the IFMAP size is the padded input, so a row becomes a
convolution with no padding and output ``(IFMAP − Filter) // Stride + 1``, as SCALE-Sim
computes it. A layer whose name contains ``DP`` is depthwise (SCALE-Sim runs it channel by
channel): ``groups`` = Channels, ``Num Filter`` per channel. GEMM rows are ``Layer, M, N,
K,``: ``C[M, N] = A[M, K]·B[K, N]``, an archsim ``gemm`` op. The format is told by the header.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from workloads.importers.graph import ImportedModel, MappedOp, ModelImportError, conv2d

__all__ = ["import_scalesim", "looks_like_scalesim", "CONV_COLUMNS", "GEMM_COLUMNS"]

#: The convolution format's columns: (canonical header, accepted spellings, normalized).
CONV_COLUMNS = (
    ("Layer name", ("layername", "layer")),
    ("IFMAP Height", ("ifmapheight",)),
    ("IFMAP Width", ("ifmapwidth",)),
    ("Filter Height", ("filterheight",)),
    ("Filter Width", ("filterwidth",)),
    ("Channels", ("channels",)),
    ("Num Filter", ("numfilter", "numfilters")),
    ("Strides", ("strides", "stride", "strideheight")),
)
GEMM_COLUMNS = (
    ("Layer", ("layer", "layername")),
    ("M", ("m",)),
    ("N", ("n",)),
    ("K", ("k",)),
)


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _read(path: Path) -> list[tuple[int, list[str]]]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelImportError(f"{path}: cannot read the topology: {exc}") from None
    rows = []
    for line, row in enumerate(csv.reader(text.splitlines()), start=1):
        while row and not row[-1].strip():
            row.pop()  # SCALE-Sim rows end with a comma
        if row:
            rows.append((line, [c.strip() for c in row]))
    if not rows:
        raise ModelImportError(f"{path}: the topology file is empty")
    return rows


def looks_like_scalesim(path: Path) -> bool:
    """True if the first row of ``path`` is a SCALE-Sim header (either format)."""
    try:
        first = path.read_text(errors="replace").splitlines()[:1]
    except OSError:
        return False
    header = {_norm(c) for c in first[0].split(",")} if first else set()
    return "ifmapheight" in header or {"m", "n", "k"} <= header


def _columns(path: Path, header: list[str], spec: tuple, fmt: str) -> list[int]:
    names = [_norm(c) for c in header]
    index = []
    for canonical, spellings in spec:
        found = [i for i, n in enumerate(names) if n in spellings]
        if not found:
            columns = ", ".join(c for c, _ in spec)
            raise ModelImportError(f"{path}:1: missing column {canonical!r} of SCALE-Sim's {fmt} "
                               f"format ({columns})")
        index.append(found[0])
    return index


def _int(path: Path, line: int, row: list[str], i: int, column: str) -> int:
    try:
        value = int(row[i])
    except IndexError:
        raise ModelImportError(f"{path}:{line}: no value for column {column!r}") from None
    except ValueError:
        raise ModelImportError(f"{path}:{line}: column {column!r}: expected an integer, got "
                           f"{row[i]!r}") from None
    if value < 1:
        raise ModelImportError(f"{path}:{line}: column {column!r}: expected a positive integer, "
                           f"got {value}")
    return value


def import_scalesim(path: Path, batch: int = 1) -> ImportedModel:
    """The ops of a SCALE-Sim topology (``batch`` images per convolution)."""
    rows = _read(path)
    (_, header), body = rows[0], rows[1:]
    names = {_norm(c) for c in header}
    gemm = "ifmapheight" not in names and {"m", "n", "k"} <= names
    spec = GEMM_COLUMNS if gemm else CONV_COLUMNS
    cols = _columns(path, header, spec, "GEMM" if gemm else "convolution")
    stride_w = next((i for i, c in enumerate(header) if _norm(c) == "stridewidth"), None)
    model = ImportedModel(path.stem, str(path), None)
    if not body:
        raise ModelImportError(f"{path}: the topology has a header but no layers")
    for line, row in body:
        name = model.unique(row[cols[0]] if cols[0] < len(row) else "")
        v = [_int(path, line, row, i, c) for i, (c, _) in zip(cols[1:], spec[1:])]
        if gemm:
            m, n, k = v
            model.add(_gemm(name, m, k, n))
            continue
        h, w, fh, fw, channels, filters, sh = v
        sw = _int(path, line, row, stride_w, "Stride width") if stride_w is not None else sh
        if fh > h or fw > w:
            raise ModelImportError(f"{path}:{line}: {name}: filter {fh}x{fw} is larger than the "
                               f"IFMAP {h}x{w}")
        depthwise = "DP" in row[cols[0]]
        groups = channels if depthwise else 1
        c_out = channels * filters if depthwise else filters
        model.add(conv2d(name, batch, channels, (h, w), c_out, (fh, fw), (sh, sw),
                         groups=groups, source="scalesim-conv"))
    return model


def _gemm(name: str, m: int, k: int, n: int) -> MappedOp:
    return MappedOp({"op": "gemm", "name": name, "m": m, "k": k, "n": n}, m * k * n,
                    "scalesim-gemm")
