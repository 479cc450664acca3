"""Pareto fronts over design points (pure numpy, shared by the DSE summary and the plots)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["pareto_mask", "pareto_layers"]


def pareto_mask(values: np.ndarray, goals: Sequence[str]) -> np.ndarray:
    """Which rows of ``values`` (points × objectives) no other row dominates.

    A point dominates another when it is at least as good in every objective and strictly better
    in one; ``goals`` gives ``"min"`` or ``"max"`` per column. Rows with NaN are never on the
    front. Duplicated rows are all kept (neither dominates the other).
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(goals):
        raise ValueError(f"expected a (points, {len(goals)}) array, got shape {values.shape}")
    signs = np.array([1.0 if g == "min" else -1.0 for g in goals])
    v = values * signs  # every column minimized
    finite = np.isfinite(v).all(axis=1)
    mask = finite.copy()
    idx = np.flatnonzero(finite)
    pts = v[idx]
    for row, i in enumerate(idx):
        others = pts
        dominated = np.any(np.all(others <= pts[row], axis=1) & np.any(others < pts[row], axis=1))
        mask[i] = not dominated
    return mask


def pareto_layers(values: np.ndarray, goals: Sequence[str], enough: int | None = None) -> np.ndarray:
    """The non-dominated sorting of ``values``: per row, its layer (0: the front, 1: the front
    of the rest, …). Rows with NaN or inf come after every layer. With ``enough``, layers are
    peeled only until they hold that many rows; the rest get the next layer index.

    Two objectives take O(n log n) (rows sorted by the first, each placed in the first layer
    none of whose rows dominates it, found by bisection: whether a layer dominates a row is
    monotone in the layer); more peel :func:`pareto_mask` layer by layer.
    """
    values = np.asarray(values, dtype=float)
    signs = np.array([1.0 if g == "min" else -1.0 for g in goals])
    v = values * signs
    finite = np.isfinite(v).all(axis=1)
    layers = np.full(len(v), np.iinfo(np.int64).max, dtype=np.int64)
    idx = np.flatnonzero(finite)
    if len(goals) == 2:
        layers[idx] = _layers_2d(v[idx])
    else:
        layers[idx] = _peeled(v[idx], enough)
    last = layers[idx].max() + 1 if len(idx) else 0
    layers[~finite] = last
    return np.minimum(layers, last)


def _layers_2d(v: np.ndarray) -> np.ndarray:
    order = np.lexsort((v[:, 1], v[:, 0]))  # by x, then y
    best: list[tuple[float, float]] = []  # per layer, (least y, the least x with it)
    out = np.empty(len(v), dtype=np.int64)
    for i in order:
        x, y = v[i]
        lo, hi = 0, len(best)
        while lo < hi:  # the first layer that does not dominate (x, y)
            mid = (lo + hi) // 2
            by, bx = best[mid]
            if by < y or (by == y and bx < x):
                lo = mid + 1
            else:
                hi = mid
        if lo == len(best):
            best.append((y, x))
        elif y < best[lo][0]:
            best[lo] = (y, x)
        out[i] = lo
    return out


def _peeled(v: np.ndarray, enough: int | None) -> np.ndarray:
    out = np.full(len(v), -1, dtype=np.int64)
    left, layer, placed = np.arange(len(v)), 0, 0
    while len(left) and (enough is None or placed < enough):
        front = pareto_mask(v[left], ["min"] * v.shape[1])
        out[left[front]] = layer
        placed += int(front.sum())
        left, layer = left[~front], layer + 1
    out[left] = layer
    return out
