"""The durable job runner: asyncio tasks in the app's lifespan working the ``jobs`` table.

- Claims due jobs (``JobStore.claim``: a scope's jobs strictly in order, one at a time) up to
  the concurrency limit; wakes on enqueue and when a job finishes, else every poll interval.
- A failed attempt is retried with exponential backoff (an upstream ``Retry-After`` is
  honoured) on upstream 408/409/429/5xx, unreachable, timeouts, unparseable answers and
  unexpected errors; another upstream 4xx fails the job at once; after ``max_attempts`` the
  job is ``failed`` with its last error kept.
- Start-up re-queues the jobs a crash left ``running``. Stopping (the app's shutdown) cancels
  the jobs in flight and hands them back to the queue under their fencing token
  (``JobStore.release``: nothing was applied, applying and marking done are one transaction),
  so another replica claims them at once rather than after their lease; ``stop_claiming``
  (the drain before it) takes no new job.
- Leases: every claimed job is leased (``learning.lease_seconds``) and renewed every third of
  it while it runs; jobs whose lease ran out (a replica paused or killed) are re-queued by any
  replica's loop. A job whose lease was taken over applies nothing (``LeaseLost``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from proxy.config import LearningSettings, RedactionSettings
from proxy.errors import ProxyError
from proxy.logging_setup import request_id_var
from proxy.metrics import Metrics
from proxy.models import Scope
from proxy.services.extraction import Extractor
from proxy.services.extraction_ops import AnswerError
from proxy.services.limits import Limiter
from proxy.services.queue_limits import QueueLimits
from proxy.services.secrets import redact_text
from proxy.store.job_writer import JobWriter
from proxy.store.jobs import Job, JobStore, LeaseLost, NewJob

log = logging.getLogger("profilo.worker")

RETRYABLE_STATUS = frozenset({408, 409, 429})
MAX_RETRY_AFTER = 3600.0
PURGE_EVERY = 3600.0
CLAIM_INTERVAL = 0.01  # seconds between two looks at the queue, at most


def redacted_turn(payload: dict[str, Any], rules: RedactionSettings) -> dict[str, Any]:
    """The job's turn with every credential in its messages masked (``[redacted]``): the
    queue keeps turn text for ``retention_days``, and the extraction model never sees it."""
    messages = payload.get("messages")
    if not isinstance(messages, list):
        return payload
    masked = [
        {**m, "content": redact_text(m["content"], rules)}
        if isinstance(m, dict) and isinstance(m.get("content"), str)
        else m
        for m in messages
    ]
    return {**payload, "messages": masked}


@dataclass
class WorkerStats:
    """In-process counters (to be exposed as metrics)."""

    done: int = 0
    failed: int = 0
    retried: int = 0
    attempts: int = 0
    repeated_runs: int = 0  # a job found already done when applied (changed nothing)
    leases_lost: int = 0  # a job taken over by another worker (applied nothing here)
    facts_added: int = 0
    facts_updated: int = 0
    facts_removed: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=1000))

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            k: v for k, v in vars(self).items() if isinstance(v, int) and not isinstance(v, bool)
        }
        out["dropped"] = dict(self.dropped)
        out["errors"] = dict(self.errors)
        return out


def retry_after(exc: BaseException) -> float | None:
    headers = exc.headers if isinstance(exc, ProxyError) else {}
    for name, scale in (("retry-after-ms", 0.001), ("Retry-After", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            return max(0.0, min(float(raw) * scale, MAX_RETRY_AFTER))
        except ValueError:
            continue  # an HTTP date: fall back to our own backoff
    return None


def classify(exc: BaseException) -> tuple[bool, str]:
    """(retryable, the error as kept on the job)."""
    if isinstance(exc, AnswerError):
        return True, f"unparseable model answer: {exc}"
    if isinstance(exc, ProxyError):
        status = exc.status
        retryable = status in RETRYABLE_STATUS or status >= 500
        return retryable, f"upstream HTTP {status} ({exc.code or exc.type}): {exc.message}"
    return True, f"{type(exc).__name__}: {exc}"


class Worker:
    def __init__(
        self,
        jobs: JobStore,
        extractor: Extractor,
        settings: LearningSettings,
        metrics: Metrics | None = None,
        redaction: RedactionSettings | None = None,
        *,
        limiter: Limiter,
    ) -> None:
        self._jobs = jobs
        self._extractor = extractor
        self._settings = settings
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._finished: dict[str, asyncio.Event] = {}
        self._writer = JobWriter(jobs, settings.max_attempts)
        self._busy_scopes: set[str] = set()  # scopes with a job running in this process
        self._held: dict[str, int] = {}  # jobs this process runs: id → fencing token
        self._claiming = True  # False once the process drains (shutting down)
        self._limits = QueueLimits(jobs, settings, limiter)
        self._redaction = redaction or RedactionSettings()
        self.stats = WorkerStats()
        self._metrics = metrics or Metrics()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    @property
    def running(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        requeued = await asyncio.to_thread(self._jobs.requeue_interrupted)
        if requeued:
            log.warning("re-queued %d extraction jobs left running by the last stop", requeued)
        if self._settings.run_worker:
            self._loop_task = asyncio.create_task(self._loop(), name="profilo-worker")

    def stop_claiming(self) -> None:
        """Take no new job (the jobs running go on; ``stop`` hands back those still running)."""
        self._claiming = False

    async def stop(self) -> None:
        self._claiming = False
        held = dict(self._held)  # before the cancellation: each task's end forgets its job
        tasks = [t for t in (self._loop_task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop_task = None
        if held:
            try:
                released = await asyncio.to_thread(self._jobs.release, held)
                log.warning("handed %d running extraction jobs back to the queue", released)
            except Exception:  # their leases run out instead
                log.exception("could not hand %d running jobs back to the queue", len(held))
        await asyncio.to_thread(self._writer.close)

    # -- the queue's API (services.extraction.LearningQueue) ----------------------------------
    async def admit(self, account: str, key_id: str | None = None) -> None:
        """Raises ``TooManyRequests`` when the account's queue limits refuse a job now."""
        await self._limits.admit(account, key_id)

    async def enqueue(
        self, job_id: str, scope: Scope, payload: dict[str, Any], key_id: str | None = None
    ) -> None:
        """Returns once the job is committed (``TooManyRequests`` and nothing written when
        the account is over its limits). Jobs queued at the same time share one transaction
        (group commit, ``JobWriter``)."""
        await self._limits.reserve(scope.account, key_id)
        payload = redacted_turn(payload, self._redaction)  # the queue keeps no credential
        await self._writer.submit(NewJob(job_id, scope, payload))
        self._limits.added(scope.account)
        if scope.key not in self._busy_scopes:  # else its running job's end wakes the loop
            self._wake.set()

    async def wait(self, account: str, job_id: str, seconds: float) -> Job | None:
        """The job once finished, or as it is when ``seconds`` ran out (None: no such job)."""
        deadline = time.monotonic() + seconds
        event = self._finished.setdefault(job_id, asyncio.Event())
        try:
            while True:
                job = await asyncio.to_thread(self._jobs.get, account, job_id)
                remaining = deadline - time.monotonic()
                if job is None or job.finished or remaining <= 0:
                    return job
                with contextlib.suppress(TimeoutError):  # re-read now and then: other processes
                    await asyncio.wait_for(event.wait(), min(remaining, 0.5))
        finally:
            if self._finished.get(job_id) is event and not event.is_set():
                self._finished.pop(job_id, None)

    # -- the loop ------------------------------------------------------------------------------
    async def _leases(self, now: float, last: float) -> float:
        """Renew this worker's leases and re-queue expired ones, every third of a lease."""
        lease = self._settings.lease_seconds
        if now - last < lease / 3:
            return last
        if self._held:
            lost = await asyncio.to_thread(self._jobs.renew, dict(self._held), time.time() + lease)
            for job_id in lost:
                log.warning("job %s: lease taken over by another worker", job_id)
        expired = await asyncio.to_thread(self._jobs.expire_leases)
        if expired:
            log.warning("re-queued %d extraction jobs whose lease ran out", expired)
        return now

    async def _loop(self) -> None:
        last_purge = last_claim = last_lease = 0.0
        while True:
            # a burst of enqueues wakes the loop once per CLAIM_INTERVAL, not once per turn
            await asyncio.sleep(max(0.0, last_claim + CLAIM_INTERVAL - time.monotonic()))
            last_claim = time.monotonic()
            self._wake.clear()
            free = self._settings.concurrency - len(self._tasks) if self._claiming else 0
            try:
                last_lease = await self._leases(time.monotonic(), last_lease)
                lease = self._settings.lease_seconds
                claimed = (
                    await asyncio.to_thread(self._jobs.claim, free, lease=lease) if free > 0 else []
                )
                for job in claimed:
                    self._held[job.id] = job.token
                    task = asyncio.create_task(self._run(job), name=f"job-{job.id}")
                    self._tasks.add(task)
                if time.time() - last_purge > PURGE_EVERY:
                    last_purge = time.time()
                    cutoff = last_purge - self._settings.retention_days * 86400
                    await asyncio.to_thread(self._jobs.purge, cutoff)
            except Exception:
                log.exception("the extraction worker could not read the queue")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.poll_interval_seconds)

    async def _run(self, job: Job) -> None:
        request_id_var.set(job.id)  # this task's log lines carry the turn's request id
        self.stats.attempts += 1
        self._busy_scopes.add(job.scope.key)
        try:
            try:
                result: dict[str, Any] | None = await self._extractor.run(job)
            except asyncio.CancelledError:
                raise  # stopping: the job stays running and is re-queued at the next start
            except LeaseLost:
                log.warning("job %s: lease lost before it applied; another worker has it", job.id)
                self.stats.leases_lost += 1
                result = None
            except Exception as exc:
                if await self._failed(job, exc):
                    self._limits.finished(job.account)
                result = None
            event = self._finished.pop(job.id, None)
            if event is not None:
                event.set()  # committed (or failed): whoever waits can read it now
            if result is not None:
                self._limits.finished(job.account)
                self._count(job, result)
                await self._extractor.update_index(job)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("index update after job %s failed (replayed later)", job.id)
        finally:
            self._held.pop(job.id, None)
            self._busy_scopes.discard(job.scope.key)
            self._tasks.discard(asyncio.current_task())
            self._wake.set()

    def _count(self, job: Job, result: dict[str, Any]) -> None:
        self._metrics.job_result(result)
        if result.get("already_done"):
            self.stats.repeated_runs += 1
            return
        self.stats.done += 1
        self.stats.facts_added += int(result.get("added", 0))
        self.stats.facts_updated += int(result.get("updated", 0))
        self.stats.facts_removed += int(result.get("removed", 0))
        self.stats.dropped.update(result.get("dropped") or {})
        self.stats.latencies.append(time.time() - job.created_at)

    def backoff(self, attempts: int, after: float | None) -> float:
        base = self._settings.backoff_base_seconds * 2 ** max(attempts - 1, 0)
        delay = min(base, self._settings.backoff_cap_seconds) * random.uniform(0.8, 1.2)
        return max(delay, after) if after is not None else delay

    async def _failed(self, job: Job, exc: Exception) -> bool:
        """Retry or fail the job; True when it is finished (failed for good)."""
        retryable, error = classify(exc)
        self.stats.errors[type(exc).__name__] += 1
        try:
            if retryable and job.attempts < job.max_attempts:
                delay = self.backoff(job.attempts, retry_after(exc))
                log.info("job %s attempt %d failed, retry in %.2fs: %s", job.id, job.attempts,
                         delay, error)  # fmt: skip
                await asyncio.to_thread(
                    self._jobs.retry, job.id, error, time.time() + delay, job.token
                )
                self.stats.retried += 1
                self._metrics.jobs.labels("retried").inc()
                return False
            why = "attempts exhausted" if retryable else "not retryable"
            log.warning("job %s failed (%s): %s", job.id, why, error)
            await asyncio.to_thread(self._jobs.fail, job.id, error, None, job.token)
            self.stats.failed += 1
            self._metrics.jobs.labels("failed").inc()
        except Exception:
            log.exception("could not record the failure of job %s", job.id)
        return True
