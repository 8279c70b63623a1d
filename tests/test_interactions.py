"""POST/GET /v1/interactions (publish turns without chatting), chat's wait_for_learning_seconds,
and the queue's admin view."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from proxy.store.db import open_database
from proxy.store.keys import KeyStore
from tests.conftest import Proxy
from tests.fakes.upstream import FakeUpstream, chat_completion, hang_reply, json_reply
from tests.test_extraction import (
    FAST,
    Extraction,
    chat,
    facts,
    op,
    ops_reply,
)


@pytest.fixture
def extraction(upstream: FakeUpstream) -> Extraction:
    return Extraction(upstream)


EVE = [
    {"role": "User", "content": "Hi, I'm a beginner photographer looking for my first camera"},
    {"role": "Assistant", "content": "Great! What do you like to photograph?"},
    {"role": "User", "content": "Mostly landscapes, so I want wide-angle lenses"},
]


def publish(proxy: Proxy, token: str | None = None, **body: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(proxy.base_url + "/interactions", json=body, headers=headers, timeout=30)


def test_publish_and_poll(make_proxy: Any, extraction: Extraction) -> None:
    proxy = make_proxy(learning=FAST)
    extraction.script(
        hang_reply(
            0.3,
            then=ops_reply(
                op("add", "photography_level", "beginner", category="expertise"),
                op("add", "photo_interest", "landscapes, wide-angle lenses", source=3),
            ),
        )
    )
    r = publish(
        proxy,
        user_id="new_user_eve",
        interaction_data_list=EVE,
        session_id="user_onboarding_001",
        source="initial_consultation",
        model="gpt-4o-mini",
    )
    assert r.status_code == 202, r.text
    body = r.json()
    rid = body["request_id"]
    assert rid == r.headers["x-profilo-request-id"] and body["status"] in ("queued", "running")
    assert body["collection_id"] == "new_user_eve" and "change" not in body
    deadline = time.monotonic() + 10
    while (status := httpx.get(proxy.base_url + f"/interactions/{rid}").json())["status"] != "done":
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    assert status["attempts"] == 1 and status["error"] is None
    assert status["source"] == "initial_consultation"
    change = status["change"]
    assert change["request_id"] == rid and len(change["added"]) == 2
    learned = facts(proxy, "new_user_eve")
    fact = learned["photo_interest"]
    assert fact["session_id"] == "user_onboarding_001"
    assert fact["source"] == "initial_consultation" and fact["generated_from_request_id"] == rid
    # roles in any case; the assistant's message is context, numbered but not a source
    prompt = extraction.prompt
    assert '[2] assistant (context only): "Great!' in prompt and "[3] user:" in prompt
    # Reflexio's source filter finds the facts
    r = httpx.post(
        proxy.base_url + "/profile/search",
        json={"user_id": "new_user_eve", "query": "camera", "source": "initial_consultation"},
    )
    assert r.status_code == 200 and r.json()["facts"]


def test_publish_and_wait(make_proxy: Any, extraction: Extraction) -> None:
    proxy = make_proxy(learning=FAST, models={"extraction": "gpt-4o"})
    extraction.script(ops_reply(op("add", "favorite_food", "ramen", category="preferences")))
    r = publish(
        proxy,
        collection_id="bob",
        messages=[{"role": "user", "content": "I could eat ramen every day"}],
        wait_for_learning_seconds=10,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "done" and body["change"]["added"][0]["value"] == "ramen"
    assert body["result"]["added"] == 1 and body["source"] == "interaction"
    assert extraction.calls[-1].json["model"] == "gpt-4o"  # models.extraction wins
    # a job still running when the wait runs out: 202 with its current status
    extraction.script(hang_reply(1.0, then=ops_reply()))
    r = publish(
        proxy,
        collection_id="bob",
        messages=[{"role": "user", "content": "hello"}],
        wait_for_learning_seconds=0.2,
    )
    assert r.status_code == 202 and r.json()["status"] == "running"


def test_bad_input_is_rejected_and_queues_nothing(make_proxy: Any, extraction: Extraction) -> None:
    proxy = make_proxy(learning=FAST)
    user = [{"role": "user", "content": "I like tea"}]
    cases: list[dict[str, Any]] = [
        {"messages": [{"role": "assistant", "content": "You like tea"}], "model": "m"},
        {"messages": user, "interaction_data_list": user, "model": "m"},
        {"messages": [{"role": "system", "content": "x"}, *user], "model": "m"},
        {"messages": user, "model": "m", "wait_for_learning_seconds": 25},
        {"messages": [], "model": "m"},
        {"messages": user},  # no model and no models.extraction
        {"messages": user, "model": "m", "collection_id": "a", "user_id": "b"},
    ]
    for body in cases:
        r = publish(proxy, **body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(  # chat's wait_for_learning_seconds is checked as well
        proxy.base_url + "/chat/completions",
        json={"model": "m", "messages": user, "wait_for_learning_seconds": 25},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "wait_for_learning_seconds"
    queue = httpx.get(proxy.base_url + "/admin/queue").json()
    assert sum(queue["counts"].values()) == 0 and not extraction.calls


def test_job_status_is_scoped_to_the_account(make_proxy: Any, extraction: Extraction) -> None:
    proxy = make_proxy(learning=FAST)
    keys = KeyStore(open_database(proxy.settings))
    _, acme = keys.create("acme")
    _, other = keys.create("other")
    r = publish(
        proxy,
        token=acme,
        collection_id="u",
        messages=[{"role": "user", "content": "hi"}],
        model="gpt-4o-mini",
        wait_for_learning_seconds=10,
    )
    rid = r.json()["request_id"]
    auth = {"Authorization": f"Bearer {acme}"}
    assert httpx.get(proxy.base_url + f"/interactions/{rid}", headers=auth).status_code == 200
    auth = {"Authorization": f"Bearer {other}"}
    r = httpx.get(proxy.base_url + f"/interactions/{rid}", headers=auth)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.get(proxy.base_url + "/interactions/req_nope", headers=auth)
    assert r.status_code == 404
    assert httpx.get(proxy.base_url + "/admin/queue", headers=auth).json()["depth"] == 0


def test_the_admin_queue_view(make_proxy: Any, extraction: Extraction) -> None:
    proxy = make_proxy(learning={**FAST, "max_attempts": 1})
    extraction.script(
        ops_reply(op("add", "tea", "green tea"), op("add", "x", "y", source=5)),
        ops_reply(),
        json_reply(chat_completion("not json at all")),
    )
    for text in ("I like green tea", "ok", "hmm"):
        chat(proxy, text)
    queue = httpx.get(proxy.base_url + "/admin/queue").json()
    assert queue["counts"] == {"queued": 0, "running": 0, "done": 2, "failed": 1}
    assert queue["depth"] == 0 and queue["latency_seconds"]["jobs"] == 2
    assert queue["latency_seconds"]["p50"] is not None
    assert queue["dropped_operations"] == {"unknown_source": 1}
    assert "unparseable" in queue["failures"][0]["error"]
    assert queue["worker"]["running"] is True
