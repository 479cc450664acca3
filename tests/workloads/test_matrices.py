"""Tests of workloads/matrices.py: named sources, look-alikes, Matrix Market files, statistics."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import workloads.matrices as matrices
from workloads.errors import SpecError
from workloads.generators.sparse_matrices import stencil_offsets, uniform_random
from workloads.matrices import (
    LOOKALIKES,
    MatrixStats,
    NamedMatrix,
    known_matrix_names,
    load_mtx,
    matrix_stats,
    resolve_matrix,
)

HERE = Path(".")

# REFERENCE.md section 2: the SpGEMM benchmark set with n and nnz.
REFERENCE_SET = {
    "wiki-Vote": (8_297, 103_689),
    "poisson3Da": (13_514, 352_762),
    "ca-CondMat": (23_133, 186_936),
    "email-Enron": (36_692, 367_662),
    "scircuit": (170_998, 958_936),
    "cage12": (130_228, 2_032_536),
    "2cubes_sphere": (101_492, 1_647_264),
    "offshore": (259_789, 4_242_673),
}
# Generated in the tests; the others (0.4 s to 10 s each) are checked arithmetically below.
QUICK_LOOKALIKES = [*REFERENCE_SET, "filter3D", "cop20k_A", "p2p-Gnutella31"]


def assert_canonical_int(matrix: sp.csr_matrix) -> None:
    assert isinstance(matrix, sp.csr_matrix)
    assert matrix.data.dtype == np.int64
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    keys = rows.astype(np.int64) * matrix.shape[1] + matrix.indices
    assert np.all(np.diff(keys) > 0)
    assert np.all(matrix.data != 0)


def write_mtx(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- look-alikes ------------------------------------------------------------------------------


def test_lookalike_table_matches_reference():
    for name, (n, nnz) in REFERENCE_SET.items():
        assert (LOOKALIKES[name].n, LOOKALIKES[name].nnz) == (n, nnz)


@pytest.mark.parametrize("name", QUICK_LOOKALIKES)
def test_lookalike_matches_n_and_nnz(name):
    spec = LOOKALIKES[name]
    result = resolve_matrix(f"lookalike:{name}", {}, 0, HERE)
    assert isinstance(result, NamedMatrix)
    assert result.name == f"lookalike:{name}"
    assert result.synthetic is True
    assert result.matrix.shape == (spec.n, spec.n)
    assert abs(result.matrix.nnz - spec.nnz) <= 0.02 * spec.nnz  # exact in practice
    assert result.description.startswith(
        f"synthetic look-alike of SuiteSparse {name} (n, nnz matched); not the real matrix"
    )
    assert_canonical_int(result.matrix)


@pytest.mark.parametrize("name", [n for n, s in LOOKALIKES.items() if s.model == "stencil"])
def test_every_stencil_lookalike_fits_its_band(name):
    # The big ones are too slow to build here; their band must still hold the real nnz.
    spec = LOOKALIKES[name]
    offsets = [o for o in stencil_offsets(spec.n, spec.stencil) if spec.diagonal or o != 0]
    assert sum(spec.n - abs(o) for o in offsets) >= spec.nnz


def test_graph_lookalike_symmetry_follows_the_real_graph():
    undirected = resolve_matrix("lookalike:ca-CondMat", {}, 0, HERE).matrix
    assert (undirected != undirected.T).nnz == 0
    mesh = resolve_matrix("lookalike:poisson3Da", {}, 0, HERE).matrix.astype(bool)
    assert (mesh != mesh.T).nnz == 0


def test_lookalike_depends_on_seed_only():
    a = resolve_matrix("lookalike:wiki-Vote", {}, 5, HERE).matrix
    b = resolve_matrix("lookalike:wiki-Vote", {}, 5, HERE).matrix
    c = resolve_matrix("lookalike:wiki-Vote", {}, 6, HERE).matrix
    assert (a != b).nnz == 0
    assert (a != c).nnz > 0


# -- real matrices shipped by packages --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "n"),
    [
        ("airfoil", 260),
        ("bar", 600),
        ("helmholtz_2D", 2880),
        ("knot", 239),
        ("local_disc_galerkin_diffusion", 966),
        ("recirc_flow", 225),
        ("unit_cube", 125),
        ("unit_square", 191),
    ],
)
def test_pyamg_examples_are_real_integer_matrices(name, n):
    result = resolve_matrix(f"pyamg:{name}", None, 0, HERE)
    assert result.synthetic is False
    assert result.matrix.shape == (n, n)
    assert_canonical_int(result.matrix)
    assert f"load_example({name!r})" in result.description


def test_pyamg_bar_keeps_its_pattern():
    # Quantization never maps a stored value to 0, so the real pattern (23,402 nnz) survives.
    assert resolve_matrix("pyamg:bar", {}, 0, HERE).matrix.nnz == 23_402


@pytest.mark.parametrize(
    ("name", "n", "nnz", "max_value"),
    [
        ("karate", 34, 156, 7),
        ("les_miserables", 77, 508, 31),
        ("florentine_families", 15, 40, 1),
        ("davis_southern_women", 32, 178, 1),
    ],
)
def test_networkx_graphs_are_symmetric_adjacency(name, n, nnz, max_value):
    result = resolve_matrix(f"networkx:{name}", {}, 0, HERE)
    matrix = result.matrix
    assert (matrix.shape, matrix.nnz) == ((n, n), nnz)  # 2 * edges of an undirected graph
    assert (matrix != matrix.T).nnz == 0
    assert matrix.data.min() == 1 and matrix.data.max() == max_value  # integer weights kept
    assert result.synthetic is False


# -- generators by name -----------------------------------------------------------------------


def test_generator_source_names_its_parameters_in_signature_order():
    result = resolve_matrix("rmat", {"nnz": 300, "n": 100}, 7, HERE)
    assert result.name == "rmat(n=100, nnz=300, seed=7)"
    assert result.synthetic is True
    assert result.description.startswith("synthetic: R-MAT power-law graph")
    assert result.matrix.nnz == 300


@pytest.mark.parametrize(
    ("source", "params", "nnz"),
    [
        ("uniform", {"n_rows": 20, "n_cols": 30, "nnz": 50}, 50),
        ("banded", {"n": 10, "bandwidth": 1}, 28),
        ("banded", {"n": 1000, "stencil": "3d7", "nnz": 5000}, 5000),
        ("block_diagonal", {"n": 10, "block": 5, "density": 0.5}, 25),
    ],
)
def test_generator_sources(source, params, nnz):
    matrix = resolve_matrix(source, params, 0, HERE).matrix
    assert matrix.nnz == nnz
    assert_canonical_int(matrix)


@pytest.mark.parametrize(
    ("source", "params", "message"),
    [
        (
            "rmat",
            {"n": 10, "nnz": 5, "symetric": True},
            r"matrix source 'rmat': unknown parameter 'symetric'; did you mean 'symmetric'\?",
        ),
        ("rmat", {"n": 10}, r"matrix source 'rmat': missing parameter 'nnz'"),
        (
            "rmat",
            {"n": 10, "nnz": 5, "seed": 1},
            r"matrix source 'rmat': 'seed' is not a parameter; the run's seed is used",
        ),
        ("rmat", {"n": -3, "nnz": 5}, r"rmat: expected n >= 1, got -3"),
        ("pyamg:airfoil", {"n": 3}, r"matrix source 'pyamg:airfoil' takes no parameters"),
        (
            "lookalike:wiki-Vote",
            {"nnz": 3},
            r"matrix source 'lookalike:wiki-Vote' takes no parameters, got \['nnz'\]",
        ),
    ],
)
def test_generator_parameter_errors(source, params, message):
    with pytest.raises(SpecError, match=message):
        resolve_matrix(source, params, 0, HERE)


# -- unknown names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "suggestion"),
    [
        ("lookalike:wiki-vote", "lookalike:wiki-Vote"),
        ("pyamg:airfol", "pyamg:airfoil"),
        ("rmatt", "rmat"),
        ("networkx:karate_club", "networkx:karate"),
    ],
)
def test_unknown_name_suggests_the_closest(source, suggestion):
    with pytest.raises(
        SpecError,
        match=rf"unknown matrix source '{source}'; "
        rf"did you mean '{suggestion}'\? expected one of ",
    ):
        resolve_matrix(source, {}, 0, HERE)


def test_unknown_name_lists_every_known_name_on_one_line():
    with pytest.raises(SpecError) as info:
        resolve_matrix("nonsense", {}, 0, HERE)
    message = str(info.value)
    assert "\n" not in message
    assert "did you mean" not in message
    assert all(name in message for name in known_matrix_names())
    assert message.endswith("or a path ending in .mtx or .mtx.gz")


def test_known_names_cover_every_family():
    names = known_matrix_names()
    assert {"rmat", "uniform", "banded", "block_diagonal"} <= set(names)
    assert {"pyamg:airfoil", "networkx:karate", "lookalike:offshore"} <= set(names)
    assert list(names) == sorted(names)


# -- Matrix Market files ----------------------------------------------------------------------


def test_mtx_round_trip_plain_and_gzip(tmp_path):
    original = uniform_random(40, 30, nnz=200, seed=3)
    scipy.io.mmwrite(tmp_path / "a.mtx", original)
    with open(tmp_path / "a.mtx", "rb") as plain, gzip.open(tmp_path / "a.mtx.gz", "wb") as gz:
        gz.write(plain.read())
    for name in ("a.mtx", "a.mtx.gz"):
        loaded = load_mtx(tmp_path / name)
        assert_canonical_int(loaded)
        assert (loaded != original).nnz == 0
        resolved = resolve_matrix(name, {}, 0, tmp_path)  # relative to base_dir
        assert resolved.synthetic is False
        assert resolved.name == name
        assert "integer values kept as stored" in resolved.description
        assert (resolved.matrix != original).nnz == 0


def test_mtx_real_values_are_quantized_keeping_the_pattern(tmp_path):
    # max|x| = 2, so q = sign(x) * max(1, rint(8 * |x| / 2)) = sign(x) * max(1, rint(4|x|)):
    #   0.5 -> 2,  -2.0 -> -8,  0.001 -> rint(0.004) = 0 -> 1,  1.0 -> 4,  -0.625 -> rint(-2.5) = -2
    path = write_mtx(
        tmp_path / "r.mtx",
        "%%MatrixMarket matrix coordinate real general\n"
        "2 3 5\n1 1 0.5\n1 3 -2.0\n2 1 0.001\n2 2 1.0\n2 3 -0.625\n",
    )
    np.testing.assert_array_equal(load_mtx(path).toarray(), [[2, 0, -8], [1, 4, -2]])
    assert "values quantized" in resolve_matrix("r.mtx", {}, 0, tmp_path).description


def test_mtx_integral_reals_pattern_symmetric_and_complex(tmp_path):
    integral = write_mtx(
        tmp_path / "i.mtx",
        "%%MatrixMarket matrix coordinate real general\n2 2 2\n1 1 100.0\n2 2 -3\n",
    )
    np.testing.assert_array_equal(load_mtx(integral).toarray(), [[100, 0], [0, -3]])
    pattern = write_mtx(
        tmp_path / "p.mtx", "%%MatrixMarket matrix coordinate pattern general\n3 3 2\n1 2\n3 1\n"
    )
    np.testing.assert_array_equal(load_mtx(pattern).toarray(), [[0, 1, 0], [0, 0, 0], [1, 0, 0]])
    symmetric = write_mtx(
        tmp_path / "s.mtx",
        "%%MatrixMarket matrix coordinate integer symmetric\n2 2 2\n1 1 5\n2 1 -4\n",
    )
    np.testing.assert_array_equal(load_mtx(symmetric).toarray(), [[5, -4], [-4, 0]])
    # |3+4j| = 5 and |-1j| = 1: 8*5/5 = 8 and rint(8*1/5) = 2; the second sign comes from Im.
    complex_ = write_mtx(
        tmp_path / "c.mtx",
        "%%MatrixMarket matrix coordinate complex general\n2 2 2\n1 1 3 4\n2 2 0 -1\n",
    )
    np.testing.assert_array_equal(load_mtx(complex_).toarray(), [[8, 0], [0, -2]])


def test_mtx_duplicates_are_summed_and_zeros_dropped(tmp_path):
    path = write_mtx(
        tmp_path / "d.mtx",
        "%%MatrixMarket matrix coordinate integer general\n2 2 4\n1 1 2\n1 1 3\n2 2 0\n2 1 -1\n",
    )
    loaded = load_mtx(path)
    assert_canonical_int(loaded)
    np.testing.assert_array_equal(loaded.toarray(), [[5, 0], [-1, 0]])


@pytest.mark.parametrize(
    ("filename", "text", "message"),
    [
        (
            "bad.mtx",
            "garbage\n1 2 3\n",
            r"bad\.mtx:1: expected the banner '%%MatrixMarket matrix <coordinate\|array> .*', "
            r"got 'garbage'",
        ),
        (
            "short.mtx",
            "%%MatrixMarket matrix coordinate real general\n3 3 5\n1 1 1.5\n",
            r"short\.mtx: truncated: 1 of the 5 entries its header declares",
        ),
        (
            "oob.mtx",
            "%%MatrixMarket matrix coordinate real general\n3 3 1\n4 1 1.0\n",
            r"oob\.mtx: not a valid Matrix Market file: .*out of bounds",
        ),
        (
            "empty.mtx",
            "%%MatrixMarket matrix coordinate real general\n3 3 0\n",
            r"empty\.mtx: expected a matrix with at least one nonzero, got shape \(3, 3\) "
            r"with 0 nonzeros",
        ),
        (
            "zeros.mtx",
            "%%MatrixMarket matrix coordinate real general\n2 2 1\n1 1 0.0\n",
            r"zeros\.mtx: expected a matrix with at least one nonzero",
        ),
        (
            "norows.mtx",
            "%%MatrixMarket matrix coordinate real general\n0 0 0\n",
            r"norows\.mtx: expected a matrix with at least one nonzero, got shape \(0, 0\)",
        ),
        (
            "nan.mtx",
            "%%MatrixMarket matrix coordinate real general\n2 2 1\n1 1 nan\n",
            r"nan\.mtx: expected finite values",
        ),
    ],
)
def test_malformed_and_empty_files(tmp_path, filename, text, message):
    write_mtx(tmp_path / filename, text)
    with pytest.raises(SpecError, match=message) as info:
        load_mtx(tmp_path / filename)
    assert "\n" not in str(info.value)
    with pytest.raises(SpecError, match=message):
        resolve_matrix(filename, {}, 0, tmp_path)


def test_corrupt_gzip_file(tmp_path):
    (tmp_path / "bad.mtx.gz").write_bytes(b"not gzip at all")
    with pytest.raises(SpecError, match=r"bad\.mtx\.gz: not a valid Matrix Market file"):
        load_mtx(tmp_path / "bad.mtx.gz")


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match=r"missing\.mtx: matrix file not found"):
        resolve_matrix("missing.mtx", {}, 0, tmp_path)
    with pytest.raises(SpecError, match=r"missing\.mtx\.gz: matrix file not found"):
        load_mtx(tmp_path / "missing.mtx.gz")


# -- matrix_stats -----------------------------------------------------------------------------


def test_stats_of_a_squared_by_hand():
    #     A = [[1, 2, 0],     rows of A as column sets: r0 = {0, 1}, r1 = {2}, r2 = {0, 2}
    #          [0, 0, 3],
    #          [4, 0, 5]]
    # multiplies = sum over a_ik of nnz(A[k, :]):
    #   row 0: a00 -> |r0| = 2, a01 -> |r1| = 1             = 3
    #   row 1: a12 -> |r2| = 2                               = 2
    #   row 2: a20 -> |r0| = 2, a22 -> |r2| = 2             = 4   -> 9
    # nnz(C) per row = |union of the rows k it touches|:
    #   row 0: r0 | r1 = {0, 1, 2} -> 3;  row 1: r2 = {0, 2} -> 2;  row 2: r0 | r2 -> 3  -> 8
    # row nnz of A: [2, 1, 2] -> mean 5/3, std sqrt(((1/3)^2 * 2 + (2/3)^2) / 3) = sqrt(2)/3,
    # p50 = 2, p99 = 2 (sorted [1, 2, 2], linear interpolation between 2 and 2).
    a = sp.csr_matrix(np.array([[1, 2, 0], [0, 0, 3], [4, 0, 5]]))
    stats = matrix_stats(a)
    assert stats == MatrixStats(
        n_rows=3,
        n_cols=3,
        nnz=5,
        density=5 / 9,
        row_nnz_min=1,
        row_nnz_mean=pytest.approx(5 / 3),
        row_nnz_max=2,
        row_nnz_std=pytest.approx(math.sqrt(2) / 3),
        row_nnz_p50=2.0,
        row_nnz_p99=2.0,
        multiplies=9,
        nnz_c=8,
        compression_ratio=9 / 8,
    )


def test_stats_of_a_rectangular_product_by_hand():
    # A (2x3) = [[1, 0, 1], [0, 1, 0]];  B (3x2) = [[1, 1], [0, 1], [1, 0]]
    # multiplies: row 0: a00 -> nnz(B0) = 2, a02 -> nnz(B2) = 1; row 1: a11 -> nnz(B1) = 1 -> 4
    # C: row 0 = {0, 1} | {0} = {0, 1} -> 2; row 1 = {1} -> 1 -> nnz(C) = 3
    a = np.array([[1, 0, 1], [0, 1, 0]])
    b = sp.csr_array(np.array([[1, 1], [0, 1], [1, 0]]))
    stats = matrix_stats(a, b)
    assert (stats.n_rows, stats.n_cols, stats.nnz) == (2, 3, 3)
    assert (stats.multiplies, stats.nnz_c) == (4, 3)
    assert stats.compression_ratio == pytest.approx(4 / 3)


def test_stats_count_structure_not_values():
    # [1, 1] @ [[1], [-1]] cancels to 0, but the hardware still writes that output.
    a = sp.csr_matrix(np.array([[1, 1]]))
    b = sp.csr_matrix(np.array([[1], [-1]]))
    stats = matrix_stats(a, b)
    assert (stats.multiplies, stats.nnz_c) == (2, 1)


def test_stats_ignore_stored_zeros_and_sum_duplicates():
    a = sp.csr_matrix(
        (np.array([1, 0, 2, 3]), np.array([0, 1, 1, 1]), np.array([0, 2, 4])), shape=(2, 2)
    )  # row 0 stores a zero; row 1 stores (1, 1) twice
    stats = matrix_stats(a)
    assert stats.nnz == 2
    # Pattern [[1, 0], [0, 1]]: the identity pattern, so 2 multiplies and 2 outputs.
    assert (stats.multiplies, stats.nnz_c) == (2, 2)


def test_stats_of_an_empty_product():
    stats = matrix_stats(sp.csr_matrix((3, 3), dtype=np.int64))
    assert (stats.multiplies, stats.nnz_c, stats.compression_ratio) == (0, 0, 0.0)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 12),
    k=st.integers(1, 12),
    m=st.integers(1, 12),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32),
)
def test_stats_agree_with_dense_brute_force(n, k, m, density, seed):
    a = uniform_random(n, k, density=density, seed=seed)
    b = uniform_random(k, m, density=density, seed=seed + 1)
    pa, pb = (a.toarray() != 0).astype(np.int64), (b.toarray() != 0).astype(np.int64)
    stats = matrix_stats(a, b)
    assert stats.multiplies == int((pa @ pb).sum())  # every (i, k, j) with a_ik, b_kj != 0
    assert stats.nnz_c == int(np.count_nonzero(pa @ pb))


def test_stats_public_fallback_agrees_with_symbolic_pass(monkeypatch):
    a = resolve_matrix("lookalike:wiki-Vote", {}, 0, HERE).matrix
    fast = matrix_stats(a)
    monkeypatch.setattr(matrices, "_csr_matmat_maxnnz", None)
    assert matrix_stats(a) == fast


def test_stats_dimension_mismatch():
    a = sp.csr_matrix((2, 3), dtype=np.int64)
    with pytest.raises(
        SpecError,
        match=r"matrix_stats: C = A·B needs A\.shape\[1\] == "
        r"B\.shape\[0\], got A of shape \(2, 3\) and B of "
        r"shape \(2, 3\)",
    ):
        matrix_stats(a, a)
    with pytest.raises(
        SpecError,
        match=r"matrix_stats: C = A·A needs a square A, got A of "
        r"shape \(2, 3\); pass B for a rectangular product",
    ):
        matrix_stats(a)


def test_stats_reject_non_matrices():
    with pytest.raises(
        SpecError,
        match=r"matrix_stats: expected A as a scipy sparse matrix or "
        r"2-D numpy array, got list",
    ):
        matrix_stats([[1, 2], [3, 4]])
    with pytest.raises(
        SpecError,
        match=r"matrix_stats: expected A with at least one row and "
        r"column, got shape \(0, 2\)",
    ):
        matrix_stats(sp.csr_matrix((0, 2)))
