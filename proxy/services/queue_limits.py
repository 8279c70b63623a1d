"""Per-account limits on the learning queue: each job is a paid upstream call.

``learning.max_queued_jobs_per_account`` bounds an account's unfinished jobs (0: no limit).
Jobs added per minute are the usage limiter's (``proxy/services/limits.py``): the account's
``extraction_jobs_per_minute`` set by the operator, else ``learning.
max_jobs_per_minute_per_account``, and a key's own; counted for every replica with Postgres.
A route that enqueues directly answers 429 (OpenAI's envelope, ``Retry-After``) and writes
nothing; a chat still answers and skips its learning (``X-Profilo-Learning: skipped``).

Unfinished jobs are counted in memory (no database read per chat turn): an account's
unfinished jobs are read once, then followed as jobs are added and finish; before refusing,
the count is read again from the database (jobs another process finished are seen).
"""

from __future__ import annotations

import asyncio
import threading

from proxy.config import LearningSettings
from proxy.errors import TooManyRequests
from proxy.services.limits import Limiter
from proxy.store.jobs import JobStore


class QueueLimits:
    def __init__(self, jobs: JobStore, settings: LearningSettings, rate: Limiter) -> None:
        self._jobs = jobs
        self._max_queued = settings.max_queued_jobs_per_account
        self._rate = rate
        self._pending: dict[str, int] = {}
        self._lock = threading.Lock()

    async def admit(self, account: str, key_id: str | None = None) -> None:
        """Raises ``TooManyRequests`` when ``account`` may not add a job now (counts nothing:
        a chat asks before it answers, and adds its job after)."""
        await self._rate.check_job(account, key_id)
        await self._check_pending(account)

    async def reserve(self, account: str, key_id: str | None = None) -> None:
        """Just before a job is written: ``TooManyRequests``, or the job counted in the
        jobs/min windows (at once, so two replicas cannot both take the last one)."""
        await self._check_pending(account)
        await self._rate.take_job(account, key_id)

    async def _check_pending(self, account: str) -> None:
        if self._max_queued:
            pending = self._pending.get(account)
            if pending is None or pending >= self._max_queued:  # first seen, or confirm
                pending = await asyncio.to_thread(self._jobs.pending_for, account)
                with self._lock:
                    self._pending[account] = pending
            if pending >= self._max_queued:
                raise TooManyRequests(
                    f"this account has {pending} learning jobs waiting (the limit is "
                    f"{self._max_queued}); retry when some have finished",
                    code="learning_queue_full",
                    headers={"Retry-After": "30"},
                )

    def added(self, account: str) -> None:
        with self._lock:
            if account in self._pending:
                self._pending[account] += 1

    def finished(self, account: str) -> None:
        with self._lock:
            if self._pending.get(account):
                self._pending[account] -= 1
