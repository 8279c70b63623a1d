"""GET /metrics through real HTTP: counters move after real requests (the openai SDK as client),
routes are labelled by template, each app has its own registry, the key flag holds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.store.db import SqliteDatabase
from proxy.store.keys import KeyStore
from tests.conftest import Proxy, make_settings
from tests.fakes.upstream import FakeUpstream, error_reply
from tests.test_extraction import FAST, Extraction, op, ops_reply

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(proxy: Proxy, token: str | None = None) -> tuple[str, Samples]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.get(proxy.url + "/metrics", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return r.text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def patch(proxy: Proxy, collection: str, facts: dict[str, Any]) -> None:
    r = httpx.patch(
        proxy.base_url + "/profile", params={"collection_id": collection}, json=facts, timeout=30
    )
    assert r.status_code == 200, r.text


def test_requests_are_counted_by_route_template_and_status(proxy: Proxy) -> None:
    patch(proxy, "alice", {"favourite_food": "ramen", "city": "Lisbon"})
    listed = httpx.get(proxy.base_url + "/profile/facts", params={"collection_id": "alice"})
    ids = [f["id"] for f in listed.json()["facts"]]
    assert len(ids) == 2
    for fact_id in ids:
        url = f"{proxy.base_url}/profile/facts/{fact_id}"
        r = httpx.get(url, params={"collection_id": "alice"})
        assert r.status_code == 200
    missing = httpx.get(proxy.base_url + "/profile/facts/fact_" + "0" * 32)
    assert missing.status_code == 404
    assert httpx.get(proxy.url + "/no/such/thing").status_code == 404

    text, samples = scrape(proxy)
    template = "/v1/profile/facts/{fact_id}"
    assert (
        value(samples, "profilo_http_requests_total", route=template, method="GET", status="200")
        == 2
    )
    assert (
        value(samples, "profilo_http_requests_total", route=template, method="GET", status="404")
        == 1
    )
    assert (
        value(
            samples,
            "profilo_http_requests_total",
            route="/v1/profile",
            method="PATCH",
            status="200",
        )
        == 1
    )
    assert (
        value(samples, "profilo_http_requests_total", route="unmatched", method="GET", status="404")
        == 1
    )
    for fact_id in ids:
        assert fact_id not in text  # raw paths never become labels
    assert "/no/such/thing" not in text
    assert (
        value(samples, "profilo_http_request_duration_seconds_count", route=template, method="GET")
        == 3
    )


def test_chat_moves_upstream_memory_retrieval_and_queue_metrics(
    proxy: Proxy, upstream: FakeUpstream
) -> None:
    patch(proxy, "bob", {"favourite_food": "ramen", "city": "Lisbon", "pet": "a cat"})
    _, before = scrape(proxy)
    assert total(before, "profilo_upstream_duration_seconds_count") == 0
    assert value(before, "profilo_queue_depth") == 0

    client = proxy.client()
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "What should I cook tonight?"}],
        extra_body={"features": {"memory": True, "user_profile": True}, "collection_id": "bob"},
    )
    injected = int(raw.headers["x-profilo-memory-facts"])
    assert injected >= 3
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    _, after = scrape(proxy)
    assert (
        value(
            after,
            "profilo_upstream_duration_seconds_count",
            purpose="chat",
            route="passthrough",
            outcome="ok",
        )
        == 2
    )
    assert value(after, "profilo_memory_facts_injected_count") == 1
    assert value(after, "profilo_memory_facts_injected_sum") == injected
    assert value(after, "profilo_retrieval_duration_seconds_count") >= 1
    # the worker is off in tests: the memory turn's learning job waits in the queue
    assert value(after, "profilo_queue_depth") == 1
    assert value(after, "profilo_queue_jobs", status="queued") == 1
    assert (
        value(
            after,
            "profilo_http_requests_total",
            route="/v1/chat/completions",
            method="POST",
            status="200",
        )
        == 2
    )


def test_upstream_errors_are_labelled(proxy: Proxy, upstream: FakeUpstream) -> None:
    upstream.script(error_reply(400, "bad model"))
    with pytest.raises(openai.BadRequestError):
        proxy.client().chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    _, samples = scrape(proxy)
    assert (
        value(
            samples,
            "profilo_upstream_duration_seconds_count",
            purpose="chat",
            route="passthrough",
            outcome="error",
        )
        == 1
    )
    assert (
        value(
            samples,
            "profilo_http_requests_total",
            route="/v1/chat/completions",
            method="POST",
            status="400",
        )
        == 1
    )


def test_jobs_and_extraction_operations_are_counted(
    make_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    extraction = Extraction(upstream)
    extraction.answers.append(
        ops_reply(op("add", "favourite_food", "ramen"), op("add", "home_city", "Lisbon"))
    )
    proxy = make_proxy(learning={"run_worker": True, **FAST})
    r = httpx.post(
        proxy.base_url + "/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "I love ramen and live in Lisbon"}],
            "features": {"memory": True},
            "collection_id": "carol",
            "wait_for_learning_seconds": 20,
        },
        timeout=30,
    )
    assert r.status_code == 200 and r.headers["x-profilo-learning"] == "done", r.headers
    _, samples = scrape(proxy)
    assert value(samples, "profilo_jobs_total", outcome="done") == 1
    assert value(samples, "profilo_extraction_operations_total", kind="added") == 2
    assert (
        value(
            samples,
            "profilo_upstream_duration_seconds_count",
            purpose="internal",
            route="passthrough",
            outcome="ok",
        )
        == 1
    )
    assert value(samples, "profilo_queue_depth") == 0


def test_each_app_has_its_own_registry(
    make_proxy: Callable[..., Proxy], upstream: FakeUpstream, tmp_path: Path
) -> None:
    first = make_proxy()
    second = make_proxy(make_settings(tmp_path / "second", upstream))
    for _ in range(3):
        assert httpx.get(first.url + "/healthz").status_code == 200
    _, a = scrape(first)
    _, b = scrape(second)
    healthz = {"route": "/healthz", "method": "GET", "status": "200"}
    assert value(a, "profilo_http_requests_total", **healthz) == 3
    assert value(b, "profilo_http_requests_total", **healthz) == 0


def create_key(data_dir: Path) -> str:
    data_dir.mkdir(parents=True, exist_ok=True)
    db = SqliteDatabase(data_dir / "profilo.sqlite3")
    try:
        return KeyStore(db).create("acme")[1]
    finally:
        db.close()


def test_require_key(
    make_proxy: Callable[..., Proxy], upstream: FakeUpstream, tmp_path: Path
) -> None:
    create_key(tmp_path / "open")
    open_proxy = make_proxy(make_settings(tmp_path / "open", upstream))
    assert httpx.get(open_proxy.url + "/metrics").status_code == 200  # scrapers send no key

    token = create_key(tmp_path / "keyed")
    keyed = make_proxy(make_settings(tmp_path / "keyed", upstream, metrics={"require_key": True}))
    r = httpx.get(keyed.url + "/metrics")
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"
    wrong = httpx.get(keyed.url + "/metrics", headers={"Authorization": "Bearer sk-wrong"})
    assert wrong.status_code == 401
    assert scrape(keyed, token)[1]


def test_disabled(make_proxy: Callable[..., Proxy]) -> None:
    proxy = make_proxy(metrics={"enabled": False})
    r = httpx.get(proxy.url + "/metrics")
    assert r.status_code == 404
    assert "metrics are disabled" in r.json()["error"]["message"]


def test_unknown_methods_share_one_label(proxy: Proxy) -> None:
    statuses = {httpx.request(m, proxy.url + "/healthz").status_code for m in ("PROPFIND", "PURGE")}
    assert statuses == {405}
    text, samples = scrape(proxy)
    assert (
        value(
            samples, "profilo_http_requests_total", route="/healthz", method="other", status="405"
        )
        == 2
    )
    assert "PROPFIND" not in text and "PURGE" not in text  # only a fixed set of labels
