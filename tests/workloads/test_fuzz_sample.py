"""A fixed 500-case sample of ``benchmarks/fuzz_inputs.py`` (mutated examples, presets, sweeps,
Matrix Market, .npy and .npz files): every case loads or fails with one ArchsimError line."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

FUZZ = Path(__file__).parents[2] / "benchmarks" / "fuzz_inputs.py"


def test_fixed_sample_has_no_traceback_multi_line_error_or_slow_case():
    spec = importlib.util.spec_from_file_location("fuzz_inputs", FUZZ)
    fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz)
    log = io.StringIO()
    counts = fuzz.run(500, seed=15, slow_s=10.0, out=log)
    assert counts["cases"] == 500
    assert (counts["tracebacks"], counts["multi_line"], counts["slow"]) == (0, 0, 0), log.getvalue()
