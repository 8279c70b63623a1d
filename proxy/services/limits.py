"""Limits the operator sets per account and per key: requests/min, tokens/min, a monthly
budget, extraction jobs/min (README "Usage and limits").

A chat request is admitted when, for the account and for its key: the month's cost is under
the budget (else 429 ``insufficient_quota``), the minute's tokens are under tokens/min and one
more request fits requests/min (else 429 ``rate_limit_exceeded``). Tokens are known once the
answer is: they are added then (``consumed``), so one request may pass tokens/min, and the
next ones wait. Answers carry OpenAI's ``x-ratelimit-*`` headers for the tightest subject.

The limits are read from the records and held ``usage.limits_refresh_seconds``; a subject
with no limit costs no counting. ``clock`` (seconds since the epoch) is injectable: the
tests drive the windows with a clock of their own.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from proxy.errors import InsufficientQuota, RateLimited, TooManyRequests, Unavailable
from proxy.models import Account, Limits
from proxy.services.usage_recorder import UsageRecorder
from proxy.services.windows import Windows, WindowState
from proxy.store.usage import UsageStore, account_subject, key_subject, month_window

log = logging.getLogger("profilo.usage")

Clock = Callable[[], float]
_CACHED = 10_000


def _reset_text(seconds: float) -> str:
    """OpenAI's reset format: ``1s``, ``6m0s``, ``20ms``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def ratelimit_headers(kind: str, states: list[WindowState]) -> dict[str, str]:
    """``x-ratelimit-{limit,remaining,reset}-{kind}`` of the tightest subject."""
    if not states:
        return {}
    tight = min(states, key=lambda s: (s.remaining, -s.reset))
    return {
        f"x-ratelimit-limit-{kind}": str(int(tight.limit)),
        f"x-ratelimit-remaining-{kind}": str(int(tight.remaining)),
        f"x-ratelimit-reset-{kind}": _reset_text(tight.reset),
    }


class Limiter:
    def __init__(
        self,
        store: UsageStore,
        windows: Windows,
        recorder: UsageRecorder,
        *,
        refresh_seconds: float,
        default_jobs_per_minute: int = 0,
        clock: Clock | None = None,
    ) -> None:
        self._store = store
        self._windows = windows
        self._recorder = recorder
        self._refresh = refresh_seconds
        self._default_jobs = default_jobs_per_minute
        self.clock: Clock = clock or time.time
        self._cache: dict[tuple[str, str | None], tuple[float, tuple[Limits, Limits]]] = {}

    async def limits(self, account: str, key_id: str | None) -> tuple[Limits, Limits]:
        """(the account's, the key's) limits, as read at most ``refresh_seconds`` ago."""
        now = time.monotonic()
        cached = self._cache.get((account, key_id))
        if cached is not None and now - cached[0] < self._refresh:
            return cached[1]
        try:
            found = await asyncio.to_thread(self._store.limits, account, key_id)
        except Unavailable:
            if cached is not None:  # the records unreachable: the limits as last read
                return cached[1]
            raise
        if self._refresh > 0:
            if len(self._cache) > _CACHED:
                self._cache.clear()
            self._cache[(account, key_id)] = (now, found)
        return found

    def forget(self) -> None:
        """Read the limits again on next use (after this process changed them)."""
        self._cache.clear()

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._windows.blocking:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    def _subjects(
        self, account: Account, field: str, pair: tuple[Limits, Limits]
    ) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        own, key = pair
        if getattr(own, field) is not None:
            out.append((account_subject(account.id), float(getattr(own, field))))
        if account.key_id and getattr(key, field) is not None:
            out.append((key_subject(account.key_id), float(getattr(key, field))))
        return out

    async def admit_request(self, account: Account) -> dict[str, str]:
        """Raises ``InsufficientQuota`` / ``RateLimited``; else counts the request and returns
        the ``x-ratelimit-*`` headers for the answer (none when no limit applies). The
        records unreachable: the request is answered unchecked (fail open, as memory is)."""
        try:
            return await self._admit(account)
        except Unavailable as exc:
            log.warning("usage limits not checked (fail open): %s", exc.message)
            return {"X-Profilo-Limits": "unchecked"}

    async def _admit(self, account: Account) -> dict[str, str]:
        pair = await self.limits(account.id, account.key_id)
        budgets = self._subjects(account, "monthly_budget", pair)
        tpm = self._subjects(account, "tokens_per_minute", pair)
        rpm = self._subjects(account, "requests_per_minute", pair)
        if not (budgets or tpm or rpm):
            return {}
        now = self.clock()
        if budgets:
            await self._check_budget(budgets, now)
        headers: dict[str, str] = {}
        if tpm:
            states = await self._run(self._windows.check, "tokens", tpm, now)
            full = [s for s in states if s.used >= s.limit]
            if full:
                raise _rate_limited("tokens", full, states)
            headers |= ratelimit_headers("tokens", states)
        if rpm:
            ok, states = await self._run(self._windows.take, "requests", rpm, 1.0, now)
            if not ok:
                raise _rate_limited("requests", [s for s in states if s.used + 1 > s.limit], states)
            headers |= ratelimit_headers("requests", states)
        return headers

    async def _check_budget(self, budgets: list[tuple[str, float]], now: float) -> None:
        month = month_window(now)
        spent = await asyncio.to_thread(
            self._store.counters, "cost", month, [s for s, _ in budgets]
        )
        for subject, budget in budgets:
            total = spent.get(subject, 0.0) + self._recorder.unflushed_cost(subject, month)
            if total >= budget:
                who = "API key" if subject.startswith("k:") else "account"
                raise InsufficientQuota(
                    f"You exceeded the monthly budget of this {who} ({budget:g} USD; "
                    f"{total:.6g} spent). It renews at the start of next month (UTC).",
                    headers={"Retry-After": str(_seconds_to_next_month(now))},
                )

    async def consumed(self, account: Account, tokens: int) -> None:
        """Add an answer's tokens to the tokens/min windows that have a limit."""
        if tokens <= 0:
            return
        pair = await self.limits(account.id, account.key_id)
        tpm = [s for s, _ in self._subjects(account, "tokens_per_minute", pair)]
        if tpm:
            await self._run(self._windows.add, "tokens", tpm, float(tokens), self.clock())

    async def check_job(self, account: str, key_id: str | None = None) -> None:
        """Raises ``TooManyRequests`` (``learning_rate_limited``) when the account or key
        added its extraction jobs/min already (the account default: the learning setting)."""
        limits = self._job_limits(account, key_id, await self.limits(account, key_id))
        if not limits:
            return
        states = await self._run(self._windows.check, "jobs", limits, self.clock())
        full = [s for s in states if s.used >= s.limit]
        if full:
            raise _jobs_refused(full)

    async def take_job(self, account: str, key_id: str | None = None) -> None:
        """Count one job about to be added (atomic across replicas), or raise as
        ``check_job`` does and count nothing."""
        limits = self._job_limits(account, key_id, await self.limits(account, key_id))
        if not limits:
            return
        ok, states = await self._run(self._windows.take, "jobs", limits, 1.0, self.clock())
        if not ok:
            raise _jobs_refused([s for s in states if s.used + 1 > s.limit])

    def _job_limits(
        self, account: str, key_id: str | None, pair: tuple[Limits, Limits]
    ) -> list[tuple[str, float]]:
        own = pair[0].extraction_jobs_per_minute
        if own is None:
            own = self._default_jobs or None
        out = [(account_subject(account), float(own))] if own is not None else []
        if key_id and pair[1].extraction_jobs_per_minute is not None:
            out.append((key_subject(key_id), float(pair[1].extraction_jobs_per_minute)))
        return out


def _jobs_refused(full: list[WindowState]) -> TooManyRequests:
    tight = max(full, key=lambda s: s.reset)
    return TooManyRequests(
        f"this account added {int(tight.used)} learning jobs in the last minute (the limit is "
        f"{int(tight.limit)} a minute)",
        code="learning_rate_limited",
        headers={"Retry-After": str(tight.retry_after)},
    )


def _rate_limited(kind: str, over: list[WindowState], states: list[WindowState]) -> RateLimited:
    tight = max(over, key=lambda s: s.reset)
    who = "API key" if tight.subject.startswith("k:") else "account"
    unit = "requests" if kind == "requests" else "tokens"
    return RateLimited(
        f"Rate limit reached for this {who} on {unit} per min: limit {int(tight.limit)}, "
        f"used {int(tight.used)}. Please try again in {_reset_text(tight.reset)}.",
        headers={"Retry-After": str(tight.retry_after), **ratelimit_headers(kind, states)},
        type=kind,  # OpenAI's: "requests" or "tokens"
    )


def _seconds_to_next_month(now: float) -> int:
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(now, UTC)
    year, month = (when.year + 1, 1) if when.month == 12 else (when.year, when.month + 1)
    return max(1, math.ceil(datetime(year, month, 1, tzinfo=UTC).timestamp() - now))
