"""The SQLite results store: one row per hash, WAL durability settings, read-only access."""

from __future__ import annotations

import sqlite3

import pytest

from reports.store import PointRow, ResultStore, StoreError


def _row(h: str, status: str = "ok", **kw) -> PointRow:
    return PointRow(hash=h, params={"a": 1}, status=status, finished_at=1.0,
                    archsim_version="0", **kw)


def test_record_and_read_back(tmp_path):
    with ResultStore(tmp_path / "r.db") as store:
        store.record(_row("h1", metrics={"cycles": 10}, layers=[{"name": "x"}]))
        store.record(_row("h2", status="infeasible", message="constraint failed: x"))
        assert store.count() == 2 and store.count("ok") == 1
        assert store.statuses() == {"h1": "ok", "h2": "infeasible"}
        row = store.get("h1")
        assert row.metrics == {"cycles": 10} and row.params == {"a": 1}
        assert [r.layers for r in store.rows()] == [None, None]  # decoded only on request
        assert next(store.rows(status="ok", layers=True)).layers == [{"name": "x"}]
        assert store.get("nope") is None


def test_a_hash_is_stored_once(tmp_path):
    with ResultStore(tmp_path / "r.db") as store:
        store.record(_row("h", status="error", message="worker died"))
        store.record(_row("h", metrics={"cycles": 3}))
        assert store.count() == 1 and store.get("h").status == "ok"
        assert store.get("h").message is None


def test_durability_settings(tmp_path):
    with ResultStore(tmp_path / "r.db") as store:
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        # synchronous=NORMAL is 1: committed transactions survive a killed process.
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1


def test_a_closed_store_is_one_file_and_stays_one_after_reads(tmp_path):
    """results.db-wal and -shm stayed beside a finished sweep's store: the summary and reports
    read it read-only, and a read-only connection can never remove them."""
    path = tmp_path / "r.db"
    with ResultStore(path) as store:
        store.record(_row("h"))
        with ResultStore(path, readonly=True) as reader:  # a report while the sweep runs
            assert reader.count() == 1
        assert {p.name for p in tmp_path.iterdir()} >= {"r.db-wal", "r.db-shm"}
    with ResultStore(path, readonly=True) as reader:
        assert reader.count() == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.db", "r.db.lock"]
    with ResultStore(path) as store:  # --resume: WAL again while it writes
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        store.record(_row("h2"))
    with ResultStore(path, readonly=True) as reader:
        assert reader.count() == 2


def test_meta_and_readonly(tmp_path):
    path = tmp_path / "r.db"
    with ResultStore(path) as store:
        store.set_meta(sweep={"name": "s"}, base_identity="abc")
        store.set_meta(base_identity="def")
        store.record(_row("h"))
    with ResultStore(path, readonly=True) as ro:
        meta = ro.meta()
        assert meta["sweep"] == {"name": "s"} and meta["base_identity"] == "def"
        assert meta["store_schema_version"] == 1
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            ro.record(_row("h2"))


def test_rejects_foreign_files(tmp_path):
    bad = tmp_path / "x.db"
    bad.write_text("not a database at all, just text" * 100)
    with pytest.raises(StoreError, match="not an archsim results store"):
        ResultStore(bad)
    with pytest.raises(StoreError, match="no such results file"):
        ResultStore(tmp_path / "missing.db", readonly=True)
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="not an archsim results store"):
        ResultStore(other, readonly=True)
