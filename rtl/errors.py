"""The RTL layer's exception: one line on the CLI, like every ``ArchsimError``."""

from __future__ import annotations

from workloads.errors import ArchsimError

__all__ = ["RTLError"]


class RTLError(ArchsimError):
    """The accelerator cannot be built for a hardware description, or its toolchain failed."""
