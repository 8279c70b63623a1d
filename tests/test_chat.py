"""POST /v1/chat/completions through the proxy: forwarding, schema, streaming, errors."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import UPSTREAM_KEY, Proxy
from tests.fakes.schema import validate_chunk, validate_error, validate_response
from tests.fakes.upstream import (
    FakeUpstream,
    chat_chunks,
    chat_completion,
    chunk,
    close_reply,
    error_reply,
    hang_reply,
    json_reply,
    sse_reply,
    tool_call,
    tool_call_delta,
)

MESSAGES = [{"role": "user", "content": "Hi there"}]


def sse_events(raw: bytes) -> list[tuple[str | None, str]]:
    """(event, data) of every SSE event in a raw body."""
    events = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        event, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        events.append((event, "\n".join(data)))
    return events


def test_every_parameter_is_forwarded_and_proxy_fields_stripped(
    proxy: Proxy, upstream: FakeUpstream
) -> None:
    client = proxy.client()
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "Be brief."}, *MESSAGES],
        tools=tools,  # type: ignore[arg-type]
        tool_choice="auto",
        parallel_tool_calls=False,
        response_format={"type": "json_object"},
        n=2,
        stop=["\n\n"],
        seed=7,
        logprobs=True,
        top_logprobs=2,
        max_completion_tokens=50,
        temperature=0.3,
        user="end-user-1",
        metadata={"app": "tests"},
        extra_body={"features": {"memory": False}, "collection_id": "coll_1", "custom_x": 1},
    )
    sent = upstream.last.json
    assert sent == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "Be brief."}, *MESSAGES],
        "tools": tools,
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "response_format": {"type": "json_object"},
        "n": 2,
        "stop": ["\n\n"],
        "seed": 7,
        "logprobs": True,
        "top_logprobs": 2,
        "max_completion_tokens": 50,
        "temperature": 0.3,
        "user": "end-user-1",
        "metadata": {"app": "tests"},
        "custom_x": 1,
    }
    # the upstream sees the server's provider key, never the client's proxy key
    assert upstream.last.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_non_streaming_response_is_relayed_unchanged_and_validates(
    proxy: Proxy, upstream: FakeUpstream
) -> None:
    body = chat_completion("The answer is 42.", model="gpt-4o-mini", n=2)
    upstream.script(json_reply(body))
    raw = proxy.client().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    )
    assert raw.headers["x-profilo-request-id"].startswith("req_")
    parsed = json.loads(raw.http_response.content)
    assert parsed == body
    validate_response(parsed)
    completion = raw.parse()
    assert [c.message.content for c in completion.choices] == ["The answer is 42."] * 2


def test_tool_calls_round_trip(proxy: Proxy, upstream: FakeUpstream) -> None:
    call = tool_call("get_weather", {"city": "Paris"}, id="call_1")
    upstream.script(
        json_reply(chat_completion(None, tool_calls=[call], finish_reason="tool_calls"))
    )
    out = proxy.client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert out.choices[0].finish_reason == "tool_calls"
    calls = out.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]


def test_stream_chunks_validate_and_done_is_last(proxy: Proxy, upstream: FakeUpstream) -> None:
    with httpx.Client(timeout=10) as http:
        r = http.post(
            proxy.base_url + "/chat/completions",
            json={
                "model": "gpt-4o-mini",
                "messages": MESSAGES,
                "stream": True,
                "n": 2,
                "stream_options": {"include_usage": True},
            },
        )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-profilo-request-id"].startswith("req_")
    events = sse_events(r.content)
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(data) for _, data in events[:-1]]
    for c in chunks:
        validate_chunk(c)
    assert {c["choices"][0]["index"] for c in chunks if c["choices"]} == {0, 1}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert upstream.last.json["stream_options"] == {"include_usage": True}


def test_stream_tool_call_deltas_pass_through(proxy: Proxy, upstream: FakeUpstream) -> None:
    deltas = [
        chunk({"role": "assistant", "content": None}),
        chunk({"tool_calls": [tool_call_delta(0, id="call_9", name="lookup", arguments="")]}),
        chunk({"tool_calls": [tool_call_delta(0, arguments='{"q": "x"}')]}),
        chunk({}, finish_reason="tool_calls"),
    ]
    upstream.script(sse_reply(deltas))
    stream = proxy.client().chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    got = list(stream)
    for c in got:
        validate_chunk(c.model_dump(exclude_unset=True))
    args = "".join(
        tc.function.arguments or ""
        for c in got
        for tc in (c.choices[0].delta.tool_calls or [])
        if tc.function
    )
    assert json.loads(args) == {"q": "x"}
    assert got[-1].choices[0].finish_reason == "tool_calls"


async def test_async_sdk_streams(proxy: Proxy, upstream: FakeUpstream) -> None:
    client = proxy.async_client()
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,  # type: ignore[arg-type]
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Hello from fake upstream"
    await client.close()


def test_streaming_is_not_buffered(proxy: Proxy, upstream: FakeUpstream) -> None:
    """The first chunk reaches the client while the upstream has not sent its last one."""
    upstream.script(sse_reply(chat_chunks(["a", "b", "c", "d"]), delay_between=1.5))
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST",
            proxy.base_url + "/chat/completions",
            json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True},
        ) as r,
    ):
        first = next(r.iter_lines())
        assert first.startswith("data: ")
        rid = upstream.last.id
        assert rid not in upstream.finished  # the upstream is still streaming


def test_client_disconnect_cancels_upstream(proxy: Proxy, upstream: FakeUpstream) -> None:
    upstream.script(sse_reply(chat_chunks([f"w{i} " for i in range(200)]), delay_between=0.05))
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST",
            proxy.base_url + "/chat/completions",
            json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True},
        ) as r,
    ):
        next(r.iter_lines())
        rid = upstream.last.id
    upstream.wait_for(lambda: rid in upstream.disconnects, timeout=10)
    assert rid not in upstream.finished


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b"", None),
        (json.dumps({"messages": MESSAGES}).encode(), "model"),
        (json.dumps({"model": "m"}).encode(), "messages"),
        (json.dumps({"model": 5, "messages": MESSAGES}).encode(), "model"),
        (json.dumps({"model": "m", "messages": "hi"}).encode(), "messages"),
        (json.dumps({"model": "m", "messages": [{"content": "x"}]}).encode(), "messages[0].role"),
        (json.dumps({"model": "m", "messages": MESSAGES, "features": [1]}).encode(), "features"),
        (json.dumps({"model": "m", "messages": MESSAGES, "stream": "yes"}).encode(), "stream"),
        (
            json.dumps({"model": "m", "messages": MESSAGES, "collection_id": 3}).encode(),
            "collection_id",
        ),
    ],
)
def test_bad_input_is_400_and_never_reaches_upstream(
    proxy: Proxy, upstream: FakeUpstream, body: bytes, param: str | None
) -> None:
    r = httpx.post(
        proxy.base_url + "/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400, r.text
    validate_error(r.json())
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert r.json()["error"]["param"] == param
    assert r.headers["x-profilo-request-id"].startswith("req_")
    assert upstream.chat_requests() == []


def test_unknown_route_and_method(proxy: Proxy) -> None:
    r = httpx.get(proxy.url + "/v1/nothing-here")
    assert r.status_code == 404
    validate_error(r.json())
    r = httpx.put(proxy.base_url + "/chat/completions")
    assert r.status_code == 405
    validate_error(r.json())


def test_body_over_the_limit_is_413(make_proxy: Any, upstream: FakeUpstream) -> None:
    proxy = make_proxy(max_body_bytes=4096)
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * 10_000}]}
    r = httpx.post(proxy.base_url + "/chat/completions", json=big)
    assert r.status_code == 413
    validate_error(r.json())

    def chunks() -> Any:  # no content-length: counted while read
        data = json.dumps(big).encode()
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    r = httpx.post(proxy.base_url + "/chat/completions", content=chunks())
    assert r.status_code == 413
    assert upstream.chat_requests() == []


@pytest.mark.parametrize(
    ("status", "etype", "exc"),
    [
        (400, "invalid_request_error", openai.BadRequestError),
        (401, "invalid_request_error", openai.AuthenticationError),
        (404, "invalid_request_error", openai.NotFoundError),
        (429, "rate_limit_error", openai.RateLimitError),
        (500, "server_error", openai.InternalServerError),
        (503, "server_error", openai.InternalServerError),
    ],
)
def test_upstream_errors_keep_status_and_message(
    proxy: Proxy, upstream: FakeUpstream, status: int, etype: str, exc: type[Exception]
) -> None:
    headers = {"Retry-After": "7"} if status == 429 else None
    upstream.script(error_reply(status, f"upstream says {status}", type=etype, headers=headers))
    with pytest.raises(exc) as info:
        proxy.client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    err: Any = info.value
    assert err.status_code == status
    assert f"upstream says {status}" in err.message
    validate_error(err.response.json())
    if status == 429:
        assert err.response.headers["retry-after"] == "7"


def test_upstream_error_before_a_stream_is_a_normal_error(
    proxy: Proxy, upstream: FakeUpstream
) -> None:
    upstream.script(
        error_reply(429, "slow down", type="rate_limit_error", headers={"Retry-After": "3"})
    )
    with pytest.raises(openai.RateLimitError) as info:
        proxy.client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    assert info.value.response.headers["retry-after"] == "3"


def test_upstream_unreachable_is_502(make_proxy: Any, tmp_path: Any) -> None:
    from tests.fakes.server import free_port

    proxy = make_proxy(upstream={"api_base": f"http://127.0.0.1:{free_port()}/v1"})
    with pytest.raises(openai.APIStatusError) as info:
        proxy.client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert info.value.status_code == 502
    validate_error(info.value.response.json())


def test_upstream_timeout_is_504(make_proxy: Any, upstream: FakeUpstream) -> None:
    proxy = make_proxy(upstream={"api_base": upstream.url, "timeout": 0.5})
    upstream.script(hang_reply(5))
    with pytest.raises(openai.APIStatusError) as info:
        proxy.client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert info.value.status_code == 504
    assert info.value.response.json()["error"]["code"] == "upstream_timeout"


def test_upstream_closing_without_answer_is_502(proxy: Proxy, upstream: FakeUpstream) -> None:
    upstream.script(close_reply())
    with pytest.raises(openai.APIStatusError) as info:
        proxy.client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert info.value.status_code == 502


def test_error_mid_stream_ends_with_an_sse_error_event(
    proxy: Proxy, upstream: FakeUpstream
) -> None:
    upstream.script(sse_reply(chat_chunks(["a", "b", "c", "d", "e"]), drop_after=2))
    r = httpx.post(
        proxy.base_url + "/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True},
        timeout=10,
    )
    events = sse_events(r.content)
    assert len(events) == 3
    for _, data in events[:2]:
        validate_chunk(json.loads(data))
    event, data = events[-1]
    assert event == "error"
    validate_error(json.loads(data))
    # and the SDK surfaces it as an error, after the chunks it got
    upstream.script(sse_reply(chat_chunks(["a", "b", "c", "d", "e"]), drop_after=2))
    stream = proxy.client().chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    got: list[Any] = []
    with pytest.raises(openai.APIError):
        for c in stream:
            got.append(c)
    assert len(got) == 2


def test_models_health_and_readiness(make_proxy: Any) -> None:
    proxy = make_proxy(
        model_list=[
            {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-3-5-sonnet"}},
            {
                "model_name": "local",
                "litellm_params": {"model": "openai/llama3", "api_base": "http://127.0.0.1:9/v1"},
            },
        ]
    )
    models = proxy.client().models.list()
    # the configured names first, then the default upstream's own models (the fake's)
    assert [m.id for m in models.data] == ["claude", "local", "gpt-4o-mini", "gpt-4o"]
    assert all(m.object == "model" for m in models.data)
    assert httpx.get(proxy.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(proxy.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"


def test_configured_openai_compatible_model_is_routed_to_its_api_base(
    make_proxy: Any, upstream: FakeUpstream
) -> None:
    with FakeUpstream() as other:
        proxy = make_proxy(
            model_list=[
                {
                    "model_name": "house-model",
                    "litellm_params": {
                        "model": "openai/llama-3.1-8b",
                        "api_base": other.url,
                        "api_key": "sk-other",
                    },
                }
            ]
        )
        out = proxy.client().chat.completions.create(model="house-model", messages=MESSAGES)
        assert other.last.json["model"] == "llama-3.1-8b"
        assert other.last.headers["authorization"] == "Bearer sk-other"
        assert upstream.chat_requests() == []
        assert out.choices[0].message.content == "Hello from fake upstream"
