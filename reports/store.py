"""The DSE results store: one SQLite file, one row per design point.

Rows are keyed by the canonical parameter hash (:func:`reports.sweep.point_hash`), so a point is
stored at most once whatever happens. Only finished points are written, each in its own
transaction, by the one process that drives the sweep (workers return results; they never
write). SQLite in WAL mode with ``synchronous=NORMAL`` keeps every committed transaction across a
``kill -9`` of the writer (REFERENCE.md section 5) and lets a report read while a sweep writes;
``--resume`` then skips every hash already present.

Opening a store for writing never changes a file that is not one: an existing file is first
inspected read-only (:func:`inspect_store`), and a SQLite database of anything else is refused
before a table is added or its journal mode switched. A writable store is also locked
(:class:`StoreLock`): one sweep writes it at a time, and a lock whose holder died (even by
``kill -9``) is free again, because the kernel drops it with the process.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from workloads.errors import ArchsimError

__all__ = ["ResultStore", "PointRow", "StoreError", "StoreLock", "inspect_store",
           "STORE_SCHEMA_VERSION", "STATUSES"]

STORE_SCHEMA_VERSION = 1
#: ok: simulated and every constraint holds; infeasible: a constraint failed (``message`` says
#: which); invalid: the design cannot be built or mapped (SpecError/MappingError); error: the
#: simulation crashed or its worker died — the one status ``--resume`` evaluates again.
STATUSES = ("ok", "infeasible", "invalid", "error")
Status = Literal["ok", "infeasible", "invalid", "error"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS points (
    hash            TEXT PRIMARY KEY,
    params          TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('ok', 'infeasible', 'invalid', 'error')),
    message         TEXT,
    metrics         TEXT,
    hardware        TEXT,
    layers          TEXT,
    trial           INTEGER,
    generation      INTEGER,
    wall_s          REAL,
    started_at      REAL,
    finished_at     REAL NOT NULL,
    worker          TEXT,
    worker_rss_mib  REAL,
    archsim_version TEXT NOT NULL
);
"""


class StoreError(ArchsimError):
    """The results file is not an archsim store, belongs to a different sweep, or is being
    written by another sweep."""


_SQLITE_HEADER = b"SQLite format 3\x00"
#: The tables of a store; a database holding these (and nothing else) is ours.
_TABLES = {"meta", "points"}


def inspect_store(path: Path) -> None:
    """Check, without writing anything, that ``path`` is absent, empty or an archsim store.

    The file is read through a read-only connection and only ``sqlite_master`` is queried:
    no table is created and the journal mode is left as it is.

    Raises
    ------
    StoreError
        When the file is not a SQLite database, or is one of something else.
    """
    if not path.exists():
        return
    if not path.is_file():
        raise StoreError(f"{path}: is not a file; choose another --out")
    try:
        with path.open("rb") as fh:
            header = fh.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise StoreError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if not header:
        return  # an empty file: SQLite makes a new database of it
    if header != _SQLITE_HEADER:
        raise StoreError(f"{path}: not an archsim results store (not a SQLite database); left "
                         f"unchanged; choose another --out")
    try:
        db = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, timeout=30)
        try:
            tables = {name for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: not an archsim results store ({_one_line(exc)}); left unchanged; "
                         f"choose another --out") from None
    if tables and tables != _TABLES:
        listed = ", ".join(sorted(tables - _TABLES) or sorted(tables))
        raise StoreError(f"{path}: not an archsim results store (a SQLite database with tables "
                         f"{listed}); left unchanged; choose another --out")


class StoreLock:
    """An exclusive lock on a store, held by the one process that writes it.

    The lock is ``flock`` on a sibling file ``<store>.lock`` that records the holder
    (``host:pid``) for the message a second writer gets. The kernel releases it when the holder
    exits in any way, ``kill -9`` included, so a dead sweep never leaves a store locked. The
    file is left in place on release: removing it would let two processes lock two different
    files of the same name.

    Raises
    ------
    StoreError
        When another process holds the lock.
    """

    def __init__(self, store_path: Path) -> None:
        self.path = store_path.with_name(store_path.name + ".lock")
        self._fd: int | None = None
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock (documented in docs/dse.md)
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot create the store's lock file: "
                             f"{exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(f"{store_path}: another sweep is writing this store (process "
                             f"{holder}); wait for it to finish, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()}:{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


@dataclass(frozen=True)
class PointRow:
    """One stored design point (JSON columns decoded)."""

    hash: str
    params: dict[str, Any]
    status: Status
    message: str | None = None
    metrics: dict[str, Any] | None = None
    hardware: dict[str, Any] | None = None
    layers: list[dict[str, Any]] | None = None
    trial: int | None = None
    generation: int | None = None
    wall_s: float | None = None
    started_at: float | None = None
    finished_at: float = 0.0
    worker: str | None = None
    worker_rss_mib: float | None = None
    archsim_version: str = ""


_JSON_COLUMNS = ("params", "metrics", "hardware", "layers")
_COLUMNS = tuple(PointRow.__dataclass_fields__)


def _encode(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))


class ResultStore:
    """Open (creating if needed) the store at ``path``.

    Parameters
    ----------
    path
        The SQLite file. Its directory is created.
    readonly
        Open for reading only (reports); the file must exist. Otherwise the store is locked
        for writing (:class:`StoreLock`) until :meth:`close`.

    Raises
    ------
    StoreError
        When the file is not an archsim store (it is then left unchanged), was written by a
        newer schema, or is being written by another process.
    """

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = Path(path)
        self._lock: StoreLock | None = None
        if readonly:
            if not self.path.is_file():
                raise StoreError(f"{self.path}: no such results file")
            uri = f"file:{self.path.resolve()}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, timeout=30)
        else:
            inspect_store(self.path)  # before the first write of any kind
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"{self.path.parent}: cannot create the folder: "
                                 f"{exc.strerror or exc}") from None
            self._lock = StoreLock(self.path)
            try:
                # isolation_level=None: explicit BEGIN/COMMIT, one transaction per point.
                self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            except sqlite3.Error as exc:
                self._lock.release()
                raise StoreError(f"{self.path}: cannot open the results store: {exc}") from None
        try:
            if not readonly:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_SCHEMA)
            version = self.meta().get("store_schema_version")
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StoreError(f"{self.path}: not an archsim results store ({_one_line(exc)})") from None
        if version is None and not readonly:
            self.set_meta(store_schema_version=STORE_SCHEMA_VERSION)
        elif version is not None and int(version) > STORE_SCHEMA_VERSION:
            self.close()
            raise StoreError(f"{self.path}: written by a newer archsim (store schema {version})")

    def close(self) -> None:
        if self._lock is not None:
            # The writer leaves one file: back in rollback-journal mode, SQLite folds the WAL in
            # and removes results.db-wal and -shm, which a read-only connection (the summary,
            # a report) can never do. Busy while a report still reads: the files then stay, as
            # harmless as before; --resume switches WAL back on.
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA journal_mode=DELETE")
        self._db.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- metadata --------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        """All metadata, JSON values decoded."""
        with self._reading():
            try:
                cur = self._db.execute("SELECT key, value FROM meta")
            except sqlite3.DatabaseError as exc:  # not SQLite at all, or no archsim tables
                raise StoreError(f"{self.path}: not an archsim results store ({_one_line(exc)})") from None
            return {k: json.loads(v) for k, v in cur.fetchall()}

    def has_tables(self) -> bool:
        """Whether the file holds the store's tables yet (an empty database has none)."""
        with self._reading():
            found = {name for (name,) in self._db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
        return _TABLES <= found

    def set_meta(self, **values: Any) -> None:
        with self._transaction():
            self._db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [(k, json.dumps(v, sort_keys=True)) for k, v in values.items()],
            )

    # -- points ----------------------------------------------------------------------------

    def _transaction(self):
        db = self._db

        class _Tx:
            def __enter__(self_inner):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self_inner, kind, exc, tb):
                db.execute("ROLLBACK" if kind else "COMMIT")

        return _Tx()

    def record(self, row: PointRow) -> None:
        """Write one finished point in its own transaction (replacing an ``error`` row)."""
        values = [_encode(getattr(row, c)) if c in _JSON_COLUMNS else getattr(row, c)
                  for c in _COLUMNS]
        placeholders = ", ".join("?" for _ in _COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c != "hash")
        with self._transaction():
            self._db.execute(
                f"INSERT INTO points ({', '.join(_COLUMNS)}) VALUES ({placeholders}) "
                f"ON CONFLICT(hash) DO UPDATE SET {updates}",
                values,
            )

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """A damaged file (flipped bytes, a lost page, cut short) is one line, not a traceback."""
        try:
            yield
        except (sqlite3.Error, ValueError, TypeError) as exc:
            raise StoreError(f"{self.path}: the results store is damaged ({_one_line(exc)}); restore it "
                             f"from a copy, or run the sweep again into a new folder") from None

    def statuses(self) -> dict[str, str]:
        """``hash → status`` of every stored point."""
        with self._reading():
            return dict(self._db.execute("SELECT hash, status FROM points").fetchall())

    def count(self, status: str | None = None) -> int:
        with self._reading():
            if status is None:
                return self._db.execute("SELECT COUNT(*) FROM points").fetchone()[0]
            return self._db.execute(
                "SELECT COUNT(*) FROM points WHERE status = ?", (status,)
            ).fetchone()[0]

    def get(self, point_hash: str) -> PointRow | None:
        with self._reading():
            cur = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM points WHERE hash = ?", (point_hash,)
            )
            row = cur.fetchone()
            return None if row is None else self._decode(row)

    def rows(self, status: str | None = None, layers: bool = False) -> Iterator[PointRow]:
        """Stored points in the order they finished (``layers`` decodes the per-GEMM rows)."""
        cols = [c if (c != "layers" or layers) else "NULL" for c in _COLUMNS]
        where, args = ("WHERE status = ?", (status,)) if status else ("", ())
        with self._reading():
            cur = self._db.execute(
                f"SELECT {', '.join(cols)} FROM points {where} ORDER BY finished_at, hash", args
            )
            for row in cur:
                yield self._decode(row)

    @staticmethod
    def _decode(row: tuple) -> PointRow:
        values = {c: (json.loads(v) if c in _JSON_COLUMNS and v is not None else v)
                  for c, v in zip(_COLUMNS, row)}
        return PointRow(**values)


def _one_line(exc: BaseException) -> str:
    """An exception's message cut to one short line (SQLite quotes damaged schema text)."""
    text = " ".join(str(exc).split())
    return (text[:160] + "…" if len(text) > 160 else text) or type(exc).__name__


def now() -> float:
    """Wall-clock timestamp stored in ``started_at``/``finished_at`` (seconds since the epoch)."""
    return time.time()
