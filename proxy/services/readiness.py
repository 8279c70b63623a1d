"""``/readyz``: can this replica take new work? Each check is ``ok`` or the reason it is not.

- ``records``: the records database answers ``SELECT 1``;
- ``index``: the vector index answers (Chroma's heartbeat, embedded or server; with pgvector the
  vectors live in the records database, so its check stands for both);
- ``embedder``: the embedding model was loaded and ran once at start-up (a flag: running the
  model per probe would cost milliseconds of CPU);
- ``shutdown``: not draining (``proxy/drain.py``).

A check runs in a thread and is given ``CHECK_TIMEOUT`` seconds. At most one of each runs at a
time: probes arriving while the previous one still waits (a database that does not answer)
share it instead of filling the thread pool the requests use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from proxy.drain import Drain
from proxy.services.container import Services
from proxy.store.pgvector_index import PgVectorIndex

CHECK_TIMEOUT = 2.0


def _select_one(services: Services) -> Callable[[], None]:
    def check() -> None:
        with services.db.read() as conn:
            conn.execute("SELECT 1").fetchone()

    return check


class _Probe:
    def __init__(self, check: Callable[[], None], timeout: float) -> None:
        self._check = check
        self._timeout = timeout
        self._running: asyncio.Future[None] | None = None

    async def __call__(self) -> str:
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(asyncio.to_thread(self._check))
            # a probe that timed out is not awaited again: its outcome is read here
            self._running.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            await asyncio.wait_for(asyncio.shield(self._running), self._timeout)
        except TimeoutError:
            return f"error: no answer within {self._timeout:g} s"
        except Exception as exc:  # readiness reports, it does not raise
            return f"error: {type(exc).__name__}: {exc}"[:500]
        return "ok"


class Readiness:
    def __init__(self, services: Services, drain: Drain, timeout: float = CHECK_TIMEOUT) -> None:
        self._drain = drain
        self._records = _Probe(_select_one(services), timeout)
        in_records = isinstance(services.index, PgVectorIndex)
        self._index = None if in_records else _Probe(services.index.heartbeat, timeout)
        self.embedder_loaded = False  # set once the start-up's warm-up embedding ran

    async def report(self) -> tuple[bool, dict[str, Any]]:
        """(ready, the body of the answer)."""
        records, index = await asyncio.gather(
            self._records(), self._index() if self._index is not None else _nothing()
        )
        checks = {
            "records": records,
            "index": records if index is None else index,
            "embedder": "ok" if self.embedder_loaded else "error: not loaded yet",
            "shutdown": self._drain.describe(),
        }
        ok = all(v == "ok" for v in checks.values())
        status = "ok" if ok else "draining" if self._drain.draining else "unavailable"
        return ok, {"status": status, "checks": checks}


async def _nothing() -> None:
    return None
