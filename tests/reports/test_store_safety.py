"""Issue 15 part 5: a foreign SQLite file is refused untouched; one writer per store."""

from __future__ import annotations

import hashlib
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
from reports_support import EXAMPLES

from archsim.cli import main
from reports.store import ResultStore, StoreError


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _foreign(path, journal: str = "delete"):
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA journal_mode={journal}")
    db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("INSERT INTO customers (name) VALUES ('Ada')")
    db.commit()
    db.close()
    return path


def test_foreign_sqlite_is_refused_untouched(tmp_path):
    db = _foreign(tmp_path / "results.db")
    before = _digest(db)
    with pytest.raises(StoreError, match=r"results\.db: not an archsim results store \(a SQLite "
                                         r"database with tables customers\); left unchanged"):
        ResultStore(db)
    assert _digest(db) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.db"]  # no -wal, no .lock
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert [n for (n,) in con.execute("SELECT name FROM sqlite_master")] == ["customers"]
    con.close()


def test_text_file_and_folder_are_refused(tmp_path):
    text = tmp_path / "notes.db"
    text.write_text("my notes\n")
    with pytest.raises(StoreError, match=r"notes\.db: not an archsim results store \(not a "
                                         r"SQLite database\)"):
        ResultStore(text)
    assert text.read_text() == "my notes\n"
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError, match=r"dir\.db: is not a file"):
        ResultStore(tmp_path / "dir.db")


def test_dse_resume_on_foreign_store_exits_2_untouched(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    db = _foreign(out / "results.db")
    before = _digest(db)
    code = main(["dse", str(EXAMPLES / "sweep_tiny.yaml"), "--out", str(out), "--resume",
                 "--quiet", "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "not an archsim results store" in err and "Traceback" not in err
    assert _digest(db) == before
    assert sorted(p.name for p in out.iterdir()) == ["results.db"]


def test_a_second_writer_is_refused(tmp_path):
    path = tmp_path / "r.db"
    with ResultStore(path):
        with pytest.raises(StoreError, match=r"r\.db: another sweep is writing this store "
                                             r"\(process [^)]*:\d+\); wait for it"):
            ResultStore(path)
        with ResultStore(path, readonly=True) as ro:  # reports still read it
            assert ro.count() == 0
    with ResultStore(path) as store:  # released on close
        assert store.count() == 0


@pytest.fixture
def held_store(tmp_path):
    """A store locked by another process, as a running sweep holds it; yields (path, process)."""
    path = tmp_path / "out" / "results.db"
    code = textwrap.dedent(f"""
        import sys, time
        from reports.store import ResultStore
        store = ResultStore({str(path)!r})
        print("locked", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield path, proc
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)


def test_lock_of_a_killed_writer_is_taken_over(held_store):
    path, proc = held_store
    with pytest.raises(StoreError, match=f"process [^)]*:{proc.pid}\\)"):
        ResultStore(path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 5
    while True:
        try:
            with ResultStore(path) as store:
                assert store.count() == 0
            break
        except StoreError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


@pytest.mark.parametrize("resume", [False, True])
def test_a_second_sweep_on_a_store_being_written_is_refused(held_store, capsys, resume):
    path, proc = held_store
    code = main(["dse", str(EXAMPLES / "sweep_tiny.yaml"), "--out", str(path.parent),
                 "--workers", "1", "--quiet", *(["--resume"] if resume else [])])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"archsim: error: {path}: another sweep is writing this store "
                          f"(process ") and f":{proc.pid}); wait for it to finish" in err


def test_a_damaged_store_is_one_line_for_report(tmp_path, capsys):
    # Rows whose stored JSON is cut short, as a flipped byte or a lost page leaves them.
    import sqlite3

    from archsim.cli import main
    from reports.store import STORE_SCHEMA_VERSION, ResultStore

    path = tmp_path / "results.db"
    with ResultStore(path) as store:
        store.set_meta(store_schema_version=STORE_SCHEMA_VERSION)
    db = sqlite3.connect(path)
    db.execute("INSERT INTO meta (key, value) VALUES ('sweep', '{\"name\": ')")
    db.commit()
    db.close()
    code = main(["report", str(path), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "the results store is damaged" in err[0]
