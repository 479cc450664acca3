"""Pareto fronts."""

from __future__ import annotations

import numpy as np
import pytest

from reports.pareto import pareto_mask


def test_minimize_both():
    pts = np.array([[1, 5], [2, 2], [5, 1], [3, 3], [2, 2], [6, 6]])
    assert pareto_mask(pts, ["min", "min"]).tolist() == [True, True, True, False, True, False]


def test_mixed_goals_and_nan():
    # Minimize latency, maximize throughput: (1, 10) dominates (2, 5); NaN is never on the front.
    pts = np.array([[1, 10], [2, 5], [0.5, 1], [np.nan, 100]])
    assert pareto_mask(pts, ["min", "max"]).tolist() == [True, False, True, False]


def test_shape_is_checked():
    with pytest.raises(ValueError, match=r"expected a \(points, 2\) array"):
        pareto_mask(np.zeros((3, 3)), ["min", "min"])
