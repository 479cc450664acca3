"""Fixtures for the DSE and report tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from reports_support import EXAMPLES, InlineBackend

from archsim.cli import main
from reports.dse import run_sweep
from reports.html import build_report
from reports.sweep import load_sweep


@pytest.fixture
def inline_backend():
    backend = InlineBackend()
    yield backend
    backend.close()


@pytest.fixture
def tiny_sweep_path() -> Path:
    return EXAMPLES / "sweep_tiny.yaml"


@pytest.fixture(scope="session")
def report_inputs(tmp_path_factory) -> tuple[Path, Path]:
    """A finished tiny sweep (results.db) and a tiny run with --compare-dense (results.json)."""
    tmp = tmp_path_factory.mktemp("report_inputs")
    backend = InlineBackend()
    try:
        run_sweep(load_sweep(EXAMPLES / "sweep_tiny.yaml", area_available=False), tmp / "dse",
                  backend=backend)
    finally:
        backend.close()
    assert main(["run", str(EXAMPLES / "tiny_gemm.yaml"), "--compare-dense", "--quiet",
                 "--out", str(tmp / "run")]) == 0
    return tmp / "dse" / "results.db", tmp / "run" / "results.json"


@pytest.fixture(scope="session")
def full_report(report_inputs, tmp_path_factory):
    """The report of both inputs (built once: rendering figures is the slow part)."""
    return build_report(list(report_inputs), tmp_path_factory.mktemp("report") / "rep")
