"""``profilo store migrate --to postgresql://…``: an embedded install's records into Postgres.

Every table the records database holds is copied (history, change log, outbox, jobs in every
state, keys, sessions, stored responses and completions), ids and sequence numbers kept, in
batches in key order. The source is opened read-only and never changed. Re-running after an
interruption resumes: rows already there are skipped (``ON CONFLICT DO NOTHING``), tables with
a sequence continue after the highest one copied. Success is reported only after each table's
row count and a checksum of its content (rows in key order) match the source's.

Derived data is not copied: SQLite's FTS5 tables (Postgres' ``tsvector`` column is generated),
the usage / lexical counters (the facts trigger fills them as facts arrive) and the index
outbox (every fact is queued for indexing anew). Then each
fact gets an outbox row and the vector index is rebuilt from the records on the configured
Chroma server (``store.chroma_url``); without one, or with ``--no-index``, each replica's
start-up replay does it (never into the source's embedded index).
"""

from __future__ import annotations

import hashlib
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from proxy.store.postgres import PostgresDatabase

#: (table, key column) in an order that satisfies foreign keys (sessions before turns).
TABLES: tuple[tuple[str, str], ...] = (
    ("api_keys", "id"),
    ("account_config", "account"),
    ("facts", "id"),
    ("fact_versions", "seq"),
    ("changes", "seq"),
    ("jobs", "seq"),
    ("dialectic_sessions", "id"),
    ("dialectic_turns", "seq"),
    ("responses", "id"),
    ("chat_completions", "seq"),
)


class MigrationFailed(Exception):
    pass


@dataclass
class TableReport:
    table: str
    rows: int
    copied: int


def _columns(src: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in src.execute(f"PRAGMA table_info({table})")]


def _batches(
    src: sqlite3.Connection, table: str, key: str, columns: list[str], after: Any, size: int
) -> Iterator[list[tuple[Any, ...]]]:
    cols = ", ".join(columns)
    while True:
        if after is None:
            rows = src.execute(f"SELECT {cols} FROM {table} ORDER BY {key} LIMIT ?", (size,))
        else:
            rows = src.execute(
                f"SELECT {cols} FROM {table} WHERE {key} > ? ORDER BY {key} LIMIT ?",
                (after, size),
            )
        batch = [tuple(r) for r in rows.fetchall()]
        if not batch:
            return
        yield batch
        after = batch[-1][columns.index(key)]


def _norm(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return repr(float(value))
    return value


def _digest(rows: Iterator[Any]) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    for row in rows:
        h.update(orjson.dumps([_norm(v) for v in row]))
        n += 1
    return n, h.hexdigest()


def migrate(
    source: Path,
    target: PostgresDatabase,
    *,
    batch_size: int = 1000,
    progress: bool = True,
    max_batches: int | None = None,
) -> list[TableReport]:
    """Copy, then validate; ``MigrationFailed`` when any table differs. ``max_batches`` stops
    after that many batches (a simulated interruption, for tests)."""
    if not source.exists():
        raise MigrationFailed(f"no records database at {source}")
    uri = f"file:{source}?mode=ro"
    reports = []
    done_batches = 0
    with closing(sqlite3.connect(uri, uri=True)) as src:
        for table, key in TABLES:
            columns = _columns(src, table)
            total = int(src.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
            after = None
            if key == "seq":  # resume after the highest row already copied
                with target.read() as conn:
                    after = conn.execute(f"SELECT max(seq) FROM {table}").fetchone()[0]
            marks = ", ".join("?" * len(columns))
            sql = (
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
                "ON CONFLICT DO NOTHING"
            )
            copied = 0
            bar = tqdm(total=total, desc=table, unit="row", disable=not progress, file=sys.stderr)
            for batch in _batches(src, table, key, columns, after, batch_size):
                if max_batches is not None and done_batches >= max_batches:
                    bar.close()
                    raise MigrationFailed("interrupted (max_batches): run it again to resume")
                with target.write() as conn:
                    conn.executemany(sql, batch)
                copied += len(batch)
                done_batches += 1
                bar.update(len(batch))
            bar.close()
            if key == "seq":
                with target.write() as conn:
                    conn.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'seq'), "
                        f"greatest((SELECT max(seq) FROM {table}), 1))"
                    )
            reports.append(TableReport(table, total, copied))
        _validate(src, target)
    return reports


def _validate(src: sqlite3.Connection, target: PostgresDatabase) -> None:
    for table, key in TABLES:
        columns = ", ".join(_columns(src, table))
        query = f"SELECT {columns} FROM {table} ORDER BY {key}"
        expected = _digest(iter(src.execute(query)))
        with target.read() as conn:
            got = _digest(iter(conn.execute(query).fetchall()))
        if expected != got:
            raise MigrationFailed(
                f"{table}: source has {expected[0]} rows, target {got[0]}"
                + (" (same count, different content)" if expected[0] == got[0] else "")
            )
    with target.read() as conn:
        usage = conn.execute("SELECT coalesce(sum(facts), 0) FROM account_usage").fetchone()[0]
        facts = conn.execute("SELECT count(*) FROM facts").fetchone()[0]
    if int(usage) != int(facts):
        raise MigrationFailed(f"account usage counts {usage} facts, the table holds {facts}")


def queue_reindex(target: PostgresDatabase) -> int:
    """One outbox row per fact not already waiting: the next index flush (this command's, or
    a replica's start-up replay) writes every vector into the configured Chroma."""
    with target.write() as conn:
        return int(
            conn.execute(
                "INSERT INTO index_outbox (account, collection_id, scope_key, fact_id, "
                "created_at) SELECT f.account, f.collection_id, f.scope_key, f.id, "
                "extract(epoch FROM now()) FROM facts AS f WHERE NOT EXISTS (SELECT 1 FROM "
                "index_outbox AS o WHERE o.scope_key = f.scope_key AND o.fact_id = f.id)"
            ).rowcount
        )
