"""Reads of the change log (written by ``facts.Transaction``) and of the index outbox."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.models import Scope
from proxy.store.db import Conn, Database, using
from proxy.store.facts import Change
from proxy.store.scope_writes import prune as prune_writes


@dataclass(slots=True)
class ChangeQuery:
    request_id: str | None = None
    since: float | None = None
    until: float | None = None
    before_seq: int | None = None  # cursor: entries older than this
    limit: int = 50


def _change(row: Any) -> tuple[int, Change]:
    return row["seq"], Change(
        id=row["id"],
        account=row["account"],
        collection_id=row["collection_id"],
        request_id=row["request_id"],
        source=row["source"],
        created_at=row["created_at"],
        added=orjson.loads(row["added"]),
        updated=orjson.loads(row["updated"]),
        removed=orjson.loads(row["removed"]),
    )


class ChangeLog:
    def __init__(self, db: Database) -> None:
        self._db = db

    def entries(
        self, scope: Scope | None, q: ChangeQuery, *, account: str | None = None
    ) -> list[tuple[int, Change]]:
        """Newest first. With ``scope`` the entries of that scope; with ``scope=None`` and
        ``account`` every collection of that one account (used by the Reflexio-style log)."""
        params: list[Any]
        if scope is not None:
            where, params = ["account = ?", "scope_key = ?"], [scope.account, scope.key]
        elif account:
            where, params = ["account = ?"], [account]
        else:
            raise ValueError("the change log is read within an account")
        if q.request_id is not None:
            where.append("request_id = ?")
            params.append(q.request_id)
        if q.since is not None:
            where.append("created_at >= ?")
            params.append(q.since)
        if q.until is not None:
            where.append("created_at <= ?")
            params.append(q.until)
        if q.before_seq is not None:
            where.append("seq < ?")
            params.append(q.before_seq)
        sql = f"SELECT * FROM changes WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?"
        with self._db.read() as conn:
            rows = conn.execute(sql, (*params, q.limit)).fetchall()
        return [_change(row) for row in rows]


@dataclass(slots=True)
class OutboxItem:
    seq: int
    fact_id: str
    attempts: int


class Outbox:
    """Index work committed with the records, applied to Chroma after the commit."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def pending_scopes(self) -> list[Scope]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT DISTINCT account, collection_id FROM index_outbox"
            ).fetchall()
        return [Scope(row["account"], row["collection_id"]) for row in rows]

    def lock(self, scope: Scope) -> AbstractContextManager[Conn | None]:
        """Held while the scope's rows are applied: replicas take turns (``Database.index_lock``);
        pass the connection it yields to ``pending``/``done``/``failed``."""
        return self._db.index_lock(scope.key)

    def pending(
        self, scope: Scope, limit: int = 512, *, conn: Conn | None = None
    ) -> list[OutboxItem]:
        with using(conn, self._db.read) as c:
            rows = c.execute(
                "SELECT seq, fact_id, attempts FROM index_outbox WHERE scope_key = ? "
                "AND account = ? ORDER BY seq LIMIT ?",
                (scope.key, scope.account, limit),
            ).fetchall()
        return [OutboxItem(row["seq"], row["fact_id"], row["attempts"]) for row in rows]

    def has_pending(self, scope: Scope) -> bool:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT 1 FROM index_outbox WHERE scope_key = ? AND account = ? LIMIT 1",
                (scope.key, scope.account),
            ).fetchone()
        return row is not None

    def done(self, scope: Scope, seqs: list[int], *, conn: Conn | None = None) -> None:
        if not seqs:
            return
        marks = ",".join("?" * len(seqs))
        with using(conn, self._db.write) as c:
            c.execute(
                f"DELETE FROM index_outbox WHERE scope_key = ? AND seq IN ({marks})",
                (scope.key, *seqs),
            )
            prune_writes(c, scope, time.time())

    def failed(
        self, scope: Scope, seqs: list[int], error: str, *, conn: Conn | None = None
    ) -> None:
        if not seqs:
            return
        marks = ",".join("?" * len(seqs))
        with using(conn, self._db.write) as c:
            c.execute(
                f"UPDATE index_outbox SET attempts = attempts + 1, last_error = ? "
                f"WHERE scope_key = ? AND seq IN ({marks})",
                (error[:1000], scope.key, *seqs),
            )

    def depth(self) -> int:
        with self._db.read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM index_outbox").fetchone()[0])
