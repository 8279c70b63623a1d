"""A fake OpenAI-compatible upstream for tests.

``FakeUpstream`` is an aiohttp server on 127.0.0.1 (random free port) running its own event loop
in a daemon thread, so sync tests and async tests (whatever their loop) can both use it::

    with FakeUpstream() as up:
        up.script(sse_reply([chunk({"content": "hi"}, model="m")], drop_after=1))
        ...  # point the proxy's upstream api_base at up.url
        up.wait_for(lambda: len(up.disconnects) == 1, timeout=5)
        assert up.last.json["model"] == "m"

Scripted replies are served FIFO, one per request, whatever the path; with nothing queued each
route has a spec-true default (chat completions stream or not, ``n`` choices, usage chunk
when ``stream_options.include_usage``; ``/v1/models``; ``/v1/embeddings``). Every body the
builders here produce validates against OpenAI's schema (``tests.fakes.schema``).

Note that the OpenAI SDK retries (2 times by default) on connection errors, 408/409/429/5xx:
each retry consumes a scripted reply. Use ``max_retries=0`` in tests that provoke failures.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import math
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeAlias

import pytest
from aiohttp import web

from tests.fakes import responses_api

__all__ = [
    "DEFAULT_CONTENT",
    "DEFAULT_MODEL",
    "DEFAULT_PIECES",
    "CloseReply",
    "FakeUpstream",
    "HangReply",
    "JsonReply",
    "RawReply",
    "RecordedRequest",
    "Reply",
    "ReplyFactory",
    "SSEReply",
    "chat_chunks",
    "chat_completion",
    "chunk",
    "close_reply",
    "embedding_vector",
    "error_body",
    "error_reply",
    "fake_upstream",
    "hang_reply",
    "json_reply",
    "raw_reply",
    "sse_reply",
    "tool_call",
    "tool_call_delta",
    "usage",
    "usage_chunk",
]

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_PIECES: tuple[str, ...] = ("Hello", " from", " fake", " upstream")
DEFAULT_CONTENT = "".join(DEFAULT_PIECES)  # "Hello from fake upstream"
DEFAULT_CREATED = 1_700_000_000
DEFAULT_EMBEDDING_DIM = 8

_ids = itertools.count(1)


def _new_id(prefix: str = "chatcmpl-fake") -> str:
    return f"{prefix}-{next(_ids)}"


# --------------------------------------------------------------------------------------------
# Body builders (all spec-true)
# --------------------------------------------------------------------------------------------


def usage(prompt_tokens: int = 10, completion_tokens: int = 5) -> dict[str, Any]:
    """A ``CompletionUsage`` object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def tool_call(
    name: str, arguments: str | Mapping[str, Any] = "{}", *, id: str | None = None
) -> dict[str, Any]:
    """A full (non-stream) function tool call; ``arguments`` may be a dict (JSON-encoded)."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {
        "id": id or _new_id("call_fake"),
        "type": "function",
        "function": {"name": name, "arguments": args},
    }


def tool_call_delta(
    index: int = 0,
    *,
    id: str | None = None,
    name: str | None = None,
    arguments: str | None = None,
) -> dict[str, Any]:
    """A streamed tool-call fragment (``ChatCompletionMessageToolCallChunk``)."""
    out: dict[str, Any] = {"index": index}
    if id is not None:
        out["id"] = id
        out["type"] = "function"
    fn: dict[str, str] = {}
    if name is not None:
        fn["name"] = name
    if arguments is not None:
        fn["arguments"] = arguments
    if fn:
        out["function"] = fn
    return out


def chat_completion(
    content: str | Sequence[str | None] | None = DEFAULT_CONTENT,
    model: str = DEFAULT_MODEL,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    n: int = 1,
    usage: bool | dict[str, Any] = True,
    finish_reason: str | None = None,
    id: str | None = None,
    created: int = DEFAULT_CREATED,
    refusal: str | None = None,
) -> dict[str, Any]:
    """A ``chat.completion`` body.

    ``content`` may be a list (one entry per choice; ``n`` is then its length). With
    ``tool_calls`` the finish reason defaults to ``"tool_calls"``. ``usage`` is True (computed
    numbers), False (omitted) or an explicit usage dict.
    """
    contents: list[str | None]
    if isinstance(content, str) or content is None:
        contents = [content] * n
    else:
        contents = list(content)
    choices = []
    for index, text in enumerate(contents):
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": refusal}
        if tool_calls:
            message["tool_calls"] = tool_calls
        choices.append(
            {
                "index": index,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
            }
        )
    body: dict[str, Any] = {
        "id": id or _new_id(),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "system_fingerprint": "fp_fake",
    }
    if usage is True:
        completion = sum(_count_tokens(c or "") for c in contents)
        body["usage"] = _usage_fn(10, max(completion, 1))
    elif isinstance(usage, dict):
        body["usage"] = usage
    return body


_usage_fn = usage  # ``usage`` is shadowed by keyword arguments below


def chunk(
    delta: Mapping[str, Any],
    *,
    model: str = DEFAULT_MODEL,
    finish_reason: str | None = None,
    index: int = 0,
    id: str = "chatcmpl-fake-stream",
    created: int = DEFAULT_CREATED,
    usage: dict[str, Any] | bool | None = False,
) -> dict[str, Any]:
    """A ``chat.completion.chunk`` with one choice.

    ``usage=False`` omits the key; ``usage=None`` writes ``"usage": null`` (what OpenAI sends
    on every chunk but the last when ``include_usage`` is on); a dict is written as is.
    """
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [
            {"index": index, "delta": dict(delta), "logprobs": None, "finish_reason": finish_reason}
        ],
    }
    if usage is not False:
        body["usage"] = usage
    return body


def usage_chunk(
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
    *,
    model: str = DEFAULT_MODEL,
    id: str = "chatcmpl-fake-stream",
    created: int = DEFAULT_CREATED,
) -> dict[str, Any]:
    """The final ``include_usage`` chunk: ``choices: []`` plus usage."""
    return {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [],
        "usage": _usage_fn(prompt_tokens, completion_tokens),
    }


def chat_chunks(
    pieces: Sequence[str] = DEFAULT_PIECES,
    *,
    model: str = DEFAULT_MODEL,
    n: int = 1,
    include_usage: bool = False,
    finish_reason: str = "stop",
    tool_calls: Sequence[dict[str, Any]] | None = None,
    id: str | None = None,
    prompt_tokens: int = 10,
) -> list[dict[str, Any]]:
    """A whole spec-true chunk sequence, for ``sse_reply``.

    Per choice: a role chunk (``{"role": "assistant", "content": ""}``), one chunk per piece,
    the ``tool_calls`` deltas if given (see ``tool_call_delta``; finish reason then defaults to
    ``"tool_calls"``), a finish chunk; then, with ``include_usage``, a ``choices: []`` usage
    chunk (and ``"usage": null`` on every other chunk, as OpenAI does).
    """
    cid = id or _new_id()
    u: bool | None = None if include_usage else False
    if tool_calls and finish_reason == "stop":
        finish_reason = "tool_calls"
    out: list[dict[str, Any]] = []
    for i in range(n):
        out.append(
            chunk({"role": "assistant", "content": ""}, model=model, index=i, id=cid, usage=u)
        )
    for piece in pieces:
        for i in range(n):
            out.append(chunk({"content": piece}, model=model, index=i, id=cid, usage=u))
    for tc in tool_calls or ():
        for i in range(n):
            out.append(chunk({"tool_calls": [tc]}, model=model, index=i, id=cid, usage=u))
    for i in range(n):
        out.append(chunk({}, model=model, index=i, id=cid, finish_reason=finish_reason, usage=u))
    if include_usage:
        completion = n * max(sum(_count_tokens(p) for p in pieces), 1)
        out.append(usage_chunk(prompt_tokens, completion, model=model, id=cid))
    return out


def error_body(
    message: str,
    type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    """The OpenAI error envelope ``{"error": {...}}``."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def embedding_vector(text: str, dim: int = DEFAULT_EMBEDDING_DIM) -> list[float]:
    """A deterministic unit vector for ``text`` (what the default embeddings route returns)."""
    values: list[float] = []
    counter = 0
    while len(values) < dim:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        for j in range(0, len(digest), 4):
            (word,) = struct.unpack("<I", digest[j : j + 4])
            values.append(word / 0xFFFFFFFF * 2.0 - 1.0)
        counter += 1
    values = values[:dim]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    # round-trip through float32 so float and base64 encodings agree exactly
    return [struct.unpack("<f", struct.pack("<f", v / norm))[0] for v in values]


def _count_tokens(text: str) -> int:
    return len(text.split())


# --------------------------------------------------------------------------------------------
# Replies
# --------------------------------------------------------------------------------------------


@dataclass
class JsonReply:
    body: Any
    status: int = 200
    headers: dict[str, str] | None = None
    delay: float = 0.0


@dataclass
class RawReply:
    body: bytes
    status: int = 200
    content_type: str = "text/plain"
    headers: dict[str, str] | None = None
    delay: float = 0.0


@dataclass
class SSEReply:
    chunks: list[dict[str, Any] | str | bytes]
    delay_between: float = 0.0
    done: bool = True
    drop_after: int | None = None
    first_delay: float = 0.0
    status: int = 200
    headers: dict[str, str] | None = None


@dataclass
class HangReply:
    seconds: float
    then: Reply | None = None  # served after the hang; None: close the connection


@dataclass
class CloseReply:
    pass


Reply: TypeAlias = JsonReply | RawReply | SSEReply | HangReply | CloseReply
ReplyFactory: TypeAlias = Callable[["RecordedRequest"], Reply]


def json_reply(
    body: Any, status: int = 200, headers: dict[str, str] | None = None, delay: float = 0.0
) -> JsonReply:
    return JsonReply(body=body, status=status, headers=headers, delay=delay)


def raw_reply(
    body: bytes | str,
    status: int = 200,
    content_type: str = "text/plain",
    headers: dict[str, str] | None = None,
    delay: float = 0.0,
) -> RawReply:
    """Arbitrary bytes (e.g. malformed JSON, an HTML 502 page)."""
    data = body.encode() if isinstance(body, str) else body
    return RawReply(data, status=status, content_type=content_type, headers=headers, delay=delay)


def error_reply(
    status: int,
    message: str,
    type: str = "invalid_request_error",
    code: str | None = None,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> JsonReply:
    """An OpenAI error envelope with the given HTTP status."""
    return JsonReply(error_body(message, type, code, param), status=status, headers=headers)


def sse_reply(
    chunks: Sequence[dict[str, Any] | str | bytes],
    delay_between: float = 0.0,
    done: bool = True,
    drop_after: int | None = None,
    first_delay: float = 0.0,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> SSEReply:
    """A ``text/event-stream`` reply.

    dict chunks are written as ``data: <json>\\n\\n``, str chunks as ``data: <str>\\n\\n``,
    bytes verbatim (for comments, ``event:`` lines, broken framing); each write is flushed.
    Then ``data: [DONE]\\n\\n`` if ``done``. ``drop_after=k`` aborts the TCP connection after k
    chunks (no terminating chunk, no [DONE]).
    """
    return SSEReply(
        list(chunks),
        delay_between=delay_between,
        done=done,
        drop_after=drop_after,
        first_delay=first_delay,
        status=status,
        headers=headers,
    )


def hang_reply(seconds: float, then: Reply | None = None) -> HangReply:
    """Send nothing for ``seconds`` (to provoke client timeouts), then serve ``then``, or
    close the connection if ``then`` is None."""
    return HangReply(seconds, then)


def close_reply() -> CloseReply:
    """Close the connection without answering."""
    return CloseReply()


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any  # parsed body, None when it is not JSON
    query: dict[str, str] = field(default_factory=dict)
    id: int = 0  # 1-based, in arrival order; what ``finished``/``disconnects`` list

    @property
    def stream(self) -> bool:
        return isinstance(self.json, dict) and bool(self.json.get("stream"))


class _Dropped(Exception):
    """We aborted the connection on purpose."""


class FakeUpstream:
    """A fake OpenAI-compatible server. See the module docstring."""

    def __init__(
        self,
        *,
        default_content: str | Sequence[str] = DEFAULT_PIECES,
        models: Sequence[str] = (DEFAULT_MODEL, "gpt-4o"),
        embedding_dim: int = DEFAULT_EMBEDDING_DIM,
        default_delay_between: float = 0.0,
        responses_api: bool = True,
    ) -> None:
        self.responses_api = responses_api  # False: a chat-only server (404 on /responses)
        self.default_pieces: list[str] = (
            [default_content] if isinstance(default_content, str) else list(default_content)
        )
        self.models = list(models)
        self.embedding_dim = embedding_dim
        self.default_delay_between = default_delay_between

        self.requests: list[RecordedRequest] = []
        self.finished: list[int] = []  # ids of requests whose reply was fully written
        self.disconnects: list[int] = []  # ids whose client went away mid-reply
        self.dropped: list[int] = []  # ids we aborted on purpose (drop_after / close / hang)

        self._queue: deque[Reply | ReplyFactory] = deque()
        self._cond = threading.Condition()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self.port: int = 0

    # ---- public API ---------------------------------------------------------------------

    @property
    def root(self) -> str:
        """``http://127.0.0.1:PORT`` (no ``/v1``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/v1`` — the api_base / base_url to configure."""
        return f"{self.root}/v1"

    @property
    def last(self) -> RecordedRequest:
        if not self.requests:
            raise AssertionError("FakeUpstream received no request")
        return self.requests[-1]

    def script(self, *replies: Reply | ReplyFactory) -> FakeUpstream:
        """Queue replies (FIFO, one per incoming request). A callable gets the
        RecordedRequest and returns a Reply."""
        with self._lock:
            self._queue.extend(replies)
        return self

    @property
    def pending(self) -> int:
        """Scripted replies not yet consumed."""
        with self._lock:
            return len(self._queue)

    def clear(self) -> None:
        """Forget recorded requests/outcomes and drop queued replies."""
        with self._lock:
            self._queue.clear()
        with self._cond:
            self.requests.clear()
            self.finished.clear()
            self.disconnects.clear()
            self.dropped.clear()
            self._cond.notify_all()

    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Block until ``predicate()`` is true (re-checked on every request / outcome).
        Returns True; raises TimeoutError (with the recorded state) on timeout.

        Don't call it from an event loop that is also running the code under test — use
        ``await up.wait_for_async(...)`` there.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"FakeUpstream.wait_for timed out: {self._state()}")
                self._cond.wait(min(remaining, 0.05))
        return True

    async def wait_for_async(
        self,
        predicate: Callable[[], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 - mirrors wait_for(timeout=)
    ) -> bool:
        """``wait_for`` for async tests: polls without blocking the caller's loop."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"FakeUpstream.wait_for_async timed out: {self._state()}")
            await asyncio.sleep(0.01)
        return True

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> FakeUpstream:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="FakeUpstream", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("FakeUpstream did not start within 10s")
        if self._start_error is not None:
            raise RuntimeError("FakeUpstream failed to start") from self._start_error
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running() and self._runner is not None:
            fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop)
            with contextlib.suppress(Exception):
                fut.result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- internals ----------------------------------------------------------------------

    def _state(self) -> str:
        return (
            f"requests={[(r.id, r.method, r.path) for r in self.requests]} "
            f"finished={self.finished} disconnects={self.disconnects} dropped={self.dropped} "
            f"pending={self.pending}"
        )

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._start_error = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client disconnect cancels the handler (-> ``disconnects``)
        runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None
        )
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        site = web.SockSite(runner, sock)
        await site.start()
        self._runner = runner

    def _record(self, bucket: list[int], rid: int) -> None:
        with self._cond:
            bucket.append(rid)
            self._cond.notify_all()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        parsed: Any | None = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        with self._cond:
            rec = RecordedRequest(
                method=request.method,
                path=request.path,
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
                json=parsed,
                query=dict(request.query),
                id=len(self.requests) + 1,
            )
            self.requests.append(rec)
            self._cond.notify_all()
        with self._lock:
            scripted = self._queue.popleft() if self._queue else None
        reply: Reply
        if scripted is None:
            reply = self._default(rec)
        elif callable(scripted):
            reply = scripted(rec)
        else:
            reply = scripted
        try:
            resp = await self._serve_reply(request, rec, reply)
        except _Dropped:
            self._record(self.dropped, rec.id)
            raise asyncio.CancelledError() from None
        except (ConnectionResetError, asyncio.CancelledError):
            self._record(self.disconnects, rec.id)
            raise
        return resp

    async def _serve_reply(
        self, request: web.Request, rec: RecordedRequest, reply: Reply
    ) -> web.StreamResponse:
        if isinstance(reply, HangReply):
            await asyncio.sleep(reply.seconds)
            if reply.then is None:
                self._abort(request)
            return await self._serve_reply(request, rec, reply.then)
        if isinstance(reply, CloseReply):
            self._abort(request)
        if isinstance(reply, JsonReply | RawReply):
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if isinstance(reply, JsonReply):
                resp = web.json_response(reply.body, status=reply.status, headers=reply.headers)
            else:
                resp = web.Response(
                    body=reply.body,
                    status=reply.status,
                    content_type=reply.content_type,
                    headers=reply.headers,
                )
            await resp.prepare(request)
            await resp.write_eof()
            self._record(self.finished, rec.id)
            return resp
        if isinstance(reply, SSEReply):
            return await self._serve_sse(request, rec, reply)
        raise TypeError(f"not a FakeUpstream reply: {reply!r}")

    def _abort(self, request: web.Request) -> NoReturn:
        transport = request.transport
        if transport is not None:
            transport.abort()
        raise _Dropped()

    async def _serve_sse(
        self, request: web.Request, rec: RecordedRequest, reply: SSEReply
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            status=reply.status,
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                **(reply.headers or {}),
            },
        )
        if reply.first_delay:
            await asyncio.sleep(reply.first_delay)
        await resp.prepare(request)
        for i, item in enumerate(reply.chunks):
            if reply.drop_after is not None and i >= reply.drop_after:
                self._abort(request)
            if i and reply.delay_between:
                await asyncio.sleep(reply.delay_between)
            await resp.write(_sse_frame(item))
        if reply.drop_after is not None and reply.drop_after <= len(reply.chunks):
            self._abort(request)
        if reply.done:
            if reply.delay_between and reply.chunks:
                await asyncio.sleep(reply.delay_between)
            await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        self._record(self.finished, rec.id)
        return resp

    # ---- defaults -----------------------------------------------------------------------

    def _default(self, rec: RecordedRequest) -> Reply:
        path = rec.path.rstrip("/")
        body = rec.json if isinstance(rec.json, dict) else {}
        if rec.method == "POST" and path.endswith("/chat/completions"):
            return self._default_chat(body)
        if rec.method == "GET" and path.endswith("/models"):
            data = [
                {"id": m, "object": "model", "created": DEFAULT_CREATED, "owned_by": "fake"}
                for m in self.models
            ]
            return json_reply({"object": "list", "data": data})
        if rec.method == "GET" and "/models/" in path:
            model = path.rsplit("/models/", 1)[1]
            if model in self.models:
                return json_reply(
                    {"id": model, "object": "model", "created": DEFAULT_CREATED, "owned_by": "fake"}
                )
            return error_reply(404, f"The model '{model}' does not exist", code="model_not_found")
        if rec.method == "POST" and path.endswith("/embeddings"):
            return self._default_embeddings(body)
        if rec.method == "POST" and path.endswith("/responses") and self.responses_api:
            if body.get("stream"):
                events = responses_api.response_events(body, self.default_pieces)
                return SSEReply(list(events), done=False)
            text = "".join(self.default_pieces)
            return json_reply(responses_api.response_body(body, text))
        if rec.method == "POST" and path.endswith("/completions"):  # legacy completions
            return json_reply(responses_api.completion_body(body, "".join(self.default_pieces)))
        if rec.method == "POST" and path.endswith("/moderations"):
            return json_reply(responses_api.moderation_body(body))
        return error_reply(404, f"Unknown request URL: {rec.method} {rec.path}", code="not_found")

    def _default_chat(self, body: dict[str, Any]) -> Reply:
        model = str(body.get("model") or DEFAULT_MODEL)
        n = body.get("n") or 1
        n = n if isinstance(n, int) and n > 0 else 1
        prompt_tokens = max(_count_tokens(json.dumps(body.get("messages", []))), 1)
        if body.get("stream"):
            opts = body.get("stream_options") or {}
            return sse_reply(
                chat_chunks(
                    self.default_pieces,
                    model=model,
                    n=n,
                    include_usage=bool(opts.get("include_usage")),
                    prompt_tokens=prompt_tokens,
                ),
                delay_between=self.default_delay_between,
            )
        content = "".join(self.default_pieces)
        completion = max(_count_tokens(content), 1) * n
        return json_reply(
            chat_completion(content, model, n=n, usage=_usage_fn(prompt_tokens, completion))
        )

    def _default_embeddings(self, body: dict[str, Any]) -> Reply:
        raw = body.get("input", "")
        inputs: list[Any] = raw if isinstance(raw, list) else [raw]
        # a list of ints is one tokenized input, not many
        if inputs and all(isinstance(x, int) for x in inputs):
            inputs = [inputs]
        dim = body.get("dimensions") or self.embedding_dim
        b64 = body.get("encoding_format") == "base64"
        data = []
        tokens = 0
        for i, item in enumerate(inputs):
            text = item if isinstance(item, str) else json.dumps(item)
            tokens += max(_count_tokens(text), 1)
            vec = embedding_vector(text, int(dim))
            emb: list[float] | str = (
                base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode() if b64 else vec
            )
            data.append({"object": "embedding", "index": i, "embedding": emb})
        return json_reply(
            {
                "object": "list",
                "data": data,
                "model": str(body.get("model") or "text-embedding-3-small"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


def _sse_frame(item: dict[str, Any] | str | bytes) -> bytes:
    if isinstance(item, bytes):
        return item
    text = item if isinstance(item, str) else json.dumps(item)
    return f"data: {text}\n\n".encode()


@pytest.fixture
def fake_upstream() -> Iterator[FakeUpstream]:
    """Pytest fixture; import it into a conftest (``from tests.fakes.upstream import
    fake_upstream``) to use it."""
    with FakeUpstream() as up:
        yield up
