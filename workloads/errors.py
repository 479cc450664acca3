"""The exception hierarchy shared by every archsim layer.

Each layer raises its own subclass so that callers (the CLI above all) can turn any
user-facing problem into one line on stderr without catching unrelated bugs.
"""

from __future__ import annotations

__all__ = ["ArchsimError", "SpecError", "MappingError", "SimulationError"]


class ArchsimError(Exception):
    """Base class of every error archsim reports to a user as one line."""


class SpecError(ArchsimError):
    """A workload or hardware description is invalid (bad YAML, bad field, bad file)."""


class MappingError(ArchsimError):
    """The scheduler cannot map a valid workload onto the given hardware."""


class SimulationError(ArchsimError):
    """The performance model was given a program it cannot execute (for example a deadlock)."""
