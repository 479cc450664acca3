"""The verification layer's exception (one line on the CLI, like every ``ArchsimError``)."""

from __future__ import annotations

from workloads.errors import ArchsimError

__all__ = ["VerificationError"]


class VerificationError(ArchsimError):
    """A program cannot be verified (malformed program, missing RTL, failed build or simulation)."""
