"""Sweep files: strict loading with file:line errors, axis expansion, point hashing."""

from __future__ import annotations

import pytest
from reports_support import EXAMPLES, write_sweep

from reports.sweep import RangeSpec, load_sweep, override_args, point_hash
from workloads.errors import SpecError
from workloads.load import load_workload

AXES = """axes:
  - {key: hardware.array.rows, name: rows, values: [4, 8]}
  - {key: hardware.array.cols, values: [4, 8]}
"""


def test_example_loads(tiny_sweep_path):
    sweep = load_sweep(tiny_sweep_path, area_available=False)
    assert [a.label for a, _ in sweep.axes] == ["rows", "cols", "dram_bw", "input_bytes"]
    assert dict((a.label, v) for a, v in sweep.axes)["dram_bw"] == (4, 8, 16)
    assert sweep.size == 2 * 3 * 3 * 2
    assert [(c.text, c.stage) for c in sweep.constraints] == [
        ("rows * cols <= 64", "pre"), ("utilization > 0.05", "post")]
    assert sweep.objectives == (("cycles", "min"), ("energy_pj", "min"))
    grid = list(sweep.grid())
    assert len(grid) == sweep.size and grid[0] == sweep.point(0) and grid[-1] == sweep.point(35)
    assert grid[7] == sweep.point(7)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (AXES + "objectives: [cycles]\nstrategy: {kind: grid, seed: 1}\n",
         r":8: strategy\.seed: unknown key"),
        (AXES + "objectives: [cycels]\n", r":7: objectives\[0\]\.metric: Input should be 'cycles'"),
        (AXES + "objectives: [cycles]\nconstraints: [rows * colz <= 16]\n",
         r":8: constraints\[0\]: unknown name 'colz'.*did you mean 'cols'"),
        (AXES + "objectives: [cycles]\nconstraints: ['import os']\n",
         r":8: constraints\[0\]: invalid expression"),
        (AXES + "objectives: [cycles]\nconstraints: ['(10**60)**60**1 > rows']\n",
         r":8: constraints\[0\]: '\(10\*\*60\)\*\*60\*\*1 > rows': \*\* would make an integer of "
         r"about 11,959 bits; integers in a constraint stay below 2\*\*1024"),
        (AXES + "objectives: [cycles]\nconstraints: [speedup > 1]\n",
         r":8: constraints\[0\]: 'speedup' needs 'compare_dense: true'"),
        (AXES + "objectives: [area]\n",
         r":7: objectives\[0\]\.metric: 'area' needs the area model"),
        (AXES.replace("name: rows, ", "") + "  - {key: hardware.array.rows, values: [2]}\n"
         + "objectives: [cycles]\n",
         r":7: axes\[2\]\.key: 'hardware.array.rows' is already swept by axes\[0\]"),
        (AXES.replace("name: rows", "name: cycles") + "objectives: [cycles]\n",
         r":5: axes\[0\]\.name: 'cycles' is already used by a metric"),
        ("axes:\n  - {key: a.b, values: [1], range: {start: 1, stop: 2, step: 1}}\n"
         "objectives: [cycles]\n", r":5: axes\[0\]: give exactly one of"),
        ("axes:\n  - {key: a.b, range: {start: 4, stop: 2, step: 1}}\nobjectives: [cycles]\n",
         r":5: axes\[0\]\.range: stop=2 is below start=4"),
        (AXES + "objectives: [cycles]\nstrategy: {kind: random, samples: 5}\n",
         r":8: strategy\.samples: 5 exceeds the 4 points"),
        (AXES + "objectives: [cycles, cycles]\n", r"objectives\[1\]: 'cycles' is listed twice"),
        (AXES + "objectives: [cycles]\nobjectives: [energy_pj]\n",
         r":8: objectives: duplicate key 'objectives' \(first defined on line 7\)"),
    ],
)
def test_errors_name_file_line_and_field(tmp_path, body, message):
    path = write_sweep(tmp_path / "bad.yaml", body)
    with pytest.raises(SpecError, match=message) as info:
        load_sweep(path, area_available=False)
    assert str(info.value).startswith(str(path))


def test_missing_workload(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("version: 1\nname: s\nworkload: nope.yaml\n" + AXES + "objectives: [cycles]\n")
    with pytest.raises(SpecError, match=r"s\.yaml:3: workload: file not found"):
        load_sweep(path, area_available=False)


def test_the_workload_may_name_a_shipped_example(tmp_path):
    """``workload: example:NAME`` was 'file not found: <sweep folder>/example:NAME', though
    ``archsim run`` and ``archsim dse`` take example:NAME on the command line."""
    path = tmp_path / "s.yaml"
    path.write_text("version: 1\nname: s\nworkload: example:tiny_gemm\n" + AXES
                    + "objectives: [cycles]\n")
    assert load_sweep(path, area_available=False).workload_path == EXAMPLES / "tiny_gemm.yaml"
    path.write_text(path.read_text().replace("example:tiny_gemm", "example:tiny_gem"))
    with pytest.raises(SpecError, match=r"s\.yaml:3: workload: example:tiny_gem: no shipped "
                       r"example of that name; did you mean example:tiny_gemm\? 'archsim "
                       r"examples' lists them$"):
        load_sweep(path, area_available=False)


def test_a_workload_that_is_a_sweep_is_named_as_one(tmp_path):
    """A sweep whose ``workload:`` names a sweep file got that file's own 'this is a DSE sweep
    file ... run it with archsim dse', pointing at the wrong file inside 'archsim dse'."""
    path = tmp_path / "s.yaml"
    path.write_text("version: 1\nname: s\nworkload: example:sweep_tiny\n" + AXES
                    + "objectives: [cycles]\n")
    with pytest.raises(SpecError, match=r"s\.yaml:3: workload: .*sweep_tiny\.yaml is a DSE sweep "
                       r"file; name the workload YAML the sweep explores$"):
        load_sweep(path, area_available=False)


def test_ranges():
    assert RangeSpec(start=16, stop=64, step=16).values() == [16, 32, 48, 64]
    assert RangeSpec(start=1, stop=100, factor=4).values() == [1, 4, 16, 64]
    assert RangeSpec(start=0.1, stop=0.3, step=0.1).values() == [0.1, 0.2, 0.3]


def test_hash_is_canonical_and_keyed_by_override_key():
    a = {"hardware.array.rows": 8, "sparsity": {"kind": "nm", "n": 2, "m": 4}}
    b = {"sparsity": {"m": 4, "n": 2, "kind": "nm"}, "hardware.array.rows": 8}
    assert point_hash(a) == point_hash(b)
    assert point_hash(a) != point_hash({**a, "hardware.array.rows": 16})
    assert point_hash({"x": 1}) != point_hash({"x": 1.0}) != point_hash({"x": "1"})


def test_override_values_round_trip_through_the_loader():
    params = {"hardware.array.rows": 8, "name": "123",
              "sparsity": {"kind": "nm", "n": 2, "m": 4}}
    workload = load_workload(EXAMPLES / "tiny_gemm.yaml", overrides=override_args(params))
    assert workload.hardware.array.rows == 8
    assert workload.name == "123"  # a string that looks like a number stays a string
    assert workload.sparsity.kind == "nm" and workload.sparsity.n == 2


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("sweep_*.yaml")), ids=lambda p: p.name)
def test_example_sweeps_load_and_their_points_validate(path):
    sweep = load_sweep(path)
    first = sweep.point(0)
    workload = load_workload(sweep.workload_path, hardware=sweep.hardware,
                             overrides=[*sweep.fixed, *override_args(first)])
    assert workload.name and sweep.size >= 2
