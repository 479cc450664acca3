"""The DSE results store: one SQLite file, one row per design point.

Rows are keyed by the canonical parameter hash (:func:`reports.sweep.point_hash`), so a point is
stored at most once whatever happens. Only finished points are written, each in its own
transaction, by the one process that drives the sweep (workers return results; they never
write). SQLite in WAL mode with ``synchronous=NORMAL`` keeps every committed transaction across a
``kill -9`` of the writer (REFERENCE.md section 5) and lets a report read while a sweep writes;
``--resume`` then skips every hash already present.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from workloads.errors import ArchsimError

__all__ = ["ResultStore", "PointRow", "StoreError", "STORE_SCHEMA_VERSION", "STATUSES"]

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
    """The results file is not an archsim store, or belongs to a different sweep."""


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
        Open for reading only (reports); the file must exist.

    Raises
    ------
    StoreError
        When the file is not a SQLite database or was written by a newer schema.
    """

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:
            if not self.path.is_file():
                raise StoreError(f"{self.path}: no such results file")
            uri = f"file:{self.path.resolve()}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, timeout=30)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: explicit BEGIN/COMMIT, one transaction per finished point.
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            if not readonly:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_SCHEMA)
            version = self.meta().get("store_schema_version")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"{self.path}: not an archsim results store ({exc})") from None
        if version is None and not readonly:
            self.set_meta(store_schema_version=STORE_SCHEMA_VERSION)
        elif version is not None and int(version) > STORE_SCHEMA_VERSION:
            raise StoreError(f"{self.path}: written by a newer archsim (store schema {version})")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- metadata --------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        """All metadata, JSON values decoded."""
        try:
            rows = self._db.execute("SELECT key, value FROM meta").fetchall()
        except sqlite3.OperationalError as exc:
            raise StoreError(f"{self.path}: not an archsim results store ({exc})") from None
        return {k: json.loads(v) for k, v in rows}

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

    def statuses(self) -> dict[str, str]:
        """``hash → status`` of every stored point."""
        return dict(self._db.execute("SELECT hash, status FROM points").fetchall())

    def count(self, status: str | None = None) -> int:
        if status is None:
            return self._db.execute("SELECT COUNT(*) FROM points").fetchone()[0]
        return self._db.execute(
            "SELECT COUNT(*) FROM points WHERE status = ?", (status,)
        ).fetchone()[0]

    def get(self, point_hash: str) -> PointRow | None:
        cur = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM points WHERE hash = ?", (point_hash,)
        )
        row = cur.fetchone()
        return None if row is None else self._decode(row)

    def rows(self, status: str | None = None, layers: bool = False) -> Iterator[PointRow]:
        """Stored points in the order they finished (``layers`` decodes the per-GEMM rows)."""
        cols = [c if (c != "layers" or layers) else "NULL" for c in _COLUMNS]
        where, args = ("WHERE status = ?", (status,)) if status else ("", ())
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


def now() -> float:
    """Wall-clock timestamp stored in ``started_at``/``finished_at`` (seconds since the epoch)."""
    return time.time()
