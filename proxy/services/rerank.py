"""The optional reranking stage (``retrieval.reranker``): a cross-encoder behind a rerank
endpoint (``POST /v1/rerank`` with ``query``, ``documents``, ``top_n`` -> ``results[].index,
relevance_score``: Cohere, Jina, Hugging Face TEI, vLLM, Infinity, LiteLLM's proxy), called
through ``litellm.rerank``: a model without a provider prefix goes through litellm's ``cohere``
provider to ``{api_base}/v1/rerank`` (an ``api_base`` ending in ``/rerank`` is used as is).

It reorders the fused candidates' first ``top_n`` (those it ranks come first, in its order; the
rest keep the fused order after them); the scores stay the fused ones, so ``threshold`` keeps its
meaning. It fails open: a timeout or any error leaves the fused order, counts
``profilo_rerank_total{outcome="failed"}`` and sets ``outcome`` to ``failed`` (the search API
answers ``X-Profilo-Rerank: failed``).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from proxy.config import RerankerSettings
from proxy.metrics import Metrics

log = logging.getLogger(__name__)

#: What the last rerank of this request did: "ok", "failed", or None (none ran).
outcome: contextvars.ContextVar[str | None] = contextvars.ContextVar("rerank", default=None)


class Reranker:
    def __init__(self, settings: RerankerSettings, metrics: Metrics | None = None) -> None:
        assert settings.model is not None
        self._settings = settings
        self._model = settings.model if "/" in settings.model else f"cohere/{settings.model}"
        self._api_base = settings.api_base
        if self._api_base and self._model.startswith("cohere/"):
            # litellm's cohere provider posts to {api_base}/v2/rerank unless the base names
            # the v1 route: the Cohere-compatible servers (TEI, Jina, vLLM, Infinity, LiteLLM's
            # proxy) all serve /v1/rerank.
            base = self._api_base.rstrip("/")
            self._api_base = base if base.endswith("/rerank") else base + "/v1/rerank"
        self._metrics = metrics or Metrics()
        self._module: ModuleType | None = None
        self._lock = threading.Lock()

    def _litellm(self) -> ModuleType:
        with self._lock:  # imported once (it costs seconds), on first use
            if self._module is None:
                from proxy.llm.offline import import_litellm

                self._module = import_litellm()
            return self._module

    def order(self, query: str, documents: Sequence[str]) -> list[int] | None:
        """Indexes of ``documents``, most relevant first; None when the call failed."""
        started = time.perf_counter()
        try:
            response = self._litellm().rerank(
                model=self._model,
                query=query,
                documents=list(documents),
                top_n=len(documents),
                api_base=self._api_base,
                api_key=self._settings.api_key or "none",
                timeout=self._settings.timeout_seconds,
                return_documents=False,
                num_retries=0,
            )
            ranked = _indexes(response, len(documents))
        except Exception as exc:  # fail open: the fused order stands
            log.warning("rerank failed (%s: %s): fused order kept", type(exc).__name__, exc)
            self._metrics.rerank.labels("failed").inc()
            outcome.set("failed")
            return None
        finally:
            self._metrics.rerank_seconds.observe(time.perf_counter() - started)
        self._metrics.rerank.labels("ok").inc()
        outcome.set("ok")
        return ranked

    def rerank(
        self, query: str, candidates: list[tuple[str, float]], texts: dict[str, str]
    ) -> list[tuple[str, float]]:
        """``candidates`` with their first ``top_n`` in the reranker's order."""
        head = [c for c in candidates[: self._settings.top_n] if c[0] in texts]
        if len(head) < 2:
            return candidates
        ranked = self.order(query, [texts[i] for i, _ in head])
        if ranked is None:
            return candidates
        first = [head[i] for i in ranked]
        chosen = {i for i, _ in first}
        return first + [c for c in candidates if c[0] not in chosen]


def _indexes(response: Any, n: int) -> list[int]:
    results = getattr(response, "results", None)
    if results is None and isinstance(response, dict):
        results = response.get("results")
    if not isinstance(results, list):
        raise ValueError("rerank answer has no results list")
    out: list[int] = []
    for item in results:
        index = item.get("index") if isinstance(item, dict) else getattr(item, "index", None)
        if not isinstance(index, int) or not 0 <= index < n or index in out:
            raise ValueError(f"rerank answer has a bad index: {index!r}")
        out.append(index)
    return out
