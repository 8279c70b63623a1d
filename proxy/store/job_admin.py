"""Operator reads and writes of the job queue across accounts (``profilo jobs``)."""

from __future__ import annotations

import time
from typing import Any

from proxy.store.db import Database


class JobAdmin:
    def __init__(self, db: Database) -> None:
        self._db = db

    def counts(self) -> dict[str, dict[str, int]]:
        """``{account: {status: n}}`` over every account."""
        out: dict[str, dict[str, int]] = {}
        with self._db.read() as conn:
            for row in conn.execute(
                "SELECT account, status, COUNT(*) FROM jobs GROUP BY account, status "
                "ORDER BY account"
            ):
                out.setdefault(row[0], {})[row[1]] = row[2]
        return out

    def failed(self, account: str, limit: int = 50) -> list[dict[str, Any]]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT id, collection_id, attempts, error, finished_at FROM jobs "
                "WHERE account = ? AND status = 'failed' ORDER BY seq DESC LIMIT ?",
                (account, limit),
            ).fetchall()
        return [dict(row) for row in rows]

    def requeue_failed(self, account: str, job_ids: list[str] | None = None) -> int:
        """Queue failed jobs of ``account`` again (all, or those ids) with a fresh set of
        attempts; the proxy's worker takes them on its next poll. Returns how many."""
        now = time.time()
        sql = (
            "UPDATE jobs SET status = 'queued', attempts = 0, next_run_at = ?, "
            "finished_at = NULL, started_at = NULL WHERE account = ? AND status = 'failed'"
        )
        params: list[Any] = [now, account]
        if job_ids is not None:
            if not job_ids:
                return 0
            sql += f" AND id IN ({','.join('?' * len(job_ids))})"
            params += job_ids
        with self._db.write() as conn:
            return conn.execute(sql, params).rowcount
