"""Hybrid retrieval through real HTTP: a question dominated by the user's name, which cosine
alone misses, is found by the hybrid retriever on every path that retrieves (profile search,
delete by query, memory in chat); plus the evaluation set on a subset: hybrid >= cosine."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.eval_retrieval import SET, evaluate, load_set, loaded
from proxy.config import Settings
from tests.conftest import Proxy, make_settings
from tests.fakes.upstream import FakeUpstream

HTTP = httpx.Client(timeout=60)
JsonObj = dict[str, Any]
QUESTION = "What did Priya think of the Dolomites?"  # the answer: key past_trip


def _priya() -> dict[str, str]:
    """The first user of the evaluation set: ~200 facts, many starting with her name."""
    user = json.loads(Path(SET).read_text())["users"][0]
    assert user["name"] == "Priya"
    return {f["key"]: f["value"] for f in user["facts"]}


def _seeded(
    make_proxy: Callable[..., Proxy], tmp_path: Path, upstream: FakeUpstream, name: str, **kw: Any
) -> Proxy:
    proxy = make_proxy(make_settings(tmp_path / name, upstream, **kw))
    facts = _priya()
    r = HTTP.patch(proxy.base_url + "/profile", json={**facts, "collection_id": "priya"})
    assert r.status_code == 200, r.text
    return proxy


def _search(proxy: Proxy, query: str, top_k: int) -> list[str]:
    body = {"query": query, "collection_id": "priya", "top_k": top_k, "threshold": 0}
    r = HTTP.post(proxy.base_url + "/profile/search", json=body)
    assert r.status_code == 200, r.text
    return [f["key"] for f in r.json()["facts"]]


def test_a_name_led_question_cosine_misses_is_found_by_hybrid(
    make_proxy: Callable[..., Proxy], tmp_path: Path, upstream: FakeUpstream
) -> None:
    cosine = _seeded(make_proxy, tmp_path, upstream, "cosine", retrieval={"lexical_weight": 0})
    hybrid = _seeded(make_proxy, tmp_path, upstream, "hybrid")
    assert "past_trip" not in _search(cosine, QUESTION, 5)
    assert _search(hybrid, QUESTION, 5)[0] == "past_trip"

    # memory in chat retrieves through the same retriever
    r = HTTP.post(
        hybrid.base_url + "/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": QUESTION}],
            "collection_id": "priya",
            "features": {"memory": True, "memory_limit": 3, "return_memory_context": True},
        },
    )
    assert r.status_code == 200, r.text
    assert "past_trip" in {item["key"] for item in r.json()["memory_context"]}
    assert "Dolomites" in upstream.last.json["messages"][0]["content"]

    # and so does delete by query (dry run: lists what it would delete)
    body = {"search_query": QUESTION, "collection_id": "priya", "top_k": 1, "dry_run": True}
    r = HTTP.post(hybrid.base_url + "/profile/delete", json=body)
    assert r.status_code == 200, r.text
    assert [f["key"] for f in r.json()["would_delete"]] == ["past_trip"]


def test_the_threshold_applies_to_the_fused_score(
    make_proxy: Callable[..., Proxy], tmp_path: Path, upstream: FakeUpstream
) -> None:
    proxy = _seeded(make_proxy, tmp_path, upstream, "p")
    body = {"query": QUESTION, "collection_id": "priya", "top_k": 5, "threshold": 0}
    ranked = HTTP.post(proxy.base_url + "/profile/search", json=body).json()["facts"]
    scores = [f["score"] for f in ranked]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    cut = (scores[0] + scores[1]) / 2
    got = HTTP.post(proxy.base_url + "/profile/search", json={**body, "threshold": cut})
    assert [f["key"] for f in got.json()["facts"]] == [ranked[0]["key"]]


def test_hybrid_is_at_least_as_good_as_cosine_on_an_eval_subset() -> None:
    data = load_set(users=2)
    assert len(data["questions"]) >= 100
    with loaded(data) as stack:
        cosine = evaluate(stack.retriever(None), data["questions"])["all"]
        hybrid = evaluate(stack.retriever(Settings().retrieval), data["questions"])["all"]
    assert hybrid["recall@10"] >= cosine["recall@10"], (cosine, hybrid)
    assert hybrid["mrr"] >= cosine["mrr"], (cosine, hybrid)
