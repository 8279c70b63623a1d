"""proxy.store.db: one connection per thread, and none left behind by threads that ended."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from proxy.errors import Unavailable
from proxy.store.db import SqliteDatabase
from tests.conftest import open_handles


def test_threads_that_end_leave_no_connection_open(tmp_path: Path) -> None:
    """Thread pools retire idle threads and start new ones: the connections must not pile up."""
    db = SqliteDatabase(tmp_path / "p.sqlite3")
    try:
        with db.write() as conn:
            conn.execute("CREATE TABLE t (x INTEGER)")

        def use() -> None:
            with db.write() as conn:
                conn.execute("INSERT INTO t VALUES (1)")
            with db.read() as conn:
                conn.execute("SELECT count(*) FROM t").fetchone()

        def threads(n: int) -> None:  # n short-lived threads, one after the other
            for _ in range(n):
                thread = threading.Thread(target=use)
                thread.start()
                thread.join()

        threads(10)
        after_10 = open_handles(tmp_path / "p.sqlite3")
        threads(40)
        # bounded, not one per thread that ever ran: this thread's connection, the last
        # thread's (closed by the next newcomer) and a descriptor SQLite keeps for reuse
        assert open_handles(tmp_path / "p.sqlite3") == after_10 <= 3
        with db.read() as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 50  # nothing lost
    finally:
        db.close()
    assert open_handles(tmp_path / "p.sqlite3") == 0


def test_connections_of_live_threads_are_kept(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "p.sqlite3")
    ready, release = threading.Barrier(5), threading.Event()
    seen: list[int] = []

    def hold() -> None:
        with db.read() as conn:
            seen.append(id(conn))
        ready.wait()
        release.wait()
        with db.read() as conn:  # the same connection as before: still open, still usable
            assert id(conn) in seen
            conn.execute("SELECT 1").fetchone()

    threads = [threading.Thread(target=hold) for _ in range(4)]
    for thread in threads:
        thread.start()
    ready.wait()
    with db.read() as conn:  # a new connection while 4 threads hold theirs
        conn.execute("SELECT 1").fetchone()
    release.set()
    for thread in threads:
        thread.join()
    db.close()
    assert len(set(seen)) == 4


def test_close_waits_for_a_write_in_flight_then_refuses_new_ones(tmp_path: Path) -> None:
    """A job cancelled at shutdown leaves its thread writing: closing its connection under
    it crashed the process (a segfault). close() waits for it, and what comes later is a 503."""
    path = tmp_path / "p.sqlite3"
    db = SqliteDatabase(path)
    with db.write() as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
    inside, proceed = threading.Event(), threading.Event()
    steps: list[str] = []

    def slow_write() -> None:
        with db.write() as conn:
            conn.execute("INSERT INTO t VALUES (1)")
            inside.set()
            proceed.wait(10)
            conn.execute("INSERT INTO t VALUES (2)")
        steps.append("committed")

    writer = threading.Thread(target=slow_write)
    writer.start()
    inside.wait(10)
    closer = threading.Thread(target=lambda: (db.close(), steps.append("closed")))
    closer.start()
    closer.join(0.2)
    assert closer.is_alive() and steps == []  # waiting for the write
    proceed.set()
    writer.join()
    closer.join()
    assert steps == ["committed", "closed"]
    assert open_handles(path) == 0
    for use in (db.read, db.write):
        with pytest.raises(Unavailable) as info, use():
            pass
        assert info.value.status == 503 and info.value.code == "shutting_down"
    again = SqliteDatabase(path)
    with again.read() as conn:
        assert [tuple(r) for r in conn.execute("SELECT x FROM t ORDER BY x")] == [(1,), (2,)]
    again.close()


def test_close_leaves_connections_open_when_an_operation_outlasts_the_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "p.sqlite3"
    db = SqliteDatabase(path)
    monkeypatch.setattr("proxy.store.inflight.CLOSE_WAIT_SECONDS", 0.05)
    inside, proceed = threading.Event(), threading.Event()

    def stuck_read() -> None:
        with db.read() as conn:
            inside.set()
            proceed.wait(10)
            conn.execute("SELECT 1").fetchone()  # its connection is still open: no crash

    reader = threading.Thread(target=stuck_read)
    reader.start()
    inside.wait(10)
    db.close()
    assert open_handles(path) >= 1
    proceed.set()
    reader.join()
