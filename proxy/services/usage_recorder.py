"""The usage recorder: metered calls are kept in memory and written in batches, off the
request path.

``record`` prices the call (the local cost map, a dictionary lookup) and appends it to a
list: no I/O. A background task writes the list every
``usage.flush_seconds`` (sooner once ``usage.flush_batch`` wait) in one transaction that
also adds the cost to each subject's month (budgets), then counts the batch for Prometheus
(so ``/metrics`` lags by at most one interval). A graceful stop writes what is left;
a kill -9 loses at most the last interval. A failed write keeps the batch for the next try
(bounded: past ``_MAX_HELD`` records the oldest are dropped and logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

from proxy.config import UsageSettings
from proxy.llm.costs import CostMap
from proxy.metrics import Metrics
from proxy.store.usage import UsageEvent, UsageStore, month_window

log = logging.getLogger("profilo.usage")

_MAX_HELD = 1_000_000


class UsageRecorder:
    def __init__(
        self,
        store: UsageStore,
        costs: CostMap,
        settings: UsageSettings,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._costs = costs
        self._settings = settings
        self._metrics = metrics or Metrics()
        self._pending: list[UsageEvent] = []
        self._unflushed_cost: dict[tuple[str, int], float] = defaultdict(float)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flushing = asyncio.Lock()
        self._failing = False
        self.written = 0  # events written since start (bench, tests)

    @property
    def costs(self) -> CostMap:
        return self._costs

    def record(self, event: UsageEvent, priced_as: str | None = None) -> None:
        """Price and queue one call (no I/O). ``priced_as``: the model the upstream was asked
        for (a ``model_list`` alias is priced as the model it routes to)."""
        price = self._costs.price(priced_as or event.model)
        if price is not None:
            event.cost = event.prompt_tokens * price[0] + event.completion_tokens * price[1]
            event.memory_cost = event.memory_tokens * price[0]
            month = month_window(event.created_at)
            for subject in event.subjects():
                self._unflushed_cost[(subject, month)] += event.cost
        self._pending.append(event)
        if len(self._pending) >= self._settings.flush_batch:
            self._wake.set()

    def unflushed_cost(self, subject: str, month: int) -> float:
        """Cost recorded by this process for ``subject`` and ``month`` and not written yet
        (budgets count it)."""
        return self._unflushed_cost.get((subject, month), 0.0)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="profilo-usage")

    async def stop(self) -> None:
        """Stop the flusher and write what is left (graceful shutdown)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.flush_seconds)
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:  # kept for the next try; logged once per outage
                if not self._failing:
                    waiting, every = len(self._pending), self._settings.flush_seconds
                    log.error("usage records not written yet (%d waiting), retried every %gs: %s",
                              waiting, every, exc)  # fmt: skip
                self._failing = True
            else:
                if self._failing:
                    log.warning("usage records written again")
                self._failing = False

    async def flush(self) -> int:
        """Write every waiting record now; returns how many."""
        async with self._flushing:
            batch, self._pending = self._pending, []
            if not batch:
                return 0
            try:
                await asyncio.to_thread(self._store.insert, batch)
            except BaseException:
                held = batch + self._pending
                if len(held) > _MAX_HELD:
                    log.error("%d usage records dropped (the records database has been "
                              "unreachable too long)", len(held) - _MAX_HELD)  # fmt: skip
                self._pending = held[-_MAX_HELD:]
                raise
            for event in batch:
                self._metrics.usage(event)  # Prometheus too is counted off the request path
                if event.cost:
                    month = month_window(event.created_at)
                    for subject in event.subjects():
                        key = (subject, month)
                        self._unflushed_cost[key] -= event.cost
                        if self._unflushed_cost[key] <= 1e-12:
                            del self._unflushed_cost[key]
            self.written += len(batch)
            return len(batch)
