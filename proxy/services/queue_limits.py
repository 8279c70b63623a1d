"""Per-account limits on the learning queue: each job is a paid upstream call.

``learning.max_queued_jobs_per_account`` bounds an account's unfinished jobs and
``learning.max_jobs_per_minute_per_account`` the jobs it may add per minute (0: no limit).
A route that enqueues directly answers 429 (OpenAI's envelope, ``Retry-After``) and writes
nothing; a chat still answers and skips its learning (``X-Profilo-Learning: skipped``).

Counts are kept in memory (no database read per chat turn): an account's unfinished jobs are
read once, then followed as jobs are added and finish; before refusing, the count is read
again from the database (jobs another process finished are seen).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque

from proxy.config import LearningSettings
from proxy.errors import TooManyRequests
from proxy.store.jobs import JobStore

WINDOW = 60.0


class QueueLimits:
    def __init__(self, jobs: JobStore, settings: LearningSettings) -> None:
        self._jobs = jobs
        self._max_queued = settings.max_queued_jobs_per_account
        self._per_minute = settings.max_jobs_per_minute_per_account
        self._pending: dict[str, int] = {}
        self._recent: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    async def admit(self, account: str) -> None:
        """Raises ``TooManyRequests`` when ``account`` may not add a job now."""
        if self._per_minute:
            self._check_rate(account, time.monotonic())
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

    def _check_rate(self, account: str, now: float) -> None:
        with self._lock:
            recent = self._recent.get(account)
            while recent and recent[0] <= now - WINDOW:
                recent.popleft()
            if recent is not None and len(recent) >= self._per_minute:
                wait = max(1, math.ceil(recent[0] + WINDOW - now))
                raise TooManyRequests(
                    f"this account added {len(recent)} learning jobs in the last minute (the "
                    f"limit is {self._per_minute} a minute)",
                    code="learning_rate_limited",
                    headers={"Retry-After": str(wait)},
                )

    def added(self, account: str) -> None:
        now = time.monotonic()
        with self._lock:
            if self._per_minute:
                self._recent.setdefault(account, deque()).append(now)
                if len(self._recent) > 10_000:  # forget accounts idle for a minute
                    for name in [
                        a for a, d in self._recent.items() if not d or d[-1] < now - WINDOW
                    ]:
                        del self._recent[name]
            if account in self._pending:
                self._pending[account] += 1

    def finished(self, account: str) -> None:
        with self._lock:
            if self._pending.get(account):
                self._pending[account] -= 1
