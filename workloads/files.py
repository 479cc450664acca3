"""Reading a user's input file without hanging on it; output folders a failed command removes;
a set of outputs that appears whole or not at all.

Every command reads files a user names (a workload, a sweep, a baseline). Two kinds of path
would stop a command for good in a plain ``open().read()``: a named pipe (FIFO) that no program
writes to (``open()`` waits for a writer) and an endless device such as ``/dev/zero``; the
caller bounds the size.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from workloads.errors import ArchsimError

__all__ = ["PIPE_WAIT_S", "read_at_most", "make_dirs", "forget_created", "remove_created_if_empty",
           "staged_folder", "signals_noted"]

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


#: Signals that stop a command; they wait while finished outputs are moved into place.
_STOPPING = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def staged_folder(out: Path, last: str, stale: Sequence[str] = ()) -> Iterator[Path]:
    """A hidden sibling of ``out`` to write a set of outputs into, moved into ``out`` once the
    block has finished; the file named ``last`` moves last, as it is the one that says "done".

    Interrupted (Ctrl-C, or SIGTERM, which raises ``KeyboardInterrupt`` here) or failed, the
    sibling is removed and ``out`` is as it was: an earlier set of outputs there is replaced
    only by a complete one, and never half. The moves cannot be interrupted (those signals wait
    until they are done). Files in ``out`` that the new set does not hold are left alone, but
    for those named in ``stale``: results derived from the files being replaced (a synthesis
    report of earlier Verilog), removed within the same moves. Only a process killed outright
    leaves the sibling, named ``.<out>.incomplete-*``.
    """
    staging = _staging_beside(out)
    try:
        with _sigterm_interrupts():
            try:
                yield staging
            except KeyboardInterrupt as exc:
                detail = f"{exc}; " if str(exc) else ""
                raise KeyboardInterrupt(f"{detail}nothing written to {out}") from None
            _move_into(staging, out, last, stale)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _staging_beside(out: Path) -> Path:
    """A new hidden folder beside ``out``. Its parent can refuse it where ``out`` itself is
    writable (a writable folder in a read-only one): one line, not an OSError's traceback."""
    try:
        make_dirs(out.parent)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.incomplete-", dir=out.parent))
    except OSError as exc:
        raise ArchsimError(f"{out}: cannot write beside it in {out.parent}, where the outputs "
                           f"are staged to be moved in whole: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises ``KeyboardInterrupt``, so the cleanup a Ctrl-C runs also runs for it (its
    default action ends the process on the spot). Where a handler is already set, it is kept."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt("terminated (SIGTERM)")

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def signals_noted(signals: Iterable[int] = _STOPPING) -> Iterator[list[int]]:
    """For the block, ``signals`` are noted in the list it yields instead of acted on; the
    handlers before are restored after it. Handlers run in the main thread whichever thread
    the kernel hands a signal to (a blocked signal mask would be per thread: a progress bar's
    thread took the signal instead). Elsewhere than the main thread nothing is held back."""
    noted: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield noted
        return
    previous = {s: signal.signal(s, lambda signum, frame: noted.append(signum)) for s in signals}
    try:
        yield noted
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold back Ctrl-C for the block (:func:`signals_noted`), then act on a press once: the
    previous handler runs, or KeyboardInterrupt is raised where it was Python's default."""
    with signals_noted((signal.SIGINT,)) as caught:
        yield
    if caught:
        previous = signal.getsignal(signal.SIGINT)
        if callable(previous):
            previous(signal.SIGINT, None)
        elif previous == signal.SIG_DFL:
            raise KeyboardInterrupt


def _move_into(staging: Path, out: Path, last: str, stale: Sequence[str]) -> None:
    """Move every file of ``staging`` to the same place in ``out``, ``last`` last, with Ctrl-C
    and SIGTERM held back: no reader ever sees a new ``last`` beside old files. A stop that
    arrived meanwhile is raised here, once the set is complete."""
    with signals_noted() as stops:
        _move_files(staging, out, last, stale)
    if stops:
        detail = "terminated (SIGTERM); " if signal.SIGTERM in stops else ""
        raise KeyboardInterrupt(f"{detail}{out} was complete and is kept")


def _move_files(staging: Path, out: Path, last: str, stale: Sequence[str]) -> None:
    if not out.exists():
        staging.rename(out)  # one step: the whole set appears at once
        return
    for name in stale:  # first: a stop after this leaves no result beside files it misdescribes
        (out / name).unlink(missing_ok=True)
    files = sorted((p for p in staging.rglob("*") if p.is_file()),
                   key=lambda p: p.relative_to(staging) == Path(last))
    for path in files:
        target = out / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
