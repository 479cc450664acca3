"""Protocol checks on the DUT's side of its streams (Amaranth's stream data transfer rules).

Amaranth's ``lib.stream`` rule 2: once the producer asserts ``valid`` it must not deassert it or
change ``payload`` until a transfer is performed. :class:`StreamRule` checks it cycle by cycle
on every stream the DUT produces; the testbench's own producers (host, memory) obey it by
construction.
"""

from __future__ import annotations

__all__ = ["ProtocolError", "StreamRule"]


class ProtocolError(Exception):
    """The DUT broke an interface rule (stream protocol, out-of-range or malformed request)."""


class StreamRule:
    """Checks rule 2 of Amaranth streams on one DUT-driven stream.

    Parameters
    ----------
    name
        The stream's port name, for messages.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._pending: int | None = None  # payload offered without a transfer last cycle

    def check(self, cycle: int, valid: bool, ready: bool, payload: int) -> None:
        """Record one cycle; raise :class:`ProtocolError` if a pending payload was withdrawn."""
        if self._pending is not None:
            if not valid:
                raise ProtocolError(
                    f"cycle {cycle}: {self.name}.valid fell before a transfer (payload "
                    f"{self._pending:#x} was offered and never taken)")
            if payload != self._pending:
                raise ProtocolError(
                    f"cycle {cycle}: {self.name}.payload changed from {self._pending:#x} to "
                    f"{payload:#x} while valid and before a transfer")
        self._pending = payload if valid and not ready else None
