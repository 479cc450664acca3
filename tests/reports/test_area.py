"""The area model: least-squares fits, their reported errors, and datapath families."""

from __future__ import annotations

import json

import pytest

from reports.area import DEVICE, AreaModel, AreaModelError, load_area_model, memory_features
from workloads.load import load_hardware


def _hw(rows: int, cols: int, data_bits: int = 8) -> dict:
    hw = load_hardware("tiny", overrides=[f"array.rows={rows}", f"array.cols={cols}",
                                          f"data_bits={data_bits}"])
    return hw.model_dump(mode="json")


def _with_memories(hw: dict, logic: dict) -> dict:
    """A fixture's resources: its logic from a formula plus the memory rule's cells, which the
    model adds to its fit of the logic."""
    mem = memory_features(hw)
    return {**logic, "lut": logic["lut"] + mem["mem_lutram"], "ff": logic["ff"] + mem["mem_ff"],
            "bram": logic["bram"] + mem["mem_bram"], "uram": logic["uram"] + mem["mem_uram"]}


def _samples(fn, sizes=((4, 4), (8, 8), (16, 16), (8, 16), (4, 8), (16, 4)), data_bits=8):
    # Test fixtures generated from a known formula: they check the fitting arithmetic only.
    return [{"hardware": (hw := _hw(r, c, data_bits)), "resources": _with_memories(hw, fn(r, c))}
            for r, c in sizes]


def _linear(r, c):
    # LUT over the model's first features (pes, const, cols, rows): leave-one-out fits with
    # five samples keep only those.
    return {"lut": 50 + 30 * r * c + 7 * c + 5 * r, "ff": 100 + 40 * r * c,
            "dsp": r * c,
            "bram": 4, "uram": 0}


def test_exact_linear_data_is_recovered():
    model = AreaModel.fit(_samples(_linear))
    got = model.resources(_hw(32, 32))
    want = _with_memories(_hw(32, 32), _linear(32, 32))  # the memory rule's cells included
    assert got["lut"] == pytest.approx(want["lut"], rel=1e-6)
    assert got["ff"] == pytest.approx(want["ff"], rel=1e-6)
    assert got["dsp"] == pytest.approx(1024, rel=1e-9)
    assert got["bram"] == pytest.approx(want["bram"], abs=0.1)
    assert got["area"] == pytest.approx(max(got[r] / DEVICE[r] for r in ("lut", "ff", "dsp",
                                                                          "bram")))
    for row in model.describe():
        assert row["max_rel_error"] < 1e-9 and row["loo_rel_error"] < 1e-9


def test_errors_are_reported_for_nonlinear_data():
    def quad(r, c):
        return {"lut": 10 * (r * c) ** 1.3, "ff": 5 * r * c, "dsp": r * c, "bram": 2, "uram": 1}

    model = AreaModel.fit(_samples(quad))
    lut = next(d for d in model.describe() if d["resource"] == "lut")
    assert lut["max_rel_error"] > 0.01
    assert lut["loo_rel_error"] > lut["max_rel_error"]


def test_two_samples_fit_without_leave_one_out():
    model = AreaModel.fit(_samples(_linear, sizes=((4, 4), (8, 8))))
    dsp = next(d for d in model.describe() if d["resource"] == "dsp")
    assert dsp["loo_rel_error"] is None and dsp["samples"] == 2
    assert model.resources(_hw(16, 16))["dsp"] == pytest.approx(256, rel=1e-9)


def test_families_are_separate():
    model = AreaModel.fit(_samples(_linear))
    with pytest.raises(AreaModelError, match=r"no synthesis samples for datapath family d16a32"):
        model.resources(_hw(8, 8, data_bits=16))
    with pytest.raises(AreaModelError, match="at least two synthesis samples"):
        AreaModel.fit(_samples(_linear, sizes=((4, 4),)))


def test_load_from_file(tmp_path):
    path = tmp_path / "samples.json"
    assert load_area_model(path) is None
    path.write_text(json.dumps({"provenance": {"tool": "test"}, "samples": _samples(_linear)}))
    model = load_area_model(path)
    assert model.provenance == {"tool": "test"}
    path.write_text("{")
    with pytest.raises(AreaModelError, match="cannot read area samples"):
        load_area_model(path)


def test_area_metrics_in_a_sweep(tmp_path, monkeypatch, inline_backend):
    from reports_support import write_sweep

    from reports import area
    from reports.dse import run_sweep
    from reports.store import ResultStore
    from reports.sweep import load_sweep

    samples = tmp_path / "samples.json"
    samples.write_text(json.dumps({"samples": _samples(_linear)}))
    monkeypatch.setattr(area, "SAMPLES_PATH", samples)
    path = write_sweep(tmp_path / "a.yaml", (
        "axes:\n  - {key: hardware.array.rows, name: rows, values: [4, 8]}\n"
        "  - {key: hardware.array.cols, name: cols, values: [4, 8]}\n"
        "constraints: [dsp <= 40]\nobjectives: [latency_s, area, gmacs_per_klut]\n"))
    sweep = load_sweep(path)
    assert [c.stage for c in sweep.constraints] == ["pre"]  # area depends on the hardware only
    run_sweep(sweep, tmp_path / "out", backend=inline_backend)
    with ResultStore(tmp_path / "out" / "results.db", readonly=True) as store:
        rows = {(r.params["hardware.array.rows"], r.params["hardware.array.cols"]): r
                for r in store.rows()}
    assert rows[8, 8].status == "infeasible" and rows[8, 8].metrics["dsp"] == pytest.approx(64)
    ok = rows[4, 8].metrics
    assert rows[4, 8].status == "ok" and ok["dsp"] == pytest.approx(32)
    assert ok["lut"] == pytest.approx(_with_memories(_hw(4, 8), _linear(4, 8))["lut"])
    assert ok["gmacs_per_klut"] == pytest.approx(ok["throughput_gmacs"] / ok["lut"] * 1e3)
    assert ok["area"] == pytest.approx(max(ok[r] / DEVICE[r] for r in area.RESOURCES))


def test_a_point_that_does_not_fit_the_device_is_infeasible(tmp_path, monkeypatch,
                                                            inline_backend):
    # Without any area objective or constraint: a design larger than the XCVU9P is no design.
    from reports_support import write_sweep

    from reports import area
    from reports.dse import run_sweep
    from reports.store import ResultStore
    from reports.sweep import load_sweep

    def big(r, c):  # 2,000 LUT and 4 DSP per PE: 32×32 needs 173 % of the LUTs, 60 % of DSPs
        return {"lut": 2000 * r * c, "ff": 10 * r * c, "dsp": 4 * r * c, "bram": 4, "uram": 0}

    samples = tmp_path / "samples.json"
    samples.write_text(json.dumps({"samples": _samples(big)}))
    monkeypatch.setattr(area, "SAMPLES_PATH", samples)
    path = write_sweep(tmp_path / "a.yaml", (
        "axes:\n  - {key: hardware.array.rows, name: rows, values: [4, 32]}\n"
        "  - {key: hardware.array.cols, name: cols, values: [32]}\nobjectives: [latency_s]\n"))
    run_sweep(load_sweep(path), tmp_path / "out", backend=inline_backend)
    with ResultStore(tmp_path / "out" / "results.db", readonly=True) as store:
        rows = {r.params["hardware.array.rows"]: r for r in store.rows()}
    lut = {r: _with_memories(_hw(r, 32), big(r, 32))["lut"] for r in (4, 32)}
    assert rows[4].status == "ok" and rows[4].metrics["lut"] == pytest.approx(lut[4])
    assert rows[32].status == "infeasible"
    assert rows[32].message == (f"does not fit the XCVU9P: predicted LUT {lut[32]:,.0f} = "
                                f"{lut[32] / DEVICE['lut']:.0%} of 1,182,240")
    assert rows[32].metrics["area"] == pytest.approx(lut[32] / DEVICE["lut"])


def test_over_capacity_names_each_resource_over_the_device_largest_first():
    from reports.area import over_capacity

    fits = {"lut": 1000.0, "ff": 1000.0, "dsp": 100.0, "bram": 10.0, "uram": 10.0}
    assert over_capacity(fits) is None
    assert over_capacity({**fits, "dsp": DEVICE["dsp"]}) is None  # exactly full still fits
    message = over_capacity({**fits, "uram": 1200.0, "dsp": 13_680.0})
    assert message == ("does not fit the XCVU9P: predicted DSP 13,680 = 200% of 6,840, "
                       "URAM 1,200 = 125% of 960")



def test_a_resource_is_over_only_beyond_the_fits_leave_one_out_error():
    # FF over-predicted by up to 30 % (the fit's leave-one-out error) cannot prove that 120 %
    # does not fit; 150 % is over even then. An exact fit (DSP, 0 %) is taken at its word.
    from reports.area import over_capacity

    fits = {"lut": 1000.0, "ff": 1.2 * DEVICE["ff"], "dsp": 100.0, "bram": 10.0, "uram": 10.0}
    assert over_capacity(fits, {"ff": 0.3}) is None
    assert over_capacity(fits, {"ff": 0.1}) == (
        f"does not fit the XCVU9P: predicted FF {fits['ff']:,.0f} = 120% of {DEVICE['ff']:,} "
        "(at least 109% within the fit's leave-one-out error 10%)")
    assert over_capacity({**fits, "ff": 1.5 * DEVICE["ff"]}, {"ff": 0.3}).startswith(
        "does not fit the XCVU9P: predicted FF")
    assert over_capacity({**fits, "dsp": DEVICE["dsp"] + 1}, {"dsp": 0.0}) is not None

def test_committed_samples_are_measurements_with_provenance():
    from reports.area import SAMPLES_PATH, sample_from_resources

    if not SAMPLES_PATH.is_file():
        pytest.skip("no synthesis samples committed yet (reports/data/area_samples.json)")
    doc = json.loads(SAMPLES_PATH.read_text())
    assert "synth_xilinx" in doc["provenance"]["tool"] and doc["provenance"]["date"]
    for sample in doc["samples"]:
        assert sample["engine"] and len(sample["verilog_sha256"]) == 64
        assert sample["command"].startswith("archsim rtl ") and "--synth" in sample["command"]
        assert sample["synth_seconds"] > 0
        # The model's resources are exactly the Yosys cell counts, regrouped.
        again = sample_from_resources(sample["hardware"], {"total": sample["yosys_total"]})
        assert again["resources"] == sample["resources"]
    assert load_area_model() is not None


def test_dsp_follows_the_softmax_lanes_the_rtl_builds():
    # rtl/online_softmax.py builds min(softmax_lanes, cols) lanes of four DSPs each; a wider
    # array with the same lanes adds no softmax DSPs (fixture from that formula).
    def hw(rows, cols, lanes):
        return load_hardware("tiny", overrides=[
            f"array.rows={rows}", f"array.cols={cols}", f"vector_unit.softmax_lanes={lanes}",
        ]).model_dump(mode="json")

    def dsp(rows, cols, lanes):
        return rows * cols + 4 * min(lanes, cols) + 6

    points = [(4, 4, 2), (8, 8, 4), (16, 16, 2), (4, 16, 8), (8, 4, 8), (16, 8, 4)]
    samples = [{"hardware": hw(*p), "resources": {"lut": 1, "ff": 1, "dsp": dsp(*p), "bram": 1,
                                                  "uram": 0}} for p in points]
    model = AreaModel.fit(samples)
    for point in [(32, 32, 2), (32, 32, 32), (8, 2, 16)]:
        assert model.resources(hw(*point))["dsp"] == pytest.approx(dsp(*point), abs=0.05)


def test_the_sat_preset_family_has_an_area():
    # The committed samples cover sat_vcu1525's datapath (16/48 bits, six N:M patterns): its
    # sweeps get area metrics, and the preset itself fits the XCVU9P.
    from reports.area import family_of, over_capacity

    model = load_area_model()
    for rows, cols in [(16, 16), (32, 32), (64, 32)]:
        hw = load_hardware("sat_vcu1525", overrides=[f"array.rows={rows}",
                                                     f"array.cols={cols}"])
        got = model.resources(hw.model_dump(mode="json"))
        assert family_of(hw.model_dump(mode="json")) in model.fits
        assert got["dsp"] >= rows * cols and 0 < got["area"]
    preset = model.resources(load_hardware("sat_vcu1525").model_dump(mode="json"))
    assert over_capacity(preset) is None and preset["area"] < 1
