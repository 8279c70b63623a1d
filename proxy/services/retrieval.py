"""The one retriever every path uses: profile search, delete by query, chat memory,
the dialectic's lookup and extraction's nearest facts.

Candidates come from the scope's Chroma collection; the facts themselves are read back from
the records by id, so a result is never a stale or deleted value.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from proxy.metrics import Metrics
from proxy.models import Fact, Scope
from proxy.services.indexing import IndexSync
from proxy.store.embedder import Embedder
from proxy.store.facts import FactRecords
from proxy.store.index import FactIndex


@dataclass(slots=True)
class Hit:
    fact: Fact
    score: float


@dataclass(slots=True)
class SearchOptions:
    top_k: int = 10
    threshold: float = 0.0
    kind: str | None = None
    source: str | None = None
    custom_feature: str | dict[str, Any] | None = None
    min_confidence: float | None = None


def matches_feature(fact: Fact, feature: str | dict[str, Any] | None) -> bool:
    """Reflexio's ``custom_feature``: a metadata key the fact must have (``"tier"``), a
    ``"key=value"`` pair, or a mapping of key/value pairs that must all match."""
    if feature is None:
        return True
    if isinstance(feature, dict):
        return all(k in fact.metadata and fact.metadata[k] == v for k, v in feature.items())
    key, sep, value = feature.partition("=")
    if not sep:
        return key in fact.metadata
    return key in fact.metadata and str(fact.metadata[key]) == value


class Retriever:
    def __init__(
        self,
        records: FactRecords,
        index: FactIndex,
        embedder: Embedder,
        sync: IndexSync,
        metrics: Metrics | None = None,
    ) -> None:
        self._records = records
        self._index = index
        self._embedder = embedder
        self._sync = sync
        self._metrics = metrics or Metrics()

    def embed_query(self, query: str) -> Any:
        return self._embedder.embed([query])[0]

    def search(self, scope: Scope, query: str, opts: SearchOptions) -> list[Hit]:
        with self._metrics.retrieval_seconds.time():
            self._sync.flush(scope)  # read-after-write: apply anything still pending first
            return self.search_vector(scope, self.embed_query(query), opts)

    def search_vector(self, scope: Scope, vector: Any, opts: SearchOptions) -> list[Hit]:
        where: dict[str, Any] = {}
        if opts.kind is not None:
            where["kind"] = opts.kind
        if opts.source is not None:
            where["source"] = opts.source
        chroma_where: dict[str, Any] | None
        if len(where) > 1:
            chroma_where = {"$and": [{k: v} for k, v in where.items()]}
        else:
            chroma_where = where or None
        post_filtered = opts.custom_feature is not None or opts.min_confidence is not None
        n = max(opts.top_k * (8 if post_filtered else 2), 32)
        candidates = self._index.query(scope, vector, n, chroma_where)
        candidates = [(i, s) for i, s in candidates if s >= opts.threshold]
        facts = self._records.by_ids(scope, [i for i, _ in candidates], now=time.time())
        hits: list[Hit] = []
        for fact_id, score in candidates:
            fact = facts.get(fact_id)
            if fact is None or not matches_feature(fact, opts.custom_feature):
                continue
            if opts.min_confidence is not None and fact.confidence < opts.min_confidence:
                continue
            hits.append(Hit(fact, score))
            if len(hits) == opts.top_k:
                break
        return hits
