"""Pareto fronts over design points (pure numpy, shared by the DSE summary and the plots)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["pareto_mask"]


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
