"""Tests of workloads/generators/sparse_matrices.py: shape, exact nnz, canonical CSR, seeds."""

from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from workloads.errors import SpecError
from workloads.generators.sparse_matrices import (
    VALUE_MAX,
    banded,
    block_diagonal,
    rmat,
    stencil_offsets,
    uniform_random,
)

FAST = settings(max_examples=40, deadline=None)


def assert_canonical(matrix: sp.csr_matrix, shape: tuple[int, int]) -> None:
    """CSR with sorted unique indices per row, no stored zeros, int64 values in range."""
    assert isinstance(matrix, sp.csr_matrix)
    assert matrix.shape == shape
    assert matrix.data.dtype == np.int64
    assert matrix.indptr[0] == 0 and matrix.indptr[-1] == matrix.nnz
    assert np.all(np.diff(matrix.indptr) >= 0)
    # Flat keys strictly increase iff every row is sorted and duplicate-free.
    rows = np.repeat(np.arange(shape[0]), np.diff(matrix.indptr))
    keys = rows.astype(np.int64) * shape[1] + matrix.indices
    assert np.all(np.diff(keys) > 0)
    assert np.all((matrix.indices >= 0) & (matrix.indices < shape[1]))
    assert np.all(matrix.data != 0)
    assert np.all(np.abs(matrix.data) <= VALUE_MAX)


def assert_same(a: sp.csr_matrix, b: sp.csr_matrix) -> None:
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)


def pattern_symmetric(matrix: sp.csr_matrix) -> bool:
    pattern = matrix.astype(bool)
    return (pattern != pattern.T).nnz == 0


# -- uniform_random ---------------------------------------------------------------------------


@FAST
@given(
    n_rows=st.integers(1, 40),
    n_cols=st.integers(1, 40),
    fraction=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32),
)
def test_uniform_random_exact_nnz_and_canonical(n_rows, n_cols, fraction, seed):
    nnz = round(fraction * n_rows * n_cols)
    matrix = uniform_random(n_rows, n_cols, nnz=nnz, seed=seed)
    assert_canonical(matrix, (n_rows, n_cols))
    assert matrix.nnz == nnz
    assert_same(matrix, uniform_random(n_rows, n_cols, nnz=nnz, seed=seed))


def test_uniform_random_density_rounds_to_count():
    matrix = uniform_random(300, 200, density=0.01, seed=1)
    assert matrix.nnz == 600  # round(0.01 * 300 * 200)
    assert_canonical(matrix, (300, 200))


def test_uniform_random_values_cover_both_signs_without_zero():
    values = uniform_random(100, 100, nnz=5000, seed=0).data
    assert set(np.unique(values)) == set(range(-VALUE_MAX, 0)) | set(range(1, VALUE_MAX + 1))


def test_uniform_random_seed_changes_matrix():
    a = uniform_random(50, 50, nnz=100, seed=0)
    b = uniform_random(50, 50, nnz=100, seed=1)
    assert (a != b).nnz > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"density": 0.1, "nnz": 3}, r"uniform_random: expected exactly one of density and nnz"),
        ({}, r"uniform_random: expected exactly one of density and nnz"),
        ({"nnz": 101}, r"uniform_random: nnz=101 exceeds the 100 positions available"),
        ({"density": 1.5}, r"uniform_random: expected density in \[0.0, 1.0\], got 1.5"),
        ({"nnz": 2.0}, r"uniform_random: expected nnz to be an integer, got 2.0"),
        ({"nnz": 3, "seed": -1}, r"uniform_random: expected seed >= 0, got -1"),
    ],
)
def test_uniform_random_rejects_bad_arguments(kwargs, message):
    with pytest.raises(SpecError, match=message):
        uniform_random(10, 10, **kwargs)


# -- rmat -------------------------------------------------------------------------------------


@FAST
@given(n=st.integers(1, 60), fraction=st.floats(0.0, 0.3), seed=st.integers(0, 2**32))
def test_rmat_exact_nnz_and_canonical(n, fraction, seed):
    nnz = round(fraction * n * n)
    matrix = rmat(n, nnz, seed=seed)
    assert_canonical(matrix, (n, n))
    assert matrix.nnz == nnz
    assert_same(matrix, rmat(n, nnz, seed=seed))


@FAST
@given(n=st.integers(2, 60), fraction=st.floats(0.0, 0.3), seed=st.integers(0, 2**32))
def test_rmat_symmetric_is_an_undirected_simple_graph(n, fraction, seed):
    nnz = 2 * round(fraction * n * (n - 1) / 2)
    matrix = rmat(n, nnz, symmetric=True, seed=seed)
    assert_canonical(matrix, (n, n))
    assert matrix.nnz == nnz
    assert (matrix != matrix.T).nnz == 0  # values too, not only the pattern
    assert not matrix.diagonal().any()


def test_rmat_is_skewed_like_a_power_law():
    row_nnz = np.diff(rmat(10_000, 100_000, seed=0).indptr)
    # A uniform graph of mean degree 10 has no row near 100; R-MAT hubs are far beyond that.
    assert row_nnz.max() > 20 * row_nnz.mean()
    assert np.median(row_nnz) < row_nnz.mean()


def test_rmat_seed_changes_matrix():
    assert (rmat(1000, 5000, seed=0) != rmat(1000, 5000, seed=1)).nnz > 0


def test_rmat_100k_rows_1m_nnz_is_fast():
    start = time.perf_counter()
    matrix = rmat(100_000, 1_000_000, seed=0)
    elapsed = time.perf_counter() - start
    assert matrix.nnz == 1_000_000
    assert elapsed < 5.0, f"rmat(100k, 1M) took {elapsed:.2f} s; the budget is 5 s"


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((4, 17), {}, r"rmat: nnz=17 exceeds the 16 positions of an n=4 graph"),
        ((4, 13), {"symmetric": True}, r"rmat: nnz=13 exceeds the 12 positions"),
        ((4, 5), {"symmetric": True}, r"rmat: a symmetric graph has an even nnz .*got 5"),
        ((4, 5), {"a": 0.6, "b": 0.3, "c": 0.2}, r"rmat: expected a \+ b \+ c <= 1"),
        ((4, 5), {"a": -0.1}, r"rmat: expected a in \[0.0, 1.0\], got -0.1"),
        ((True, 5), {}, r"rmat: expected n to be an integer, got True"),
        ((0, 0), {}, r"rmat: expected n >= 1, got 0"),
        ((4, 5), {"symmetric": 1}, r"rmat: expected symmetric to be true or false, got 1"),
    ],
)
def test_rmat_rejects_bad_arguments(args, kwargs, message):
    with pytest.raises(SpecError, match=message):
        rmat(*args, **kwargs)


def test_rmat_reports_requests_too_dense_for_rmat():
    # Every cell of a 64x64 matrix: the bottom-right cell has probability 0.05**6 per draw.
    with pytest.raises(SpecError, match=r"rmat: could not reach 4096 distinct edges for n=64"):
        rmat(64, 4096, seed=0)


# -- banded -----------------------------------------------------------------------------------


def test_banded_tridiagonal_pattern():
    matrix = banded(5, bandwidth=1, seed=0)
    assert_canonical(matrix, (5, 5))
    expected = np.eye(5, k=-1) + np.eye(5) + np.eye(5, k=1)
    np.testing.assert_array_equal(matrix.toarray() != 0, expected != 0)  # 5 + 2*4 = 13 nnz


def test_banded_offsets_pattern():
    matrix = banded(6, offsets=[2, 0, -3], seed=0)
    expected = np.eye(6, k=2) + np.eye(6) + np.eye(6, k=-3)
    np.testing.assert_array_equal(matrix.toarray() != 0, expected != 0)


def test_stencil_offsets_on_exact_grids():
    assert stencil_offsets(100, "2d5") == (-10, -1, 0, 1, 10)  # 10x10 grid
    assert stencil_offsets(1000, "3d7") == (-100, -10, -1, 0, 1, 10, 100)
    # On a 3x3x3 grid the 27 neighbours dx + 3*dy + 9*dz are exactly -13..13.
    assert stencil_offsets(27, "3d27") == tuple(range(-13, 14))
    assert stencil_offsets(9, "2d9") == (-4, -3, -2, -1, 0, 1, 2, 3, 4)


def test_stencil_offsets_grid_side_rounds_up():
    assert stencil_offsets(101, "2d5") == (-11, -1, 0, 1, 11)  # 11x11 is the first grid >= 101


@FAST
@given(
    n=st.integers(1, 80),
    stencil=st.sampled_from(["2d5", "2d9", "3d7", "3d27"]),
    fraction=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32),
)
def test_banded_thinning_is_exact_and_symmetric(n, stencil, fraction, seed):
    full = banded(n, stencil=stencil, seed=seed)
    nnz = round(fraction * full.nnz)
    matrix = banded(n, stencil=stencil, nnz=nnz, seed=seed)
    assert_canonical(matrix, (n, n))
    assert matrix.nnz == nnz
    # Thinning only removes band positions; pairs go together, at most one diagonal entry alone.
    assert (matrix.astype(bool) > full.astype(bool)).nnz == 0
    pattern = matrix.astype(bool)
    assert (pattern != pattern.T).nnz == 0
    if nnz >= n:
        assert np.count_nonzero(matrix.diagonal()) >= n - 1
    assert_same(matrix, banded(n, stencil=stencil, nnz=nnz, seed=seed))


def test_banded_thinning_without_diagonal_stays_symmetric_for_even_counts():
    matrix = banded(50, offsets=[-7, -1, 1, 7], nnz=100, seed=3)
    assert matrix.nnz == 100
    assert not matrix.diagonal().any()
    assert pattern_symmetric(matrix)


def test_banded_thinning_asymmetric_offsets_is_exact():
    matrix = banded(40, offsets=[0, 1, 5], nnz=50, seed=0)
    assert_canonical(matrix, (40, 40))
    assert matrix.nnz == 50


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, r"banded: expected exactly one of bandwidth, offsets, stencil, got none"),
        (
            {"bandwidth": 1, "stencil": "2d5"},
            r"banded: expected exactly one of .*got \['bandwidth', 'stencil'\]",
        ),
        ({"bandwidth": 10}, r"banded: expected bandwidth < n=10, got 10"),
        ({"offsets": [0, 10]}, r"banded: expected offsets in \[-9, 9\] for n=10, got 10"),
        ({"offsets": []}, r"banded: expected offsets as a non-empty list of integers"),
        ({"offsets": "0"}, r"banded: expected offsets as a non-empty list of integers"),
        ({"stencil": "3d19"}, r"stencil_offsets: expected a stencil in .*got '3d19'"),
        ({"bandwidth": 1, "nnz": 29}, r"banded: nnz=29 exceeds the 28 positions of the band"),
    ],
)
def test_banded_rejects_bad_arguments(kwargs, message):
    with pytest.raises(SpecError, match=message):
        banded(10, **kwargs)


# -- block_diagonal ---------------------------------------------------------------------------


@FAST
@given(
    n=st.integers(1, 60),
    block=st.integers(1, 60),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32),
)
def test_block_diagonal_stays_inside_blocks(n, block, density, seed):
    block = min(block, n)
    matrix = block_diagonal(n, block, density, seed=seed)
    assert_canonical(matrix, (n, n))
    coo = matrix.tocoo()
    assert np.all(coo.row // block == coo.col // block)
    sizes = [min(block, n - start) for start in range(0, n, block)]
    assert matrix.nnz == round(density * sum(s * s for s in sizes))
    assert_same(matrix, block_diagonal(n, block, density, seed=seed))


def test_block_diagonal_dense_blocks_with_short_last_block():
    matrix = block_diagonal(5, 2, seed=0)
    expected = np.zeros((5, 5), dtype=bool)
    expected[0:2, 0:2] = expected[2:4, 2:4] = expected[4:5, 4:5] = True
    np.testing.assert_array_equal(matrix.toarray() != 0, expected)


def test_block_diagonal_rejects_block_larger_than_matrix():
    with pytest.raises(SpecError, match=r"block_diagonal: expected block <= n=4, got 5"):
        block_diagonal(4, 5)
