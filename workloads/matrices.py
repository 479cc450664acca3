"""Sparse matrices for SpGEMM workloads: named sources, Matrix Market files and statistics.

One entry point, :func:`resolve_matrix`, turns a workload's ``matrix:`` field into a
:class:`NamedMatrix`. A source is one of

- a generator with parameters: ``rmat``, ``uniform``, ``banded``, ``block_diagonal``
  (see :mod:`workloads.generators.sparse_matrices`);
- a real matrix that ships with an installed package: ``pyamg:<example>`` (the FEM/PDE matrices
  of ``pyamg.gallery.load_example``) and ``networkx:<graph>`` (small real social networks);
- ``lookalike:<name>``: a synthetic stand-in for a matrix of the SuiteSparse SpGEMM benchmark
  set (OuterSPACE, SpArch, MatRaptor, Gamma) with the real n and nnz, because the real ones
  cannot be downloaded here. R-MAT stands in for graphs, a thinned grid stencil for FEM and
  circuit matrices. They are marked ``synthetic=True`` and say so in their description;
- a path to a ``.mtx`` or ``.mtx.gz`` Matrix Market file, for users who have the real matrices.

Every matrix comes back as a canonical ``int64`` CSR (sorted indices, no duplicates, no stored
zeros) so that integer hardware and its golden model agree bit for bit. Real-valued matrices are
quantized to small integers by the rule documented at :func:`load_mtx`.

:func:`matrix_stats` gives the numbers an SpGEMM mapping needs: row-length distribution, the
multiply count of C = A·B and nnz(C).
"""

from __future__ import annotations

import difflib
import gzip
import inspect
import math
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import scipy.io
import scipy.sparse as sp

from workloads.errors import SpecError
from workloads.generators.sparse_matrices import (
    VALUE_MAX,
    banded,
    block_diagonal,
    rmat,
    stencil_offsets,
    uniform_random,
)
from workloads.limits import Limits

__all__ = [
    "GENERATORS",
    "LOOKALIKES",
    "NETWORKX_GRAPHS",
    "PYAMG_EXAMPLES",
    "LookAlike",
    "MatrixStats",
    "NamedMatrix",
    "known_matrix_names",
    "load_mtx",
    "matrix_stats",
    "resolve_matrix",
]

try:
    # scipy's own first SpGEMM pass: counts nnz(A·B) row by row with O(n) memory and no output.
    # It is private, so the public pattern product below stays as the fallback; for a 1M-nnz
    # R-MAT it is 4x faster and avoids materializing a ~180M-entry product.
    from scipy.sparse._sparsetools import csr_matmat_maxnnz as _csr_matmat_maxnnz
except ImportError:  # pragma: no cover - depends on scipy internals
    _csr_matmat_maxnnz = None

# Values that are already integers are kept as they are if they fit a 32-bit signed datapath;
# anything else is quantized (see load_mtx).
_INT_KEEP_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True, eq=False)
class NamedMatrix:
    """A sparse matrix with the provenance a report needs.

    Equality is identity (``eq=False``): comparing two CSR matrices elementwise does not give
    one truth value.

    Attributes
    ----------
    name : str
        The source as the user wrote it (for generators, with their parameters and seed).
    matrix : scipy.sparse.csr_matrix
        Canonical CSR with ``int64`` values.
    synthetic : bool
        True for generated matrices and look-alikes, False for real matrices and files.
    description : str
        One line: what the matrix is, where it came from, and how its values were made integers.
    """

    name: str
    matrix: sp.csr_matrix
    synthetic: bool
    description: str


@dataclass(frozen=True, slots=True)
class MatrixStats:
    """Shape and work statistics of A and of the product C = A·B.

    Attributes
    ----------
    n_rows, n_cols, nnz : int
        Shape and nonzero count of A.
    density : float
        ``nnz / (n_rows * n_cols)``.
    row_nnz_min, row_nnz_max : int
        Shortest and longest row of A, in nonzeros.
    row_nnz_mean, row_nnz_std, row_nnz_p50, row_nnz_p99 : float
        Mean, population standard deviation and percentiles (linear interpolation) of the
        nonzeros per row of A.
    multiplies : int
        Scalar multiplications of C = A·B: the sum over nonzeros ``a_ik`` of ``nnz(B[k, :])``.
        Every dataflow (inner, outer, row-wise) performs exactly these; they differ in merging.
    nnz_c : int
        Nonzeros of the symbolic product (structural: no cancellation is assumed).
    compression_ratio : float
        ``multiplies / nnz_c``: partial products merged into each output nonzero on average;
        0.0 when C is empty.
    """

    n_rows: int
    n_cols: int
    nnz: int
    density: float
    row_nnz_min: int
    row_nnz_mean: float
    row_nnz_max: int
    row_nnz_std: float
    row_nnz_p50: float
    row_nnz_p99: float
    multiplies: int
    nnz_c: int
    compression_ratio: float


@dataclass(frozen=True, slots=True)
class LookAlike:
    """Recipe for a synthetic stand-in of one SuiteSparse matrix.

    Attributes
    ----------
    n, nnz : int
        Order and nonzero count of the real matrix (the look-alike matches both exactly).
    what : str
        What the real matrix is, for the description.
    model : str
        ``"rmat"`` (power-law graph) or ``"stencil"`` (thinned grid stencil).
    symmetric : bool
        For ``rmat``: an undirected graph (symmetric, no self-loops).
    stencil : str
        For ``stencil``: a key of ``STENCILS``.
    diagonal : bool
        For ``stencil``: keep the main diagonal (matrices) or drop it (graphs without self-loops).
    """

    n: int
    nnz: int
    what: str
    model: str
    symmetric: bool = False
    stencil: str = "3d27"
    diagonal: bool = True


# n and nnz of the SuiteSparse matrices used by OuterSPACE, SpArch, MatRaptor and Gamma for
# C = A·A: the first eight as listed in REFERENCE.md section 2, the rest as published in the
# SuiteSparse collection. The stencil is the smallest grid stencil whose band holds the real nnz
# per row (poisson3Da fills 99.5% of a 27-point stencil); graphs from SNAP are R-MAT.
LOOKALIKES: Mapping[str, LookAlike] = MappingProxyType(
    {
        "wiki-Vote": LookAlike(
            8_297, 103_689, "Wikipedia adminship votes, directed graph (SNAP)", "rmat"
        ),
        "poisson3Da": LookAlike(13_514, 352_762, "3D Poisson problem, FEMLAB", "stencil"),
        "ca-CondMat": LookAlike(
            23_133,
            186_936,
            "arXiv condensed-matter collaborations, undirected graph (SNAP)",
            "rmat",
            symmetric=True,
        ),
        "email-Enron": LookAlike(
            36_692, 367_662, "Enron e-mail network, undirected graph (SNAP)", "rmat", symmetric=True
        ),
        "scircuit": LookAlike(
            170_998, 958_936, "circuit simulation (Hamm)", "stencil", stencil="3d7"
        ),
        "cage12": LookAlike(
            130_228, 2_032_536, "DNA electrophoresis model (van Heukelum)", "stencil"
        ),
        "2cubes_sphere": LookAlike(
            101_492, 1_647_264, "FEM electromagnetics, two cubes in a sphere", "stencil"
        ),
        "offshore": LookAlike(
            259_789, 4_242_673, "FEM electromagnetics, offshore transient", "stencil"
        ),
        "filter3D": LookAlike(
            106_437, 2_707_179, "3D model-reduction filter, FEM (Oberwolfach)", "stencil"
        ),
        "cop20k_A": LookAlike(
            121_192, 2_624_331, "FEM accelerator cavity design (Williams)", "stencil"
        ),
        "amazon0312": LookAlike(
            400_727, 3_200_440, "Amazon co-purchasing, directed graph (SNAP)", "rmat"
        ),
        "web-Google": LookAlike(916_428, 5_105_039, "Google web graph, directed (SNAP)", "rmat"),
        "cit-Patents": LookAlike(
            3_774_768, 16_518_948, "US patent citations, directed graph (SNAP)", "rmat"
        ),
        "webbase-1M": LookAlike(
            1_000_005, 3_105_536, "web crawl, directed graph (Williams)", "rmat"
        ),
        "p2p-Gnutella31": LookAlike(
            62_586, 147_892, "Gnutella peer-to-peer, directed graph (SNAP)", "rmat"
        ),
        "roadNet-CA": LookAlike(
            1_971_281,
            5_533_214,
            "California road network, undirected planar-like graph (SNAP)",
            "stencil",
            stencil="2d5",
            diagonal=False,
        ),
    }
)

PYAMG_EXAMPLES: tuple[str, ...] = (
    "airfoil",
    "bar",
    "helmholtz_2D",
    "knot",
    "local_disc_galerkin_diffusion",
    "recirc_flow",
    "unit_cube",
    "unit_square",
)
"""Examples of ``pyamg.gallery.load_example`` (all present in pyamg 5.x); the matrix is 'A'."""

NETWORKX_GRAPHS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "karate": ("karate_club_graph", "Zachary's karate club, 34 members, interaction counts"),
        "les_miserables": ("les_miserables_graph", "Les Miserables character co-appearances"),
        "florentine_families": (
            "florentine_families_graph",
            "Renaissance Florentine family marriages (Padgett)",
        ),
        "davis_southern_women": (
            "davis_southern_women_graph",
            "Davis Southern Women, bipartite women-events attendance",
        ),
    }
)
"""Real graphs shipped by networkx: name -> (networkx function, what the graph is)."""

GENERATORS: Mapping[str, Callable[..., sp.csr_matrix]] = MappingProxyType(
    {
        "rmat": rmat,
        "uniform": uniform_random,
        "banded": banded,
        "block_diagonal": block_diagonal,
    }
)
"""Generator sources; their keyword arguments (except ``seed``) are the source's params."""


def known_matrix_names() -> tuple[str, ...]:
    """Every name :func:`resolve_matrix` accepts besides file paths, sorted.

    Returns
    -------
    tuple of str
    """
    names = [*GENERATORS]
    names += [f"pyamg:{name}" for name in PYAMG_EXAMPLES]
    names += [f"networkx:{name}" for name in NETWORKX_GRAPHS]
    names += [f"lookalike:{name}" for name in LOOKALIKES]
    return tuple(sorted(names))


def resolve_matrix(
    source: str,
    params: Mapping[str, object] | None,
    seed: int,
    base_dir: Path,
    limits: Limits | None = None,
) -> NamedMatrix:
    """Build or load the matrix a workload names.

    Parameters
    ----------
    source : str
        A name from :func:`known_matrix_names` or a path ending in ``.mtx`` or ``.mtx.gz``.
    params : mapping or None
        Keyword arguments of a generator source (for ``rmat``: ``n``, ``nnz``, ...); must be
        empty for every other source.
    seed : int
        Seed for generators and look-alikes; real matrices ignore it.
    base_dir : pathlib.Path
        Directory that relative file paths are resolved against (the workload file's folder).
    limits : Limits, optional
        ``matrix_rows`` and ``matrix_nnz`` bound a generator's parameters and a file's header
        before anything is allocated (defaults: :class:`~workloads.limits.Limits`).

    Returns
    -------
    NamedMatrix

    Raises
    ------
    SpecError
        For an unknown name (with a did-you-mean), unknown or missing parameters, invalid
        parameter values, sizes above the limits, and unreadable or empty files.
    """
    limits = limits or Limits()
    if not isinstance(source, str) or not source:
        raise SpecError(f"expected a matrix source name or .mtx path, got {source!r}")
    params = dict(params or {})
    if source in GENERATORS:
        _check_generator_size(source, params, limits)
        return _generated(source, params, seed)
    kind, _, name = source.partition(":")
    if kind == "pyamg" and name in PYAMG_EXAMPLES:
        _expect_no_params(source, params)
        return _pyamg_example(name)
    if kind == "networkx" and name in NETWORKX_GRAPHS:
        _expect_no_params(source, params)
        return _networkx_graph(name)
    if kind == "lookalike" and name in LOOKALIKES:
        _expect_no_params(source, params)
        return _lookalike(name, seed)
    if source.lower().endswith((".mtx", ".mtx.gz")):
        _expect_no_params(source, params)
        path = Path(base_dir) / source
        matrix, value_note = _read_mtx(path, limits)
        return NamedMatrix(
            name=source,
            matrix=matrix,
            synthetic=False,
            description=f"read from {path} ({_shape_text(matrix)}); {value_note}",
        )
    raise SpecError(_unknown_source_message(source))


def load_mtx(path: str | Path) -> sp.csr_matrix:
    """Read a Matrix Market file (``.mtx`` or gzip-compressed ``.mtx.gz``) as integer CSR.

    Symmetric, skew-symmetric and Hermitian files are expanded to both triangles (scipy does
    this). Duplicate entries are summed, then stored zeros are dropped, so the result is
    canonical. Values are made integers by one rule, which keeps the sparsity pattern exactly:

    - ``pattern`` files: every value is 1;
    - all values are integers of magnitude at most ``2**31 - 1`` (``integer`` files, or ``real``
      files storing 1.0, -2.0, ...): kept exactly;
    - otherwise: ``q = sign(x) * max(1, rint(VALUE_MAX * |x| / max|x|))`` with ``VALUE_MAX = 8``,
      i.e. scaled so that the largest magnitude maps to 8, rounded to nearest (ties to even), and
      never rounded to 0, so tiny entries stay in the pattern as +-1. For complex values ``|x|``
      is the modulus and the sign is that of the real part (of the imaginary part where the
      real part is 0).

    Parameters
    ----------
    path : str or pathlib.Path
        The file to read.

    Returns
    -------
    scipy.sparse.csr_matrix
        Canonical CSR with ``int64`` values.

    Raises
    ------
    SpecError
        If the file is missing, is not valid Matrix Market, or holds no nonzeros or no rows.
    """
    return _read_mtx(Path(path))[0]


def matrix_stats(A: object, B: object = None) -> MatrixStats:
    """Statistics of A and of the SpGEMM C = A·B (C = A·A when `B` is omitted).

    Parameters
    ----------
    A : scipy sparse matrix or 2-D array
        Left operand; stored zeros and duplicates are ignored (a canonical copy is used).
    B : scipy sparse matrix or 2-D array, optional
        Right operand; defaults to A, which must then be square.

    Returns
    -------
    MatrixStats

    Raises
    ------
    SpecError
        If an operand is not a 2-D matrix, has no rows, or the shapes do not chain.

    Notes
    -----
    ``nnz_c`` is structural: it comes from scipy's symbolic SpGEMM pass (or, if that private
    routine is missing, from the product of the boolean patterns, which cannot cancel). Either
    costs about one SpGEMM: about a second for a 100k-row R-MAT with a million nonzeros.
    """
    a = _canonical_csr(A, "A")
    if B is None:
        if a.shape[0] != a.shape[1]:
            raise SpecError(
                f"matrix_stats: C = A·A needs a square A, got A of shape {a.shape}; "
                f"pass B for a rectangular product"
            )
        b = a
    else:
        b = _canonical_csr(B, "B")
        if a.shape[1] != b.shape[0]:
            raise SpecError(
                f"matrix_stats: C = A·B needs A.shape[1] == B.shape[0], got A of shape "
                f"{a.shape} and B of shape {b.shape}"
            )
    row_nnz = np.diff(a.indptr)
    b_row_nnz = np.diff(b.indptr).astype(np.int64)
    # Each stored a_ik meets every nonzero of row k of B exactly once.
    multiplies = int(b_row_nnz[a.indices].sum())
    nnz_c = _symbolic_nnz(a, b)
    p50, p99 = np.percentile(row_nnz, [50, 99])
    return MatrixStats(
        n_rows=a.shape[0],
        n_cols=a.shape[1],
        nnz=int(a.nnz),
        density=a.nnz / (a.shape[0] * a.shape[1]),
        row_nnz_min=int(row_nnz.min()),
        row_nnz_mean=float(row_nnz.mean()),
        row_nnz_max=int(row_nnz.max()),
        row_nnz_std=float(row_nnz.std()),
        row_nnz_p50=float(p50),
        row_nnz_p99=float(p99),
        multiplies=multiplies,
        nnz_c=nnz_c,
        compression_ratio=multiplies / nnz_c if nnz_c else 0.0,
    )


def _generated(source: str, params: dict[str, object], seed: int) -> NamedMatrix:
    """A generator source, with its parameters checked against the generator's signature."""
    func = GENERATORS[source]
    signature = inspect.signature(func)
    accepted = [name for name in signature.parameters if name != "seed"]
    if "seed" in params:
        raise SpecError(
            f"matrix source {source!r}: 'seed' is not a parameter; the run's seed is used"
        )
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        hint = difflib.get_close_matches(unknown[0], accepted, n=1)
        did_you_mean = f"did you mean {hint[0]!r}? " if hint else ""
        raise SpecError(
            f"matrix source {source!r}: unknown parameter {unknown[0]!r}; {did_you_mean}"
            f"expected some of {accepted}"
        )
    required = [
        name
        for name, p in signature.parameters.items()
        if p.default is inspect.Parameter.empty and name != "seed"
    ]
    missing = [name for name in required if name not in params]
    if missing:
        raise SpecError(
            f"matrix source {source!r}: missing parameter {missing[0]!r} (required: {required})"
        )
    matrix = func(**params, seed=seed)
    # Parameters in signature order make the name stable whatever order the YAML used.
    args = ", ".join(f"{name}={params[name]!r}" for name in accepted if name in params)
    name = f"{source}({args}, seed={seed!r})"
    summary = inspect.getdoc(func).splitlines()[0].rstrip(".").replace("`", "")
    return NamedMatrix(
        name=name,
        matrix=matrix,
        synthetic=True,
        description=f"synthetic: {summary} ({_shape_text(matrix)}), {name}",
    )


def _lookalike(name: str, seed: int) -> NamedMatrix:
    """The synthetic stand-in for SuiteSparse matrix `name`."""
    spec = LOOKALIKES[name]
    if spec.model == "rmat":
        matrix = rmat(spec.n, spec.nnz, symmetric=spec.symmetric, seed=seed)
        how = f"R-MAT a=0.57 b=0.19 c=0.19, {'undirected' if spec.symmetric else 'directed'}"
    else:
        offsets = [o for o in stencil_offsets(spec.n, spec.stencil) if spec.diagonal or o != 0]
        matrix = banded(spec.n, offsets=offsets, nnz=spec.nnz, seed=seed)
        how = (
            f"{spec.stencil} grid stencil{'' if spec.diagonal else ' without diagonal'}, "
            f"thinned in symmetric pairs"
        )
    return NamedMatrix(
        name=f"lookalike:{name}",
        matrix=matrix,
        synthetic=True,
        description=(
            f"synthetic look-alike of SuiteSparse {name} (n, nnz matched); not the real matrix. "
            f"Real: {spec.what}; look-alike: {how}, n={spec.n}, nnz={matrix.nnz}, seed={seed}"
        ),
    )


def _pyamg_example(name: str) -> NamedMatrix:
    """Matrix 'A' of a pyamg gallery example, values quantized as in `load_mtx`."""
    # Imported here: pyamg takes most of a second to import and only these sources need it.
    from pyamg.gallery import load_example

    matrix, value_note = _integer_csr(sp.csr_matrix(load_example(name)["A"]))
    return NamedMatrix(
        name=f"pyamg:{name}",
        matrix=matrix,
        synthetic=False,
        description=(
            f"real FEM/PDE matrix 'A' of pyamg.gallery.load_example({name!r}) "
            f"({_shape_text(matrix)}); {value_note}"
        ),
    )


def _networkx_graph(name: str) -> NamedMatrix:
    """Adjacency matrix of a networkx real graph, rows in the graph's node order."""
    import networkx as nx  # imported here: only these sources need it

    func_name, what = NETWORKX_GRAPHS[name]
    graph = getattr(nx, func_name)()
    # Edges without a weight attribute count 1; integer weights (interaction counts) are kept.
    adjacency = nx.to_scipy_sparse_array(graph, weight="weight", format="csr")
    matrix, value_note = _integer_csr(sp.csr_matrix(adjacency))
    return NamedMatrix(
        name=f"networkx:{name}",
        matrix=matrix,
        synthetic=False,
        description=(
            f"real graph: {what}; adjacency from networkx.{func_name}() "
            f"({_shape_text(matrix)}); {value_note}"
        ),
    )


def _check_generator_size(source: str, params: dict[str, object], limits: Limits) -> None:
    """Refuse a generator whose rows or nonzeros exceed the limits, before it allocates them."""

    def number(name: str, default: float = 0) -> float:
        value = params.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return default  # the generator says why
        if isinstance(value, int):
            return float(min(value, 2**1000))  # huge integers stay huge, without overflow
        return value if math.isfinite(value) else default

    rows = number("n_rows", number("n"))
    cols = number("n_cols", rows)
    if source == "uniform":
        nnz = number("nnz", number("density") * rows * cols)
    elif source == "banded":
        offsets = params.get("offsets")
        diagonals = len(offsets) if isinstance(offsets, list) else 27 if "stencil" in params else (
            2 * number("bandwidth") + 1)
        nnz = number("nnz", rows * diagonals)
    elif source == "block_diagonal":
        nnz = rows * number("block") * min(number("density", 1.0), 1.0)
    else:
        nnz = number("nnz")
    _check_size(f"matrix source {source!r}", max(rows, cols), nnz, limits)


def _check_size(what: str, rows: float, nnz: float, limits: Limits) -> None:
    if rows > limits.matrix_rows:
        raise SpecError(
            f"{what}: {rows:,.0f} rows or columns is above limits.matrix_rows = "
            f"{limits.matrix_rows:,}; raise 'limits: {{matrix_rows: ...}}' in the workload if meant"
        )
    if nnz > limits.matrix_nnz:
        raise SpecError(
            f"{what}: {nnz:,.0f} nonzeros is above limits.matrix_nnz = {limits.matrix_nnz:,} "
            f"(about {nnz * 24 / 2**30:,.1f} GiB); raise 'limits: {{matrix_nnz: ...}}' if meant"
        )


# Possessive quantifiers: no backtracking, so a body is checked at about 100 MB/s.
_INT = rb"[-+]?+[0-9]++"
_REAL = (rb"[-+]?+(?:[0-9]++\.?+[0-9]*+|\.[0-9]++)(?:[eEdD][-+]?+[0-9]++)?+"
         rb"|[-+]?+(?:[iI][nN][fF]|[nN][aA][nN])")
_VALUES = {"integer": (_INT,), "real": (_REAL,), "double": (_REAL,), "complex": (_REAL, _REAL),
           "pattern": ()}
_BLANK = re.compile(rb"^[ \t]*\r?\n", re.MULTILINE)


def _entry_pattern(layout: str, field: str) -> bytes:
    """One data line of a Matrix Market body (``coordinate``: two indices, then the values)."""
    tokens = ((_INT, _INT) if layout == "coordinate" else ()) + _VALUES.get(field, (_REAL,))
    return rb"[ \t]*+" + rb"[ \t]++".join(rb"(?>" + t + rb")" for t in tokens) + rb"[ \t]*+\r?+"


def _scan_body(path: Path, entries: int, layout: str, field: str) -> None:
    """Check every line of the body before scipy parses it.

    scipy's parser crashes the interpreter (a segmentation fault) on some malformed lines, a NUL
    byte or a last line like ``4 4 5t``, and truncates ``1.5`` in an ``integer`` file to ``1``
    without a word. Streams in chunks, so memory stays bounded; a file far longer than its
    header's entries (a gzip bomb, a wrong header) is refused instead of read for minutes.
    """
    entry = re.compile(_entry_pattern(layout, field))
    blank = re.compile(rb"[ \t]*+\r?+|%[^\n]*+")
    chunk_ok = re.compile(rb"(?:(?:" + entry.pattern + rb"|" + blank.pattern + rb")\n)*+")
    most = 200 * (entries + 1) + (1 << 20)  # an entry line is under 200 bytes
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    seen, lines, carry, header, found = 0, 0, b"", True, 0
    with opener(path, "rb") as fh:
        while True:
            data = fh.read(1 << 23)
            text = carry + data
            if not data:
                if not text:
                    break
                if text != text.rstrip():  # scipy's parser crashes on this one
                    last = lines + text.count(b"\n") + 1
                    raise SpecError(f"{path}:{last}: the last line ends in white space but no "
                                    f"newline; end the file with a newline")
                text += b"\n"  # the last line may lack its newline
            cut = text.rfind(b"\n") + 1
            text, carry = text[:cut], text[cut:]
            if header:  # banner, comments and the size line (mminfo has read them)
                skip = _header_end(text)
                lines, text, header = text.count(b"\n", 0, skip), text[skip:], False
            if not chunk_ok.fullmatch(text):
                _blame_line(path, text, lines, entry, blank, layout, field)
            lines += text.count(b"\n")
            # Every line is an entry, a comment or blank (just checked); the last two are rare.
            found += text.count(b"\n") - text.count(b"\n%") - len(re.findall(_BLANK, text))
            seen += len(data)
            if seen > most:
                raise SpecError(
                    f"{path}: more than {most:,} bytes of text for the {entries:,} entries its "
                    f"header declares; expected one entry per line"
                )
            if not data:
                break
    if found != entries:
        if found < entries:
            raise SpecError(f"{path}: truncated: {found:,} of the {entries:,} entries its header "
                            f"declares")
        raise SpecError(f"{path}: {found:,} entries, more than the {entries:,} its header declares")


def _blame_line(path: Path, text: bytes, lines: int, entry, blank, layout: str, field: str):
    """Raise the SpecError for the first line of ``text`` that is not an entry."""
    for number, line in enumerate(text.split(b"\n"), lines + 1):
        if entry.fullmatch(line) or blank.fullmatch(line):
            continue
        shown = line.decode(errors="replace").strip()
        if b"\0" in line:
            raise SpecError(f"{path}:{number}: NUL byte; expected Matrix Market text")
        if field == "integer" and re.fullmatch(_entry_pattern(layout, "real"), line):
            raise SpecError(
                f"{path}:{number}: entry {shown!r} is not an integer, but the header declares "
                f"'integer' values; fix the entry or declare the field 'real'"
            )
        raise SpecError(f"{path}:{number}: {shown[:60]!r} is not a {field} entry of this "
                        f"Matrix Market file")
    raise SpecError(f"{path}: not a valid Matrix Market body")  # pragma: no cover


_BANNER = re.compile(
    rb"%%MatrixMarket[ \t]++matrix[ \t]++(coordinate|array)[ \t]++"
    rb"(real|double|complex|integer|pattern)[ \t]++(general|symmetric|skew-symmetric|hermitian)"
    rb"[ \t]*+\r?+", re.IGNORECASE)
_SIZE = re.compile(rb"[ \t]*+([0-9]++)[ \t]++([0-9]++)(?:[ \t]++([0-9]++))?+[ \t]*+\r?+")


def _read_header(path: Path) -> tuple[int, int, int, str, str, str]:
    """``(rows, cols, entries, layout, field, symmetry)`` from the banner and the size line.

    Read here rather than by scipy, whose parser must only ever see a checked file.
    """
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as fh:
        head = fh.read(1 << 20)
    lines = head.split(b"\n")
    banner = _BANNER.fullmatch(lines[0])
    if banner is None:
        shown = lines[0][:60].decode(errors="replace")
        raise SpecError(f"{path}:1: expected the banner '%%MatrixMarket matrix <coordinate|array> "
                        f"<real|integer|complex|pattern> <general|symmetric|...>', got {shown!r}")
    layout, field, symmetry = (g.decode().lower() for g in banner.groups())
    number = next((i for i, line in enumerate(lines[1:], 1)
                   if line.strip() and not line.startswith(b"%")), None)
    size = _SIZE.fullmatch(lines[number]) if number is not None and number < len(lines) - 1 else None
    if size is None or (layout == "coordinate") != (size.group(3) is not None):
        want = "rows columns entries" if layout == "coordinate" else "rows columns"
        raise SpecError(f"{path}:{(number or 0) + 1}: expected the size line '{want}'")
    rows, cols = int(size.group(1)), int(size.group(2))
    entries = int(size.group(3)) if layout == "coordinate" else rows * cols
    if layout == "array" and symmetry != "general":  # one triangle (skew: without the diagonal)
        entries = rows * (rows + 1) // 2 if symmetry != "skew-symmetric" else rows * (rows - 1) // 2
    if field == "pattern" and layout == "array":
        raise SpecError(f"{path}:1: an 'array' file cannot be 'pattern'")
    return rows, cols, entries, layout, field, symmetry


def _header_end(text: bytes) -> int:
    """Offset just past the banner, the comments and the size line."""
    offset = 0
    for line in text.splitlines(keepends=True):
        offset += len(line)
        if line.strip() and not line.startswith(b"%"):
            return offset
    return offset


def _read_mtx(path: Path, limits: Limits | None = None) -> tuple[sp.csr_matrix, str]:
    """`load_mtx` plus a note on how the values were made integers."""
    limits = limits or Limits()
    if not path.is_file():
        raise SpecError(f"{path}: matrix file not found (expected a .mtx or .mtx.gz file)")
    try:
        rows, cols, entries, layout, field, symmetry = _read_header(path)
        # Symmetric files store one triangle; the matrix holds up to twice the entries.
        stored = entries * (1 if symmetry == "general" else 2)
        _check_size(f"{path}: header", max(rows, cols), stored, limits)
        _scan_body(path, entries, layout, field)
        raw = scipy.io.mmread(path)
    except (
        ValueError,
        OSError,
        EOFError,
        OverflowError,
        IndexError,
        zlib.error,
        gzip.BadGzipFile,
    ) as exc:
        reason = " ".join(str(exc).split())  # one line, whatever scipy put in the message
        raise SpecError(f"{path}: not a valid Matrix Market file: {reason}") from exc
    matrix = sp.csr_matrix(raw)  # sums duplicates, as the Matrix Market format intends
    matrix.eliminate_zeros()
    if not np.all(np.isfinite(matrix.data)):
        raise SpecError(f"{path}: expected finite values, got NaN or infinity in the file")
    if matrix.shape[0] == 0 or matrix.shape[1] == 0 or matrix.nnz == 0:
        raise SpecError(
            f"{path}: expected a matrix with at least one nonzero, got shape "
            f"{matrix.shape} with {matrix.nnz} nonzeros"
        )
    return _integer_csr(matrix)


def _integer_csr(matrix: sp.csr_matrix) -> tuple[sp.csr_matrix, str]:
    """Canonical int64 copy of `matrix` by the rule of `load_mtx`, and a note saying which rule."""
    matrix = matrix.copy()
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    matrix.sort_indices()
    data = matrix.data
    if np.iscomplexobj(data) and not np.any(data.imag):
        data = data.real
    if np.isrealobj(data):
        magnitude = np.abs(data)
        if data.size == 0 or (np.all(data == np.round(data)) and magnitude.max() <= _INT_KEEP_MAX):
            return _with_data(matrix, data.astype(np.int64)), "integer values kept as stored"
        sign = np.sign(data)
    else:
        magnitude = np.abs(data)
        sign = np.where(data.real != 0, np.sign(data.real), np.sign(data.imag))
    scaled = np.rint(VALUE_MAX * magnitude / magnitude.max())
    quantized = (sign * np.maximum(scaled, 1)).astype(np.int64)
    note = (
        f"values quantized to integers in [-{VALUE_MAX}, {VALUE_MAX}] by "
        f"sign(x)*max(1, rint({VALUE_MAX}*|x|/max|x|)), pattern kept"
    )
    return _with_data(matrix, quantized), note


def _with_data(matrix: sp.csr_matrix, data: np.ndarray) -> sp.csr_matrix:
    """`matrix` with its values replaced (same pattern)."""
    return sp.csr_matrix((data, matrix.indices, matrix.indptr), shape=matrix.shape)


def _canonical_csr(value: object, name: str) -> sp.csr_matrix:
    """`value` as CSR without duplicates or stored zeros; copies only when needed."""
    if sp.issparse(value) or (isinstance(value, np.ndarray) and value.ndim == 2):
        matrix = sp.csr_matrix(value)
    else:
        raise SpecError(
            f"matrix_stats: expected {name} as a scipy sparse matrix or 2-D numpy "
            f"array, got {type(value).__name__}"
        )
    if matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise SpecError(
            f"matrix_stats: expected {name} with at least one row and column, "
            f"got shape {matrix.shape}"
        )
    if not matrix.has_canonical_format or not np.all(matrix.data != 0):
        matrix = matrix.copy()
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
    return matrix


def _symbolic_nnz(a: sp.csr_matrix, b: sp.csr_matrix) -> int:
    """Structural nnz of a·b: distinct columns reached per row, summed over rows."""
    if _csr_matmat_maxnnz is None:
        return int((_pattern(a) @ _pattern(b)).nnz)
    # sparsetools needs one index dtype for all four arrays.
    index_dtype = np.promote_types(a.indices.dtype, b.indices.dtype)
    arrays = [x.astype(index_dtype, copy=False) for x in (a.indptr, a.indices, b.indptr, b.indices)]
    return int(_csr_matmat_maxnnz(a.shape[0], b.shape[1], *arrays))


def _pattern(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Boolean matrix with the pattern of `matrix`, sharing its index arrays."""
    ones = np.ones(matrix.nnz, dtype=bool)
    return sp.csr_matrix((ones, matrix.indices, matrix.indptr), shape=matrix.shape, copy=False)


def _expect_no_params(source: str, params: dict[str, object]) -> None:
    """Fixed matrices take no parameters; a stray one is probably meant for a generator."""
    if params:
        raise SpecError(f"matrix source {source!r} takes no parameters, got {sorted(params)}")


def _shape_text(matrix: sp.csr_matrix) -> str:
    """'n_rows x n_cols, nnz nonzeros' for descriptions."""
    return f"{matrix.shape[0]}x{matrix.shape[1]}, {matrix.nnz} nonzeros"


def _unknown_source_message(source: str) -> str:
    """One line: the unknown name, close matches, every known name, and the file option."""
    names = known_matrix_names()
    # A case slip ('lookalike:wiki-vote') is the likeliest typo, so it wins over fuzzy matches.
    folded = {name.lower(): name for name in names}
    close = difflib.get_close_matches(source.lower(), folded, n=1, cutoff=0.6)
    hint = f"did you mean {folded[close[0]]!r}? " if close else ""
    return (
        f"unknown matrix source {source!r}; {hint}expected one of {', '.join(names)}, "
        f"or a path ending in .mtx or .mtx.gz"
    )
