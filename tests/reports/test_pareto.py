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


def test_a_text_valued_axis_gets_one_marker_per_value(tmp_path):
    """A sweep over ``array.dataflow`` shows which designs are which on the Pareto plot."""
    from reports.inputs import SweepData
    from reports.plots import sweep_plots
    from reports.store import PointRow
    rows = [PointRow(f"h{i}", {"hardware.array.dataflow": df, "hardware.array.rows": r},
                     "ok", metrics={"cycles": float(10 * r + i), "area": float(r + i)})
            for i, (df, r) in enumerate([("weight_stationary", 4), ("output_stationary", 4),
                                          ("weight_stationary", 8), ("output_stationary", 8)])]
    sweep = SweepData(tmp_path, "s", {
        "axes": [{"key": "hardware.array.dataflow", "name": "dataflow"},
                 {"key": "hardware.array.rows", "name": "rows"}],
        "objectives": [{"metric": "cycles", "goal": "min"}, {"metric": "area", "goal": "min"}]},
        rows)
    [pareto] = [p for p in sweep_plots(sweep) if p.name.endswith("_pareto")]
    labels = [t.get_text() for t in pareto.figure.axes[0].get_legend().get_texts()]
    assert "dataflow = output_stationary (2)" in labels
    assert "dataflow = weight_stationary (2)" in labels
