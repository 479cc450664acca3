"""Reading a user's input file without hanging on it.

Every command reads files a user names (a workload, a sweep, a baseline). Two kinds of path
would stop a command for good in a plain ``open().read()``: a named pipe (FIFO) that no program
writes to (``open()`` waits for a writer) and an endless device such as ``/dev/zero``; the
caller bounds the size.
"""

from __future__ import annotations

import errno
import os
import select
import stat
from pathlib import Path

__all__ = ["PIPE_WAIT_S", "read_at_most"]

#: How long a named pipe may stay silent before reading it is given up.
PIPE_WAIT_S = 5.0


def read_at_most(path: str | Path, limit: int) -> bytes:
    """Up to ``limit + 1`` bytes of ``path`` (more than ``limit`` means: too large).

    The file is opened without blocking. A named pipe is then read once something was written
    to it (or its writer closed it), within ``PIPE_WAIT_S``; an anonymous pipe that already has
    a writer (``<(cmd)``) is read as usual.

    Raises
    ------
    OSError
        As ``open()`` does (not found, a directory, no permission); ``TimeoutError`` for a
        named pipe that nothing was written to in time.
    ValueError
        When the path contains a NUL byte.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with open(fd, "rb") as fh:
        if stat.S_ISFIFO(os.fstat(fd).st_mode) and hasattr(select, "poll"):
            poll = select.poll()
            poll.register(fd, select.POLLIN | select.POLLHUP)
            if not poll.poll(PIPE_WAIT_S * 1000):
                raise TimeoutError(errno.ETIMEDOUT, f"a named pipe that nothing was written to "
                                                    f"in {PIPE_WAIT_S:g} s")
        os.set_blocking(fd, True)
        return fh.read(limit + 1)
