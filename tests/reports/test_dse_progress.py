"""Issue 15 part 8: the sweep's ETA is the mean pace since the start, not a burst's."""

from __future__ import annotations

import pytest

from reports.cli import eta_seconds


def test_eta_is_remaining_points_at_the_mean_pace():
    assert eta_seconds(0, 96, 5.0) is None  # nothing to go by yet
    assert eta_seconds(12, 96, 6.0) == pytest.approx(84 * 0.5)
    assert eta_seconds(96, 96, 40.0) == 0.0
    # A chunk of 8 points landing at once after 8 s of work: still 1 s a point, not 8/s.
    assert eta_seconds(8, 24, 8.0) == pytest.approx(16.0)
