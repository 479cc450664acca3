"""Data files (issue 15, part 3): every bad .npy/.npz/.mtx is one line naming the file and what
was expected, checked on the header before the data is read."""

from __future__ import annotations

import gzip
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

from archsim.cli import main
from workloads.errors import SpecError
from workloads.generators import attention as A
from workloads.limits import Limits
from workloads.load import load_workload
from workloads.matrices import resolve_matrix

TOPK = (
    "version: 1\nname: t\nhardware: tiny\noperations:\n"
    "  - {op: attention, name: a, heads: 2, kv_heads: 1, kv_len: 64, head_dim: 16, block_size: 16,"
    " pattern: {kind: topk, tokens: 8, channels: 4, data: {source: npy, q: q.npy, k: k.npy}}}\n"
)
Q_SHAPE, K_SHAPE = (1, 2, 64, 16), (1, 1, 64, 16)


def qk_error(tmp_path: Path, q: object, k: object = None) -> str:
    """The one-line error of building the topk mask from q.npy (written by ``q``) and k.npy."""
    for name, value in (("q", q), ("k", k if k is not None else np.zeros(K_SHAPE, np.float32))):
        if callable(value):
            value(tmp_path / f"{name}.npy")
        else:
            np.save(tmp_path / f"{name}.npy", value)
    (tmp_path / "w.yaml").write_text(TOPK)
    op = load_workload(tmp_path / "w.yaml").operations[0]
    with pytest.raises(SpecError) as info:
        A.build_mask(op)
    assert "\n" not in str(info.value)
    return str(info.value)


def raw(content: bytes):
    return lambda path: path.write_bytes(content)


def npy_header(shape: tuple, dtype: str = "<f4") -> bytes:
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape}, }}".encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (raw(b""), r"q\.npy: not a valid \.npy array .*; expected a's q, real numbers"),
        (raw(npy_header(Q_SHAPE) + b"\0" * 100), r"q\.npy: truncated: 100 of 8,192 data bytes"),
        (raw(npy_header(Q_SHAPE).replace(b"'shape': (", b"'shape': ((")),
         r"q\.npy: not a valid \.npy array \(.*\); expected a's q"),
        (raw(npy_header((2**40,))), r"q\.npy: shape \(1099511627776,\) has 1,099,511,627,776 "
                                    r"elements, above the 268,435,456"),
        (np.full(Q_SHAPE, "x"), r"q\.npy: dtype <U1 is not real numbers"),
        (np.zeros(Q_SHAPE, np.complex64), r"q\.npy: dtype complex64 is not real numbers"),
        (np.zeros((1, 2, 64, 8), np.float32), r"q\.npy: shape \(1, 2, 64, 8\); expected a's q.*"
                                              r"of shape \(1, 2, 64, 16\)"),
        (np.where(np.arange(2048).reshape(Q_SHAPE) == 7, np.nan, 0.0),
         r"q\.npy: q\[0, 0, 0, 7\] is nan; expected finite values"),
        (np.full(Q_SHAPE, 1e300), r"q\.npy: q\[0, 0, 0, 0\] is inf; expected finite values"),
    ],
    ids=["empty", "truncated", "damaged-header", "2**40-elements", "string", "complex", "shape", "nan", "overflow"],
)
def test_bad_q_files(tmp_path, q, expected):
    assert re.search(expected, qk_error(tmp_path, q))


def test_object_arrays_and_npz_in_place_of_npy(tmp_path):
    def objects(path):
        np.save(path, np.array([{"a": 1}] * 4, dtype=object).reshape(1, 1, 2, 2), allow_pickle=True)

    assert "dtype object is not real numbers" in qk_error(tmp_path, objects)

    def archive(path):
        np.savez(path.with_suffix(".npz"), q=np.zeros(Q_SHAPE))
        path.with_suffix(".npz").rename(path)

    assert qk_error(tmp_path, archive).endswith("q.npy: an .npz archive; expected a's q, real "
                                                "numbers [batch, heads, q_len, head_dim] as one "
                                                ".npy array")


def block_mask(tmp_path: Path, **arrays) -> str:
    path = tmp_path / "mask.npz"
    np.savez(path, **arrays)
    with pytest.raises(SpecError) as info:
        A.load_npz(str(path), 1, 1, 64, 64, 16, causal=False)
    return str(info.value)


def test_bad_block_mask_files(tmp_path):
    good = A.block_sparse_mask(1, 1, 64, 64, 16, 0.5, seed=1, causal=False).to_flex()
    message = block_mask(tmp_path, kv_num_blocks=good["kv_num_blocks"],
                         kv_indices=good["kv_indices"].astype(np.float64))
    assert message.endswith("mask.npz: kv_indices: dtype float64 is not integers; expected "
                            "integer block lists")
    assert "missing arrays ['kv_indices']" in block_mask(tmp_path, kv_num_blocks=good["kv_num_blocks"])
    path = tmp_path / "mask.npz"
    np.save(tmp_path / "mask.npy", good["kv_indices"])
    (tmp_path / "mask.npy").rename(path)
    with pytest.raises(SpecError, match=r"mask\.npz: a single \.npy array; expected an \.npz"):
        A.load_npz(str(path), 1, 1, 64, 64, 16, causal=False)
    np.savez(path, **good)
    path.write_bytes(path.read_bytes()[:100])  # truncated archive
    with pytest.raises(SpecError, match=r"mask\.npz: cannot read \(.*\); expected an \.npz"):
        A.load_npz(str(path), 1, 1, 64, 64, 16, causal=False)
    path.write_bytes(b"")
    with pytest.raises(SpecError, match=r"mask\.npz: cannot read"):
        A.load_npz(str(path), 1, 1, 64, 64, 16, causal=False)
    with pytest.raises(SpecError, match=r"kv_indices has dtype float32; expected integers"):
        A.from_flex(good["kv_num_blocks"], good["kv_indices"].astype(np.float32), None, None,
                    1, 1, 64, 64, 16, False)


def test_bad_q_file_through_the_cli_is_exit_2(tmp_path, capsys):
    np.save(tmp_path / "q.npy", np.zeros(Q_SHAPE, np.complex128))
    np.save(tmp_path / "k.npy", np.zeros(K_SHAPE, np.float32))
    (tmp_path / "w.yaml").write_text(TOPK)
    assert main(["run", str(tmp_path / "w.yaml"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"archsim: error: {tmp_path / 'q.npy'}: dtype complex128") and err.count("\n") == 1


# --------------------------------------------------------------------------------------------
# Matrix Market
# --------------------------------------------------------------------------------------------


def mtx(tmp_path: Path, text: str, name: str = "m.mtx") -> Path:
    path = tmp_path / name
    data = textwrap.dedent(text).encode()
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("m.mtx", "%%MatrixMarket matrix coordinate integer general\n1000000000000 1000000000000 2\n"
                  "1 1 1\n2 2 3\n",
         r"m\.mtx: header: 1,000,000,000,000 rows or columns is above limits\.matrix_rows = "
         r"20,000,000; raise 'limits: \{matrix_rows: \.\.\.\}'"),
        ("m.mtx.gz", "%%MatrixMarket matrix coordinate integer general\n1000000000000 3 2\n"
                     "1 1 1\n2 2 3\n", r"m\.mtx\.gz: header: 1,000,000,000,000 rows"),
        ("m.mtx", "%%MatrixMarket matrix coordinate integer general\n10 10 100000000000\n1 1 1\n",
         r"m\.mtx: header: 100,000,000,000 nonzeros is above limits\.matrix_nnz = 20,000,000"),
        ("m.mtx", "%%MatrixMarket matrix array real general\n100000 100000\n1.0\n",
         r"m\.mtx: header: 10,000,000,000 nonzeros"),
        ("m.mtx", "%%MatrixMarket matrix coordinate integer general\n% a comment.\n3 3 2\n"
                  "1 1 1.5\n2 2 3\n",
         r"m\.mtx:4: entry '1 1 1\.5' is not an integer, but the header declares 'integer'"),
        # scipy's parser crashes the interpreter on these two; they must never reach it.
        ("m.mtx", "%%MatrixMarket matrix coordinate real general\n4 4 3\n1 1 1\n2 3 -2\0\n4 4 5\n",
         r"m\.mtx:4: NUL byte; expected Matrix Market text"),
        ("m.mtx", "%%MatrixMarket matrix coordinate real general\n4 4 3\n1 1 1\n2 3 -2\n4 4 5t",
         r"m\.mtx:5: '4 4 5t' is not a real entry of this Matrix Market file"),
        ("m.mtx", "%%MatrixMarket matrix coordinate real general\n4 4 3\n1 1 1\n2 3 -2\n4 4 5\t",
         r"m\.mtx:5: the last line ends in white space but no newline"),
        ("m.mtx.gz", "%%MatrixMarket matrix coordinate real general\n4 4 3\n1 1 1\n2 3 -2\n",
         r"m\.mtx\.gz: truncated: 2 of the 3 entries its header declares"),
    ],
    ids=["rows", "gz-rows", "nnz", "dense-array", "float-in-integer", "nul", "garbage-last-line",
         "blank-end-without-newline", "missing-entries"],
)
def test_bad_matrix_market_headers_and_values(tmp_path, name, text, expected):
    path = mtx(tmp_path, text, name)
    with pytest.raises(SpecError, match=expected):
        resolve_matrix(path.name, {}, 0, tmp_path)


def test_generator_sizes_are_checked_before_allocating(tmp_path):
    with pytest.raises(SpecError, match=r"matrix source 'uniform': 100,000,000,000 rows or "
                                        r"columns is above limits\.matrix_rows"):
        resolve_matrix("uniform", {"n_rows": 10**11, "n_cols": 4, "nnz": 4}, 0, tmp_path)
    with pytest.raises(SpecError, match=r"matrix source 'rmat': 100,000,000,000 nonzeros"):
        resolve_matrix("rmat", {"n": 1000, "nnz": 10**11}, 0, tmp_path)
    with pytest.raises(SpecError, match=r"matrix source 'uniform': 250,000,000,000 nonzeros"):
        resolve_matrix("uniform", {"n_rows": 10**6, "n_cols": 10**6, "density": 0.25}, 0, tmp_path)
    with pytest.raises(SpecError, match=r"matrix source 'banded': 30,000,000 nonzeros"):
        resolve_matrix("banded", {"n": 10**7, "bandwidth": 1}, 0, tmp_path)
    small = Limits(matrix_rows=100, matrix_nnz=100)
    with pytest.raises(SpecError, match=r"200 rows or columns is above limits\.matrix_rows = 100"):
        resolve_matrix("rmat", {"n": 200, "nnz": 50}, 0, tmp_path, small)


def test_limits_field_raises_the_matrix_limits(tmp_path):
    body = ("version: 1\nname: t\nhardware: tiny\nlimits: {{matrix_nnz: {}}}\noperations:\n"
            "  - {{op: spgemm, name: s, a: {{source: rmat, params: {{n: 64, nnz: 200}}}}}}\n")
    path = tmp_path / "w.yaml"
    path.write_text(body.format(100))
    with pytest.raises(SpecError, match=r"w\.yaml:6: operations\[0\]\.a: matrix source 'rmat': "
                                        r"200 nonzeros is above limits\.matrix_nnz = 100"):
        load_workload(path)
    path.write_text(body.format(1000))
    assert load_workload(path).limits.matrix_nnz == 1000
