"""The per-scope write log: which facts of a scope were written, in commit order.

Every fact write adds an ``index_outbox`` row in the write's own transaction (``facts.py``), and
a trigger copies it here (migration 12 / Postgres 2), where it outlives the outbox row. ``seq``
is the outbox's: global, increasing, never reused, and, since one scope's writers are
serialized (``Database.lock_scope``), in commit order within a scope. So a scope's ``max(seq)``
is a write version that every replica sharing the database reads alike, and the rows after a
version name the facts changed since. Rows older than the retention are pruned, the scope's
newest always kept: a reader whose version row is gone (``oldest > version``) cannot trust a
delta and re-reads the scope. Erasing a scope deletes its rows (``erasure.py``); its versions
never come back (``seq`` is never reused), so a view of the erased facts can never look current.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.models import Scope
from proxy.store.db import Conn, Database

#: Rows kept this long (seconds) after their write; the newest row of a scope always stays.
RETENTION_SECONDS = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Head:
    """The scope's write log bounds: ``newest`` is its version (0: never written or erased);
    ``pending``: index outbox rows of the scope are waiting (read in the same query)."""

    oldest: int
    newest: int
    pending: bool = True


#: Both ends by the primary key, in order (``min``/``max`` with the account filter would read
#: every row of the scope's log).
_EDGE = "SELECT seq FROM scope_writes WHERE scope_key = ? AND account = ? ORDER BY seq {} LIMIT 1"
_PENDING = "SELECT 1 FROM index_outbox WHERE scope_key = ? AND account = ? LIMIT 1"
_HEAD = f"SELECT ({_EDGE.format('ASC')}), ({_EDGE.format('DESC')}), EXISTS ({_PENDING})"


class ScopeWrites:
    def __init__(self, db: Database) -> None:
        self._db = db

    def head(self, scope: Scope) -> Head:
        with self._db.read() as conn:
            row = conn.execute(_HEAD, (scope.key, scope.account) * 3).fetchone()
        pending = bool(row[2])
        if row[1] is None:
            return Head(0, 0, pending)
        return Head(int(row[0]), int(row[1]), pending)

    def since(self, scope: Scope, version: int, limit: int) -> list[tuple[int, str]]:
        """(seq, fact id) of the scope's writes after ``version``, oldest first, at most
        ``limit`` (the caller re-reads the whole scope when there are more)."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT seq, fact_id FROM scope_writes WHERE scope_key = ? AND account = ? "
                "AND seq > ? ORDER BY seq LIMIT ?",
                (scope.key, scope.account, version, limit),
            ).fetchall()
        return [(int(row[0]), str(row[1])) for row in rows]


def prune(conn: Conn, scope: Scope, now: float) -> int:
    """Drop the scope's rows older than the retention, except its newest (called when the
    outbox rows are applied)."""
    return int(
        conn.execute(
            "DELETE FROM scope_writes WHERE scope_key = ? AND account = ? "
            f"AND created_at < ? AND seq < ({_EDGE.format('DESC')})",
            (scope.key, scope.account, now - RETENTION_SECONDS, scope.key, scope.account),
        ).rowcount
    )
