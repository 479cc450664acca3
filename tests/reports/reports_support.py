"""Helpers shared by the DSE and report tests: an in-process executor, small sweep files."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from reports.evaluate import evaluate_chunk
from reports.executors import Backend

EXAMPLES = Path(__file__).resolve().parents[2] / "workloads" / "examples"


class InlineBackend(Backend):
    """Evaluates chunks on one thread of the test process: the dispatch logic without the cost
    of starting worker processes."""

    workers = 2
    description = "inline test backend"

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1)
        self.submitted = 0

    def submit(self, chunk, worker: int) -> Future:
        self.submitted += len(chunk)
        return self._pool.submit(evaluate_chunk, chunk)

    def lost_worker(self, exc: BaseException) -> bool:
        return False

    def close(self) -> None:
        self._pool.shutdown()


def write_sweep(path: Path, body: str) -> Path:
    """A sweep file over the tiny GEMM example; ``body`` holds axes, objectives, strategy…"""
    path.write_text(f"version: 1\nname: {path.stem}\nworkload: {EXAMPLES / 'tiny_gemm.yaml'}\n"
                    + body)
    return path


@contextlib.contextmanager
def time_limit(seconds: int):
    """Fail the test (instead of hanging the suite) if the block runs longer than ``seconds``."""

    def expire(signum, frame):
        raise TimeoutError(f"gave up after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def stored_points(db: Path) -> int:
    """Rows in a results store that another process may be writing (0 before it exists)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute("SELECT COUNT(*) FROM points").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0
