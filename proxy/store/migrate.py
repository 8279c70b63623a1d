"""``profilo store migrate --to postgresql://…``: an embedded (SQLite) install's records moved
into PostgreSQL.

Every records table is copied (keys, facts and their history, change log, index outbox,
account config, jobs in every state, dialectic sessions and turns, stored responses and chat
completions, metered usage) with its ids and sequence numbers, in batches in key order, then
each identity sequence is moved past the highest ``seq`` copied. (Usage limits and counters
are not: set the limits again on the new backend.)

- The source is never changed: it is opened read-only (``mode=ro``) and read inside one read
  transaction, so the copy and the validation see one consistent snapshot even if a proxy is
  still writing to it (what it writes afterwards is not migrated: stop it first).
- Idempotent and resumable: each batch is one target transaction of
  ``INSERT … ON CONFLICT DO NOTHING``; a re-run resumes each table after the highest key
  already there (keys compare bytewise on both sides: ``COLLATE "C"`` in Postgres, SQLite's
  BINARY), and falls back to a full pass of a table whose count is still short.
- Success is reported only after every table's row count and content checksum (sha256 over
  the rows in key order, numbers normalized alike on both sides) match the source's, and the
  counters the facts trigger keeps in Postgres (``account_usage``, ``facts_fts_counts``) agree
  with the facts copied.

Derived data is not copied: SQLite's FTS5 tables (Postgres' ``fts`` column is generated), the
usage / lexical counters (filled by the trigger as facts arrive). The vector index is rebuilt
from the records: ``queue_reindex`` adds one ``index_outbox`` row per fact, which the next
flush (``profilo store migrate`` with ``store.chroma_url``, or each replica's start-up
replay) turns into vectors.
"""

from __future__ import annotations

import hashlib
import sqlite3
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
from tqdm import tqdm

from proxy.store.db import Database
from proxy.store.postgres import PostgresDatabase
from proxy.store.schema_sqlite import MIGRATIONS as SQLITE_MIGRATIONS

#: (table, primary key) in an order that satisfies foreign keys (sessions before turns).
TABLES: tuple[tuple[str, str], ...] = (
    ("api_keys", "id"),
    ("account_config", "account"),
    ("facts", "id"),
    ("fact_versions", "seq"),
    ("changes", "seq"),
    ("index_outbox", "seq"),
    ("jobs", "seq"),
    ("dialectic_sessions", "id"),
    ("dialectic_turns", "seq"),
    ("responses", "id"),
    ("chat_completions", "seq"),
    ("usage_events", "seq"),
)

#: Tables whose target may hold more rows than the source's (``queue_reindex`` adds outbox
#: rows after the copied ones): compared up to the source's highest key.
_GROWS = frozenset({"index_outbox"})

#: Postgres takes at most 65535 parameters per statement.
_MAX_PARAMS = 60000

#: Session advisory lock (two-int form, class 0 like the schema lock): one migration at a time.
_MIGRATE_LOCK = (0, 2)


class MigrationFailed(Exception):
    """The migration could not complete or did not validate (exit code 1)."""


@dataclass(slots=True)
class TableReport:
    table: str
    rows: int  # in the source
    copied: int  # inserted by this run (rows already in the target are skipped)


def migrate(
    source: Path,
    target: PostgresDatabase,
    *,
    batch_size: int = 1000,
    progress: bool | None = None,
    max_batches: int | None = None,
) -> list[TableReport]:
    """Copy the SQLite records at ``source`` into ``target``, then validate.

    Raises ``MigrationFailed`` when any table differs after the copy (or the source is not
    usable). ``progress``: tqdm bars on stderr (None: when stderr is a terminal).
    ``max_batches`` stops after that many batches: a simulated interruption (tests)."""
    if batch_size < 1:
        raise MigrationFailed("--batch-size must be at least 1")
    with _source(source) as src, _exclusive(target.url):
        budget = [max_batches]
        reports = []
        for table, key in TABLES:
            columns = _checked_columns(src, target, table)
            reports.append(
                _copy(src, target, table, key, columns, batch_size, progress, budget, full=False)
            )
        _set_sequences(target)
        short = _validate(src, target, batch_size, progress)
        if short:  # rows below the resume point are missing: one full pass of those tables
            for table, key in TABLES:
                if table in short:
                    columns = _checked_columns(src, target, table)
                    full = _copy(
                        src, target, table, key, columns, batch_size, progress, budget, full=True
                    )
                    report = next(r for r in reports if r.table == table)
                    report.copied += full.copied
            _set_sequences(target)
            short = _validate(src, target, batch_size, progress)
        if short:
            raise MigrationFailed(short[next(iter(short))])
        _check_counters(target)
        _analyze(target)
    return reports


def _analyze(target: PostgresDatabase) -> None:
    """Planner statistics for the freshly loaded tables: until autovacuum gets to them the
    planner guesses (measured: per-scope searches several times slower on a 10k-fact scope)."""
    with target.read() as conn:
        for table, _ in TABLES:
            conn.execute(f"ANALYZE {table}")


def queue_reindex(target: Database) -> int:
    """One outbox row per fact not already waiting: the next index flush (this command's with
    ``store.chroma_url``, or each replica's start-up replay) writes every fact's vector.
    Either backend (``profilo index rebuild --vectors`` re-embeds an embedded install too)."""
    with target.write() as conn:
        return int(
            conn.execute(
                "INSERT INTO index_outbox (account, collection_id, scope_key, fact_id, "
                "created_at) SELECT f.account, f.collection_id, f.scope_key, f.id, ? "
                "FROM facts AS f WHERE NOT EXISTS (SELECT 1 FROM "
                "index_outbox AS o WHERE o.scope_key = f.scope_key AND o.fact_id = f.id) "
                "ORDER BY f.scope_key, f.created_at, f.id",
                (time.time(),),
            ).rowcount
        )


# -- source ----------------------------------------------------------------------------------


@contextmanager
def _source(path: Path) -> Iterator[sqlite3.Connection]:
    """The SQLite records, read-only, inside one read transaction (a consistent snapshot)."""
    if not path.is_file():
        raise MigrationFailed(f"no records database at {path}")
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise MigrationFailed(f"cannot open {path} read-only: {exc}") from exc
    with closing(conn):
        try:
            conn.execute("BEGIN")  # deferred: the snapshot is taken at the first read
            versions = {r[0] for r in conn.execute("SELECT version FROM schema_version")}
        except sqlite3.Error as exc:
            raise MigrationFailed(f"{path} is not a profilo records database: {exc}") from exc
        missing = sorted(set(SQLITE_MIGRATIONS) - versions)
        if missing:
            raise MigrationFailed(
                f"{path} is at an older schema (missing {missing}): run `profilo db upgrade` "
                "with this install's settings first"
            )
        try:
            yield conn
        finally:
            conn.execute("ROLLBACK")


def _src_columns(src: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in src.execute(f"PRAGMA table_info({table})")]


def _checked_columns(src: sqlite3.Connection, target: PostgresDatabase, table: str) -> list[str]:
    """The source's columns, each of which the target must have (as an ordinary column)."""
    columns = _src_columns(src, table)
    with target.read() as conn:
        rows = conn.execute(
            "SELECT column_name, is_generated FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ?",
            (table,),
        ).fetchall()
    writable = {r[0] for r in rows if r[1] == "NEVER"}
    missing = [c for c in columns if c not in writable]
    if not columns or missing:
        raise MigrationFailed(f"{table}: the target lacks columns {missing or '(table)'}")
    return columns


# -- copy ------------------------------------------------------------------------------------


def _order(key: str, dialect: str) -> str:
    """The key compared bytewise (``seq`` is an integer: no collation)."""
    return f'{key} COLLATE "C"' if dialect == "postgres" and key != "seq" else key


def _copy(
    src: sqlite3.Connection,
    target: PostgresDatabase,
    table: str,
    key: str,
    columns: list[str],
    batch_size: int,
    progress: bool | None,
    budget: list[int | None],
    *,
    full: bool,
) -> TableReport:
    total, src_max = src.execute(f"SELECT count(*), max({key}) FROM {table}").fetchone()
    after = None
    if not full and src_max is not None:  # resume after the highest key already copied
        pk = _order(key, "postgres")
        with target.read() as conn:
            after = conn.execute(
                f"SELECT max({pk}) FROM {table} WHERE {pk} <= ?", (src_max,)
            ).fetchone()[0]
    cols = ", ".join(columns)
    where, params = ("", ()) if after is None else (f"WHERE {key} > ?", (after,))
    cursor = src.execute(f"SELECT {cols} FROM {table} {where} ORDER BY {key}", params)
    copied = 0
    done = 0 if after is None else _count_upto(src, table, key, after)
    bar = tqdm(
        total=total,
        initial=done,
        desc=table,
        unit="row",
        file=sys.stderr,
        disable=None if progress is None else not progress,
        leave=False,
    )
    try:
        while batch := cursor.fetchmany(batch_size):
            if budget[0] is not None:
                if budget[0] <= 0:
                    raise MigrationFailed("interrupted (max_batches): run it again to resume")
                budget[0] -= 1
            with target.write() as conn:
                for chunk in _chunks(batch, max(1, _MAX_PARAMS // len(columns))):
                    copied += _insert(conn, table, columns, chunk)
            bar.update(len(batch))
    finally:
        bar.close()
    return TableReport(table, int(total), copied)


def _count_upto(src: sqlite3.Connection, table: str, key: str, upto: Any) -> int:
    return int(src.execute(f"SELECT count(*) FROM {table} WHERE {key} <= ?", (upto,)).fetchone()[0])


def _chunks(rows: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _insert(conn: Any, table: str, columns: list[str], rows: list[Any]) -> int:
    row = "(" + ", ".join("?" * len(columns)) + ")"
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        + ", ".join([row] * len(rows))
        + " ON CONFLICT DO NOTHING"
    )
    return int(conn.execute(sql, [v for r in rows for v in r]).rowcount)


def _set_sequences(target: PostgresDatabase) -> None:
    """Each identity sequence past the highest ``seq`` (new rows never reuse a copied id)."""
    with target.write() as conn:
        for table, key in TABLES:
            if key == "seq":
                conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'seq'), m) "
                    f"FROM (SELECT max(seq) AS m FROM {table}) AS t WHERE m IS NOT NULL"
                )


# -- validation ------------------------------------------------------------------------------


def _norm(value: Any) -> Any:
    """One form per value on both sides: integral numbers as ints (SQLite may hand ``5`` where
    Postgres hands ``5.0``), other floats by their exact repr, bytes as hex."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 2**63:
            return int(value)
        return {"f": repr(value)}
    if isinstance(value, int):
        return value if abs(value) < 2**63 else {"i": str(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"b": bytes(value).hex()}
    return {"s": str(value)}


def _digest(rows: Iterable[Any]) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    for row in rows:
        h.update(orjson.dumps([_norm(v) for v in row]))
        h.update(b"\n")
        n += 1
    return n, h.hexdigest()


def _validate(
    src: sqlite3.Connection, target: PostgresDatabase, batch_size: int, progress: bool | None
) -> dict[str, str]:
    """Each table's count and checksum, source against target. Returns the tables that lack
    rows ({table: message}); raises ``MigrationFailed`` when a table holds other data."""
    short: dict[str, str] = {}
    bar = tqdm(
        total=len(TABLES),
        desc="validate",
        unit="table",
        file=sys.stderr,
        disable=None if progress is None else not progress,
        leave=False,
    )
    with closing(psycopg.connect(target.url)) as raw:
        for table, key in TABLES:
            cols = ", ".join(_src_columns(src, table))
            src_rows = src.execute(f"SELECT {cols} FROM {table} ORDER BY {key}")
            expected = _digest(src_rows)
            where, params = "", []
            if table in _GROWS:
                src_max = src.execute(f"SELECT max({key}) FROM {table}").fetchone()[0]
                where, params = "WHERE seq <= %s", [-1 if src_max is None else src_max]
            with raw.transaction(), raw.cursor(name=f"profilo_check_{table}") as cur:
                cur.itersize = batch_size
                cur.execute(
                    f"SELECT {cols} FROM {table} {where} ORDER BY {_order(key, 'postgres')}",
                    params,
                )
                got = _digest(cur)
            bar.update(1)
            if expected[0] > got[0]:  # rows missing: copying again can fix it
                short[table] = f"{table}: the source has {expected[0]} rows, the target {got[0]}"
            elif expected != got:  # extra or different rows: copying again cannot
                what = "extra rows" if got[0] > expected[0] else "same count, different content"
                bar.close()
                raise MigrationFailed(
                    f"{table}: the target differs from the source ({what}: {got[0]} rows, "
                    f"source {expected[0]}); migrate into an empty database"
                )
    bar.close()
    return short


def _check_counters(target: PostgresDatabase) -> None:
    """The counters the facts trigger keeps agree with the facts copied."""
    with target.read() as conn:
        usage = {
            r[0]: (int(r[1]), int(r[2]))
            for r in conn.execute(
                "SELECT account, sum(facts), sum(collections) FROM account_usage GROUP BY account"
            )
            if r[1] or r[2]
        }
        facts = {
            r[0]: (int(r[1]), int(r[2]))
            for r in conn.execute(
                "SELECT account, count(*), count(DISTINCT collection_id) FROM facts "
                "GROUP BY account"
            )
        }
        lexical = {
            r[0]: (int(r[1]), int(r[2]))
            for r in conn.execute("SELECT scope_key, n, total_len FROM facts_fts_counts")
            if r[1] or r[2]
        }
        scopes = {
            r[0]: (int(r[1]), int(r[2]))
            for r in conn.execute(
                "SELECT scope_key, count(*), coalesce(sum(length(fts)), 0) FROM facts "
                "GROUP BY scope_key"
            )
        }
    if usage != facts:
        raise MigrationFailed(
            f"account_usage disagrees with the facts: {sum(f for f, _ in usage.values())} "
            f"facts counted, {sum(f for f, _ in facts.values())} copied"
        )
    if lexical != scopes:
        raise MigrationFailed(
            f"facts_fts_counts disagrees with the facts: {sum(n for n, _ in lexical.values())} "
            f"facts counted, {sum(n for n, _ in scopes.values())} copied"
        )


@contextmanager
def _exclusive(url: str) -> Iterator[None]:
    """One migration into a database at a time (a session advisory lock)."""
    with closing(psycopg.connect(url, autocommit=True)) as conn:
        row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", _MIGRATE_LOCK).fetchone()
        if not row or not row[0]:
            raise MigrationFailed("another `profilo store migrate` is running into this database")
        yield
