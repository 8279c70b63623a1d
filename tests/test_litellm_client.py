"""The litellm route, replayed offline from hand-written Anthropic Messages API cassettes.

How vcrpy sees litellm's traffic: litellm 1.106.2 sends async calls through its aiohttp
transport (``LiteLLMAiohttpTransport``), which calls ``aiohttp.ClientSession.request`` ->
``ClientSession._request``; vcrpy 9.4.2 patches ``ClientSession._request`` on the class, so the
default transport is intercepted as is (no ``litellm.disable_aiohttp_transport`` needed; checked
by experiment, and every test below asserts the cassette was actually played).

Cassettes (``tests/cassettes``) are matched on method + URI + the ``x-api-key`` /
``anthropic-version`` headers + the JSON request body, so each one also asserts what litellm
sent; ``record_mode="none"``: an unmatched request fails, nothing goes to the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import vcr
from vcr.request import Request

from proxy.errors import ProxyError, UpstreamError, UpstreamTimeout, UpstreamUnreachable
from proxy.llm.litellm_client import LiteLLMChat
from proxy.llm.litellm_errors import map_error
from tests.fakes.schema import validate_chunk, validate_error, validate_response

ROOT = Path(__file__).resolve().parents[1]
CASSETTES = ROOT / "tests" / "cassettes"
PARAMS = {"model": "anthropic/claude-3-5-sonnet-20241022", "api_key": "sk-ant-test"}
PUBLIC = "claude-public"  # the name the client asked for; litellm sees PARAMS["model"]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {
                    "type": "string",
                    "description": "City and state, e.g. San Francisco, CA",
                },
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}
WEATHER_Q = {"role": "user", "content": "What's the weather in San Francisco?"}


def _json_body(r1: Request, r2: Request) -> None:
    assert r1.body is not None and r2.body is not None, "request body missing"
    assert json.loads(r1.body) == json.loads(r2.body), f"body differs: {r1.body!r}"


def _anthropic_headers(r1: Request, r2: Request) -> None:
    for name in ("x-api-key", "anthropic-version"):
        assert r1.headers.get(name) == r2.headers.get(name), f"header {name} differs"


_vcr = vcr.VCR(
    cassette_library_dir=str(CASSETTES),
    record_mode="none",
    match_on=("method", "scheme", "host", "port", "path", "query", "headers_", "json_body"),
)
_vcr.register_matcher("json_body", _json_body)
_vcr.register_matcher("headers_", _anthropic_headers)

pytestmark = [
    # One loop for the module, as in the server: litellm caches clients and a logging worker
    # per loop and warns when the loop changes under it.
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.filterwarnings("ignore:Item 'summary' on TypedDict:UserWarning"),  # litellm
]


@pytest.fixture
def chat() -> LiteLLMChat:
    return LiteLLMChat(timeout=30.0)


@contextlib.contextmanager
def _play(name: str) -> Iterator[Any]:
    """Replay a cassette; on a clean exit, assert every interaction in it was played."""
    with _vcr.use_cassette(name) as cass:
        yield cass
    assert cass.all_played, f"{name}: {cass.play_count} of {len(cass.data)} interactions played"


async def _collect(chunks: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    async for chunk in chunks:
        validate_chunk(chunk)
        out.append(chunk)
    return out


def _text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["delta"].get("content") or "" for ch in chunks for c in ch["choices"])


def _finish(chunks: list[dict[str, Any]]) -> list[str]:
    return [c["finish_reason"] for ch in chunks for c in ch["choices"] if c["finish_reason"]]


# --- non-streaming -------------------------------------------------------------------------

TEXT_BODY = {
    "model": PUBLIC,
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello to Ada."},
    ],
    "temperature": 0.2,
    "max_tokens": 64,
    "user": "u-42",
    "stream": False,
}


async def test_complete_text(chat: LiteLLMChat) -> None:
    with _play("anthropic_text.yaml") as cassette:
        out = await chat.complete(dict(TEXT_BODY), dict(PARAMS))
    assert cassette.play_count == 1
    validate_response(out)
    assert out["object"] == "chat.completion"
    assert out["model"] == PUBLIC  # the client's name, not litellm's
    (choice,) = out["choices"]
    assert choice == {
        "index": 0,
        "message": {"role": "assistant", "content": "Hello, Ada!", "refusal": None},
        "logprobs": None,
        "finish_reason": "stop",
    }
    usage = out["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
        12,
        6,
        18,
    )


async def test_client_cannot_steer_litellm(chat: LiteLLMChat) -> None:
    """Body fields that would steer litellm itself never reach it: the request still goes to
    api.anthropic.com with the configured key and the same body (the cassette checks all three),
    and ``mock_response`` does not short-circuit the call."""
    body = {
        **TEXT_BODY,
        "api_base": "http://attacker.invalid",
        "base_url": "http://attacker.invalid",
        "api_key": "sk-client",
        "mock_response": "pwned",
        "custom_llm_provider": "openai",
    }
    with _play("anthropic_text.yaml") as cassette:
        out = await chat.complete(body, dict(PARAMS))
    assert cassette.play_count == 1
    assert out["choices"][0]["message"]["content"] == "Hello, Ada!"


async def test_complete_tool_use(chat: LiteLLMChat) -> None:
    body = {
        "model": PUBLIC,
        "messages": [WEATHER_Q],
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
        "max_tokens": 256,
    }
    with _play("anthropic_tool_use.yaml") as cassette:
        out = await chat.complete(body, dict(PARAMS))
    assert cassette.play_count == 1
    validate_response(out)
    (choice,) = out["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] == "I'll check the weather in San Francisco."
    (call,) = message["tool_calls"]
    assert call["id"] == "toolu_01A09q90qw90lq917835lq9"
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    args = json.loads(call["function"]["arguments"])
    assert args == {"location": "San Francisco, CA", "unit": "celsius"}
    assert (out["usage"]["prompt_tokens"], out["usage"]["completion_tokens"]) == (384, 92)


async def test_complete_after_tool_result(chat: LiteLLMChat) -> None:
    arguments = json.dumps({"location": "San Francisco, CA", "unit": "celsius"})
    call = {
        "id": "toolu_01A09q90qw90lq917835lq9",
        "type": "function",
        "function": {"name": "get_weather", "arguments": arguments},
    }
    body = {
        "model": PUBLIC,
        "messages": [
            WEATHER_Q,
            {
                "role": "assistant",
                "content": "I'll check the weather in San Francisco.",
                "tool_calls": [call],
            },
            {"role": "tool", "tool_call_id": call["id"], "content": "15 degrees, foggy"},
        ],
        "tools": [WEATHER_TOOL],
        "max_tokens": 256,
    }
    with _play("anthropic_tool_result.yaml") as cassette:
        out = await chat.complete(body, dict(PARAMS))
    assert cassette.play_count == 1
    validate_response(out)
    message = out["choices"][0]["message"]
    assert message["content"] == "It is 15 degrees and foggy in San Francisco."
    assert "tool_calls" not in message


# --- streaming -----------------------------------------------------------------------------

STREAM_BODY = {
    "model": PUBLIC,
    "messages": [{"role": "user", "content": "Say hello."}],
    "max_tokens": 64,
    "stream": True,
}


async def test_stream_text_with_usage(chat: LiteLLMChat) -> None:
    body = {**STREAM_BODY, "stream_options": {"include_usage": True}}
    with _play("anthropic_text_stream.yaml") as cassette:
        chunks = await _collect(chat.stream(body, dict(PARAMS)))
    assert cassette.play_count == 1
    assert _text(chunks) == "Hello world!"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert _finish(chunks) == ["stop"]
    *content, last = chunks
    assert last["choices"] == []
    usage = last["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
        25,
        15,
        40,
    )
    assert all(c["usage"] is None for c in content)  # OpenAI: null on every other chunk
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert {c["model"] for c in chunks} == {PUBLIC}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}


async def test_stream_text_without_usage(chat: LiteLLMChat) -> None:
    with _play("anthropic_text_stream.yaml"):
        chunks = await _collect(chat.stream(dict(STREAM_BODY), dict(PARAMS)))
    assert _text(chunks) == "Hello world!"
    assert all("usage" not in c and c["choices"] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"][0]["delta"] == {}


async def test_stream_tool_use(chat: LiteLLMChat) -> None:
    body = {
        "model": PUBLIC,
        "messages": [WEATHER_Q],
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
        "max_tokens": 256,
        "stream": True,
    }
    with _play("anthropic_tool_use_stream.yaml") as cassette:
        chunks = await _collect(chat.stream(body, dict(PARAMS)))
    assert cassette.play_count == 1
    assert _text(chunks) == "Let me check."
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for part in chunk["choices"][0]["delta"].get("tool_calls", []):
            call = calls.setdefault(part["index"], {"id": "", "name": "", "arguments": ""})
            call["id"] += part.get("id", "")
            call["name"] += part.get("function", {}).get("name", "")
            call["arguments"] += part.get("function", {}).get("arguments", "")
    assert calls == {
        0: {
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "name": "get_weather",
            "arguments": '{"location": "San Francisco, CA"}',
        }
    }
    assert _finish(chunks) == ["tool_calls"]


# --- errors --------------------------------------------------------------------------------


def _assert_rate_limited(err: UpstreamError) -> None:
    assert err.status == 429
    assert err.type == "rate_limit_error"
    assert err.message == "Number of request tokens has exceeded your per-minute rate limit"
    assert err.headers.get("Retry-After") == "17"
    validate_error(err.envelope())


async def test_rate_limit(chat: LiteLLMChat) -> None:
    with _play("anthropic_rate_limit.yaml") as cassette:
        with pytest.raises(UpstreamError) as before:
            await chat.complete({**STREAM_BODY, "stream": False}, dict(PARAMS))
        with pytest.raises(UpstreamError) as streaming:
            await _collect(chat.stream(dict(STREAM_BODY), dict(PARAMS)))
    assert cassette.play_count == 2  # one request each: litellm does not retry by itself
    _assert_rate_limited(before.value)
    _assert_rate_limited(streaming.value)


async def test_error_mid_stream(chat: LiteLLMChat) -> None:
    received: list[dict[str, Any]] = []
    with _play("anthropic_stream_error.yaml"), pytest.raises(UpstreamError) as info:
        async for chunk in chat.stream(dict(STREAM_BODY), dict(PARAMS)):
            validate_chunk(chunk)
            received.append(chunk)
    assert _text(received) == "Hello"  # what came before the error was relayed
    assert info.value.status >= 500
    assert "Overloaded" in info.value.message
    validate_error(info.value.envelope())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_connection_refused_is_unreachable(chat: LiteLLMChat) -> None:
    params = {**PARAMS, "api_base": f"http://127.0.0.1:{_free_port()}"}
    with pytest.raises(UpstreamUnreachable):
        await chat.complete({**STREAM_BODY, "stream": False}, params)
    with pytest.raises(UpstreamUnreachable):
        await _collect(chat.stream(dict(STREAM_BODY), params))


async def test_silent_upstream_is_timeout() -> None:
    """A loopback server that accepts and never answers; the client's timeout is short."""
    hold = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await hold.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    params = {**PARAMS, "api_base": f"http://127.0.0.1:{port}"}
    try:
        with pytest.raises(UpstreamTimeout):
            await LiteLLMChat(timeout=0.5).complete({**STREAM_BODY, "stream": False}, params)
    finally:
        hold.set()
        server.close()
        await server.wait_closed()


async def test_map_error_kinds() -> None:
    chat = LiteLLMChat()
    litellm = await chat._litellm()
    timeout = litellm.Timeout(message="slow", model="m", llm_provider="anthropic")
    assert isinstance(map_error(timeout), UpstreamTimeout)
    conn = litellm.APIConnectionError(message="refused", model="m", llm_provider="anthropic")
    assert isinstance(map_error(conn), UpstreamUnreachable)
    auth = litellm.AuthenticationError(
        message='AnthropicException - {"type":"error","error":{"type":"authentication_error",'
        '"message":"invalid x-api-key"}}',
        model="m",
        llm_provider="anthropic",
    )
    mapped = map_error(auth)
    assert isinstance(mapped, UpstreamError)
    assert (mapped.status, mapped.type, mapped.message) == (
        401,
        "authentication_error",
        "invalid x-api-key",
    )
    other = map_error(RuntimeError("boom"))
    assert type(other) is ProxyError and other.status == 500


# --- offline -------------------------------------------------------------------------------

_NO_NETWORK_SCRIPT = textwrap.dedent(
    """
    import asyncio, ipaddress, json, os, socket, sys

    calls = []

    def _host(addr):
        return addr[0] if isinstance(addr, tuple) else addr

    def _loopback(host):
        if isinstance(host, (bytes, str)) and str(host) in ("localhost", ""):
            return True
        try:
            return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            return isinstance(host, str) and host.startswith("/")  # AF_UNIX path

    def _wrap(name, fn, method=False):
        def wrapper(*args, **kwargs):
            addr = args[1] if method else args[0]
            calls.append([name, repr(addr), _loopback(_host(addr))])
            return fn(*args, **kwargs)
        return wrapper

    socket.socket.connect = _wrap("connect", socket.socket.connect, True)
    socket.socket.connect_ex = _wrap("connect_ex", socket.socket.connect_ex, True)
    socket.create_connection = _wrap("create_connection", socket.create_connection)
    socket.getaddrinfo = _wrap("getaddrinfo", socket.getaddrinfo)

    import proxy.llm.litellm_client as client
    lazy = "litellm" not in sys.modules
    from proxy.llm.offline import import_litellm, litellm_tokenizers_dir, prepare_offline_env
    prepare_offline_env()
    litellm = import_litellm()
    import tiktoken
    tiktoken.get_encoding("cl100k_base").encode("hello")
    tiktoken.get_encoding("o200k_base").encode("hello")

    from aiohttp import web

    async def messages(request):
        await request.read()
        return web.json_response({
            "id": "msg_1", "type": "message", "role": "assistant",
            "content": [{"type": "text", "text": "hi"}], "model": "claude-3-5-sonnet-20241022",
            "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 1},
        })

    async def call():
        app = web.Application()
        app.router.add_post("/v1/messages", messages)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        params = {"model": "anthropic/claude-3-5-sonnet-20241022", "api_key": "k",
                  "api_base": f"http://127.0.0.1:{port}"}
        body = {"model": "c", "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "f",
                           "parameters": {"type": "object", "properties": {}}}}]}
        out = await client.LiteLLMChat(timeout=30).complete(body, params)
        await asyncio.sleep(0.2)  # let litellm's background logging run
        await runner.cleanup()
        return out["choices"][0]["message"]["content"]

    answer = asyncio.run(call())
    print(json.dumps({
        "lazy": lazy, "calls": calls, "answer": answer,
        "tiktoken_dir": os.environ.get("TIKTOKEN_CACHE_DIR"),
        "bundled": str(litellm_tokenizers_dir()),
    }))
    """
)


async def test_offline_import_and_call_open_no_outbound_socket() -> None:
    """Fresh interpreter, no litellm/tiktoken env set: importing the client is lazy, importing
    litellm and calling it (against a loopback fake Anthropic) connects nowhere else."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LITELLM_", "TIKTOKEN_", "CUSTOM_TIKTOKEN_"))
    }
    env["PYTHONPATH"] = str(ROOT)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _NO_NETWORK_SCRIPT,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=300)
    assert proc.returncode == 0, stderr.decode()[-3000:]
    report = json.loads(stdout.decode().strip().splitlines()[-1])
    assert report["lazy"], "importing proxy.llm.litellm_client imported litellm"
    assert report["answer"] == "hi"
    assert report["tiktoken_dir"] == report["bundled"]
    outbound = [c for c in report["calls"] if not c[2]]
    assert outbound == [], f"non-loopback connections: {outbound}"
    assert any(c[0] == "connect" for c in report["calls"]), "the loopback call was not seen"
