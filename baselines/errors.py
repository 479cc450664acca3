"""The error the baseline commands report to a user as one line (exit code 2)."""

from __future__ import annotations

from workloads.errors import ArchsimError

__all__ = ["BaselineError"]


class BaselineError(ArchsimError):
    """A baseline cannot be measured or used: bad options, a missing device, a bad or mismatched
    baseline file."""
