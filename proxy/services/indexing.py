"""Keeps the Chroma index in step with the records through the outbox.

A write commits fact rows and outbox rows together; ``flush(scope)`` then applies the outbox:
for each fact id it upserts the fact's current text (or deletes it from the index when the
fact is gone). Applying is idempotent, so a crash between commit and flush loses nothing: the
rows are replayed at start-up and before the next search of that scope.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict

from proxy.errors import ProxyError, Unavailable
from proxy.models import Fact, Scope
from proxy.store.changes import Outbox
from proxy.store.db import Conn
from proxy.store.embed_cache import for_account
from proxy.store.embedder import Embedder
from proxy.store.facts import FactRecords
from proxy.store.index import VectorIndex

log = logging.getLogger("profilo.index")


def index_metadata(fact: Fact) -> dict[str, str | int | float | bool]:
    meta: dict[str, str | int | float | bool] = {"kind": fact.kind, "category": fact.category}
    if fact.source is not None:
        meta["source"] = fact.source
    return meta


class IndexSync:
    def __init__(
        self, records: FactRecords, outbox: Outbox, index: VectorIndex, embedder: Embedder
    ) -> None:
        self._records = records
        self._outbox = outbox
        self._index = index
        self._embedder = embedder
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._locks_guard = threading.Lock()

    def _lock(self, scope: Scope) -> threading.Lock:
        with self._locks_guard:
            return self._locks[scope.key]

    def flush(self, scope: Scope) -> int:
        """Apply the scope's pending outbox rows; returns how many were applied.

        One flush of a scope at a time, in this process and across replicas sharing the
        database (``Outbox.lock``): a flush that read a fact before another committed a newer
        version can never write the older vector last, and a flush that failed (or died)
        half-way, between the delete and the add of a replaced vector, leaves its rows
        pending instead of having them consumed by another one meanwhile. Raises
        ``Unavailable`` when the index cannot be written (the rows stay pending).
        """
        with self._lock(scope):
            if not self._outbox.has_pending(scope):  # the common case: no lock to take
                return 0
            with self._outbox.lock(scope) as conn:
                return self._flush_locked(scope, conn)

    def _flush_locked(self, scope: Scope, conn: Conn | None) -> int:
        applied = 0
        while True:
            items = self._outbox.pending(scope, conn=conn)
            if not items:
                return applied
            seqs = [item.seq for item in items]
            ids = list(dict.fromkeys(item.fact_id for item in items))
            try:
                self._write(scope, ids, self._records.by_ids(scope, ids, conn=conn))
            except Exception as exc:
                error = (
                    exc
                    if isinstance(exc, ProxyError)
                    else Unavailable(f"retrieval index unavailable: {exc}")
                )
                self._outbox.failed(scope, seqs, error.message, conn=conn)
                raise error from exc
            self._outbox.done(scope, seqs, conn=conn)
            applied += len(seqs)

    def _write(self, scope: Scope, ids: list[str], live: dict[str, Fact]) -> None:
        """The facts' current state into the index: a vector, or none when gone."""
        gone = [i for i in ids if i not in live]
        facts = [live[i] for i in ids if i in live]
        if facts:
            embedder = for_account(self._embedder, scope.account)
            vectors = embedder.embed([f.text for f in facts])
            self._index.upsert(
                scope, [f.id for f in facts], vectors, [index_metadata(f) for f in facts]
            )
        if gone:
            self._index.delete(scope, gone)

    def try_flush(self, scope: Scope) -> None:
        """Flush after a write: an index failure is logged, the write stands (replayed later)."""
        try:
            self.flush(scope)
        except ProxyError as exc:
            log.warning("index update deferred for a scope: %s", exc.message)

    def replay(self) -> int:
        """Apply every pending outbox row of every scope (start-up, periodic retry)."""
        applied = 0
        for scope in self._outbox.pending_scopes():
            try:
                applied += self.flush(scope)
            except ProxyError as exc:
                log.warning("index replay deferred: %s", exc.message)
        return applied

    def drop(self, scope: Scope) -> None:
        """Remove the scope's index (its records were erased). An index that is down keeps
        vectors of facts that no longer exist: never read back (retrieval reads facts from
        the records by id), dropped by ``profilo index rebuild``."""
        try:
            with self._lock(scope), self._outbox.lock(scope):
                self._index.drop_scope(scope)
        except ProxyError as exc:
            log.warning("index of an erased scope not dropped: %s", exc.message)

    def rebuild(self, scope: Scope) -> int:
        """Re-derive a scope's index from the records (drop, then upsert every live fact)."""
        with self._lock(scope), self._outbox.lock(scope):
            self._index.drop_scope(scope)
            facts = self._records.select(scope)
            for start in range(0, len(facts), 256):
                batch = facts[start : start + 256]
                vectors = for_account(self._embedder, scope.account).embed([f.text for f in batch])
                self._index.upsert(
                    scope, [f.id for f in batch], vectors, [index_metadata(f) for f in batch]
                )
            return len(facts)
