"""The test harness itself: FakeUpstream, ServerThread and the OpenAI schema validators."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.conftest import wait_until
from tests.fakes.schema import (
    SchemaError,
    validate_chunk,
    validate_error,
    validate_request,
    validate_response,
)
from tests.fakes.server import ServerStartError, ServerThread, free_port
from tests.fakes.upstream import (
    DEFAULT_CONTENT,
    FakeUpstream,
    chat_chunks,
    chat_completion,
    chunk,
    close_reply,
    embedding_vector,
    error_body,
    error_reply,
    hang_reply,
    json_reply,
    raw_reply,
    sse_reply,
    tool_call,
    tool_call_delta,
    usage_chunk,
)

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


@pytest.fixture
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


def parse_sse(text: str) -> list[Any]:
    """The data payloads of an SSE body ("[DONE]" kept as a string)."""
    out: list[Any] = []
    for frame in text.split("\n\n"):
        if frame.startswith("data: "):
            data = frame[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


# ---- schema -----------------------------------------------------------------------------


def test_builders_validate() -> None:
    validate_response(chat_completion("hi", "m"))
    validate_response(chat_completion(["a", "b"], "m"))
    validate_response(chat_completion(None, "m", tool_calls=[tool_call("f", {"x": 1})]))
    validate_response(chat_completion("x", "m", usage=False, finish_reason="length"))
    for c in chat_chunks(["a", "b"], model="m", n=2, include_usage=True):
        validate_chunk(c)
    calls = [
        tool_call_delta(0, id="call_1", name="f", arguments=""),
        tool_call_delta(0, arguments="{}"),
    ]
    for c in chat_chunks([], model="m", tool_calls=calls):
        validate_chunk(c)
    validate_chunk(chunk({"content": "x"}, model="m", usage=None))
    validate_chunk(usage_chunk(3, 4, model="m"))
    validate_error(error_body("bad", code="x", param="messages"))
    validate_request({"model": "m", "messages": MESSAGES, "stream": True, "user": "u1"})


def test_schema_rejects_invalid_bodies() -> None:
    body = chat_completion("hi", "m")
    del body["choices"][0]["message"]["refusal"]
    with pytest.raises(SchemaError, match="refusal"):
        validate_response(body)
    with pytest.raises(SchemaError):
        validate_chunk({**chunk({}, model="m"), "object": "chat.completion"})
    with pytest.raises(SchemaError):
        validate_error({"error": {"message": "x"}})
    with pytest.raises(SchemaError):
        validate_request({"messages": MESSAGES})  # no model


def test_schema_accepts_nullable_fields() -> None:
    # these are `nullable: true` in the fixture: rejected unless rewritten into anyOf-null
    c = chunk({"content": None}, model="m", usage=None)
    c["choices"][0]["logprobs"] = None
    validate_chunk(c)
    validate_request({"model": "m", "messages": MESSAGES, "stream_options": None})


# ---- FakeUpstream defaults --------------------------------------------------------------


def test_default_chat_is_spec_true(up: FakeUpstream) -> None:
    r = httpx.post(
        f"{up.url}/chat/completions", json={"model": "m-1", "messages": MESSAGES, "n": 2}
    )
    assert r.status_code == 200
    body = validate_response(r.json())
    assert body["model"] == "m-1"
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert body["choices"][0]["message"]["content"] == DEFAULT_CONTENT
    assert up.last.json["n"] == 2
    assert up.last.path == "/v1/chat/completions"
    assert up.last.headers["content-type"] == "application/json"
    up.wait_for(lambda: up.finished == [1])


def test_default_stream_is_spec_true(up: FakeUpstream) -> None:
    req = {
        "model": "m-2",
        "messages": MESSAGES,
        "stream": True,
        "n": 2,
        "stream_options": {"include_usage": True},
    }
    r = httpx.post(f"{up.url}/chat/completions", json=req)
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    for c in chunks:
        validate_chunk(c)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    for index in (0, 1):
        text = "".join(
            ch["choices"][0]["delta"].get("content") or ""
            for ch in chunks
            if ch["choices"] and ch["choices"][0]["index"] == index
        )
        assert text == DEFAULT_CONTENT
    finishes = [ch["choices"][0]["finish_reason"] for ch in chunks if ch["choices"]]
    assert finishes.count("stop") == 2


def test_default_stream_without_usage(up: FakeUpstream) -> None:
    r = httpx.post(
        f"{up.url}/chat/completions", json={"model": "m", "messages": MESSAGES, "stream": True}
    )
    chunks = parse_sse(r.text)[:-1]
    assert all(c["choices"] for c in chunks)
    assert all("usage" not in c for c in chunks)


def test_unknown_route_is_openai_404(up: FakeUpstream) -> None:
    r = httpx.get(f"{up.url}/nope")
    assert r.status_code == 404
    validate_error(r.json())


def test_script_is_fifo_then_default(up: FakeUpstream) -> None:
    up.script(json_reply({"a": 1}), error_reply(429, "slow down", type="rate_limit_error"))
    up.script(lambda req: json_reply({"echo": req.json}))
    up.script(raw_reply("<html>bad gateway</html>", status=502, content_type="text/html"))
    assert up.pending == 4
    with httpx.Client() as client:
        assert client.post(f"{up.url}/x", json={}).json() == {"a": 1}
        r = client.post(f"{up.url}/x", json={})
        assert r.status_code == 429 and validate_error(r.json())["error"]["message"] == "slow down"
        assert client.post(f"{up.url}/x", json={"q": 1}).json() == {"echo": {"q": 1}}
        r = client.get(f"{up.url}/x")
        assert r.status_code == 502 and "bad gateway" in r.text
        r = client.get(f"{up.url}/models")
        assert r.status_code == 200 and r.json()["data"]
    assert [req.id for req in up.requests] == [1, 2, 3, 4, 5]
    up.clear()
    assert up.requests == [] and up.pending == 0


# ---- the real OpenAI SDK against FakeUpstream --------------------------------------------


def sync_client(up: FakeUpstream, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=up.url, api_key="x", max_retries=0, **kw)


def async_client(up: FakeUpstream, **kw: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=up.url, api_key="x", max_retries=0, **kw)


def test_sdk_sync(up: FakeUpstream) -> None:
    client = sync_client(up)
    resp = client.chat.completions.create(model="m", messages=MESSAGES, user="u1")
    assert resp.choices[0].message.content == DEFAULT_CONTENT
    assert resp.usage is not None and resp.usage.total_tokens > 0
    assert up.last.headers["authorization"] == "Bearer x"
    assert up.last.json["user"] == "u1"
    validate_request(up.last.json)

    stream = client.chat.completions.create(
        model="m",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, usages = [], []
    for ev in stream:
        if ev.choices:
            parts.append(ev.choices[0].delta.content or "")
        if ev.usage:
            usages.append(ev.usage)
    assert "".join(parts) == DEFAULT_CONTENT
    assert len(usages) == 1

    assert [m.id for m in client.models.list()] == up.models


async def test_sdk_async(up: FakeUpstream) -> None:
    client = async_client(up)
    resp = await client.chat.completions.create(model="m", messages=MESSAGES, n=3)
    assert [c.index for c in resp.choices] == [0, 1, 2]
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    parts = [ev.choices[0].delta.content or "" async for ev in stream if ev.choices]
    assert "".join(parts) == DEFAULT_CONTENT
    await up.wait_for_async(lambda: len(up.finished) == 2)
    await client.close()


def test_sdk_tool_calls_stream(up: FakeUpstream) -> None:
    calls = [
        tool_call_delta(0, id="call_1", name="get_weather", arguments=""),
        tool_call_delta(0, arguments='{"city": '),
        tool_call_delta(0, arguments='"Paris"}'),
    ]
    up.script(sse_reply(chat_chunks([], model="m", tool_calls=calls)))
    with sync_client(up).chat.completions.stream(model="m", messages=MESSAGES) as stream:
        final = stream.get_final_completion()
    tc = final.choices[0].message.tool_calls
    assert tc is not None and tc[0].function.arguments == '{"city": "Paris"}'
    assert final.choices[0].finish_reason == "tool_calls"


def test_sdk_embeddings(up: FakeUpstream) -> None:
    client = sync_client(up)
    # the SDK asks for base64 by default and decodes it
    res = client.embeddings.create(model="e", input=["a", "b"])
    assert up.last.json["encoding_format"] == "base64"
    assert len(res.data) == 2 and res.data[0].embedding == embedding_vector("a")
    res = client.embeddings.create(model="e", input="a", encoding_format="float", dimensions=4)
    assert res.data[0].embedding == embedding_vector("a", 4)
    r = httpx.post(f"{up.url}/embeddings", json={"input": "a", "encoding_format": "base64"})
    raw = base64.b64decode(r.json()["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == embedding_vector("a")


def test_sdk_error_reply(up: FakeUpstream) -> None:
    up.script(error_reply(400, "bad things", code="bad_thing"))
    with pytest.raises(openai.BadRequestError) as info:
        sync_client(up).chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.code == "bad_thing"
    assert "bad things" in str(info.value)


def test_drop_after_makes_sdk_raise(up: FakeUpstream) -> None:
    up.script(sse_reply(chat_chunks(model="m"), drop_after=2))
    stream = sync_client(up).chat.completions.create(model="m", messages=MESSAGES, stream=True)
    got = []
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        for ev in stream:
            got.append(ev)
    assert len(got) == 2
    up.wait_for(lambda: up.dropped == [1])
    assert up.finished == [] and up.disconnects == []


async def test_drop_after_async(up: FakeUpstream) -> None:
    up.script(sse_reply(chat_chunks(model="m"), drop_after=1))
    stream = await async_client(up).chat.completions.create(
        model="m",
        messages=MESSAGES,
        stream=True,
    )
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        async for _ in stream:
            pass
    await up.wait_for_async(lambda: up.dropped == [1])


def test_close_reply_and_hang_reply(up: FakeUpstream) -> None:
    up.script(close_reply())
    with pytest.raises(openai.APIConnectionError):
        sync_client(up).chat.completions.create(model="m", messages=MESSAGES)
    up.script(hang_reply(30))
    with pytest.raises(openai.APITimeoutError):
        sync_client(up, timeout=0.3).chat.completions.create(model="m", messages=MESSAGES)
    # the client hung up on the hanging handler: that is a disconnect
    up.wait_for(lambda: up.dropped == [1] and up.disconnects == [2])


def test_hang_then_reply(up: FakeUpstream) -> None:
    up.script(hang_reply(0.05, then=json_reply(chat_completion("late", "m"))))
    resp = sync_client(up).chat.completions.create(model="m", messages=MESSAGES)
    assert resp.choices[0].message.content == "late"


def test_client_disconnect_is_recorded(up: FakeUpstream) -> None:
    up.script(sse_reply(chat_chunks([f"w{i} " for i in range(200)], model="m"), delay_between=0.02))
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    with httpx.Client() as client:
        with client.stream("POST", f"{up.url}/chat/completions", json=body) as r:
            lines = r.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            validate_chunk(json.loads(first[len("data: ") :]))
        # leaving the block closes the response; closing the client drops the connection
    up.wait_for(lambda: up.disconnects == [1], timeout=10)
    assert up.finished == []


async def test_client_disconnect_is_recorded_async(up: FakeUpstream) -> None:
    up.script(sse_reply(chat_chunks([f"w{i} " for i in range(200)], model="m"), delay_between=0.02))
    stream = await async_client(up).chat.completions.create(
        model="m", messages=MESSAGES, stream=True
    )
    async for ev in stream:
        assert ev.choices
        break
    await stream.close()
    await up.wait_for_async(lambda: up.disconnects == [1], timeout=10)


def test_wait_for_times_out_with_state(up: FakeUpstream) -> None:
    with pytest.raises(TimeoutError, match="requests="):
        up.wait_for(lambda: len(up.requests) > 0, timeout=0.05)


# ---- ServerThread ------------------------------------------------------------------------


def test_server_thread_serves_starlette_app() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    async def hello(request: Request) -> JSONResponse:
        return JSONResponse({"hello": request.query_params.get("name", "world")})

    app = Starlette(routes=[Route("/hello", hello)], lifespan=lifespan)
    with ServerThread(app) as srv:
        assert srv.url == f"http://127.0.0.1:{srv.port}"
        assert events == ["startup"]
        assert httpx.get(f"{srv.url}/hello", params={"name": "x"}).json() == {"hello": "x"}
    assert events == ["startup", "shutdown"]


def test_server_thread_surfaces_startup_failure() -> None:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        raise ValueError("no config")
        yield

    with pytest.raises(ServerStartError, match="no config") as info:
        with ServerThread(Starlette(lifespan=lifespan)):
            pass
    assert isinstance(info.value.__cause__, ValueError)


def _slow_app(events: list[str], seconds: float) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        events.append("shutdown")

    async def slow(request: Request) -> JSONResponse:
        events.append("request")
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        events.append("answered")
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/slow", slow)], lifespan=lifespan)


def _get_in_background(url: str) -> tuple[threading.Thread, list[Any]]:
    got: list[Any] = []

    def get() -> None:
        try:
            got.append(httpx.get(url, timeout=10).status_code)
        except httpx.HTTPError as exc:
            got.append(type(exc).__name__)

    thread = threading.Thread(target=get)
    thread.start()
    return thread, got


def test_server_thread_stop_lets_a_request_in_flight_finish_then_shuts_down() -> None:
    events: list[str] = []
    srv = ServerThread(_slow_app(events, 0.3)).start()
    thread, got = _get_in_background(srv.url + "/slow")
    wait_until(lambda: "request" in events, "the request to reach the app", timeout=10)
    srv.stop()
    thread.join()
    assert got == [200]
    assert events == ["request", "answered", "shutdown"]
    with pytest.raises(httpx.ConnectError):
        httpx.get(srv.url + "/slow")


def test_server_thread_stop_cancels_what_outlasts_the_graceful_timeout() -> None:
    events: list[str] = []
    srv = ServerThread(_slow_app(events, 30), graceful_timeout=1).start()
    thread, got = _get_in_background(srv.url + "/slow")
    wait_until(lambda: "request" in events, "the request to reach the app", timeout=10)
    srv.stop()
    thread.join()
    assert events == ["request", "cancelled", "shutdown"]
    assert got and got[0] != 200


def test_free_port() -> None:
    assert 0 < free_port() < 65536
