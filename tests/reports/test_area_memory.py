"""The area model's memory rule (reports/fpga_memory.py) against what Yosys made of the RTL."""

from __future__ import annotations

import json

import pytest

from dataflows.buffer_shapes import MemoryShape, buffer_shapes
from reports.area import SAMPLES_PATH, family_of, load_area_model, memory_features
from reports.fpga_memory import memory_cells
from workloads.load import load_hardware


def _samples() -> list[dict]:
    if not SAMPLES_PATH.is_file():
        pytest.skip("no synthesis samples committed (reports/data/area_samples.json)")
    return json.loads(SAMPLES_PATH.read_text())["samples"]


@pytest.mark.parametrize(("width", "depth", "kind", "cells"), [
    # Single memories (one write, one synchronous read port) run through Yosys
    # synth_xilinx -family xcup -uram by benchmarks/area_memory_probe.py.
    (2048, 86, "bram", {"bram": 28.5}),                 # 57 RAMB18E2: the mask buffer at 4 cols
    (2048, 44, "lutram", {"lutram": 293, "ff": 2048}),  # RAM64M8 + the read register, 8+ cols
    (152, 2048, "bram", {"bram": 8.5}),                 # 17 RAMB18E2
    (76, 4096, "uram", {"uram": 2}),
    (48, 4096, "uram", {"uram": 1}),
    (48, 43690, "uram_pair", {"uram": 8}),              # three 48-bit words per pair
    (48, 32768, "uram_pair", {"uram": 6}),
])
def test_single_memories_map_as_yosys_maps_them(width, depth, kind, cells):
    got = memory_cells(MemoryShape("m", 1, width, depth, width))
    assert got.kind == kind
    for key, value in cells.items():
        assert getattr(got, key) == value


def test_enable_groups_pad_to_the_block_rams_byte():
    # The weight buffer at 4x16 (sat_vcu1525): 16 entries of 19 bits, each starting at a 9-bit
    # byte, 27 bits each: 432 bits = 12 RAMB36 of 36 bits (Yosys: 192 RAMB36E2 for 16 memories).
    whole = memory_cells(MemoryShape("w", 1, 304, 1024, 304))
    entries = memory_cells(MemoryShape("w", 1, 304, 1024, 19))
    assert (whole.bram, entries.bram) == (8.5, 12)


def test_the_rule_reproduces_every_samples_memories():
    # Per sample: the rule's UltraRAM and LUTRAM are Yosys's counts exactly, and its BRAM misses
    # them by the same number in every sample of a family (the memories outside the buffers:
    # instruction memories, exp tables), so the model's constant carries them.
    rest: dict[str, set[float]] = {}
    for sample in _samples():
        mem = memory_features(sample["hardware"])
        total = sample["yosys_total"]
        assert mem["mem_uram"] == total["URAM"]
        assert mem["mem_lutram"] == total["LUTRAM"]
        rest.setdefault(family_of(sample["hardware"]), set()).add(total["BRAM36"] - mem["mem_bram"])
    assert all(len(offsets) == 1 for offsets in rest.values()), rest


def test_shapes_are_the_rtls():
    # One home: the RTL's Geometry reads the same arithmetic (rtl/params.py).
    from rtl import layouts
    from rtl.params import Geometry

    for preset, size in [("tiny", (4, 4)), ("sat_vcu1525", (8, 16)), ("tiny", (16, 4))]:
        hw = load_hardware(preset, overrides=[f"array.rows={size[0]}", f"array.cols={size[1]}",
                                              "buffers.weight_bytes=4096"])
        g, shapes = Geometry.of(hw), buffer_shapes(hw)
        widths = {m.name: (m.count, m.width, m.depth) for m in shapes.memories()}
        assert widths["input"] == (2 * g.a_banks, g.rows * g.data_bits, g.a_depth)
        assert widths["weight"] == (2 * g.b_banks, layouts.weight_row(g).size, g.b_depth)
        assert widths["accumulator"] == (2 * g.cols, g.acc_bits, g.c_depth)
        assert widths["mask"] == (4, 8 * g.beat_bytes, -(-g.mask_words // 2))


def test_leave_one_out_of_the_committed_samples():
    # Computed from the samples on every run: each sample predicted by a fit without it.
    model = load_area_model()
    for family, fits in model.fits.items():
        for resource in ("lut", "ff", "dsp", "bram"):
            loo = fits[resource].loo_rel_error
            assert loo is not None and loo <= 0.10, (family, resource, loo)


def test_memory_features_follow_the_buffers():
    hw = load_hardware("sat_vcu1525").model_dump(mode="json")
    small = {**hw, "buffers": {**hw["buffers"], "input_bytes": hw["buffers"]["input_bytes"] // 4}}
    assert memory_features(small)["mem_uram"] < memory_features(hw)["mem_uram"]


def test_a_sample_whose_hardware_is_malformed_is_one_line(tmp_path):
    import json

    from reports.area import SAMPLES_PATH, AreaModelError, load_area_model
    doc = json.loads(SAMPLES_PATH.read_text())
    del doc["samples"][0]["hardware"]["buffers"]
    path = tmp_path / "samples.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(AreaModelError) as err:
        load_area_model(path)
    assert "\n" not in str(err.value) and "buffers" in str(err.value)


def test_each_dataflow_has_its_own_family_and_every_sweep_point_an_area():
    """The dataflow sweep's points (workloads/examples/sweep_dataflow.yaml) get their area from
    their own array's samples: the output-stationary PE is another PE."""
    from reports.area import family_of, load_area_model
    from workloads.load import load_hardware
    model = load_area_model()
    areas = {}
    for dataflow in ("weight_stationary", "output_stationary"):
        for rows in (4, 8, 16):
            for cols in (4, 8, 16):
                hw = load_hardware("tiny", overrides=[
                    f"array.dataflow={dataflow}", f"array.rows={rows}", f"array.cols={cols}",
                    "buffers.weight_bytes=2048"]).model_dump()
                areas[dataflow, rows, cols] = model.resources(hw)["area"]
        assert family_of(hw) in model.fits
    assert family_of(hw) != family_of({**hw, "array": {**hw["array"], "dataflow":
                                                       "weight_stationary"}})
    # the output-stationary PE is larger: every shape costs more area
    assert all(areas["output_stationary", r, c] > areas["weight_stationary", r, c]
               for r in (4, 8, 16) for c in (4, 8, 16))
