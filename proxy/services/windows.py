"""Per-minute counters the limits are checked against (requests, tokens, extraction jobs).

Two kinds, one interface:

- ``LocalWindows`` (embedded SQLite mode: one process): a sliding minute per subject, in
  memory; nothing is read or written per request.
- ``SharedWindows`` (Postgres: every replica counts in ``usage_counters``): fixed minute
  windows (``floor(now / 60)``), taken atomically by an upsert, so N replicas allow what
  one would. Only subjects with a limit are ever counted (no limit: no database work).

A subject is ``a:<account>`` or ``k:<key id>``; ``now`` comes from the limiter's clock.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from proxy.store.usage import UsageStore

WINDOW = 60.0
_FORGET_AFTER = 10_000  # subjects held before the idle ones are dropped


@dataclass(frozen=True, slots=True)
class WindowState:
    subject: str
    limit: float
    used: float
    reset: float  # seconds until the window frees what is used now

    @property
    def remaining(self) -> float:
        return max(0.0, self.limit - self.used)

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset))


class Windows(Protocol):
    blocking: bool  # whether calls do I/O (then run them off the event loop)

    def take(
        self, metric: str, limits: Sequence[tuple[str, float]], amount: float, now: float
    ) -> tuple[bool, list[WindowState]]:
        """Add ``amount`` to every subject when each stays within its limit (else nothing);
        the states after."""

    def check(
        self, metric: str, limits: Sequence[tuple[str, float]], now: float
    ) -> list[WindowState]: ...

    def add(self, metric: str, subjects: Sequence[str], amount: float, now: float) -> None: ...


class LocalWindows:
    blocking = False

    def __init__(self) -> None:
        self._log: dict[tuple[str, str], deque[tuple[float, float]]] = {}
        self._sums: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def _used(self, key: tuple[str, str], now: float) -> tuple[float, float]:
        """(used, seconds until the oldest entry leaves) for one subject (under the lock)."""
        log = self._log.get(key)
        if not log:
            return 0.0, 0.0
        while log and log[0][0] <= now - WINDOW:
            self._sums[key] -= log.popleft()[1]
        if not log:
            return 0.0, 0.0
        return self._sums[key], log[0][0] + WINDOW - now

    def _states(
        self, metric: str, limits: Sequence[tuple[str, float]], now: float
    ) -> list[WindowState]:
        out = []
        for subject, limit in limits:
            used, reset = self._used((subject, metric), now)
            out.append(WindowState(subject, limit, used, reset))
        return out

    def take(
        self, metric: str, limits: Sequence[tuple[str, float]], amount: float, now: float
    ) -> tuple[bool, list[WindowState]]:
        with self._lock:
            states = self._states(metric, limits, now)
            if any(s.used + amount > s.limit for s in states):
                return False, states
            self._add(metric, [s for s, _ in limits], amount, now)
            return True, self._states(metric, limits, now)

    def check(
        self, metric: str, limits: Sequence[tuple[str, float]], now: float
    ) -> list[WindowState]:
        with self._lock:
            return self._states(metric, limits, now)

    def add(self, metric: str, subjects: Sequence[str], amount: float, now: float) -> None:
        with self._lock:
            self._add(metric, subjects, amount, now)

    def _add(self, metric: str, subjects: Sequence[str], amount: float, now: float) -> None:
        for subject in subjects:
            key = (subject, metric)
            self._log.setdefault(key, deque()).append((now, amount))
            self._sums[key] = self._sums.get(key, 0.0) + amount
        if len(self._log) > _FORGET_AFTER:
            for idle in [k for k, d in self._log.items() if not d or d[-1][0] <= now - WINDOW]:
                del self._log[idle]
                self._sums.pop(idle, None)


class SharedWindows:
    blocking = True

    def __init__(self, store: UsageStore) -> None:
        self._store = store
        self._pruned = 0

    def _states(
        self, win: int, now: float, limits: Sequence[tuple[str, float]], used: dict[str, float]
    ) -> list[WindowState]:
        reset = (win + 1) * WINDOW - now
        return [WindowState(s, limit, used.get(s, 0.0), reset) for s, limit in limits]

    def take(
        self, metric: str, limits: Sequence[tuple[str, float]], amount: float, now: float
    ) -> tuple[bool, list[WindowState]]:
        win = self._window(now)
        totals = self._store.take(metric, win, limits, amount)
        if totals is None:
            used = self._store.counters(metric, win, [s for s, _ in limits])
            return False, self._states(win, now, limits, used)
        return True, self._states(win, now, limits, totals)

    def check(
        self, metric: str, limits: Sequence[tuple[str, float]], now: float
    ) -> list[WindowState]:
        win = self._window(now)
        used = self._store.counters(metric, win, [s for s, _ in limits])
        return self._states(win, now, limits, used)

    def add(self, metric: str, subjects: Sequence[str], amount: float, now: float) -> None:
        self._store.add(metric, self._window(now), subjects, amount)

    def _window(self, now: float) -> int:
        win = int(now // WINDOW)
        if win - self._pruned > 5:  # past windows are never read again
            self._pruned = win
            for metric in ("requests", "tokens", "jobs"):
                self._store.prune(metric, win - 1)
        return win
