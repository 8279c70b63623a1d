"""The one retriever every path uses: profile search, delete by query, chat memory,
the dialectic's lookup and extraction's nearest facts.

Hybrid: candidates come from the scope's Chroma collection (cosine similarity of the query's
embedding) and from the scope's lexical index (FTS5 BM25 over the query's informative words,
``proxy/services/query_terms.py``). Over the union of both lists each fact gets

    score = cosine + lexical_weight * lexical * (1 - cosine),  lexical = bm25 / (bm25 + k)

(a lexical-only candidate's cosine is computed from its stored vector; a semantic-only one has
lexical 0). A keyword match closes part of the gap to 1 and never lowers a score, so scores
stay in [-1, 1], the API's ``threshold`` applies to this fused score, and a fact that shares no
word with the query scores exactly its cosine (thresholds keep their meaning).
Words found in a large share of the scope's facts (typically the user's own name) carry little
information: they are left out of the lexical query, and (``common_words``) the query is
embedded a second time without them and the two vectors blended (``average``,
``common_blend`` the weight of the query as is), or embedded
without them only (``drop``), or as is (``keep``); a candidate holding them gains
``common_boost`` of its gap to 1 (``proxy/services/fusion.py``: in a conversation the name says
whose facts answer). An optional reranker (``proxy/services/rerank.py``) may then reorder the
first candidates. With ``lexical_weight`` 0 (or no lexical index) this is cosine alone, as before.

The facts themselves are read back from the records by id, so a result is never a stale or
deleted value.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from proxy.config import RetrievalSettings
from proxy.metrics import Metrics
from proxy.models import Scope
from proxy.services.fusion import blend, lift_common
from proxy.services.hits import Hit, SearchOptions, post_filtered, select
from proxy.services.indexing import IndexSync
from proxy.services.query_terms import query_terms, without_words
from proxy.services.rerank import Reranker
from proxy.services.scope_views import ScopeViews
from proxy.store.e5_embedder import query_prefix
from proxy.store.embed_cache import for_account
from proxy.store.embedder import Embedder
from proxy.store.facts import FactRecords
from proxy.store.index import VectorIndex
from proxy.store.lexical import LexicalIndex
from proxy.store.snapshot import ScopeSnapshot


class Retriever:
    def __init__(
        self,
        records: FactRecords,
        index: VectorIndex,
        embedder: Embedder,
        sync: IndexSync,
        lexical: LexicalIndex | None = None,
        settings: RetrievalSettings | None = None,
        metrics: Metrics | None = None,
        reranker: Reranker | None = None,
        views: ScopeViews | None = None,
    ) -> None:
        self._records = records
        self._index = index
        self._embedder = embedder
        self._sync = sync
        self._metrics = metrics or Metrics()
        self._lexical = lexical
        self._views = views if views is not None and views.enabled else None
        self._settings = settings or RetrievalSettings()
        self._reranker = reranker
        # The query's embedding and the index path's keyword query run here, beside the
        # caller's other steps (onnxruntime and SQLite release the GIL); as many threads as
        # asyncio's default executor, whose threads build memory blocks: one embedding each.
        workers = min(32, (os.cpu_count() or 1) + 4)
        self._pool_threads = ThreadPoolExecutor(workers, thread_name_prefix="retrieval")

    def close(self) -> None:
        self._pool_threads.shutdown(wait=True)
        if self._views is not None:
            self._views.close()

    @property
    def hybrid(self) -> bool:
        return self._lexical is not None and self._settings.lexical_weight > 0

    def embed_query(self, scope: Scope, query: str) -> Any:
        embedder = for_account(self._embedder, scope.account)
        return embedder.embed([query_prefix(embedder) + query])[0]

    def start(self, scope: Scope, query: str) -> Future[Any] | None:
        """Start embedding ``query`` as is on a helper thread, for a ``search`` of it that
        follows (its caller reads the scope's view and profile meanwhile). None when the
        search may not use that vector (``common_words: drop``)."""
        if self._settings.common_words == "drop" or not query.strip():
            return None
        return self._pool_threads.submit(self.embed_query, scope, query)

    def open(self, scope: Scope) -> ScopeSnapshot | None:
        """The scope's in-memory view at its write version (None: read the indexes), after
        applying its pending index writes (read-after-write)."""
        if self._views is None:
            self._sync.flush(scope)
            return None
        return self._views.open(scope)

    def forget(self, scope: Scope) -> None:
        """Drop the scope's view (its records were erased)."""
        if self._views is not None:
            self._views.forget(scope)

    def search(
        self,
        scope: Scope,
        query: str,
        opts: SearchOptions,
        view: ScopeSnapshot | None = None,
        started: Future[Any] | None = None,
    ) -> list[Hit]:
        """``view``: the scope's view from ``open`` when the caller already has it;
        ``started``: ``start(scope, query)``'s embedding, when the caller started it."""
        with self._metrics.retrieval_seconds.time():
            plain = started if started is not None else self.start(scope, query)
            if view is None:
                view = self.open(scope)
            if view is not None:
                return self._search_view(scope, view, query, opts, plain)
            return self._search(scope, query, opts, plain)

    def _search_view(
        self,
        scope: Scope,
        view: ScopeSnapshot,
        query: str,
        opts: SearchOptions,
        plain: Future[Any] | None,
    ) -> list[Hit]:
        """The same search on the scope's view: no index or records round trip. Its keyword
        matches are read while a helper thread embeds the query (``plain``); the vector ranks
        under the lock taken again (a writer may have patched the view meanwhile: a fact it
        deleted is dropped by the final read, as on the index path)."""
        rules = self._settings
        terms = query_terms(query) if self.hybrid else []
        with view.lock:
            common = view.common(terms, rules.common_term_share, rules.common_term_min_facts)
            keywords = [t for t in terms if t not in common]
            n = self._pool(opts)
            lexical = view.lexical(keywords, n) if self.hybrid else []
        vector = self._query_vector(scope, query, common, plain)
        now = time.time()
        with view.lock:
            ranked = view.nearest(vector, n, kind=opts.kind, source=opts.source)
            if self.hybrid:
                ranked = self._fuse(vector, ranked, lexical, opts, view.vectors)

        def texts(ids: Sequence[str]) -> dict[str, str]:
            with view.lock:
                return {i: f.text for i, f in view.facts(ids, now).items()}

        if self.hybrid:  # outside the lock: the reranking stage may call out
            ranked = self._finish(query, ranked, common, opts, texts)
        ranked = [(i, s) for i, s in ranked if s >= opts.threshold]
        with view.lock:
            facts = view.facts([i for i, _ in ranked], now)
        return select(ranked, facts, opts)

    def _search(
        self, scope: Scope, query: str, opts: SearchOptions, plain: Future[Any] | None = None
    ) -> list[Hit]:
        if not self.hybrid:
            return self.search_vector(scope, self._query_vector(scope, query, set(), plain), opts)
        assert self._lexical is not None
        terms = query_terms(query)
        common = self.common_terms(scope, terms)
        n = self._pool(opts)
        # The keyword query runs on a helper thread while this one embeds the query and asks
        # Chroma (both SQLite and onnxruntime release the GIL): its cost hides behind theirs.
        keywords = [t for t in terms if t not in common]
        pending = self._pool_threads.submit(self._lexical.search, scope, keywords, n)
        vector = self._query_vector(scope, query, common, plain)
        semantic = self._index.query(scope, vector, n, self._where(opts))
        lexical = pending.result()

        def stored(ids: list[str]) -> dict[str, Any]:
            return self._index.vectors(scope, ids)

        fused = self._fuse(vector, semantic, lexical, opts, stored)
        fused = self._finish(query, fused, common, opts, self._texts(scope))
        return self._hits(scope, fused, opts)

    def _finish(
        self,
        query: str,
        fused: list[tuple[str, float]],
        common: set[str],
        opts: SearchOptions,
        texts: Callable[[Sequence[str]], dict[str, str]],
    ) -> list[tuple[str, float]]:
        """The common-word lift, then the optional reranking stage (both paths)."""
        need = opts.top_k * (8 if post_filtered(opts) else 1)
        fused = lift_common(fused, texts, common, self._settings.common_boost, need)
        if self._reranker is not None:
            head = [i for i, s in fused[: self._settings.reranker.top_n] if s >= opts.threshold]
            fused = self._reranker.rerank(query, fused, texts(head))
        return fused

    def _texts(self, scope: Scope) -> Callable[[Sequence[str]], dict[str, str]]:
        def read(ids: Sequence[str]) -> dict[str, str]:
            facts = self._records.by_ids(scope, list(ids), now=time.time())
            return {i: f.text for i, f in facts.items()}

        return read

    def common_terms(self, scope: Scope, terms: list[str]) -> set[str]:
        """The terms found in at least ``common_term_share`` of the scope's facts."""
        rules = self._settings
        if not terms or self._lexical is None:
            return set()
        return self._lexical.common(
            scope, terms, rules.common_term_share, rules.common_term_min_facts
        )

    def _query_vector(
        self, scope: Scope, query: str, common: set[str], plain: Future[Any] | None
    ) -> Any:
        """The query's vector (``common_words``); ``plain``: the query as is, being embedded
        on a helper thread (None: embed it here when needed)."""
        mode = self._settings.common_words
        rest = without_words(query, common) if common and mode != "keep" else ""
        if not rest.strip():
            return plain.result() if plain is not None else self.embed_query(scope, query)
        if mode == "drop":
            return self.embed_query(scope, rest)
        other = self.embed_query(scope, rest)  # while the helper embeds the query as is
        first = plain.result() if plain is not None else self.embed_query(scope, query)
        return blend((first, other), self._settings.common_blend)

    def _fuse(
        self,
        vector: Any,
        semantic: list[tuple[str, float]],
        lexical: list[tuple[str, float]],
        opts: SearchOptions,
        stored: Callable[[list[str]], dict[str, Any]],
    ) -> list[tuple[str, float]]:
        wl = self._settings.lexical_weight
        lex = self._lexical_scores(lexical)
        cosine = dict(semantic)

        def fuse(c: float, lexical_score: float) -> float:
            # A keyword match closes part of the gap to 1: never below the cosine, so a
            # threshold keeps its meaning for facts that share no word with the query.
            return c + wl * lexical_score * (1.0 - c) if c < 1.0 else c

        fused = {i: fuse(c, lex.get(i, 0.0)) for i, c in semantic}
        others = [i for i in lex if i not in cosine]
        if others and len(semantic) >= self._pool(opts):
            # A fact missing from a full semantic list has a cosine under its last one: skip
            # those that could not reach the results even with that cosine.
            floor = semantic[-1][1]
            need = opts.top_k * (8 if post_filtered(opts) else 1)
            ranked = sorted(fused.values(), reverse=True)
            bar = max(opts.threshold, ranked[need - 1] if len(ranked) >= need else -1.0)
            others = [i for i in others if fuse(floor, lex[i]) >= bar]
        if others:
            query = np.asarray(vector, dtype=np.float32)
            for fact_id, vec in stored(others).items():
                fused[fact_id] = fuse(float(np.dot(vec, query)), lex[fact_id])
        return sorted(fused.items(), key=lambda item: item[1], reverse=True)

    def _lexical_scores(self, lexical: list[tuple[str, float]]) -> dict[str, float]:
        """BM25 scores mapped to [0, 1]: saturated (s / (s + k)), or relative to the best."""
        k = self._settings.lexical_saturation
        if k > 0:
            return {i: s / (s + k) for i, s in lexical}
        best = max((s for _, s in lexical), default=0.0)
        return {i: s / best for i, s in lexical} if best > 0 else {}

    def _pool(self, opts: SearchOptions) -> int:
        return max(opts.top_k * (8 if post_filtered(opts) else 2), self._settings.candidates)

    @staticmethod
    def _where(opts: SearchOptions) -> dict[str, Any] | None:
        where: dict[str, Any] = {}
        if opts.kind is not None:
            where["kind"] = opts.kind
        if opts.source is not None:
            where["source"] = opts.source
        if len(where) > 1:
            return {"$and": [{k: v} for k, v in where.items()]}
        return where or None

    def search_vector(self, scope: Scope, vector: Any, opts: SearchOptions) -> list[Hit]:
        """Cosine alone: the scope's nearest facts to ``vector`` in the vector index."""
        candidates = self._index.query(scope, vector, self._pool(opts), self._where(opts))
        return self._hits(scope, candidates, opts)

    def _hits(
        self, scope: Scope, candidates: list[tuple[str, float]], opts: SearchOptions
    ) -> list[Hit]:
        """The facts of ``candidates`` (best first) that pass the options, read back."""
        candidates = [(i, s) for i, s in candidates if s >= opts.threshold]
        facts = self._records.by_ids(scope, [i for i, _ in candidates], now=time.time())
        return select(candidates, facts, opts)
