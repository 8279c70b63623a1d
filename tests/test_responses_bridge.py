"""POST /v1/responses through the bridge (a chat-only upstream): translation both ways,
streaming events, stored responses, previous_response_id, function calls, tenancy."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseFailedEvent

from tests.conftest import Proxy
from tests.fakes.upstream import (
    DEFAULT_CONTENT,
    FakeUpstream,
    chat_chunks,
    chat_completion,
    json_reply,
    sse_reply,
    tool_call,
    tool_call_delta,
)
from tests.responses_helpers import accounts, auth, job, memory_context_answer, stream_raw
from tests.test_memory_chat import ALICE, patch

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture
def bridged(make_proxy: Callable[..., Proxy], upstream: FakeUpstream) -> Proxy:
    """The upstream is configured as chat-only: no /responses request is ever made."""
    upstream.responses_api = False
    return make_proxy(upstream={"api_base": upstream.url, "responses_api": False})


def chats(up: FakeUpstream) -> list[dict[str, Any]]:
    assert all(r.path.endswith("/chat/completions") for r in up.requests), up.requests
    return [r.json for r in up.requests]


def test_create_through_the_bridge(bridged: Proxy, upstream: FakeUpstream) -> None:
    out = bridged.client().responses.create(
        model="gpt-4o-mini", input="Say hello", instructions="Be kind.", max_output_tokens=50
    )
    assert out.output_text == DEFAULT_CONTENT and out.status == "completed"
    assert out.id.startswith("resp_") and out.instructions == "Be kind."
    assert out.usage is not None and out.usage.output_tokens > 0
    (sent,) = chats(upstream)
    assert sent["messages"] == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Say hello"},
    ]
    assert sent["max_tokens"] == 50 and not sent.get("stream")


def test_stream_through_the_bridge(bridged: Proxy, upstream: FakeUpstream) -> None:
    _r, events = stream_raw(bridged, {"model": "gpt-4o-mini", "input": "Say hello"})
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.output_text.done" in kinds and "response.output_item.done" in kinds
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == DEFAULT_CONTENT
    final = events[-1]["response"]
    assert final["usage"]["total_tokens"] > 0  # the bridge asked the upstream for usage
    assert upstream.last.json["stream_options"] == {"include_usage": True}
    # stored before response.completed was sent: readable at once, equal to what was streamed
    got = httpx.get(bridged.base_url + f"/responses/{final['id']}", timeout=30)
    assert got.json() == final
    # the SDK's own stream reading
    with bridged.client().responses.stream(model="gpt-4o-mini", input="again") as stream:
        assert stream.get_final_response().output_text == DEFAULT_CONTENT


@pytest.mark.parametrize("stream", [False, True])
def test_two_turns_with_previous_response_id(
    bridged: Proxy, upstream: FakeUpstream, stream: bool
) -> None:
    client = bridged.client()
    upstream.script(
        sse_reply(chat_chunks(["Nice to meet", " you, Ann"]))
        if stream
        else json_reply(chat_completion("Nice to meet you, Ann"))
    )
    first = client.responses.create(
        model="gpt-4o-mini", input="My name is Ann", instructions="Turn one rules", stream=stream
    )
    first_id = _final(first).id if stream else first.id
    second = client.responses.create(
        model="gpt-4o-mini",
        input=[{"role": "user", "content": "What is my name?"}],
        previous_response_id=first_id,
    )
    assert second.previous_response_id == first_id
    assert chats(upstream)[-1]["messages"] == [  # instructions are not carried over
        {"role": "user", "content": "My name is Ann"},
        {"role": "assistant", "content": "Nice to meet you, Ann"},
        {"role": "user", "content": "What is my name?"},
    ]
    items = client.responses.input_items.list(second.id)
    assert [i.type for i in items.data] == ["message"]
    first_items = client.responses.input_items.list(first_id, order="asc")
    assert first_items.data[0].content[0].text == "My name is Ann"  # type: ignore[union-attr]


def _final(stream: Any) -> Response:
    final = None
    for event in stream:
        if event.type == "response.completed":
            final = event.response
    assert final is not None
    return final


@pytest.mark.parametrize("stream", [False, True])
def test_function_call_round_trip(bridged: Proxy, upstream: FakeUpstream, stream: bool) -> None:
    client = bridged.client()
    if stream:
        deltas = [
            tool_call_delta(0, id="call_w1", name="get_weather", arguments=""),
            tool_call_delta(0, arguments='{"city": '),
            tool_call_delta(0, arguments='"Paris"}'),
        ]
        upstream.script(sse_reply(chat_chunks([], tool_calls=deltas, include_usage=True)))
        _r, events = stream_raw(
            bridged, {"model": "gpt-4o-mini", "input": "Weather in Paris?", "tools": [WEATHER_TOOL]}
        )
        done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
        assert done[0]["arguments"] == '{"city": "Paris"}' and done[0]["name"] == "get_weather"
        first = Response.model_validate(events[-1]["response"])
    else:
        call = tool_call("get_weather", {"city": "Paris"}, id="call_w1")
        upstream.script(json_reply(chat_completion(None, tool_calls=[call])))
        first = client.responses.create(
            model="gpt-4o-mini",
            input="Weather in Paris?",
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
        )
    (fc,) = [o for o in first.output if o.type == "function_call"]
    assert fc.call_id == "call_w1" and json.loads(fc.arguments) == {"city": "Paris"}
    assert upstream.last.json["tools"] == [
        {
            "type": "function",
            "function": {k: WEATHER_TOOL[k] for k in ("name", "description", "parameters")},
        }
    ]
    upstream.script(json_reply(chat_completion("It is sunny in Paris")))
    second = client.responses.create(
        model="gpt-4o-mini",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": "call_w1", "output": "sunny, 24C"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )
    assert second.output_text == "It is sunny in Paris"
    messages = upstream.last.json["messages"]
    assert messages[-2]["tool_calls"][0]["id"] == "call_w1"
    assert messages[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert messages[-1] == {"role": "tool", "tool_call_id": "call_w1", "content": "sunny, 24C"}


@pytest.mark.parametrize("stream", [False, True])
def test_memory_in_instructions_through_the_bridge(
    bridged: Proxy, upstream: FakeUpstream, stream: bool
) -> None:
    patch(bridged, ALICE, "alice")
    body = {
        "model": "gpt-4o-mini",
        "input": "Recommend a book for me",
        "instructions": "Be brief.",
        "features": {"user_profile": True},
        "collection_id": "alice",
    }
    if stream:
        r, events = stream_raw(bridged, body)
        response = events[-1]["response"]
    else:
        r = httpx.post(bridged.base_url + "/responses", json=body, timeout=30)
        response = r.json()
    system, user = upstream.last.json["messages"]
    assert system["content"].startswith("Be brief.\n\n<user_memory>")
    assert "Alice Martin" in system["content"]
    assert user == {"role": "user", "content": "Recommend a book for me"}
    assert response["instructions"] == "Be brief."  # the client's own, as sent
    stored = httpx.get(bridged.base_url + f"/responses/{response['id']}/input_items").json()
    assert "Alice" not in json.dumps(stored)  # the memory block is not part of the input
    queued = job(bridged, "dev", r.headers["x-profilo-request-id"])
    assert queued is not None and queued.payload["messages"][-1] == {
        "role": "assistant",
        "content": DEFAULT_CONTENT,
    }
    assert queued.payload["source"] == "responses"


def test_tenancy_of_stored_responses(bridged: Proxy, upstream: FakeUpstream) -> None:
    acme, globex = accounts(bridged, "acme", "globex")
    made = bridged.client(acme).responses.create(model="gpt-4o-mini", input="secret plan")
    seen = len(upstream.requests)
    url = bridged.base_url + f"/responses/{made.id}"
    for method, path in (("GET", ""), ("GET", "/input_items"), ("DELETE", "")):
        r = httpx.request(method, url + path, headers=auth(globex), timeout=30)
        assert r.status_code == 404, (method, path)
        assert r.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError):
        bridged.client(globex).responses.create(
            model="gpt-4o-mini", input="continue", previous_response_id=made.id
        )
    assert len(upstream.requests) == seen  # nothing of globex's reached the upstream
    assert httpx.get(url, headers=auth(acme), timeout=30).json()["id"] == made.id
    r = httpx.delete(url, headers=auth(acme), timeout=30)
    assert r.json() == {"id": made.id, "object": "response", "deleted": True}
    assert httpx.get(url, headers=auth(acme), timeout=30).status_code == 404


def test_store_false_is_not_kept(bridged: Proxy) -> None:
    made = bridged.client().responses.create(model="gpt-4o-mini", input="hi", store=False)
    assert httpx.get(bridged.base_url + f"/responses/{made.id}").status_code == 404


def test_input_items_pagination(bridged: Proxy) -> None:
    items = [{"role": "user", "content": f"line {i}"} for i in range(5)]
    made = bridged.client().responses.create(model="gpt-4o-mini", input=items)  # type: ignore[arg-type]
    url = bridged.base_url + f"/responses/{made.id}/input_items"
    page = httpx.get(url, params={"limit": 2}).json()
    assert [d["content"][0]["text"] for d in page["data"]] == ["line 4", "line 3"]
    assert page["has_more"] is True
    rest = httpx.get(url, params={"limit": 10, "after": page["last_id"]}).json()
    assert [d["content"][0]["text"] for d in rest["data"]] == ["line 2", "line 1", "line 0"]
    assert rest["has_more"] is False
    assert httpx.get(url, params={"order": "sideways"}).status_code == 400


def test_unsupported_tool_types_are_a_clear_400(bridged: Proxy, upstream: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        bridged.client().responses.create(
            model="gpt-4o-mini", input="hi", tools=[{"type": "web_search"}]
        )
    assert info.value.param == "tools[0]"
    assert not upstream.requests


def test_upstream_failure_mid_stream_is_a_failed_response(
    bridged: Proxy, upstream: FakeUpstream
) -> None:
    """As OpenAI: the stream ends with ``response.failed`` (status failed, an ``error``), and
    the failed response is stored; no learning from a failed answer."""
    upstream.script(sse_reply(chat_chunks(["Hello", " there", " friend"]), drop_after=2))
    body = {"model": "gpt-4o-mini", "input": "hi", "features": {"user_profile": True}}
    r, events = stream_raw(bridged, body)
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "response.failed"
    assert "response.completed" not in kinds and "error" not in kinds
    failed = ResponseFailedEvent.model_validate(events[-1]).response
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.code == "server_error" and failed.error.message
    streamed = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert streamed and failed.output_text == streamed  # what was streamed, kept
    assert [o.status for o in failed.output] == ["incomplete"]
    got = httpx.get(bridged.base_url + f"/responses/{failed.id}", timeout=30)
    assert got.json() == events[-1]["response"]
    assert job(bridged, "dev", r.headers["x-profilo-request-id"]) is None
    # the SDK reads it as its typed terminal event
    upstream.script(sse_reply(chat_chunks(["Hello", " there", " friend"]), drop_after=2))
    stream = bridged.client().responses.create(model="gpt-4o-mini", input="hi", stream=True)
    last = list(stream)[-1]
    assert last.type == "response.failed"
    assert last.response.status == "failed" and last.response.error is not None


def test_return_memory_context_through_the_bridge(bridged: Proxy, upstream: FakeUpstream) -> None:
    out, _context = memory_context_answer(bridged)
    assert all(r.path.endswith("/chat/completions") for r in upstream.requests)
    stored = httpx.get(bridged.base_url + f"/responses/{out.id}", timeout=30).json()
    assert "memory_context" not in stored  # an answer's extra, not part of the response
