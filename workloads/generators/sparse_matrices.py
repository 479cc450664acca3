"""Seeded sparse-matrix generators for SpGEMM workloads (C = A·B and C = A·A).

Every generator returns a canonical :class:`scipy.sparse.csr_matrix`: indices sorted within each
row, no duplicate entries, no explicitly stored zeros. Values are small signed integers drawn
uniformly from ``{-VALUE_MAX, ..., -1, 1, ..., VALUE_MAX}`` (zero excluded, so the stored pattern
is the true pattern) with dtype ``int64``. Integers keep the golden model of an integer datapath
bit-exact, and ``int64`` keeps ``A @ B`` in scipy free of overflow for any realistic row length.

The same ``seed`` always gives the same matrix. The pattern is drawn first and the values
afterwards, in CSR order, so a value never depends on how many draws the pattern needed.

Everything is vectorized numpy: a 100k-row R-MAT with a million nonzeros takes well under a
second. The generators validate their arguments and raise :class:`~workloads.errors.SpecError`
with a one-line message, because their arguments usually come from a user's workload file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from types import MappingProxyType

import numpy as np
import scipy.sparse as sp

from workloads.errors import SpecError

__all__ = [
    "STENCILS",
    "VALUE_MAX",
    "banded",
    "block_diagonal",
    "rmat",
    "stencil_offsets",
    "uniform_random",
]

VALUE_MAX = 8
"""Largest magnitude of a generated value; values lie in [-VALUE_MAX, VALUE_MAX] without 0."""

STENCILS: Mapping[str, tuple[int, str]] = MappingProxyType(
    {
        "2d5": (2, "star"),
        "2d9": (2, "box"),
        "3d7": (3, "star"),
        "3d27": (3, "box"),
    }
)
"""Grid stencils accepted by :func:`banded`: name -> (grid dimensions, neighbourhood shape)."""

# R-MAT rejects draws that fall outside an n that is not a power of two, or that repeat an
# earlier edge; a handful of rounds always suffices for sparse requests, so a request that still
# falls short after this many rounds is too dense for R-MAT and is reported instead of spinning.
_RMAT_MAX_ROUNDS = 32


def uniform_random(
    n_rows: int,
    n_cols: int,
    density: float | None = None,
    nnz: int | None = None,
    *,
    seed: int = 0,
) -> sp.csr_matrix:
    """Uniformly random sparse matrix with an exact number of nonzeros.

    Parameters
    ----------
    n_rows, n_cols : int
        Shape of the matrix (both >= 1).
    density : float, optional
        Fraction of positions that are nonzero, in [0, 1]; the count is
        ``round(density * n_rows * n_cols)``. Give exactly one of `density` and `nnz`.
    nnz : int, optional
        Exact number of nonzeros, at most ``n_rows * n_cols``.
    seed : int
        Seed of the numpy random generator.

    Returns
    -------
    scipy.sparse.csr_matrix
        Canonical CSR with ``int64`` values in [-VALUE_MAX, VALUE_MAX] without 0.

    Raises
    ------
    SpecError
        If an argument is out of range or both/neither of `density` and `nnz` are given.
    """
    func = "uniform_random"
    n_rows = _check_int(n_rows, "n_rows", func, minimum=1)
    n_cols = _check_int(n_cols, "n_cols", func, minimum=1)
    total = n_rows * n_cols
    count = _nnz_from(density, nnz, total, func)
    rng = _rng(seed, func)
    # Sampling flat positions without replacement gives the exact count and sorted keys are
    # already in CSR order; numpy uses a hash set here, so this stays cheap for huge shapes.
    keys = np.sort(rng.choice(total, size=count, replace=False, shuffle=False))
    return _csr_from_keys(keys, n_rows, n_cols, _random_values(rng, count))


def rmat(
    n: int,
    nnz: int,
    a: float = 0.57,
    b: float = 0.19,
    c: float = 0.19,
    *,
    symmetric: bool = False,
    seed: int = 0,
) -> sp.csr_matrix:
    """R-MAT power-law graph adjacency matrix with exactly `nnz` nonzeros.

    Each edge picks one quadrant per recursion level with probabilities ``a`` (top left), ``b``
    (top right), ``c`` (bottom left) and ``d = 1 - a - b - c`` (bottom right), as in Chakrabarti
    et al., "R-MAT: A Recursive Model for Graph Mining" (SDM 2004); the defaults are the
    Graph500 parameters. For an `n` that is not a power of two the recursion runs on the next
    power of two and edges outside ``n`` are rejected. Repeated edges are dropped and more edges
    are drawn until `nnz` distinct ones have appeared; the first `nnz` distinct edges in draw
    order are kept, so the count is exact and the degree distribution is that of the process.

    Parameters
    ----------
    n : int
        Number of vertices (rows and columns), >= 1.
    nnz : int
        Exact number of nonzeros. With `symmetric` it counts both (i, j) and (j, i), so it must
        be even.
    a, b, c : float
        Quadrant probabilities; each >= 0 and ``a + b + c <= 1``.
    symmetric : bool
        Make an undirected simple graph: the pattern and the values are symmetric and the
        diagonal is empty (no self-loops). Otherwise edges are directed and self-loops may occur.
    seed : int
        Seed of the numpy random generator.

    Returns
    -------
    scipy.sparse.csr_matrix
        Canonical ``n x n`` CSR with ``int64`` values in [-VALUE_MAX, VALUE_MAX] without 0.

    Raises
    ------
    SpecError
        If an argument is out of range, or `nnz` is so close to ``n * n`` that R-MAT cannot
        reach it.
    """
    func = "rmat"
    n = _check_int(n, "n", func, minimum=1)
    nnz = _check_int(nnz, "nnz", func, minimum=0)
    probs = [_check_real(p, name, func, 0.0, 1.0) for p, name in ((a, "a"), (b, "b"), (c, "c"))]
    if sum(probs) > 1.0 + 1e-12:
        raise SpecError(
            f"{func}: expected a + b + c <= 1 (d = 1 - a - b - c), got a={a!r}, b={b!r}, c={c!r}"
        )
    symmetric = _check_bool(symmetric, "symmetric", func)
    capacity = n * (n - 1) if symmetric else n * n
    if nnz > capacity:
        raise SpecError(f"{func}: nnz={nnz} exceeds the {capacity} positions of an n={n} graph")
    if symmetric and nnz % 2:
        raise SpecError(f"{func}: a symmetric graph has an even nnz (i, j and j, i), got {nnz}")
    rng = _rng(seed, func)
    target = nnz // 2 if symmetric else nnz
    keys = _rmat_distinct_keys(rng, n, target, probs, symmetric)
    values = _random_values(rng, target)
    if not symmetric:
        return _csr_from_keys(keys, n, n, values)
    # Mirror the strict upper triangle; the mirrored copy breaks row-major order, so re-sort.
    rows, cols = np.divmod(keys, n)
    full = np.concatenate([keys, cols * n + rows])
    order = np.argsort(full, kind="stable")
    return _csr_from_keys(full[order], n, n, np.concatenate([values, values])[order])


def stencil_offsets(n: int, stencil: str) -> tuple[int, ...]:
    """Diagonal offsets of a grid stencil laid out row-major in an ``n x n`` matrix.

    The grid is the smallest hypercube with at least `n` points (side ``ceil(n ** (1/dim))``);
    a neighbour at grid step ``(dx, dy, dz)`` becomes the diagonal ``dx + dy*side + dz*side**2``.
    Rows near the end of a grid line therefore wrap into the next line, which a real mesh would
    not do; for workload statistics (row lengths, bandwidth, reuse in A·A) this is immaterial.

    Parameters
    ----------
    n : int
        Matrix order, >= 1.
    stencil : str
        One of ``STENCILS``: ``"2d5"``, ``"2d9"``, ``"3d7"``, ``"3d27"``.

    Returns
    -------
    tuple of int
        Sorted, distinct offsets with ``|offset| < n`` (always including 0).

    Raises
    ------
    SpecError
        If `stencil` is unknown or `n` is not a positive integer.
    """
    func = "stencil_offsets"
    n = _check_int(n, "n", func, minimum=1)
    if stencil not in STENCILS:
        raise SpecError(f"{func}: expected a stencil in {sorted(STENCILS)}, got {stencil!r}")
    dim, shape = STENCILS[stencil]
    side = max(1, round(n ** (1.0 / dim)))
    while side**dim < n:  # guard the float root against rounding down
        side += 1
    strides = np.array([side**i for i in range(dim)], dtype=np.int64)
    if shape == "star":
        steps = np.vstack(
            [
                np.zeros(dim, dtype=np.int64),
                np.eye(dim, dtype=np.int64),
                -np.eye(dim, dtype=np.int64),
            ]
        )
    else:
        steps = np.array(np.meshgrid(*([[-1, 0, 1]] * dim))).reshape(dim, -1).T
    offsets = {int(o) for o in steps @ strides if abs(int(o)) < n}
    return tuple(sorted(offsets))


def banded(
    n: int,
    *,
    bandwidth: int | None = None,
    offsets: Sequence[int] | None = None,
    stencil: str | None = None,
    nnz: int | None = None,
    seed: int = 0,
) -> sp.csr_matrix:
    """Banded or stencil matrix, the shape of FEM, finite-difference and circuit matrices.

    Give exactly one of `bandwidth`, `offsets` and `stencil`. With `nnz`, the band is thinned
    at random to exactly `nnz` entries; when the offsets are symmetric (``d`` present iff ``-d``
    is) entries are dropped in mirrored pairs and the diagonal is kept, so the pattern stays
    structurally symmetric like an FEM matrix (if `nnz` has the wrong parity for pairs, one
    diagonal entry is dropped; with no diagonal, one mirror entry).

    Parameters
    ----------
    n : int
        Matrix order, >= 1.
    bandwidth : int, optional
        Half bandwidth ``w``: the diagonals ``-w .. w`` (``0 <= w < n``).
    offsets : sequence of int, optional
        Diagonals to fill (``|offset| < n``); 0 is the main diagonal, +1 the first superdiagonal.
    stencil : str, optional
        A grid stencil from ``STENCILS``, turned into offsets by :func:`stencil_offsets`.
    nnz : int, optional
        Exact number of nonzeros after thinning; at most the number of positions in the band.
    seed : int
        Seed of the numpy random generator.

    Returns
    -------
    scipy.sparse.csr_matrix
        Canonical ``n x n`` CSR with ``int64`` values in [-VALUE_MAX, VALUE_MAX] without 0.
        Values are independent per entry, so the values are not symmetric.

    Raises
    ------
    SpecError
        If an argument is out of range, or not exactly one band description is given.
    """
    func = "banded"
    n = _check_int(n, "n", func, minimum=1)
    given = [
        name
        for name, v in (("bandwidth", bandwidth), ("offsets", offsets), ("stencil", stencil))
        if v is not None
    ]
    if len(given) != 1:
        raise SpecError(
            f"{func}: expected exactly one of bandwidth, offsets, stencil, got {given or 'none'}"
        )
    if bandwidth is not None:
        width = _check_int(bandwidth, "bandwidth", func, minimum=0)
        if width >= n:
            raise SpecError(f"{func}: expected bandwidth < n={n}, got {width}")
        offs = np.arange(-width, width + 1, dtype=np.int64)
    elif stencil is not None:
        offs = np.array(stencil_offsets(n, stencil), dtype=np.int64)
    else:
        offs = _check_offsets(offsets, n, func)
    rng = _rng(seed, func)
    # Row-major enumeration of the band: sorted offsets per row give sorted keys without a sort.
    rows = np.repeat(np.arange(n, dtype=np.int64), offs.size)
    cols = rows + np.tile(offs, n)
    inside = (cols >= 0) & (cols < n)
    keys = rows[inside] * n + cols[inside]
    if nnz is not None:
        nnz = _check_int(nnz, "nnz", func, minimum=0)
        if nnz > keys.size:
            raise SpecError(f"{func}: nnz={nnz} exceeds the {keys.size} positions of the band")
        if set(offs.tolist()) == set((-offs).tolist()):
            keys = _thin_symmetric(rng, keys, n, nnz)
        else:
            keys = keys[np.sort(rng.choice(keys.size, size=nnz, replace=False, shuffle=False))]
    return _csr_from_keys(keys, n, n, _random_values(rng, keys.size))


def block_diagonal(
    n: int,
    block: int,
    density: float = 1.0,
    *,
    seed: int = 0,
) -> sp.csr_matrix:
    """Block-diagonal matrix with uniformly random blocks, like a batch of independent problems.

    Parameters
    ----------
    n : int
        Matrix order, >= 1.
    block : int
        Block size, ``1 <= block <= n``; the last block is smaller when `block` does not divide
        `n`.
    density : float
        Fraction of the positions inside the blocks that are nonzero, in [0, 1]; the count is
        ``round(density * sum(size**2))`` and is spread uniformly over all blocks together.
    seed : int
        Seed of the numpy random generator.

    Returns
    -------
    scipy.sparse.csr_matrix
        Canonical ``n x n`` CSR with ``int64`` values in [-VALUE_MAX, VALUE_MAX] without 0.

    Raises
    ------
    SpecError
        If an argument is out of range.
    """
    func = "block_diagonal"
    n = _check_int(n, "n", func, minimum=1)
    block = _check_int(block, "block", func, minimum=1)
    if block > n:
        raise SpecError(f"{func}: expected block <= n={n}, got {block}")
    starts = np.arange(0, n, block, dtype=np.int64)
    sizes = np.minimum(block, n - starts)
    area_start = np.concatenate([[0], np.cumsum(sizes * sizes)])
    count = _nnz_from(density, None, int(area_start[-1]), func)
    rng = _rng(seed, func)
    # Sample flat positions inside the blocks, then map each to (block, local row, local col);
    # blocks are in diagonal order, so sorted flat positions are already row-major.
    flat = np.sort(rng.choice(int(area_start[-1]), size=count, replace=False, shuffle=False))
    blk = np.searchsorted(area_start, flat, side="right") - 1
    local_row, local_col = np.divmod(flat - area_start[blk], sizes[blk])
    keys = (starts[blk] + local_row) * n + starts[blk] + local_col
    return _csr_from_keys(keys, n, n, _random_values(rng, count))


def _rmat_distinct_keys(
    rng: np.random.Generator, n: int, target: int, probs: list[float], symmetric: bool
) -> np.ndarray:
    """Sorted flat keys (row * n + col) of the first `target` distinct R-MAT edges."""
    if target == 0:
        return np.zeros(0, dtype=np.int64)
    draws: list[np.ndarray] = []
    drawn = found = 0
    for _ in range(_RMAT_MAX_ROUNDS):
        # Size each round by the yield seen so far, with 10% slack, so that most requests
        # finish in one or two rounds.
        yield_rate = found / drawn if drawn else 1.0
        batch = int((target - found) / max(yield_rate, 1e-3) * 1.1) + 64
        draws.append(_rmat_edges(rng, n, batch, probs, symmetric))
        drawn += batch
        found = _count_distinct(np.concatenate(draws))
        if found >= target:
            break
    else:
        raise SpecError(
            f"rmat: could not reach {target} distinct edges for n={n} after {drawn} draws "
            f"(found {found}); ask for fewer nonzeros or use uniform_random for dense matrices"
        )
    unique, first_seen = np.unique(np.concatenate(draws), return_index=True)
    cutoff = np.partition(first_seen, target - 1)[target - 1]
    return unique[first_seen <= cutoff]


def _count_distinct(keys: np.ndarray) -> int:
    """Number of distinct values; sort + diff is several times faster than np.unique here."""
    if keys.size == 0:
        return 0
    ordered = np.sort(keys)
    return 1 + int(np.count_nonzero(ordered[1:] != ordered[:-1]))


def _rmat_edges(
    rng: np.random.Generator, n: int, count: int, probs: list[float], symmetric: bool
) -> np.ndarray:
    """Flat keys of `count` R-MAT draws; rejected draws are removed, so fewer may return."""
    a, b, c = probs
    scale = (n - 1).bit_length()
    rows = np.zeros(count, dtype=np.int64)
    cols = np.zeros(count, dtype=np.int64)
    for _ in range(scale):
        u = rng.random(count)
        rows = 2 * rows + (u >= a + b)
        cols = 2 * cols + (((u >= a) & (u < a + b)) | (u >= a + b + c))
    keep = (rows < n) & (cols < n)
    rows, cols = rows[keep], cols[keep]
    if symmetric:
        # Fold onto the strict upper triangle: an undirected edge is stored once here and
        # mirrored at the end; self-loops are not edges of a simple graph.
        upper = rows != cols
        rows, cols = rows[upper], cols[upper]
        rows, cols = np.minimum(rows, cols), np.maximum(rows, cols)
    return rows * n + cols


def _thin_symmetric(rng: np.random.Generator, keys: np.ndarray, n: int, nnz: int) -> np.ndarray:
    """Random `nnz`-subset of a symmetric pattern that keeps it symmetric (see `banded`)."""
    rows, cols = np.divmod(keys, n)
    diag = keys[rows == cols]
    upper = keys[cols > rows]
    extra = nnz - diag.size
    if extra < 0:
        return np.sort(rng.choice(diag, size=nnz, replace=False, shuffle=False))
    n_pairs = (extra + 1) // 2
    chosen = rng.choice(upper, size=n_pairs, replace=False, shuffle=False)
    up_rows, up_cols = np.divmod(chosen, n)
    mirrored = up_cols * n + up_rows
    if extra % 2:
        # One pair too many for an odd count: drop one diagonal entry, else one mirror entry.
        if diag.size:
            diag = np.delete(diag, rng.integers(diag.size))
        else:
            mirrored = mirrored[1:]
    return np.sort(np.concatenate([diag, chosen, mirrored]))


def _csr_from_keys(keys: np.ndarray, n_rows: int, n_cols: int, data: np.ndarray) -> sp.csr_matrix:
    """CSR from strictly increasing flat keys (row * n_cols + col) and matching values."""
    rows, cols = np.divmod(keys, n_cols)
    index_dtype = np.int32 if max(n_rows, n_cols, keys.size) < 2**31 else np.int64
    indptr = np.zeros(n_rows + 1, dtype=index_dtype)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return sp.csr_matrix(
        (data.astype(np.int64, copy=False), cols.astype(index_dtype), indptr),
        shape=(n_rows, n_cols),
    )


def _random_values(rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` values uniform over {-VALUE_MAX, ..., -1, 1, ..., VALUE_MAX}."""
    values = rng.integers(-VALUE_MAX, VALUE_MAX, size=count, dtype=np.int64)
    values[values >= 0] += 1  # shift 0..VALUE_MAX-1 up to 1..VALUE_MAX: 2*VALUE_MAX equal bins
    return values


def _nnz_from(density: object, nnz: object, total: int, func: str) -> int:
    """Exact nonzero count from exactly one of a density and a count."""
    if (density is None) == (nnz is None):
        raise SpecError(
            f"{func}: expected exactly one of density and nnz, got density={density!r}, nnz={nnz!r}"
        )
    if nnz is not None:
        count = _check_int(nnz, "nnz", func, minimum=0)
        if count > total:
            raise SpecError(f"{func}: nnz={count} exceeds the {total} positions available")
        return count
    return round(_check_real(density, "density", func, 0.0, 1.0) * total)


def _check_offsets(offsets: object, n: int, func: str) -> np.ndarray:
    """Sorted distinct diagonal offsets, each inside an n x n matrix."""
    if isinstance(offsets, (str, bytes)) or not isinstance(offsets, Sequence) or not offsets:
        raise SpecError(
            f"{func}: expected offsets as a non-empty list of integers, got {offsets!r}"
        )
    values = [_check_int(o, "offsets[]", func, minimum=-(n - 1)) for o in offsets]
    outside = [o for o in values if o >= n]
    if outside:
        raise SpecError(
            f"{func}: expected offsets in [-{n - 1}, {n - 1}] for n={n}, got {outside[0]}"
        )
    return np.array(sorted(set(values)), dtype=np.int64)


def _check_int(value: object, name: str, func: str, *, minimum: int) -> int:
    """`value` as a Python int >= minimum; bools and floats are rejected, not truncated."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise SpecError(f"{func}: expected {name} to be an integer, got {value!r}")
    if value < minimum:
        raise SpecError(f"{func}: expected {name} >= {minimum}, got {value!r}")
    return int(value)


def _check_real(value: object, name: str, func: str, low: float, high: float) -> float:
    """`value` as a finite float in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise SpecError(f"{func}: expected {name} to be a number, got {value!r}")
    if not low <= value <= high:
        raise SpecError(f"{func}: expected {name} in [{low}, {high}], got {value!r}")
    return float(value)


def _check_bool(value: object, name: str, func: str) -> bool:
    """`value` if it is a bool (YAML's true/false), never a truthy integer or string."""
    if not isinstance(value, (bool, np.bool_)):
        raise SpecError(f"{func}: expected {name} to be true or false, got {value!r}")
    return bool(value)


def _rng(seed: object, func: str) -> np.random.Generator:
    """Numpy generator for a non-negative integer seed."""
    return np.random.default_rng(_check_int(seed, "seed", func, minimum=0))
