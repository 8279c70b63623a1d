"""retrieval.reranker: the fused candidates reordered by a rerank endpoint (a fake one on
127.0.0.1 that records what it received), through litellm; failing open on errors and timeouts
(fused order, ``X-Profilo-Rerank: failed``, ``profilo_rerank_total{outcome="failed"}``)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.conftest import Proxy, make_settings
from tests.fakes.server import ServerThread
from tests.fakes.upstream import FakeUpstream

HTTP = httpx.Client(timeout=60)
FACTS = {
    "pet": "Has a beagle called Oscar who loves the beach",
    "dog_walks": "Walks the dog every morning before work",
    "cat": "Used to have a cat as a child",
    "job": "Works as a nurse at the city hospital",
    "hobby": "Goes bouldering on Thursdays",
    "car": "Drives a secondhand Honda Civic",
}
QUERY = "Tell me about the dog"


class FakeRerank:
    """``POST /v1/rerank`` (Cohere's shape): answers the documents in reverse order, or fails
    (``mode`` "error": 500; "hang": holds the answer until the test ends)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.mode = "reverse"
        self.release = threading.Event()
        app = FastAPI()

        @app.post("/v1/rerank")
        async def rerank(request: Request) -> JSONResponse:
            body = await request.json()
            self.received.append(body)
            self.headers.append(dict(request.headers))
            if self.mode == "error":
                return JSONResponse({"message": "model crashed"}, status_code=500)
            if self.mode == "hang":
                import anyio

                await anyio.to_thread.run_sync(self.release.wait, 30)
            n = len(body["documents"])
            results = [
                {"index": i, "relevance_score": 1.0 - r / n}
                for r, i in enumerate(reversed(range(n)))
            ][: body.get("top_n") or n]
            return JSONResponse({"id": "rr-1", "results": results, "meta": {}})

        self.server = ServerThread(app)

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture
def reranker() -> Iterator[FakeRerank]:
    fake = FakeRerank()
    with fake.server:
        yield fake
        fake.release.set()


def _proxy(
    make_proxy: Callable[..., Proxy], tmp_path: Path, upstream: FakeUpstream, name: str, **kw: Any
) -> Proxy:
    proxy = make_proxy(make_settings(tmp_path / name, upstream, **kw))
    r = HTTP.patch(proxy.base_url + "/profile", json={**FACTS, "collection_id": "u"})
    assert r.status_code == 200, r.text
    return proxy


def _search(proxy: Proxy) -> httpx.Response:
    body = {"query": QUERY, "collection_id": "u", "top_k": 6, "threshold": 0}
    r = HTTP.post(proxy.base_url + "/profile/search", json=body)
    assert r.status_code == 200, r.text
    return r


def _settings(fake: FakeRerank, **kw: Any) -> dict[str, Any]:
    rerank = {"model": "rerank-test", "api_base": fake.url, "api_key": "rk-1", "top_n": 4}
    return {"reranker": rerank | kw}


def _failed(proxy: Proxy) -> float:
    text = HTTP.get(proxy.base_url.removesuffix("/v1") + "/metrics").text
    line = next(
        x for x in text.splitlines() if x.startswith('profilo_rerank_total{outcome="failed"')
    )
    return float(line.split()[-1])


def test_the_reranker_reorders_the_fused_candidates(
    make_proxy: Callable[..., Proxy], tmp_path: Path, upstream: FakeUpstream, reranker: FakeRerank
) -> None:
    plain = [f["key"] for f in _search(_proxy(make_proxy, tmp_path, upstream, "a")).json()["facts"]]
    proxy = _proxy(make_proxy, tmp_path, upstream, "b", retrieval=_settings(reranker))
    r = _search(proxy)
    assert r.headers["X-Profilo-Rerank"] == "ok"
    got = [f["key"] for f in r.json()["facts"]]
    # the first top_n (4) fused candidates come back in the reranker's (reversed) order
    assert got == plain[:4][::-1] + plain[4:]
    # the scores stay the fused ones (the threshold keeps its meaning)
    scores = {f["key"]: f["score"] for f in r.json()["facts"]}
    assert max(scores, key=lambda k: scores[k]) == plain[0]
    [body] = reranker.received
    assert body["query"] == QUERY and body["top_n"] == 4
    assert body["documents"] == [f"{k.replace('_', ' ')}: {FACTS[k]}" for k in plain[:4]]
    assert reranker.headers[0]["authorization"] == "Bearer rk-1"
    assert _failed(proxy) == 0


@pytest.mark.parametrize("mode", ["error", "hang"])
def test_a_failing_reranker_leaves_the_fused_order(
    make_proxy: Callable[..., Proxy],
    tmp_path: Path,
    upstream: FakeUpstream,
    reranker: FakeRerank,
    mode: str,
) -> None:
    plain = [f["key"] for f in _search(_proxy(make_proxy, tmp_path, upstream, "a")).json()["facts"]]
    reranker.mode = mode
    proxy = _proxy(
        make_proxy, tmp_path, upstream, "b", retrieval=_settings(reranker, timeout_seconds=0.5)
    )
    r = _search(proxy)
    assert r.headers["X-Profilo-Rerank"] == "failed"
    assert [f["key"] for f in r.json()["facts"]] == plain
    assert len(reranker.received) == 1  # asked once: no retry
    assert _failed(proxy) == 1


def test_no_reranker_no_header(
    make_proxy: Callable[..., Proxy], tmp_path: Path, upstream: FakeUpstream
) -> None:
    r = _search(_proxy(make_proxy, tmp_path, upstream, "a"))
    assert "X-Profilo-Rerank" not in r.headers
