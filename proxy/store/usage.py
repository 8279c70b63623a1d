"""Metered usage, the limits the operator set, and the counters limits are checked against.

- ``usage_events``: one row per metered upstream call (written in batches by the recorder).
- ``usage_limits``: per account (``key_id`` '') and per key; a missing field is no limit.
- ``usage_counters``: an amount per subject (``a:<account>``, ``k:<key id>``), metric and
  window. ``cost`` per month (budgets) is added by every batch of events, in its transaction;
  ``requests`` / ``tokens`` / ``jobs`` per minute are kept here only with Postgres (replicas
  share them; the embedded mode counts in process, ``proxy/services/windows.py``).

Every read of events is scoped by account.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from proxy.models import Limits
from proxy.store.db import Database

GroupBy = Literal["day", "model", "end_user", "key", "kind"]

#: The column each grouping reads (``kind`` splits chat rows into chat and memory later).
_BUCKET: dict[str, str] = {
    "day": "day",
    "model": "model",
    "end_user": "collection_id",
    "key": "key_id",
    "kind": "kind",
}
_LIMIT_FIELDS = (
    "requests_per_minute",
    "tokens_per_minute",
    "monthly_budget",
    "extraction_jobs_per_minute",
)
_UPSERT_ADD = (
    "INSERT INTO usage_counters (subject, metric, win, amount) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (subject, metric, win) DO UPDATE SET amount = usage_counters.amount + "
    "excluded.amount"
)


@dataclass(slots=True)
class UsageEvent:
    """One metered upstream call. ``cost`` None: the model is not in the cost map."""

    account: str
    key_id: str | None
    collection_id: str | None
    kind: str  # chat | extraction | dialectic
    model: str
    route: str
    created_at: float
    prompt_tokens: int
    completion_tokens: int
    memory_tokens: int = 0
    cost: float | None = None
    memory_cost: float | None = None

    def subjects(self) -> list[str]:
        return [account_subject(self.account)] + ([key_subject(self.key_id)] if self.key_id else [])


def account_subject(account: str) -> str:
    return "a:" + account


def key_subject(key_id: str) -> str:
    return "k:" + key_id


def month_window(ts: float) -> int:
    when = datetime.fromtimestamp(ts, UTC)
    return when.year * 12 + when.month - 1


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


class UsageStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- events ------------------------------------------------------------------------------
    def insert(self, events: Sequence[UsageEvent]) -> None:
        """The events and their cost (per subject and month) in one transaction."""
        spend: dict[tuple[str, int], float] = defaultdict(float)
        for e in events:
            if e.cost:
                for subject in e.subjects():
                    spend[(subject, month_window(e.created_at))] += e.cost
        with self._db.write() as conn:
            conn.executemany(
                "INSERT INTO usage_events (account, key_id, collection_id, kind, model, route, "
                "created_at, day, prompt_tokens, completion_tokens, memory_tokens, cost, "
                "memory_cost) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (e.account, e.key_id, e.collection_id, e.kind, e.model, e.route,
                     e.created_at, day_of(e.created_at), e.prompt_tokens, e.completion_tokens,
                     e.memory_tokens, e.cost, e.memory_cost)
                    for e in events
                ],
            )  # fmt: skip
            for (subject, win), amount in sorted(spend.items()):  # one lock order: no deadlock
                conn.execute(_UPSERT_ADD, (subject, "cost", win, amount))

    def purge(self, before: float, batch: int = 10_000) -> int:
        """Delete the events older than ``before`` (in batches: no long lock); how many."""
        removed = 0
        while True:
            with self._db.write() as conn:
                cur = conn.execute(
                    "DELETE FROM usage_events WHERE seq IN (SELECT seq FROM usage_events "
                    "WHERE created_at < ? ORDER BY created_at LIMIT ?)",
                    (before, batch),
                )
                count = max(0, cur.rowcount)
            removed += count
            if count < batch:
                return removed

    def summary(
        self, account: str, since: float, until: float, group_by: GroupBy
    ) -> list[dict[str, Any]]:
        """Sums per (bucket, kind) of the account's events in [since, until)."""
        column = _BUCKET[group_by]
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT {column} AS bucket, kind, COUNT(*) AS requests, "
                "SUM(prompt_tokens) AS prompt_tokens, SUM(completion_tokens) AS "
                "completion_tokens, SUM(memory_tokens) AS memory_tokens, SUM(cost) AS cost, "
                "SUM(memory_cost) AS memory_cost, COUNT(cost) AS priced FROM usage_events "
                "WHERE account = ? AND created_at >= ? AND created_at < ? "
                f"GROUP BY {column}, kind ORDER BY {column}, kind",
                (account, since, until),
            ).fetchall()
        return [dict(row) for row in rows]

    # -- limits ------------------------------------------------------------------------------
    def limits(self, account: str, key_id: str | None) -> tuple[Limits, Limits]:
        """The account's own limits and the key's (no row: no limits)."""
        keys = ("", key_id) if key_id else ("",)
        found = {k: Limits() for k in ("", key_id or "")}
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT key_id, {', '.join(_LIMIT_FIELDS)} FROM usage_limits "
                f"WHERE account = ? AND key_id IN ({', '.join('?' * len(keys))})",
                (account, *keys),
            ).fetchall()
        for row in rows:
            found[row["key_id"]] = Limits(**{f: row[f] for f in _LIMIT_FIELDS})
        return found[""], found[key_id or ""]

    def all_limits(self, account: str) -> dict[str, Limits]:
        """Every limit row of the account: '' is the account's own, else a key id."""
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT key_id, {', '.join(_LIMIT_FIELDS)} FROM usage_limits "
                "WHERE account = ? ORDER BY key_id",
                (account,),
            ).fetchall()
        return {row["key_id"]: Limits(**{f: row[f] for f in _LIMIT_FIELDS}) for row in rows}

    def set_limits(self, account: str, key_id: str | None, limits: Limits) -> None:
        values = [getattr(limits, f) for f in _LIMIT_FIELDS]
        with self._db.write() as conn:
            conn.execute(
                "DELETE FROM usage_limits WHERE account = ? AND key_id = ?",
                (account, key_id or ""),
            )
            if any(v is not None for v in values):
                conn.execute(
                    f"INSERT INTO usage_limits (account, key_id, {', '.join(_LIMIT_FIELDS)}, "
                    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (account, key_id or "", *values, time.time()),
                )

    # -- counters ----------------------------------------------------------------------------
    def counters(self, metric: str, win: int, subjects: Iterable[str]) -> dict[str, float]:
        subjects = list(subjects)
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT subject, amount FROM usage_counters WHERE metric = ? AND win = ? "
                f"AND subject IN ({', '.join('?' * len(subjects))})",
                (metric, win, *subjects),
            ).fetchall()
        return {row["subject"]: float(row["amount"]) for row in rows}

    def take(
        self, metric: str, win: int, limits: Sequence[tuple[str, float]], amount: float
    ) -> dict[str, float] | None:
        """Add ``amount`` to each subject's counter when every one stays within its limit
        (atomic across replicas: the rows are locked by the upsert); returns the new amounts,
        or None (nothing added) when one would pass its limit."""
        totals: dict[str, float] = {}
        try:
            with self._db.write() as conn:
                for subject, limit in sorted(limits):
                    row = conn.execute(_UPSERT_ADD + " RETURNING amount",
                                       (subject, metric, win, amount)).fetchone()  # fmt: skip
                    totals[subject] = float(row[0])
                    if totals[subject] > limit:
                        raise _Over()
        except _Over:
            return None
        return totals

    def add(self, metric: str, win: int, subjects: Iterable[str], amount: float) -> None:
        with self._db.write() as conn:
            for subject in sorted(subjects):
                conn.execute(_UPSERT_ADD, (subject, metric, win, amount))

    def prune(self, metric: str, before: int) -> None:
        with self._db.write() as conn:
            conn.execute(
                "DELETE FROM usage_counters WHERE metric = ? AND win < ?", (metric, before)
            )


class _Over(Exception):
    """Rolls a ``take`` back (a subject would pass its limit)."""
