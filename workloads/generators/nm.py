"""N:M masks, bidirectional (BDWP) masks and the compressed weight format.

The compressed format is shared by the scheduler, the SimPy model and the RTL: a weight matrix
W[K, N] pruned N:M along K (the reduction dimension) is stored as ``values[K*N/M, N]`` plus
``indices[K*N/M, N]`` where compressed row ``r`` holds the ``r % N``-th kept weight of group
``r // N`` and its position ``0 <= idx < M`` inside that group. Kept weights appear in increasing
index order, so the format is canonical (one W, one encoding).

Masks keep the top-N |w| of every group of M consecutive elements; ties go to the lower index
(a stable sort), so masks are deterministic across numpy versions and platforms.
"""

from __future__ import annotations

import numpy as np

from workloads.errors import SpecError

__all__ = [
    "nm_mask",
    "bdwp_masks",
    "compress_nm",
    "decompress_nm",
    "random_weights",
]


def _check(size: int, n: int, m: int, axis_name: str) -> None:
    if not 0 < n <= m:
        raise SpecError(f"n must satisfy 0 < n <= m, got n={n}, m={m}")
    if size % m:
        raise SpecError(f"{axis_name}={size} is not a multiple of m={m}")


def nm_mask(w: np.ndarray, n: int, m: int, axis: int = 0) -> np.ndarray:
    """Boolean mask keeping the top-N |w| in every group of M consecutive elements along ``axis``.

    Ties are broken by the lower index (stable sort on -|w|).
    """
    w = np.asarray(w)
    _check(w.shape[axis], n, m, f"axis {axis} size")
    moved = np.moveaxis(w, axis, -1)
    groups = np.abs(moved).reshape(*moved.shape[:-1], moved.shape[-1] // m, m)
    order = np.argsort(-groups, axis=-1, kind="stable")[..., :n]
    mask = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=-1)
    return np.moveaxis(mask.reshape(moved.shape), -1, axis)


def bdwp_masks(
    w: np.ndarray, n: int, m: int, bp_mask_source: str = "dense"
) -> tuple[np.ndarray, np.ndarray]:
    """FF and BP masks of a weight ``W[out, in]`` under bidirectional weight pruning.

    FF keeps N of M along ``in`` (axis 1); BP keeps N of M along ``out`` (axis 0), computed from
    the dense W or from the FF-masked W (``bp_mask_source``).
    """
    m_ff = nm_mask(w, n, m, axis=1)
    if bp_mask_source == "dense":
        source = w
    elif bp_mask_source == "forward_masked":
        source = np.where(m_ff, w, 0)
    else:
        raise SpecError(f"bp_mask_source must be 'dense' or 'forward_masked', got {bp_mask_source!r}")
    return m_ff, nm_mask(source, n, m, axis=0)


def compress_nm(w: np.ndarray, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Compress ``W[K, N]`` pruned N:M along K into (values, indices), both ``[K*n/m, N]``.

    The top-N of each group are kept (``nm_mask``), so ``w`` may be dense: compressing is pruning.
    """
    w = np.asarray(w)
    k, cols = w.shape
    mask = nm_mask(w, n, m, axis=0)
    groups = mask.reshape(k // m, m, cols)
    # Positions of the kept weights in increasing order: argsort of ~mask is stable, so kept
    # positions (False sorts first) come out ascending.
    idx = np.argsort(~groups, axis=1, kind="stable")[:, :n, :]
    values = np.take_along_axis(w.reshape(k // m, m, cols), idx, axis=1)
    return values.reshape(k // m * n, cols), idx.reshape(k // m * n, cols).astype(np.uint8)


def decompress_nm(values: np.ndarray, indices: np.ndarray, n: int, m: int) -> np.ndarray:
    """Inverse of :func:`compress_nm`: the dense, pruned ``W[K, N]``."""
    kc, cols = values.shape
    groups = kc // n
    dense = np.zeros((groups, m, cols), dtype=values.dtype)
    np.put_along_axis(
        dense, indices.reshape(groups, n, cols).astype(np.intp), values.reshape(groups, n, cols), 1
    )
    return dense.reshape(groups * m, cols)


def random_weights(shape: tuple[int, ...], bits: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform signed integers that fit in ``bits`` (two's complement), as int64."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return rng.integers(lo, hi, size=shape, endpoint=True, dtype=np.int64)
