"""`op: spgemm` and `HardwareSpec.spgemm`: loading, defaults and one-line errors."""

from __future__ import annotations

import textwrap

import pytest

from workloads.errors import SpecError
from workloads.layers import expand
from workloads.load import EXAMPLE_DIR, load_hardware, load_workload
from workloads.spec import SPGEMM_DATAFLOWS, SpGEMMOp


def write(tmp_path, ops: str, name: str = "w.yaml"):
    path = tmp_path / name
    path.write_text("version: 1\nname: sp\nhardware: tiny\noperations:\n"
                    + textwrap.indent(textwrap.dedent(ops), "  "))
    return path


def test_spgemm_op_loads_with_defaults(tmp_path):
    path = write(tmp_path, """
        - op: spgemm
          name: sq
          a: {source: rmat, params: {n: 64, nnz: 300}, seed: 3}
        - {op: gemm, name: g, m: 8, k: 8, n: 8}
    """)
    w = load_workload(path)
    op = w.operations[0]
    assert isinstance(op, SpGEMMOp) and op.b is None and op.dataflows == SPGEMM_DATAFLOWS
    a, b = op.operands()
    assert a is b and a.matrix.shape == (64, 64) and a.matrix.nnz == 300
    assert [layer.name for layer in expand(w)] == ["g"]  # spgemm is not a GEMM layer


def test_hardware_without_spgemm_section_gets_defaults(tmp_path):
    path = tmp_path / "hw.yaml"
    path.write_text("version: 1\nname: h\nclock_mhz: 100\narray: {rows: 4, cols: 4}\n"
                    "data_bits: 8\nbuffers: {weight_bytes: 64, input_bytes: 64, "
                    "accumulator_bytes: 64}\ndram: {bandwidth_bytes_per_cycle: 8, "
                    "latency_cycles: 1}\nvector_unit: {lanes: 1}\n")
    assert load_hardware(path).spgemm.hash_entries == 4096
    assert load_hardware("sat_vcu1525").spgemm.multipliers == 16


@pytest.mark.parametrize(
    "ops, message",
    [
        ("- {op: spgemm, name: x, a: {source: rmatt, params: {n: 8, nnz: 9}}}",
         r"w\.yaml:5: operations\[0\]\.a: unknown matrix source 'rmatt'; did you mean 'rmat'\? "
         r"expected one of .*lookalike:wiki-Vote.*pyamg:bar"),
        ("- {op: spgemm, name: x, a: {source: uniform, params: {n_rows: 4, n_cols: 6, nnz: 5}}}",
         r"w\.yaml:5: operations\[0\]: C = A·A needs a square A, got 'uniform' of shape 4x6; "
         r"give 'b:' for a rectangular product"),
        ("- {op: spgemm, name: x, a: {source: uniform, params: {n_rows: 4, n_cols: 6, nnz: 5}}, "
         "b: {source: uniform, params: {n_rows: 5, n_cols: 3, nnz: 5}}}",
         r"w\.yaml:5: operations\[0\]: C = A·B needs columns of A == rows of B, got A 4x6"),
        ("- {op: spgemm, name: x, a: {source: uniform, params: {n_rows: 4, n_cols: 4, nnz: 0}}}",
         r"w\.yaml:5: operations\[0\]\.a: matrix 'uniform' has no nonzeros"),
        ("- {op: spgemm, name: x, a: {source: rmat, params: {n: 8, nnz: 9}}, dataflows: [hash, hash]}",
         r"operations\[0\]: dataflows lists a dataflow twice"),
        ("- {op: spgemm, name: x, a: {source: rmat, params: {n: 8, nnz: 9}}, dataflows: [rowwise]}",
         r"w\.yaml:5: operations\[0\]\.dataflows\[0\]: Input should be 'inner', 'outer', "
         r"'gustavson' or 'hash'"),
        ("- {op: spgemm, name: x, a: {source: rmat, params: {n: 8, nnz: 9}, sead: 1}}",
         r"w\.yaml:5: operations\[0\]\.a\.sead: unknown key; did you mean 'seed'\?"),
    ],
    ids=["unknown-name", "non-square", "mismatch", "empty", "duplicate", "bad-dataflow", "typo"],
)
def test_bad_spgemm_ops_are_one_line_errors(tmp_path, ops, message):
    with pytest.raises(SpecError, match=message) as info:
        load_workload(write(tmp_path, ops))
    assert "\n" not in str(info.value)


def test_malformed_mtx_names_the_file_and_the_line(tmp_path):
    (tmp_path / "bad.mtx").write_text("%%MatrixMarket matrix coordinate real general\n3 3\n")
    path = write(tmp_path, "- {op: spgemm, name: x, a: {source: bad.mtx}}")
    with pytest.raises(SpecError, match=rf"w\.yaml:5: operations\[0\]\.a: "
                                        rf"{tmp_path}/bad\.mtx:2: expected the size line "
                                        rf"'rows columns entries'"):
        load_workload(path)


def test_relative_mtx_path_is_resolved_against_the_workload_folder(tmp_path, monkeypatch):
    folder = tmp_path / "sub"
    folder.mkdir()
    (folder / "m.mtx").write_text(
        "%%MatrixMarket matrix coordinate integer general\n2 2 3\n1 1 2\n1 2 -1\n2 2 3\n")
    path = write(folder, "- {op: spgemm, name: x, a: {source: m.mtx}}")
    monkeypatch.chdir(tmp_path)  # not the workload's folder
    a, _ = load_workload(path).operations[0].operands()
    assert a.matrix.toarray().tolist() == [[2, -1], [0, 3]]


def test_hash_geometry_is_validated():
    with pytest.raises(SpecError, match=r"spgemm: hash_banks must be a power of two, got 3"):
        load_hardware("tiny", overrides=["spgemm.hash_banks=3"])
    with pytest.raises(SpecError, match=r"must hold at least one bucket of hash_ways=4 per bank"):
        load_hardware("tiny", overrides=["spgemm.hash_entries=4"])


@pytest.mark.parametrize("name", ["spgemm_lookalike", "spgemm_pyamg", "spgemm_rmat"])
def test_examples_load(name):
    w = load_workload(EXAMPLE_DIR / f"{name}.yaml")
    assert all(isinstance(op, SpGEMMOp) for op in w.operations)
