"""The ``archsim`` console script (and ``python -m archsim``): loads the CLI, then runs it.

Loading ``archsim.cli`` is the first thing a command does, and Ctrl-C then was Python's
traceback: ``archsim.cli.main`` handles presses only once it runs. Here a press while the CLI
loads is the same one line and exit code 130. Nothing else belongs here: whatever this module
imports before the ``try`` is outside it.
"""

from __future__ import annotations

import sys

from archsim._interrupt import stopped

__all__ = ["main"]


def main() -> int:
    """Entry point of the ``archsim`` console script; returns the exit code."""
    try:
        from archsim.cli import main as cli_main
    except KeyboardInterrupt as exc:
        return stopped(exc, in_main=True, argv=None)
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
