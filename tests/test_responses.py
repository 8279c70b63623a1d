"""POST /v1/responses relayed to an upstream that serves the Responses API itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response

from tests.conftest import UPSTREAM_KEY, Proxy, make_settings
from tests.fakes.upstream import DEFAULT_CONTENT, FakeUpstream, error_reply, json_reply
from tests.responses_helpers import accounts, auth, job, memory_context_answer, stream_raw
from tests.test_memory_chat import ALICE, patch

REASONING = {
    "type": "reasoning",
    "id": "rs_1",
    "summary": [],
    "encrypted_content": "gAAAAB-opaque-blob==",
}


def responses_requests(up: FakeUpstream) -> list[Any]:
    return [r for r in up.requests if r.path.endswith("/responses")]


def test_sdk_create_is_relayed(proxy: Proxy, upstream: FakeUpstream) -> None:
    out = proxy.client().responses.create(model="gpt-4o-mini", input="Say hello")
    assert out.output_text == DEFAULT_CONTENT
    sent = upstream.last
    assert sent.path == "/v1/responses"
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert sent.json == {"model": "gpt-4o-mini", "input": "Say hello"}


def test_stream_is_relayed_event_for_event(proxy: Proxy, upstream: FakeUpstream) -> None:
    r, events = stream_raw(proxy, {"model": "gpt-4o-mini", "input": "Say hello"})
    assert r.headers["content-type"].startswith("text/event-stream")
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] == "response.completed"
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == DEFAULT_CONTENT
    # and the SDK's own stream reading
    with proxy.client().responses.stream(model="gpt-4o-mini", input="again") as stream:
        final = stream.get_final_response()
    assert final.output_text == DEFAULT_CONTENT


@pytest.mark.parametrize("stream", [False, True])
def test_memory_goes_into_instructions_only(
    proxy: Proxy, upstream: FakeUpstream, stream: bool
) -> None:
    patch(proxy, ALICE, "alice")
    items = [
        {"role": "user", "content": "Recommend a book for me"},
        REASONING,
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Now"}]},
    ]
    body = {
        "model": "gpt-4o-mini",
        "input": items,
        "instructions": "Be brief.",
        "features": {"user_profile": True, "memory": True},
        "collection_id": "alice",
    }
    if stream:
        r, events = stream_raw(proxy, body)
        assert events[-1]["type"] == "response.completed"
    else:
        r = httpx.post(proxy.base_url + "/responses", json=body, timeout=30)
        assert r.status_code == 200, r.text
        Response.model_validate(r.json())
    sent = upstream.last.json
    instructions = sent["instructions"]
    assert instructions.startswith("Be brief.\n\n<user_memory>")
    assert instructions.endswith("</user_memory>") and "Alice Martin" in instructions
    assert sent["input"] == items  # byte-true: the encrypted reasoning item included
    assert "features" not in sent and "collection_id" not in sent
    assert int(r.headers["x-profilo-memory-facts"]) > 0


@pytest.mark.parametrize("how", ["header", "user"])
def test_collection_from_header_or_user(proxy: Proxy, upstream: FakeUpstream, how: str) -> None:
    patch(proxy, ALICE, "alice")
    body: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "input": "hi",
        "features": {"user_profile": True},
    }
    headers = {}
    if how == "header":
        headers["X-Collection-Id"] = "alice"
    else:
        body["user"] = "alice"
    r = httpx.post(proxy.base_url + "/responses", json=body, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    assert "Alice Martin" in upstream.last.json["instructions"]
    if how == "user":
        assert upstream.last.json["user"] == "alice"  # OpenAI's own field stays


def test_no_features_no_instructions_added(proxy: Proxy, upstream: FakeUpstream) -> None:
    patch(proxy, ALICE, "alice")
    proxy.client().responses.create(model="gpt-4o-mini", input="hi", user="alice")
    assert "instructions" not in upstream.last.json


@pytest.mark.parametrize("stream", [False, True])
def test_learning_takes_new_user_input_and_output(
    proxy: Proxy, upstream: FakeUpstream, stream: bool
) -> None:
    body = {
        "model": "gpt-4o-mini",
        "input": [
            {"role": "user", "content": "earlier question"},
            {"role": "assistant", "content": "earlier answer"},
            {"role": "user", "content": "I moved to Lisbon last month"},
        ],
        "features": {"user_profile": True},
        "collection_id": "bob",
    }
    if stream:
        r, _ = stream_raw(proxy, body)
    else:
        r = httpx.post(proxy.base_url + "/responses", json=body, timeout=30)
        assert r.headers["x-profilo-learning"] == "queued"
    queued = job(proxy, "dev", r.headers["x-profilo-request-id"])
    assert queued is not None and queued.collection_id == "bob"
    assert queued.payload["source"] == "responses"
    assert queued.payload["messages"] == [
        {"role": "assistant", "content": "earlier answer"},
        {"role": "user", "content": "I moved to Lisbon last month"},
        {"role": "assistant", "content": DEFAULT_CONTENT},
    ]


def test_stored_response_routes_are_relayed_and_scoped(
    proxy: Proxy, upstream: FakeUpstream
) -> None:
    acme, globex = accounts(proxy, "acme", "globex")
    made = proxy.client(acme).responses.create(model="gpt-4o-mini", input="hi")
    upstream.script(lambda rec: json_reply({"id": made.id, "relayed": rec.path}))
    got = httpx.get(proxy.base_url + f"/responses/{made.id}", headers=auth(acme), timeout=30)
    assert got.json()["relayed"] == f"/v1/responses/{made.id}"
    seen = len(upstream.requests)
    for method in ("GET", "DELETE"):
        r = httpx.request(
            method, proxy.base_url + f"/responses/{made.id}", headers=auth(globex), timeout=30
        )
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    with pytest.raises(openai.NotFoundError):  # nor can it continue the conversation
        proxy.client(globex).responses.create(
            model="gpt-4o-mini", input="more", previous_response_id=made.id
        )
    assert len(upstream.requests) == seen  # nothing of globex's reached the upstream
    proxy.client(acme).responses.create(
        model="gpt-4o-mini", input="more", previous_response_id=made.id
    )
    assert upstream.last.json["previous_response_id"] == made.id
    upstream.script(lambda rec: json_reply({"object": "list", "data": [], "query": rec.query}))
    items = httpx.get(
        proxy.base_url + f"/responses/{made.id}/input_items?limit=5", headers=auth(acme)
    )
    assert items.json()["query"] == {"limit": "5"}
    assert upstream.last.path == f"/v1/responses/{made.id}/input_items"
    upstream.script(json_reply({"id": made.id, "object": "response", "deleted": True}))
    gone = httpx.delete(proxy.base_url + f"/responses/{made.id}", headers=auth(acme))
    assert gone.json()["deleted"] is True and upstream.last.method == "DELETE"
    again = httpx.get(proxy.base_url + f"/responses/{made.id}", headers=auth(acme))
    assert again.status_code == 404  # forgotten here too


def test_upstream_errors_are_relayed(proxy: Proxy, upstream: FakeUpstream) -> None:
    upstream.script(error_reply(400, "bad tool", code="invalid_value", param="tools"))
    with pytest.raises(openai.BadRequestError) as info:
        proxy.client().responses.create(model="gpt-4o-mini", input="hi")
    assert info.value.code == "invalid_value" and "bad tool" in info.value.message


def test_bad_requests(proxy: Proxy, upstream: FakeUpstream) -> None:
    for body, param in (
        ({"input": "hi"}, "model"),
        ({"model": "gpt-4o-mini"}, "input"),
        ({"model": "gpt-4o-mini", "input": 5}, "input"),
        ({"model": "gpt-4o-mini", "input": "x", "features": {"memory": "yes"}}, "features.memory"),
    ):
        r = httpx.post(proxy.base_url + "/responses", json=body, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == param
    assert not upstream.requests


def test_chat_only_upstream_falls_back_to_the_bridge(make_proxy: Any, tmp_path: Path) -> None:
    with FakeUpstream(responses_api=False) as chat_only:
        proxy = make_proxy(make_settings(tmp_path / "chat-only", chat_only))
        first = proxy.client().responses.create(model="gpt-4o-mini", input="hi")
        assert first.output_text == DEFAULT_CONTENT
        second = proxy.client().responses.create(
            model="gpt-4o-mini", input="again", previous_response_id=first.id
        )
        assert second.output_text == DEFAULT_CONTENT
        paths = [r.path for r in chat_only.requests]
        # one probe answered 404, then chat completions only
        assert paths == ["/v1/responses", "/v1/chat/completions", "/v1/chat/completions"]


def test_return_memory_context(proxy: Proxy, upstream: FakeUpstream) -> None:
    memory_context_answer(proxy)
    assert [r.path for r in upstream.requests] == ["/v1/responses"] * 2  # relayed, not bridged
