"""The records database: the source of truth (keys, facts and their history, change log,
jobs, config, sessions, stored responses).

One small interface, two backends: ``read()`` / ``write()`` context managers over plain SQL
with ``?`` placeholders. ``SqliteDatabase`` (stdlib ``sqlite3``, WAL) in the data dir is the
default; ``PostgresDatabase`` (``proxy/store/postgres.py``) when ``store.database_url`` is
set, for several replicas. The SQL the stores write is shared; the few statements that differ
branch on ``db.dialect`` inside ``proxy/store/``.

SQLite: one connection per thread (readers run concurrently under WAL); writes are serialized
by ``BEGIN IMMEDIATE`` so every write is one transaction.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from proxy.errors import Unavailable
from proxy.store.inflight import InFlight
from proxy.store.private import private_dir, private_file
from proxy.store.schema_sqlite import MIGRATIONS

if TYPE_CHECKING:
    from proxy.config import Settings

log = logging.getLogger(__name__)

Dialect = Literal["sqlite", "postgres"]

#: SQLite's "another connection holds the lock" codes (the busy timeout ran out).
_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    """What the stores use of a connection (``sqlite3.Connection`` or ``postgres.PgConn``).
    Rows index by position and by column name."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...
    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]], /) -> Any: ...


class Database(ABC):
    dialect: Dialect

    @abstractmethod
    def read(self) -> AbstractContextManager[Conn]:
        """A connection for reads (each statement sees the latest commit)."""

    @abstractmethod
    def write(self) -> AbstractContextManager[Conn]:
        """One write transaction: committed on success, rolled back on any exception."""

    @abstractmethod
    def migrate(self) -> None: ...

    @abstractmethod
    def status(self) -> dict[str, Any]:
        """Schema versions applied and known (``profilo db status``)."""

    @abstractmethod
    def close(self) -> None: ...

    def lock_scope(self, conn: Conn, scope_key: str) -> None:
        """Inside ``write()``: serialize writers of one scope (SQLite's writes already are)."""
        return None

    @contextmanager
    def index_lock(self, scope_key: str) -> Iterator[Conn | None]:
        """Held while a scope's pending index work is applied (``IndexSync.flush``). Several
        processes on one database (Postgres replicas) take turns per scope, and the holder's
        connection is yielded for that work; one process per SQLite file needs no lock
        (None: use ``read()``/``write()``)."""
        yield None


@contextmanager
def using(conn: Conn | None, opened: Callable[[], AbstractContextManager[Conn]]) -> Iterator[Conn]:
    """``conn`` when given (a lock holder's connection), else a new ``opened()`` one."""
    if conn is not None:
        yield conn
        return
    with opened() as fresh:
        yield fresh


def open_database(settings: Settings, *, migrate: bool = True) -> Database:
    """The records database the settings name: Postgres at ``store.database_url``, else
    SQLite in the data dir."""
    store = settings.store
    if store.database_url:
        from proxy.store.postgres import PostgresDatabase

        return PostgresDatabase(
            store.database_url,
            min_size=store.pool_min_size,
            max_size=store.pool_max_size,
            timeout=store.pool_timeout_seconds,
            migrate=migrate,
        )
    return SqliteDatabase(
        settings.db_path, busy_timeout_ms=store.sqlite_busy_timeout_ms, migrate=migrate
    )


class SqliteDatabase(Database):
    dialect: Dialect = "sqlite"

    def __init__(self, path: Path, *, busy_timeout_ms: int = 5000, migrate: bool = True) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._all: list[tuple[threading.Thread, sqlite3.Connection]] = []  # owner, connection
        self._lock = threading.Lock()
        # Writers of this process queue here (woken at once on release) rather than in
        # SQLite's busy handler, which sleeps in growing steps: tens of ms of tail latency.
        self._write_lock = threading.Lock()
        self._inflight = InFlight(_closed)  # close() waits for the reads and writes running
        private_dir(path.parent)  # the data dir: 0700
        private_file(path)  # 0600, and so its -wal / -shm
        if migrate:
            self.migrate()

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
            self._local.conn = conn
            with self._lock:
                self._close_orphans()
                self._all.append((threading.current_thread(), conn))
        return conn

    def _close_orphans(self) -> None:
        """Close the connections of threads that have ended (under ``_lock``). Thread pools
        retire idle threads (anyio's after 10 s): without this, every burst after a pause
        would leave one open connection, its page cache and file handles per new thread."""
        alive = []
        for thread, conn in self._all:
            if thread.is_alive():
                alive.append((thread, conn))
            else:
                with suppress(sqlite3.Error):
                    conn.close()
        self._all = alive

    @contextmanager
    def read(self) -> Iterator[Conn]:
        """A connection for reads (autocommit: each statement sees the latest commit)."""
        with self._inflight, _locked_is_unavailable():
            yield self._connect()

    @contextmanager
    def write(self) -> Iterator[Conn]:
        """One write transaction: committed on success, rolled back on any exception.
        The file locked by another process past the busy timeout: ``Unavailable`` (503)."""
        with self._inflight, _locked_is_unavailable(), self._write_lock:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # also after a COMMIT that could not get its lock
                    conn.execute("ROLLBACK")
                raise

    def migrate(self) -> None:
        with self.write() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)")
            done = {row[0] for row in conn.execute("SELECT version FROM schema_version")}
            for version in sorted(MIGRATIONS):
                if version in done:
                    continue
                for statement in _split(MIGRATIONS[version]):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version(version) VALUES (?)", (version,))

    def status(self) -> dict[str, Any]:
        with self.read() as conn:
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ).fetchone()
            done = (
                sorted(row[0] for row in conn.execute("SELECT version FROM schema_version"))
                if exists
                else []
            )
        return schema_status("sqlite", str(self.path), done, sorted(MIGRATIONS))

    def close(self) -> None:
        """Refuses new reads and writes (``Unavailable``), waits for those running (another
        thread's, e.g. a job cancelled at shutdown whose thread goes on), then closes every
        connection. Closing one in use would crash the process; still in use after the wait,
        they are left to the process's exit (every commit is already durable)."""
        if not self._inflight.close():
            log.warning("records database closed with %d operation(s) still running: its "
                        "connections are left open", self._inflight.running)  # fmt: skip
            return
        with self._lock:
            for _, conn in self._all:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._local = threading.local()


def _closed() -> Unavailable:
    return Unavailable(
        "the records database is closed: the server is shutting down",
        code="shutting_down",
        headers={"Retry-After": "1"},
    )


def schema_status(backend: str, where: str, done: list[int], known: list[int]) -> dict[str, Any]:
    return {
        "backend": backend,
        "database": where,
        "version": max(done, default=0),
        "latest": max(known, default=0),
        "pending": [v for v in known if v not in set(done)],
    }


@contextmanager
def _locked_is_unavailable() -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorcode", None) not in _BUSY:
            raise
        raise Unavailable(
            "the records database is locked by another process; retry shortly",
            code="database_locked",
            headers={"Retry-After": "1"},
        ) from exc


def _split(script: str) -> Sequence[str]:
    """Statements of a script; a ``;`` inside a statement (a trigger body) does not split it."""
    out: list[str] = []
    buf = ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n\t;"):
                out.append(buf.strip())
            buf = ""
    if buf.strip(" \n\t;"):
        out.append(buf.strip())
    return out
