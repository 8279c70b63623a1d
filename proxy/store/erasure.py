"""The right to erasure: what ``DELETE`` with ``purge`` and deleting a collection remove.

A plain delete keeps the fact's history (``fact_versions``) and the change log (who changed
what, before/after), as an audit trail. ``purge_fact`` also removes the fact from both and
blanks the turn text of the learning jobs that produced it; ``erase_scope`` removes
everything of one (account, collection): facts, history, change log, index outbox, learning
jobs (queued ones too: they would learn it again) and dialectic sessions. The caller drops the
scope's retrieval index (Chroma) after the commit.
"""

from __future__ import annotations

from typing import Any

import orjson

from proxy.models import Scope
from proxy.store.db import Conn, Database


class Erasure:
    def __init__(self, db: Database) -> None:
        self._db = db

    def purge_fact(self, scope: Scope, fact_id: str) -> int:
        """Remove a (deleted) fact's history and change-log mentions; returns rows touched."""
        with self._db.write() as conn:
            requests = _requests_of(conn, scope, fact_id)
            touched = conn.execute(
                "DELETE FROM fact_versions WHERE scope_key = ? AND fact_id = ?",
                (scope.key, fact_id),
            ).rowcount
            touched += _scrub_changes(conn, scope, {fact_id})
            touched += _blank_jobs(conn, scope, requests, self._db.dialect == "postgres")
        return touched

    def erase_scope(self, scope: Scope) -> dict[str, int]:
        """Everything the records hold for ``scope``, in one transaction."""
        counts: dict[str, int] = {}
        with self._db.write() as conn:
            for table in ("facts", "fact_versions", "changes", "index_outbox", "jobs"):
                counts[table] = conn.execute(
                    f"DELETE FROM {table} WHERE scope_key = ? AND account = ?",
                    (scope.key, scope.account),
                ).rowcount
            conn.execute(  # the write log (its versions are never reused: views re-read)
                "DELETE FROM scope_writes WHERE scope_key = ? AND account = ?",
                (scope.key, scope.account),
            )
            counts["dialectic_sessions"] = conn.execute(
                "DELETE FROM dialectic_sessions WHERE scope_key = ? AND account = ?",
                (scope.key, scope.account),
            ).rowcount  # their turns go with them (ON DELETE CASCADE)
        return counts


def _requests_of(conn: Conn, scope: Scope, fact_id: str) -> set[str]:
    """The request ids (learning jobs) that wrote any version of the fact."""
    out: set[str] = set()
    for (snapshot,) in conn.execute(
        "SELECT snapshot FROM fact_versions WHERE scope_key = ? AND fact_id = ?",
        (scope.key, fact_id),
    ):
        request = orjson.loads(snapshot).get("generated_from_request_id")
        if isinstance(request, str):
            out.add(request)
    return out


def _mentions(item: Any, ids: set[str]) -> bool:
    if isinstance(item, dict) and "before" in item:  # an update: {"before", "after"}
        return any(_mentions(item.get(k), ids) for k in ("before", "after"))
    return isinstance(item, dict) and item.get("id") in ids


def _scrub_changes(conn: Conn, scope: Scope, ids: set[str]) -> int:
    """Drop the facts' snapshots from the scope's change-log entries (an entry left with
    nothing is deleted)."""
    touched = 0
    rows = conn.execute(
        "SELECT seq, added, updated, removed FROM changes WHERE account = ? AND scope_key = ?",
        (scope.account, scope.key),
    ).fetchall()
    for row in rows:
        lists = {k: orjson.loads(row[k]) for k in ("added", "updated", "removed")}
        kept = {k: [i for i in v if not _mentions(i, ids)] for k, v in lists.items()}
        if kept == lists:
            continue
        touched += 1
        if not any(kept.values()):
            conn.execute("DELETE FROM changes WHERE seq = ?", (row["seq"],))
        else:
            conn.execute(
                "UPDATE changes SET added = ?, updated = ?, removed = ? WHERE seq = ?",
                (*(orjson.dumps(kept[k]).decode() for k in ("added", "updated", "removed")),
                 row["seq"]),
            )  # fmt: skip
    return touched


def _blank_jobs(conn: Conn, scope: Scope, requests: set[str], postgres: bool) -> int:
    if not requests:
        return 0
    marks = ",".join("?" * len(requests))
    blank = (
        "(jsonb_set(payload::jsonb, '{messages}', '[]'::jsonb))::text"
        if postgres
        else "json_set(payload, '$.messages', json('[]'))"
    )
    return conn.execute(
        f"UPDATE jobs SET payload = {blank} "
        f"WHERE account = ? AND scope_key = ? AND id IN ({marks}) AND status IN ('done', 'failed')",
        (scope.account, scope.key, *requests),
    ).rowcount
