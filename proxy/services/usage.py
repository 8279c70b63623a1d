"""Reading usage (``GET /v1/usage``, ``profilo usage``, the /ui panel) and the limits.

A report sums an account's metered calls in [from, to) grouped by day, model, end user, key
or kind. Kinds: ``chat`` (a client's chat: its prompt without the memory block, and its
completion), ``memory`` (the memory block injected into chats), ``extraction`` and
``dialectic`` (the proxy's own calls, attributed to the end user they served). Every group
also gives its tokens by kind, so a day's bar splits into chat / memory / extraction.
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, date, datetime
from typing import Any

from proxy.errors import BadRequest, NotFound
from proxy.models import Limits
from proxy.services.limits import Limiter
from proxy.services.usage_recorder import UsageRecorder
from proxy.store.keys import KeyStore
from proxy.store.usage import GroupBy, UsageStore

KINDS = ("chat", "memory", "extraction", "dialectic")
_GROUP_FIELD = {"day": "day", "model": "model", "end_user": "end_user", "key": "key_id",
                "kind": "kind"}  # fmt: skip


def parse_time(value: str | None, param: str) -> float | None:
    """Seconds since the epoch, or an ISO date / date-time (UTC unless it says otherwise)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise BadRequest(f"{param}: not a finite number", param=param)
        return seconds
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC).timestamp()
        when = datetime.fromisoformat(value)
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    except ValueError:
        raise BadRequest(
            f"{param}: expected seconds since the epoch or an ISO date (2025-01-31)", param=param
        ) from None


def month_start(now: float) -> float:
    when = datetime.fromtimestamp(now, UTC)
    return datetime(when.year, when.month, 1, tzinfo=UTC).timestamp()


def _row_kinds(row: dict[str, Any]) -> dict[str, int]:
    """Tokens by kind of one (bucket, kind) row."""
    prompt, completion = int(row["prompt_tokens"] or 0), int(row["completion_tokens"] or 0)
    memory = int(row["memory_tokens"] or 0)
    if row["kind"] == "chat":
        return {"chat": max(0, prompt - memory) + completion, "memory": memory}
    return {str(row["kind"]): prompt + completion}


def _empty(field: str, value: Any) -> dict[str, Any]:
    return {field: value, "requests": 0, "prompt_tokens": 0, "completion_tokens": 0,
            "memory_tokens": 0, "total_tokens": 0, "cost": None, "unpriced_requests": 0,
            "tokens_by_kind": dict.fromkeys(KINDS, 0)}  # fmt: skip


def _add(into: dict[str, Any], row: dict[str, Any], kinds: dict[str, int], cost: Any) -> None:
    requests = int(row["requests"])
    into["requests"] += requests
    into["prompt_tokens"] += int(row["prompt_tokens"] or 0)
    into["completion_tokens"] += int(row["completion_tokens"] or 0)
    into["memory_tokens"] += int(row["memory_tokens"] or 0)
    into["total_tokens"] = into["prompt_tokens"] + into["completion_tokens"]
    into["unpriced_requests"] += requests - int(row["priced"] or 0)
    if cost is not None:
        into["cost"] = (into["cost"] or 0.0) + float(cost)
    for kind, tokens in kinds.items():
        into["tokens_by_kind"][kind] += tokens


def summarize(rows: list[dict[str, Any]], group_by: str) -> tuple[list[dict], dict]:
    """(one entry per group, the total) from the store's (bucket, kind) rows."""
    field = _GROUP_FIELD[group_by]
    groups: dict[Any, dict[str, Any]] = {}
    total = _empty("total", None)
    total.pop("total")
    for row in rows:
        kinds = _row_kinds(row)
        _add(total, row, kinds, row["cost"])
        if group_by != "kind":
            entry = groups.setdefault(row["bucket"], _empty(field, row["bucket"]))
            _add(entry, row, kinds, row["cost"])
            continue
        for kind, tokens in kinds.items():  # chat rows give a chat and a memory entry
            entry = groups.setdefault(kind, _empty(field, kind))
            memory = kind == "memory"
            cost = row["memory_cost"] if memory else row["cost"]
            if row["kind"] == "chat" and not memory and row["cost"] is not None:
                cost = float(row["cost"]) - float(row["memory_cost"] or 0.0)
            part = dict(row)
            if memory:
                part |= {"prompt_tokens": row["memory_tokens"], "completion_tokens": 0}
            _add(entry, part, {kind: tokens}, cost)
    return list(groups.values()), total


def build_report(
    store: UsageStore, account: str, since: float | None, until: float | None, group_by: GroupBy
) -> dict[str, Any]:
    """The account's report for [since, until) (default: this month so far). Blocking."""
    now = time.time()
    until = until if until is not None else now + 1
    since = since if since is not None else month_start(now)
    if since >= until:
        raise BadRequest("'from' must be before 'to'", param="from")
    data, total = summarize(store.summary(account, since, until, group_by), group_by)
    return {"object": "usage.report", "account": account, "from": since, "to": until,
            "group_by": group_by, "currency": "USD", "data": data, "total": total}  # fmt: skip


def limits_report(store: UsageStore, account: str) -> dict[str, Any]:
    found = store.all_limits(account)
    own = found.pop("", Limits())
    return {"object": "usage.limits", "account": account, "limits": own.as_json(),
            "keys": {k: v.as_json() for k, v in found.items()}}  # fmt: skip


def set_limits(
    store: UsageStore, keys: KeyStore, account: str, key_id: str | None, limits: Limits
) -> None:
    """The operator's: the account's own limits, or one of its keys' (blocking)."""
    if key_id is not None and not any(k.id == key_id and k.account == account for k in keys.list()):
        raise NotFound(f"no API key {key_id!r} for account {account!r}", param="key_id")
    store.set_limits(account, key_id, limits)


class UsageService:
    def __init__(
        self, store: UsageStore, recorder: UsageRecorder, limiter: Limiter, keys: KeyStore
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.limiter = limiter
        self._keys = keys

    async def report(
        self, account: str, since: float | None, until: float | None, group_by: GroupBy
    ) -> dict[str, Any]:
        await self.recorder.flush()  # what this process metered is in the report
        return await asyncio.to_thread(build_report, self.store, account, since, until, group_by)

    async def purge(self, retention_days: float) -> int:
        """Delete the records past ``usage.retention_days``."""
        before = time.time() - retention_days * 86400
        return await asyncio.to_thread(self.store.purge, before)

    async def limits(self, account: str) -> dict[str, Any]:
        return await asyncio.to_thread(limits_report, self.store, account)

    def set_limits(self, account: str, key_id: str | None, limits: Limits) -> None:
        set_limits(self.store, self._keys, account, key_id, limits)
        self.limiter.forget()
