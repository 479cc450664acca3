"""Findings that need no simulator, kept as regression tests once fixed.

An open finding is a strict ``xfail``: it passes while the defect is there and fails the day it is
gone, so the marker is removed together with the fix (docs/verification.md, "Open findings").
"""

from __future__ import annotations

from verification.configs import load_config
from verification.golden import prepare
from verification.programs import make_case
from workloads.lowering import GemmTask
from workloads.spec import SchedulePasses


def test_single_buffered_tiles_fit_a_slot():
    # Was finding 1: with double_buffering off the scheduler sized A and C tiles for the whole
    # buffer, but a slot is half of it (one ISA slot bit, fixed RTL halves).
    hw = load_config("wide")  # 512-byte input buffer: 256-byte slots
    task = GemmTask("g", "g", "inference", 40, 8, 8)
    case = make_case(hw, 0, "dense", (task,), SchedulePasses(double_buffering=False))
    prepare(case)  # raises VerificationError if any tile exceeds its slot
