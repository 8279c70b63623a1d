"""Prometheus metrics: one ``CollectorRegistry`` per app (built by ``create_app``), never the
process-global registry, so two apps in one process (tests) count apart.

Hook points stay small: the middleware counts requests, the chat service and the completer
time upstream calls, the memory service counts injected facts, the retriever times lookups,
the worker counts job outcomes and extraction operations. Queue depths and the embedding
cache's lookup counts are read at scrape.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED = "unmatched"  # the route label of requests no route matched (no raw paths: cardinality)

#: Methods kept as label values; any other (clients may send any token) is counted as "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

#: Operation kinds of an applied extraction job (the worker's result counts).
EXTRACTION_KINDS = ("added", "updated", "removed", "merged", "none")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_FACT_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64)


class _QueueCollector(Collector):
    """Gauges computed when Prometheus scrapes (nothing to keep in step)."""

    def __init__(self, jobs: Callable[[], Mapping[str, int]], outbox: Callable[[], int]) -> None:
        self._jobs = jobs
        self._outbox = outbox

    def collect(self) -> Iterable[Metric]:
        counts = self._jobs()
        by_status = GaugeMetricFamily(
            "profilo_queue_jobs", "Extraction jobs waiting or running, by status", labels=["status"]
        )
        for status in ("queued", "running"):
            by_status.add_metric([status], counts.get(status, 0))
        yield by_status
        yield GaugeMetricFamily(
            "profilo_queue_depth",
            "Extraction jobs not finished yet (queued + running)",
            value=counts.get("queued", 0) + counts.get("running", 0),
        )
        yield GaugeMetricFamily(
            "profilo_index_outbox_depth",
            "Index writes deferred (the index was unavailable) and waiting for replay",
            value=self._outbox(),
        )

    def describe(self) -> Iterable[Metric]:
        return []  # not described up front: nothing is read at registration


class _EmbedCacheCollector(Collector):
    """The embedding cache's lookups, read from its own counts at scrape (no work per lookup)."""

    def __init__(self, stats: Callable[[], Mapping[str, tuple[int, int]]]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "profilo_embed_cache_lookups",
            "Texts looked up in the embedding cache, by caller (request, background) and result",
            labels=["caller", "result"],
        )
        for caller, (hits, misses) in self._stats().items():
            family.add_metric([caller, "hit"], hits)
            family.add_metric([caller, "miss"], misses)
        yield family

    def describe(self) -> Iterable[Metric]:
        return []


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._queue: _QueueCollector | None = None
        self._embed_cache: _EmbedCacheCollector | None = None
        self._http: dict[tuple[str, str, int], tuple[Any, Any]] = {}  # labelled children
        r = self.registry
        self.requests = Counter(
            "profilo_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "profilo_http_request_duration_seconds",
            "Time from request to the last byte of the response, by route template",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "profilo_upstream_duration_seconds",
            "Upstream model calls: time to the answer (streams: to the first event)",
            ["purpose", "route", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.memory_facts = Histogram(
            "profilo_memory_facts_injected",
            "Facts injected into one chat request's memory block (_sum: all facts injected)",
            buckets=_FACT_BUCKETS,
            registry=r,
        )
        self.memory_errors = Counter(
            "profilo_memory_errors",
            "Chat requests answered without memory because the lookup failed (fail open)",
            registry=r,
        )
        self.learning_skipped = Counter(
            "profilo_learning_skipped",
            "Chat turns answered without learning because the account hit a queue limit",
            ["reason"],
            registry=r,
        )
        self.retrieval_seconds = Histogram(
            "profilo_retrieval_duration_seconds",
            "Semantic lookups (embed the query, search the index, read the facts)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.view_lookups = Counter(
            "profilo_scope_view_lookups",
            "Scope view lookups by result (hit, patched, loaded, building, too_large)",
            ["result"],
            registry=r,
        )
        self.view_build_seconds = Histogram(
            "profilo_scope_view_build_duration_seconds",
            "Time to read a whole scope into its in-memory view",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.view_bytes = Gauge(
            "profilo_scope_view_bytes",
            "Estimated memory held by the scope views (bounded by retrieval.views_mb)",
            registry=r,
        )
        self.rerank = Counter(
            "profilo_rerank",
            "Rerank calls by outcome: ok, failed (timeout or error: fused order kept)",
            ["outcome"],
            registry=r,
        )
        for outcome in ("ok", "failed"):
            self.rerank.labels(outcome)
        self.rerank_seconds = Histogram(
            "profilo_rerank_duration_seconds",
            "Rerank calls (retrieval.reranker), failed ones included",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.jobs = Counter(
            "profilo_jobs",
            "Extraction job attempts by outcome (done, retried, failed, repeated)",
            ["outcome"],
            registry=r,
        )
        self.extraction_ops = Counter(
            "profilo_extraction_operations",
            "Extraction operations applied by kind; dropped ones by kind=dropped",
            ["kind"],
            registry=r,
        )

        self.usage_requests = Counter(
            "profilo_usage_requests",
            "Metered upstream calls by model and kind (chat, extraction, dialectic)",
            ["model", "kind"],
            registry=r,
        )
        self.usage_tokens = Counter(
            "profilo_usage_tokens",
            "Tokens the upstream reported, by model, kind (chat, memory: the injected memory "
            "block, extraction, dialectic) and type (prompt, completion)",
            ["model", "kind", "type"],
            registry=r,
        )
        self.usage_cost = Counter(
            "profilo_usage_cost",
            "Cost from the model cost map (USD) by model and kind; unpriced models: none",
            ["model", "kind"],
            registry=r,
        )
        self._usage: dict[tuple[str, str], tuple[Any, ...]] = {}

    def usage(self, event: Any) -> None:
        """Count one metered call (a ``UsageEvent``; children cached per model and kind)."""
        key = (event.model, event.kind)
        c = self._usage.get(key)
        if c is None:
            memory = event.kind == "chat"
            c = (
                self.usage_requests.labels(event.model, event.kind),
                self.usage_tokens.labels(event.model, event.kind, "prompt"),
                self.usage_tokens.labels(event.model, event.kind, "completion"),
                self.usage_cost.labels(event.model, event.kind),
                self.usage_tokens.labels(event.model, "memory", "prompt") if memory else None,
                self.usage_cost.labels(event.model, "memory") if memory else None,
            )
            self._usage[key] = c
        c[0].inc()
        c[1].inc(max(0, event.prompt_tokens - event.memory_tokens))
        c[2].inc(event.completion_tokens)
        if event.cost is not None:
            c[3].inc(max(0.0, event.cost - (event.memory_cost or 0.0)))
        if c[4] is not None and event.memory_tokens:
            c[4].inc(event.memory_tokens)
            if event.memory_cost:
                c[5].inc(event.memory_cost)

    def watch_queue(self, jobs: Callable[[], Mapping[str, int]], outbox: Callable[[], int]) -> None:
        """Register the scrape-time gauges (once the stores exist: in the app's lifespan),
        replacing those of an earlier start."""
        if self._queue is not None:
            self.registry.unregister(self._queue)
        self._queue = _QueueCollector(jobs, outbox)
        self.registry.register(self._queue)

    def watch_embed_cache(self, stats: Callable[[], Mapping[str, tuple[int, int]]]) -> None:
        """Register the embedding cache's lookup counts (read at scrape), replacing those of an
        earlier start."""
        if self._embed_cache is not None:
            self.registry.unregister(self._embed_cache)
        self._embed_cache = _EmbedCacheCollector(stats)
        self.registry.register(self._embed_cache)

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one HTTP request (children cached: ``labels()`` costs more than ``inc()``)."""
        method = method if method in METHODS else "other"
        key = (route, method, status)
        children = self._http.get(key)
        if children is None:
            children = (
                self.requests.labels(route, method, str(status)),
                self.request_seconds.labels(route, method),
            )
            self._http[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    @contextmanager
    def upstream(self, purpose: str, route: str) -> Iterator[None]:
        started = time.perf_counter()
        outcome = "error"
        try:
            yield
            outcome = "ok"
        finally:
            self.upstream_seconds.labels(purpose, route, outcome).observe(
                time.perf_counter() - started
            )

    def job_result(self, result: Mapping[str, Any]) -> None:
        """Count one applied job (the applier's result dict)."""
        if result.get("already_done"):
            self.jobs.labels("repeated").inc()
            return
        self.jobs.labels("done").inc()
        for kind in EXTRACTION_KINDS:
            amount = int(result.get(kind, 0) or 0)
            if amount:
                self.extraction_ops.labels(kind).inc(amount)
        dropped = sum(int(v) for v in (result.get("dropped") or {}).values())
        if dropped:
            self.extraction_ops.labels("dropped").inc(dropped)
