"""N:M masks, BDWP masks and the compressed format (property tests)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from workloads.arith import index_bits
from workloads.errors import SpecError
from workloads.generators.nm import bdwp_masks, compress_nm, decompress_nm, nm_mask

PATTERNS = [(1, 2), (2, 4), (1, 4), (3, 4), (2, 8), (1, 8), (4, 8), (4, 16)]


@st.composite
def weights_and_pattern(draw):
    n, m = draw(st.sampled_from(PATTERNS))
    rows = m * draw(st.integers(1, 4))
    cols = m * draw(st.integers(1, 3))
    w = draw(arrays(np.int64, (rows, cols), elements=st.integers(-8, 8)))
    return w, n, m


@settings(max_examples=60, deadline=None)
@given(weights_and_pattern(), st.sampled_from([0, 1]))
def test_every_group_keeps_exactly_n(case, axis):
    w, n, m = case
    mask = nm_mask(w, n, m, axis=axis)
    groups = np.moveaxis(mask, axis, -1).reshape(-1, m)
    assert (groups.sum(axis=1) == n).all()
    # The kept weights are the largest in magnitude: no dropped |w| exceeds a kept one.
    mags = np.moveaxis(np.abs(w), axis, -1).reshape(-1, m)
    kept_min = np.where(groups, mags, np.inf).min(axis=1)
    dropped_max = np.where(groups, -np.inf, mags).max(axis=1)
    assert (dropped_max <= kept_min).all()


@settings(max_examples=60, deadline=None)
@given(weights_and_pattern(), st.sampled_from(["dense", "forward_masked"]))
def test_bdwp_masks_are_nm_in_both_directions(case, source):
    w, n, m = case
    m_ff, m_bp = bdwp_masks(w, n, m, source)
    assert (m_ff.reshape(w.shape[0], -1, m).sum(-1) == n).all()  # along `in` (axis 1)
    assert (m_bp.T.reshape(w.shape[1], -1, m).sum(-1) == n).all()  # along `out` (axis 0)


@settings(max_examples=60, deadline=None)
@given(weights_and_pattern())
def test_compress_round_trip(case):
    w, n, m = case
    values, idx = compress_nm(w, n, m)
    assert values.shape == (w.shape[0] // m * n, w.shape[1])
    assert (idx < m).all()
    # Indices ascend inside each group: the format is canonical.
    assert (np.diff(idx.reshape(-1, n, w.shape[1]).astype(int), axis=1) > 0).all()
    assert (decompress_nm(values, idx, n, m) == np.where(nm_mask(w, n, m, 0), w, 0)).all()


def test_ties_go_to_the_lower_index():
    w = np.array([[3], [-3], [3], [1]])
    assert nm_mask(w, 2, 4, axis=0).ravel().tolist() == [True, True, False, False]
    values, idx = compress_nm(w, 1, 4)
    assert values.ravel().tolist() == [3] and idx.ravel().tolist() == [0]


def test_bad_arguments():
    with pytest.raises(SpecError, match="n must satisfy 0 < n <= m, got n=5, m=4"):
        nm_mask(np.zeros((4, 4)), 5, 4)
    with pytest.raises(SpecError, match="axis 0 size=6 is not a multiple of m=4"):
        nm_mask(np.zeros((6, 4)), 2, 4)


def test_index_bits():
    assert [index_bits(m) for m in (2, 4, 8, 16)] == [1, 2, 3, 4]
