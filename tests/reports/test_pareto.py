"""Pareto fronts."""

from __future__ import annotations

import numpy as np
import pytest

from reports.pareto import pareto_layers, pareto_mask


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


def _peel(values, goals):
    """Non-dominated sorting by definition: the front, then the front of the rest, …"""
    layers, left, k = np.full(len(values), -1), np.arange(len(values)), 0
    while len(left):
        front = pareto_mask(values[left], goals)
        if not front.any():  # only rows with NaN left: after every layer
            break
        layers[left[front]], left, k = k, left[~front], k + 1
    layers[left] = k
    return layers


@pytest.mark.parametrize("objectives", [2, 3])
def test_pareto_layers_are_the_peeled_fronts(objectives):
    rng = np.random.default_rng(objectives)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        values = rng.integers(0, 5, (n, objectives)).astype(float)  # many ties and duplicates
        values[rng.random(n) < 0.05, 0] = np.nan
        goals = [str(rng.choice(["min", "max"])) for _ in range(objectives)]
        assert (pareto_layers(values, goals) == _peel(values, goals)).all()


def test_pareto_layers_stop_peeling_when_enough():
    values = np.array([[i, i] for i in range(6)], dtype=float)  # six layers of one point
    assert pareto_layers(values, ["min", "min"]).tolist() == [0, 1, 2, 3, 4, 5]
    three = np.column_stack([values, values[:, 0]])
    assert pareto_layers(three, ["min"] * 3, enough=2).tolist() == [0, 1, 2, 2, 2, 2]
