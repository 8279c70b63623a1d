"""The extraction job queue, in the records database (table ``jobs``, migration 3).

A job is written before the turn that produced it is acknowledged. Its life: ``queued`` →
(claimed) ``running`` → ``done`` | ``failed``, or back to ``queued`` with a later
``next_run_at`` after a failed attempt. ``mark_done`` runs inside the records transaction that
applies the job's operations, so applying and finishing commit together (exactly once).

Several processes (replicas on one Postgres) share the queue. A claim leases the job
(``lease_until``, renewed while it runs) and bumps its fencing ``token``; finishing, retrying
or failing a job names the token it was claimed with, so a worker whose lease ran out and was
taken over (paused, partitioned, killed) changes nothing: ``mark_done`` raises ``LeaseLost``
and the records transaction that applied its operations rolls back. On Postgres the claim
locks its rows ``FOR UPDATE SKIP LOCKED``: concurrent claimers never take the same job.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from proxy.models import Scope
from proxy.store.db import Conn, Database

JobStatus = Literal["queued", "running", "done", "failed"]
STATUSES: tuple[JobStatus, ...] = ("queued", "running", "done", "failed")
#: A job left ``running`` by this many more crashes than it has attempts is given up.
INTERRUPTION_GRACE = 3
#: Claims rank accounts by the jobs they started within this many seconds (fair turns).
FAIR_WINDOW = 60.0


class LeaseLost(Exception):
    """The job's lease was taken over (another claim bumped its token): apply nothing."""


@dataclass(frozen=True, slots=True)
class NewJob:
    id: str
    scope: Scope
    payload: dict[str, Any]


@dataclass(slots=True)
class Job:
    seq: int
    id: str
    account: str
    collection_id: str | None
    payload: dict[str, Any]
    status: JobStatus
    attempts: int
    max_attempts: int
    next_run_at: float
    error: str | None
    result: dict[str, Any] | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    token: int = 0
    lease_until: float | None = None

    @property
    def scope(self) -> Scope:
        return Scope(self.account, self.collection_id)

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")


def _job(row: Any) -> Job:
    return Job(
        seq=row["seq"],
        id=row["id"],
        account=row["account"],
        collection_id=row["collection_id"],
        payload=orjson.loads(row["payload"]),
        status=row["status"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        next_run_at=row["next_run_at"],
        error=row["error"],
        result=orjson.loads(row["result"]) if row["result"] else None,
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        token=row["token"],
        lease_until=row["lease_until"],
    )


def _fence(token: int | None) -> tuple[str, tuple[int, ...]]:
    return ("", ()) if token is None else (" AND token = ? AND status = 'running'", (token,))


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class JobStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- writes --------------------------------------------------------------------------------
    def enqueue(
        self,
        job_id: str,
        scope: Scope,
        payload: dict[str, Any],
        *,
        max_attempts: int,
        now: float | None = None,
    ) -> None:
        """Write a queued job (committed when this returns). A repeated id raises
        ``sqlite3.IntegrityError``."""
        self.enqueue_many([NewJob(job_id, scope, payload)], max_attempts=max_attempts, now=now)

    def enqueue_many(
        self, jobs: list[NewJob], *, max_attempts: int, now: float | None = None
    ) -> None:
        """Write several queued jobs in one transaction (one commit: group commit)."""
        now = time.time() if now is None else now
        rows = [
            (
                job.id,
                job.scope.account,
                job.scope.collection_id,
                job.scope.key,
                orjson.dumps(job.payload).decode(),
                max_attempts,
                now,
                now,
            )
            for job in jobs
        ]
        with self._db.write() as conn:
            conn.executemany(
                "INSERT INTO jobs (id, account, collection_id, scope_key, payload, status, "
                "attempts, max_attempts, next_run_at, created_at) "
                "VALUES (?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?)",
                rows,
            )

    def claim(self, limit: int, now: float | None = None, *, lease: float = 60.0) -> list[Job]:
        """Take up to ``limit`` due jobs: ``running``, one more attempt, committed.

        Only the head of a scope's queue (its earliest queued or running job) is eligible, so a
        scope's jobs run one at a time, in order. Accounts take turns: a head's rank is its place
        among its account's eligible heads plus the jobs that account started in the last
        ``FAIR_WINDOW`` seconds (or still runs), so one account's burst (many scopes) cannot
        hold the workers while another account waits: the account served least goes first.
        Candidates are read without the write lock
        (cost: one pass over the pending jobs' index); the claim itself is a short write that
        takes only those still queued (another process may have been first)."""
        if limit <= 0:
            return []
        now = time.time() if now is None else now
        with self._db.read() as conn:
            ids = [
                row[0]
                for row in conn.execute(
                    "WITH heads AS (SELECT j.id, j.seq, j.account FROM (SELECT MIN(seq) AS head "
                    "FROM jobs WHERE status IN ('queued', 'running') GROUP BY scope_key) AS h "
                    "JOIN jobs AS j ON j.seq = h.head "
                    "WHERE j.status = 'queued' AND j.next_run_at <= ?), "
                    "busy AS (SELECT account, COUNT(*) AS n FROM jobs "
                    "WHERE started_at > ? OR status = 'running' GROUP BY account) "
                    "SELECT heads.id, ROW_NUMBER() OVER (PARTITION BY heads.account "
                    "ORDER BY heads.seq) + COALESCE(busy.n, 0) AS turn, heads.seq AS seq "
                    "FROM heads LEFT JOIN busy ON busy.account = heads.account "
                    "ORDER BY turn, seq LIMIT ?",
                    (now, now - FAIR_WINDOW, limit),
                )
            ]
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        taken = (
            f"seq IN (SELECT seq FROM jobs WHERE id IN ({marks}) AND status = 'queued' "
            "FOR UPDATE SKIP LOCKED)"
            if self._db.dialect == "postgres"
            else f"id IN ({marks})"
        )
        with self._db.write() as conn:
            rows = conn.execute(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = ?, "
                f"lease_until = ?, token = token + 1 WHERE {taken} AND status = 'queued' "
                "RETURNING *",
                (now, now + lease, *ids),
            ).fetchall()
        return sorted((_job(row) for row in rows), key=lambda job: job.seq)

    def retry(self, job_id: str, error: str, run_at: float, token: int | None = None) -> bool:
        """Back to ``queued`` after a failed attempt; False when the lease was lost."""
        fence, args = _fence(token)
        with self._db.write() as conn:
            return (
                conn.execute(
                    "UPDATE jobs SET status = 'queued', error = ?, next_run_at = ?, "
                    f"lease_until = NULL WHERE id = ? AND status = 'running'{fence}",
                    (error[:4000], run_at, job_id, *args),
                ).rowcount
                > 0
            )

    def fail(
        self, job_id: str, error: str, now: float | None = None, token: int | None = None
    ) -> bool:
        fence, args = _fence(token)
        with self._db.write() as conn:
            return (
                conn.execute(
                    "UPDATE jobs SET status = 'failed', error = ?, finished_at = ?, "
                    f"lease_until = NULL WHERE id = ? AND status = 'running'{fence}",
                    (error[:4000], time.time() if now is None else now, job_id, *args),
                ).rowcount
                > 0
            )

    def renew(self, held: dict[str, int], until: float) -> set[str]:
        """Extend the leases of the jobs this worker runs (id → token); returns the ids whose
        lease was lost (taken over: their results will not apply)."""
        lost = set()
        with self._db.write() as conn:
            for job_id, token in held.items():
                cur = conn.execute(
                    "UPDATE jobs SET lease_until = ? WHERE id = ? AND token = ? "
                    "AND status = 'running'",
                    (until, job_id, token),
                )
                if cur.rowcount == 0:
                    lost.add(job_id)
        return lost

    def release(self, held: dict[str, int], now: float | None = None) -> int:
        """A stopping worker hands back the jobs it ran (id → fencing token; their tasks are
        cancelled): queued again at once, the interrupted attempt not counted, for any replica
        to claim now instead of after the lease. A job whose token moved on (taken over) or
        that is no longer running is left alone. The token stays; the next claim bumps it (a
        late apply with the old one already fails: it also requires ``running``)."""
        now = time.time() if now is None else now
        released = 0
        with self._db.write() as conn:
            for job_id, token in held.items():
                released += conn.execute(
                    "UPDATE jobs SET status = 'queued', next_run_at = ?, lease_until = NULL, "
                    "attempts = attempts - 1 WHERE id = ? AND token = ? AND status = 'running'",
                    (now, job_id, token),
                ).rowcount
        return released

    def expire_leases(self, now: float | None = None) -> int:
        """Running jobs whose lease ran out go back to the queue (any replica takes them
        over, with a new token); one interrupted far more often than it has attempts (it
        keeps killing its worker) fails."""
        return self._requeue("lease_until IS NULL OR lease_until < ?", now)

    @staticmethod
    def is_done(conn: Conn, job_id: str) -> bool:
        """Inside a write transaction: has this job already been applied?"""
        row = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row is not None and row[0] == "done"

    @staticmethod
    def mark_done(
        conn: Conn, job_id: str, result: dict[str, Any], now: float, token: int | None = None
    ) -> None:
        """Inside the records transaction that applied the job's operations. With the claim's
        ``token``: ``LeaseLost`` (the transaction rolls back) when another claim took over."""
        fence, args = _fence(token)
        cur = conn.execute(
            "UPDATE jobs SET status = 'done', result = ?, error = NULL, finished_at = ?, "
            f"lease_until = NULL WHERE id = ?{fence}",
            (orjson.dumps(result).decode(), now, job_id, *args),
        )
        if token is not None and cur.rowcount == 0:
            raise LeaseLost(job_id)

    def requeue_interrupted(self) -> int:
        """Start-up. SQLite (one process per data dir): every job a crash (or a stop mid-call)
        left ``running`` is queued again. Postgres (replicas share the queue): only those
        whose lease ran out; the others belong to a live replica."""
        if self._db.dialect == "postgres":
            return self.expire_leases()
        return self._requeue("1 = 1", None)

    def _requeue(self, which: str, now: float | None) -> int:
        now = time.time() if now is None else now
        args = (now,) if "?" in which else ()
        with self._db.write() as conn:
            conn.execute(
                "UPDATE jobs SET status = 'failed', finished_at = ?, lease_until = NULL, "
                "error = COALESCE(error || '; ', '') || 'interrupted repeatedly (the process "
                f"stopped during the job)' WHERE status = 'running' AND ({which}) "
                "AND attempts >= max_attempts + ?",
                (now, *args, INTERRUPTION_GRACE),
            )
            cur = conn.execute(
                "UPDATE jobs SET status = 'queued', next_run_at = ?, lease_until = NULL "
                f"WHERE status = 'running' AND ({which})",
                (now, *args),
            )
            return cur.rowcount

    def purge(self, before: float) -> int:
        """Delete finished jobs (and the turn text they hold) older than ``before``."""
        with self._db.write() as conn:
            cur = conn.execute(
                "DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?", (before,)
            )
            return cur.rowcount

    # -- reads -------------------------------------------------------------------------------
    def get(self, account: str, job_id: str) -> Job | None:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT * FROM jobs WHERE id = ? AND account = ?", (job_id, account)
            ).fetchone()
        return _job(row) if row else None

    def others_pending(self, scope: Scope, job_id: str) -> bool:
        """Has the scope another job queued or running (a burst still in progress)?"""
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT 1 FROM jobs WHERE scope_key = ? AND status IN ('queued', 'running') "
                "AND id != ? LIMIT 1",
                (scope.key, job_id),
            ).fetchone()
        return row is not None

    def pending_for(self, account: str) -> int:
        """An account's unfinished (queued or running) jobs."""
        with self._db.read() as conn:
            return int(
                conn.execute(
                    "SELECT COUNT(*) FROM jobs "
                    "WHERE account = ? AND status IN ('queued', 'running')",
                    (account,),
                ).fetchone()[0]
            )

    def next_due(self) -> float | None:
        """When the earliest queued job becomes due (None: nothing is queued)."""
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT MIN(next_run_at) FROM jobs WHERE status = 'queued'"
            ).fetchone()
        return row[0] if row and row[0] is not None else None

    def depth(self) -> int:
        with self._db.read() as conn:
            return int(
                conn.execute(
                    "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')"
                ).fetchone()[0]
            )

    def pending_counts(self) -> dict[str, int]:
        """Unfinished jobs of every account by status (the metrics' queue gauges)."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT status, COUNT(*) FROM jobs WHERE status IN ('queued', 'running') "
                "GROUP BY status"
            ).fetchall()
        return {row[0]: int(row[1]) for row in rows}

    def stats(self, account: str, *, recent: int = 500, failures: int = 20) -> dict[str, Any]:
        """One account's queue: counts by status, depth, latency of recent jobs (created →
        finished), the latest failures, dropped operations by reason."""
        now = time.time()
        with self._db.read() as conn:
            counts = dict.fromkeys(STATUSES, 0)
            for row in conn.execute(
                "SELECT status, COUNT(*) FROM jobs WHERE account = ? GROUP BY status", (account,)
            ):
                counts[row[0]] = row[1]
            pending = conn.execute(
                "SELECT MIN(created_at), SUM(CASE WHEN attempts > 0 THEN 1 ELSE 0 END) FROM jobs "
                "WHERE account = ? AND status IN ('queued', 'running')",
                (account,),
            ).fetchone()
            done = conn.execute(
                "SELECT created_at, started_at, finished_at, result FROM jobs "
                "WHERE account = ? AND status = 'done' ORDER BY seq DESC LIMIT ?",
                (account, recent),
            ).fetchall()
            failed = conn.execute(
                "SELECT id, collection_id, attempts, error, finished_at FROM jobs "
                "WHERE account = ? AND status = 'failed' ORDER BY seq DESC LIMIT ?",
                (account, failures),
            ).fetchall()
        latencies = [row["finished_at"] - row["created_at"] for row in done]
        dropped: Counter[str] = Counter()
        for row in done:
            result = orjson.loads(row["result"]) if row["result"] else {}
            dropped.update(result.get("dropped") or {})
        return {
            "counts": counts,
            "depth": counts["queued"] + counts["running"],
            "retrying": int(pending[1] or 0),
            "oldest_pending_age_seconds": (now - pending[0]) if pending[0] is not None else None,
            "latency_seconds": {
                "jobs": len(latencies),
                "p50": _percentile(latencies, 0.50),
                "p95": _percentile(latencies, 0.95),
            },
            "dropped_operations": dict(dropped),
            "failures": [
                {
                    "request_id": row["id"],
                    "collection_id": row["collection_id"],
                    "attempts": row["attempts"],
                    "error": row["error"],
                    "finished_at": row["finished_at"],
                }
                for row in failed
            ],
        }
