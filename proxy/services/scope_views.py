"""Scope views: each end user's facts, vectors and BM25 index held in memory, kept at the
scope's write version (``proxy/store/snapshot.py`` holds one, this module keeps them).

A lookup reads the scope's write log head (``scope_writes.py``: one indexed query), applies the
outbox (the index then holds every vector up to that head), and compares the head with its
view's version:

- equal: the view answers (no other query);
- ahead by a few writes (``DELTA_MAX``): only those facts are read back, with their vectors from
  the index, and patched in;
- no view, the log pruned past the view's version, an erased scope, or more writes than a delta:
  the scope is read whole. Scopes up to ``views_inline_facts`` facts are read on the request
  path (a few ms); larger ones on a background thread, the request meanwhile answered from the
  indexes as without views. Scopes over ``views_max_facts`` are never held.

Writes on another replica move the head like local ones, so every replica sees them on its next
lookup. Views are keyed by (account, scope) and never shared: a tenant's lookup speed depends
only on its own facts. They are bounded in bytes (``views_mb``, least recently used dropped).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from proxy.config import RetrievalSettings
from proxy.metrics import Metrics
from proxy.models import Scope
from proxy.services.indexing import IndexSync
from proxy.store.facts import FactRecords
from proxy.store.index import VectorIndex
from proxy.store.scope_writes import Head, ScopeWrites
from proxy.store.snapshot import ScopeSnapshot

log = logging.getLogger("profilo.views")

#: Most writes patched into a view on the request path; more re-read the scope.
DELTA_MAX = 256


class ScopeViews:
    def __init__(
        self,
        records: FactRecords,
        index: VectorIndex,
        writes: ScopeWrites,
        sync: IndexSync,
        dim: int,
        settings: RetrievalSettings,
        metrics: Metrics,
        *,
        fts5_lengths: bool = False,
    ) -> None:
        self._records = records
        self._index = index
        self._writes = writes
        self._sync = sync
        self._dim = dim
        self._max_bytes = settings.views_mb * 1024 * 1024
        self._max_facts = settings.views_max_facts
        self._inline_facts = settings.views_inline_facts
        self._metrics = metrics
        self._fts5_lengths = fts5_lengths  # SQLite's lexical index: BM25 lengths as FTS5's
        self._views: OrderedDict[str, ScopeSnapshot] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._bytes = 0
        self._guard = threading.Lock()
        self._building: set[str] = set()
        self._builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scope-view")

    @property
    def enabled(self) -> bool:
        return self._max_bytes > 0

    def close(self) -> None:
        self._builder.shutdown(wait=False, cancel_futures=True)

    def open(self, scope: Scope) -> ScopeSnapshot | None:
        """The scope's view at its current write version, or None (answer from the indexes).
        Applies the scope's pending index writes either way (read-after-write). Only called
        when ``enabled`` (the retriever reads the indexes otherwise)."""
        head = self._writes.head(scope)
        if head.pending:  # read in the same query; applied, every vector up to head is indexed
            self._sync.flush(scope)
        with self._guard:
            view = self._views.get(scope.key)
            if view is not None:
                self._views.move_to_end(scope.key)
        if view is not None and view.version == head.newest:
            self._metrics.view_lookups.labels("hit").inc()
            return view
        if view is not None and 0 < view.version <= head.newest and head.oldest <= view.version:
            patched = self._patch(scope, view)
            if patched:
                self._metrics.view_lookups.labels("patched").inc()
                return view
        return self._load(scope, head)

    def forget(self, scope: Scope) -> None:
        with self._guard:
            self._drop(scope.key)

    # -- internals ---------------------------------------------------------------------------
    def _patch(self, scope: Scope, view: ScopeSnapshot) -> bool:
        """Apply the writes after the view's version; False when there are too many."""
        writes = self._writes.since(scope, view.version, DELTA_MAX + 1)
        if len(writes) > DELTA_MAX:
            return False
        ids = list(dict.fromkeys(fact_id for _, fact_id in writes))
        facts = self._records.by_ids(scope, ids, expired=True)
        vectors = self._index.vectors(scope, list(facts))
        version = writes[-1][0] if writes else view.version
        for seq, fact_id in writes:  # written but not in the index yet: stop before it
            if fact_id in facts and fact_id not in vectors:
                version = seq - 1
                break
        with view.lock:
            for fact_id in ids:
                fact = facts.get(fact_id)
                if fact is None:
                    view.drop(fact_id)
                elif fact_id in vectors:
                    view.put(fact, vectors[fact_id])
            view.version = max(view.version, version)
        self._account(scope.key, view)
        return True

    def _load(self, scope: Scope, head: Head) -> ScopeSnapshot | None:
        """A new view of the scope: read now when small, else on the builder thread."""
        size = self._records.count(scope, expired=True)
        if size > self._max_facts:
            self._metrics.view_lookups.labels("too_large").inc()
            return None
        if size <= self._inline_facts:
            self._metrics.view_lookups.labels("loaded").inc()
            return self._build(scope, head)
        self._metrics.view_lookups.labels("building").inc()
        with self._guard:
            if scope.key in self._building:
                return None
            self._building.add(scope.key)
        self._builder.submit(self._build_later, scope)
        return None

    def _build_later(self, scope: Scope) -> None:
        try:
            head = self._writes.head(scope)
            self._sync.flush(scope)
            self._build(scope, head)
        except Exception:  # the request path answers from the indexes meanwhile
            log.exception("scope view not built")
        finally:
            with self._guard:
                self._building.discard(scope.key)

    def _build(self, scope: Scope, head: Head) -> ScopeSnapshot | None:
        started = time.perf_counter()
        facts = self._records.select(scope, expired=True)
        vectors = self._index.vectors(scope, [f.id for f in facts])
        if len(vectors) < len(facts):  # the index is behind (failing): answer from it
            return None
        row_text = scope.key if self._fts5_lengths else None
        view = ScopeSnapshot(self._dim, version=head.newest, row_text=row_text)
        for fact in facts:
            view.put(fact, vectors[fact.id])
        self._metrics.view_build_seconds.observe(time.perf_counter() - started)
        self._account(scope.key, view, install=True)
        return view

    def _account(self, key: str, view: ScopeSnapshot, *, install: bool = False) -> None:
        size = view.nbytes
        with self._guard:
            if install:
                self._drop(key)
                self._views[key] = view
            elif self._views.get(key) is not view:
                return
            self._bytes += size - self._sizes.get(key, 0)
            self._sizes[key] = size
            while self._bytes > self._max_bytes and len(self._views) > 1:
                oldest = next(iter(self._views))
                self._drop(oldest)
            self._metrics.view_bytes.set(self._bytes)

    def _drop(self, key: str) -> None:
        if self._views.pop(key, None) is not None:
            self._bytes -= self._sizes.pop(key, 0)
