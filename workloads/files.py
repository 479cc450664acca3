"""Reading a user's input file without hanging on it; output folders a failed command removes.

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

__all__ = ["PIPE_WAIT_S", "read_at_most", "make_dirs", "forget_created", "remove_created_if_empty"]

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


#: Folders :func:`make_dirs` created during the current command, innermost first.
_CREATED: list[Path] = []


def make_dirs(folder: Path) -> None:
    """``mkdir -p folder``, remembering the folders it creates: a command that then fails or is
    interrupted removes them again while they are empty (:func:`remove_created_if_empty`)."""
    _CREATED[:0] = [p for p in (folder, *folder.parents) if not p.exists()]  # innermost first
    folder.mkdir(parents=True, exist_ok=True)


def forget_created() -> None:
    """Start a command: no folder is its own yet."""
    _CREATED.clear()


def remove_created_if_empty() -> None:
    """After a failed or interrupted command: remove the folders it created for its outputs,
    as long as they are still empty (never a file anyone wrote)."""
    for folder in _CREATED:
        try:
            folder.rmdir()
        except OSError:  # not empty (or already gone): keep it and everything above it
            break
    _CREATED.clear()
