"""What Ctrl-C does to the ``archsim`` command: one line on stderr and exit code 130.

Its own module, importing nothing of ours, so that the console script (``archsim/__main__.py``)
can say it while ``archsim.cli`` is still loading, and the CLI says the same once it runs.
"""

from __future__ import annotations

import signal
import sys
import warnings
from collections.abc import Sequence

__all__ = ["noting_interrupts", "stopped"]


def noting_interrupts(pressed: list[int]):
    """A SIGINT handler that raises ``KeyboardInterrupt``, as Python's own does, and notes the
    press in ``pressed``: the evidence that an error a library raised instead came from it."""
    def interrupt(signum, frame):
        pressed.append(signum)
        raise KeyboardInterrupt

    return interrupt


def stopped(exc: BaseException, in_main: bool, argv: Sequence[str] | None) -> int:
    """Say that the command was interrupted, ignoring further presses; exit code 130."""
    if in_main:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A KeyboardInterrupt that left code exec()'d from a string (dataclasses and namedtuple
    # build their methods so while modules load) marks it unhandled for CPython, which then
    # ends 'python -m archsim' by killing itself with SIGINT, whatever code we return. Running
    # any string successfully clears the mark; this press is handled.
    exec("")
    if argv is None:
        # Abandoned work warns as it is collected (Amaranth's UnusedElaboratable for a
        # half-built design): noise after the one line that says what happened.
        warnings.simplefilter("ignore")
    detail = f"; {exc}" if str(exc) else ""
    print(f"archsim: interrupted{detail}", file=sys.stderr)
    return 130
