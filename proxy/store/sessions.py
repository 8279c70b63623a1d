"""Dialectic sessions: the question/answer turns of one conversation about one user.

A session belongs to one scope (account + collection): looked up from another scope it does
not exist. Expired sessions are invisible and purged lazily.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import orjson

from proxy.config import QuotaSettings
from proxy.models import Scope
from proxy.store.db import Database
from proxy.store.quotas import check_new_session


@dataclass(frozen=True, slots=True)
class Turn:
    question: str
    answer: str
    fact_ids: list[str]


class SessionStore:
    def __init__(
        self, db: Database, ttl_seconds: float, quotas: QuotaSettings | None = None
    ) -> None:
        self._db = db
        self._ttl = ttl_seconds
        self._quotas = quotas or QuotaSettings()

    def admit(self, account: str) -> None:
        """Before a new session's (paid) answer: ``QuotaExceeded`` when the account has its
        quota of open sessions."""
        with self._db.read() as conn:
            check_new_session(conn, account, self._quotas)

    @staticmethod
    def new_id() -> str:
        return "dlg_" + uuid.uuid4().hex

    def exists(self, scope: Scope, session_id: str) -> bool:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT 1 FROM dialectic_sessions WHERE id = ? AND account = ? AND scope_key = ? "
                "AND expires_at > ?",
                (session_id, scope.account, scope.key, time.time()),
            ).fetchone()
        return row is not None

    def turns(self, scope: Scope, session_id: str, limit: int) -> list[Turn]:
        """The session's latest ``limit`` turns, oldest first (empty for another scope)."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT t.question, t.answer, t.fact_ids FROM dialectic_turns t "
                "JOIN dialectic_sessions s ON s.id = t.session_id "
                "WHERE s.id = ? AND s.account = ? AND s.scope_key = ? AND s.expires_at > ? "
                "ORDER BY t.seq DESC LIMIT ?",
                (session_id, scope.account, scope.key, time.time(), limit),
            ).fetchall()
        return [Turn(r[0], r[1], orjson.loads(r[2])) for r in reversed(rows)]

    def append(self, scope: Scope, session_id: str, turn: Turn, *, request_id: str | None) -> None:
        """Store a finished turn (creating the session on its first turn); one transaction."""
        now = time.time()
        with self._db.write() as conn:
            known = conn.execute(
                "SELECT 1 FROM dialectic_sessions WHERE id = ?", (session_id,)
            ).fetchone()
            if known is None:
                check_new_session(conn, scope.account, self._quotas)
            conn.execute(
                "INSERT INTO dialectic_sessions (id, account, collection_id, scope_key, "
                "created_at, updated_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET updated_at = excluded.updated_at, "
                "expires_at = excluded.expires_at "
                "WHERE dialectic_sessions.account = excluded.account "
                "AND dialectic_sessions.scope_key = excluded.scope_key",
                (
                    session_id,
                    scope.account,
                    scope.collection_id,
                    scope.key,
                    now,
                    now,
                    now + self._ttl,
                ),
            )
            owner = conn.execute(
                "SELECT account, scope_key FROM dialectic_sessions WHERE id = ?", (session_id,)
            ).fetchone()
            if owner is None or (owner[0], owner[1]) != (scope.account, scope.key):
                raise PermissionError("session belongs to another scope")
            conn.execute(
                "INSERT INTO dialectic_turns (session_id, question, answer, fact_ids, "
                "request_id, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    session_id,
                    turn.question,
                    turn.answer,
                    orjson.dumps(turn.fact_ids).decode(),
                    request_id,
                    now,
                ),
            )

    def purge_expired(self) -> int:
        with self._db.write() as conn:
            cur = conn.execute(
                "DELETE FROM dialectic_sessions WHERE expires_at <= ?", (time.time(),)
            )
        return cur.rowcount
