"""The records database on PostgreSQL (``store.database_url``): psycopg 3 and a pool.

Same interface as ``SqliteDatabase``: ``read()`` (autocommit) and ``write()`` (one
transaction), SQL with ``?`` placeholders (rewritten once per statement text to psycopg's
``%s``), rows that index by position and by name. Several replicas share one database:
migrations run under an advisory lock, writers of one scope serialize on an advisory
transaction lock (``lock_scope``), the job queue claims with ``FOR UPDATE SKIP LOCKED``.

Postgres unreachable (refused, restarted, pool exhausted past ``store.pool_timeout_seconds``):
``Unavailable`` (503, ``Retry-After``). Then a circuit opens: every call fails at once (no
request waits out the pool's timeout during an outage) while one background probe connects
every half second; when it succeeds the pool's broken connections are dropped and the circuit
closes, so the service resumes by itself when the server is back.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg_pool
from psycopg.types.numeric import FloatLoader

from proxy.errors import Unavailable
from proxy.store.db import Conn, Database, Dialect, schema_status
from proxy.store.schema_postgres import MIGRATIONS

log = logging.getLogger(__name__)

#: Advisory lock keys (two-int form): class 0 = schema migrations, class 1 = one scope's
#: writers, class 2 = one scope's index flush.
_MIGRATION_LOCK = (0, 1)
_SCOPE_CLASS = 1
_INDEX_CLASS = 2
#: How long a flush waits for another replica's flush of the same scope.
INDEX_LOCK_WAIT = 10.0


@functools.lru_cache(maxsize=4096)
def translate(sql: str) -> str:
    """``?`` placeholders → ``%s`` and a literal ``%`` → ``%%``, outside quoted strings for
    ``?`` (a ``?`` inside '…' stays a character)."""
    out: list[str] = []
    quoted = False
    for char in sql:
        if char == "'":
            quoted = not quoted
            out.append(char)
        elif char == "%":
            out.append("%%")
        elif char == "?" and not quoted:
            out.append("%s")
        else:
            out.append(char)
    return "".join(out)


class Row(tuple[Any, ...]):
    """A result row: ``row[0]``, ``row["name"]``, ``dict(row)`` (like ``sqlite3.Row``)."""

    _names: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)


def _row_factory(cursor: Any) -> Any:
    description = cursor.description
    if description is None:
        return tuple
    names = {column.name: i for i, column in enumerate(description)}

    def make(values: Sequence[Any]) -> Row:
        row = Row(values)
        row._names = names
        return row

    return make


class PgConn:
    """A pooled connection as the stores use it (``execute``/``executemany`` with ``?``)."""

    __slots__ = ("raw",)

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        return self.raw.execute(translate(sql), tuple(parameters))

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]], /) -> Any:
        cursor = self.raw.cursor()
        cursor.executemany(translate(sql), [tuple(p) for p in seq_of_parameters])
        return cursor


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.autocommit = True
    conn.row_factory = _row_factory
    conn.adapters.register_loader("numeric", FloatLoader)  # SUM() of integers: a number


class PostgresDatabase(Database):
    dialect: Dialect = "postgres"

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 2,
        max_size: int = 16,
        timeout: float = 5.0,
        migrate: bool = True,
    ) -> None:
        self.url = url
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            configure=_configure,
            kwargs={"connect_timeout": max(1, int(timeout))},
            open=False,
            name="profilo-records",
        )
        self._pool.open(wait=False)
        self._probing = threading.Lock()
        self._down = threading.Event()  # the circuit: open while the server is unreachable
        if migrate:
            self.migrate()

    @property
    def pool(self) -> psycopg_pool.ConnectionPool[Any]:
        return self._pool

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        if self._down.is_set():
            raise _unavailable()
        try:
            with self._pool.connection() as raw:
                yield raw
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            # the server gone (no SQLSTATE, 08xxx connection, 57Pxx shutdown) opens the
            # circuit; a full pool, a deadlock or a timeout is one refused call (503)
            state = getattr(exc, "sqlstate", None)
            if isinstance(exc, psycopg.OperationalError) and (
                state is None or state.startswith(("08", "57P"))
            ):
                self._trip()
            raise _unavailable() from exc

    def _trip(self) -> None:
        """Open the circuit and probe until the server answers (one prober at a time)."""
        if not self._probing.acquire(blocking=False):
            return
        self._down.set()

        def probe() -> None:
            try:
                while True:
                    try:
                        psycopg.connect(self.url, connect_timeout=2).close()
                        break
                    except Exception:
                        time.sleep(0.5)
                try:
                    self._pool.check()  # a restart left every idle connection broken
                except Exception:
                    log.debug("pool check failed", exc_info=True)
                log.warning("records database reachable again")
            finally:
                self._down.clear()
                self._probing.release()

        log.error("records database unreachable: failing fast until it answers")
        threading.Thread(target=probe, name="profilo-db-probe", daemon=True).start()

    @contextmanager
    def read(self) -> Iterator[Conn]:
        with self._connection() as raw:
            yield PgConn(raw)

    @contextmanager
    def write(self) -> Iterator[Conn]:
        with self._connection() as raw, raw.transaction():
            yield PgConn(raw)

    def lock_scope(self, conn: Conn, scope_key: str) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(?, hashtext(?))", (_SCOPE_CLASS, scope_key))

    @contextmanager
    def index_lock(self, scope_key: str) -> Iterator[Conn | None]:
        """A session advisory lock on one pooled connection, yielded for the flush's own
        statements (autocommit). A replica that dies holding it releases it with its
        connection; waiting past ``INDEX_LOCK_WAIT`` is ``Unavailable``."""
        key = (_INDEX_CLASS, scope_key)
        with self._connection() as raw:
            conn = PgConn(raw)
            deadline = time.monotonic() + INDEX_LOCK_WAIT
            take = "SELECT pg_try_advisory_lock(?, hashtext(?))"
            while not conn.execute(take, key).fetchone()[0]:
                if time.monotonic() > deadline:
                    raise Unavailable("retrieval index busy: another replica is updating it")
                time.sleep(0.005)
            try:
                yield conn
            finally:
                try:
                    conn.execute("SELECT pg_advisory_unlock(?, hashtext(?))", key)
                except Exception:  # the session must not keep the lock: drop the connection
                    log.warning("index lock release failed; closing its connection", exc_info=True)
                    raw.close()

    def migrate(self) -> None:
        with self._connection() as raw, raw.transaction():
            raw.execute("SELECT pg_advisory_xact_lock(%s, %s)", _MIGRATION_LOCK)
            raw.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in raw.execute("SELECT version FROM schema_version")}
            for version in sorted(MIGRATIONS):
                if version in done:
                    continue
                raw.execute(MIGRATIONS[version])
                raw.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
                log.info("records database migrated to version %d", version)

    def status(self) -> dict[str, Any]:
        with self._connection() as raw:
            exists = raw.execute("SELECT to_regclass('schema_version')").fetchone()
            done = (
                sorted(row[0] for row in raw.execute("SELECT version FROM schema_version"))
                if exists and exists[0]
                else []
            )
        return schema_status("postgres", _redacted(self.url), done, sorted(MIGRATIONS))

    def close(self) -> None:
        self._pool.close()


def _unavailable() -> Unavailable:
    return Unavailable(
        "the records database is unreachable; retry shortly",
        code="database_unavailable",
        headers={"Retry-After": "1"},
    )


def _redacted(url: str) -> str:
    """The URL without its password (for status output and logs)."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    host = info.get("host", "")
    port = info.get("port", "")
    return f"postgresql://{info.get('user', '')}@{host}{':' + str(port) if port else ''}/" + str(
        info.get("dbname", "")
    )
