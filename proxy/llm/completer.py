"""Internal, non-streaming completions through the same routes as chat.

The proxy's own LLM calls (extraction now, the dialectic later) go where a client's chat with
that model would go: the OpenAI-compatible pass-through or litellm. The answer is a parsed
OpenAI ``chat.completion`` dict; failures are ``proxy.errors`` kinds (``UpstreamError`` with
the upstream's status and ``Retry-After``, ``UpstreamTimeout``, ``UpstreamUnreachable``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import orjson

from proxy.errors import UpstreamError, UpstreamTimeout
from proxy.llm.passthrough import Passthrough
from proxy.llm.router import UpstreamRouter
from proxy.llm.usage_fields import ask_for_usage
from proxy.metrics import Metrics


class LiteLLMCompleter(Protocol):
    async def complete(self, body: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]: ...

    def stream(
        self, body: dict[str, Any], params: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]: ...


class UsageSink(Protocol):
    ask_stream_usage: bool

    async def record(self, meter: Any, usage: Any) -> None: ...


class Completer:
    def __init__(
        self,
        router: UpstreamRouter,
        passthrough: Passthrough,
        litellm_chat: Callable[[], LiteLLMCompleter],
        *,
        timeout: float,
        metrics: Metrics | None = None,
        metering: UsageSink | None = None,
    ) -> None:
        self._router = router
        self._passthrough = passthrough
        self._litellm_chat = litellm_chat
        self._timeout = timeout
        self._metrics = metrics or Metrics()
        self._metering = metering  # the proxy's own calls are metered for the scope they serve

    async def complete(self, body: dict[str, Any], meter: Any = None) -> dict[str, Any]:
        """``body`` is an OpenAI chat request (``model`` is the public model name); with a
        ``meter`` (``services.metering.Meter``) its usage is recorded."""
        try:
            with self._metrics.upstream("internal", self._router.resolve(str(body["model"])).kind):
                answer = await asyncio.wait_for(self._complete(body), self._timeout)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"no answer from the model within {self._timeout:g}s") from exc
        if meter is not None and self._metering is not None:
            await self._metering.record(meter, answer.get("usage"))
        return answer

    async def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        model = str(body["model"])
        route = self._router.resolve(model)
        if route.kind == "litellm":
            request = {**body, "model": model, "stream": False}
            return await self._litellm_chat().complete(request, route.litellm_params)
        payload = orjson.dumps({**body, "model": route.model, "stream": False})
        url = f"{route.api_base}/chat/completions"
        reply = await self._passthrough.request("POST", url, route.api_key, payload)
        try:
            answer = orjson.loads(reply.body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(
                f"the upstream's answer is not JSON: {reply.body[:200]!r}", status=502
            ) from exc
        if not isinstance(answer, dict):
            raise UpstreamError("the upstream's answer is not a JSON object", status=502)
        return answer

    async def stream(
        self, body: dict[str, Any], meter: Any = None
    ) -> AsyncIterator[dict[str, Any]]:
        """A streamed completion as parsed ``chat.completion.chunk`` dicts (``[DONE]`` ends
        it). Errors before the first chunk raise from the first ``anext``; a stream that
        breaks later raises ``ProxyError`` there. No overall timeout: the upstream's read
        timeout applies between chunks. With a ``meter``, the upstream's usage chunk is
        asked for, recorded and not yielded."""
        if meter is None or self._metering is None:
            async for chunk in self._stream(body):
                yield chunk
            return
        usage: Any = None
        asked, strip = ask_for_usage(body) if self._metering.ask_stream_usage else (body, False)
        try:
            async for chunk in self._stream(asked):
                if isinstance(chunk.get("usage"), dict):
                    usage = chunk["usage"]
                    if strip and not chunk.get("choices"):
                        continue
                yield chunk
        finally:
            await self._metering.record(meter, usage)

    async def _stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        model = str(body["model"])
        route = self._router.resolve(model)
        if route.kind == "litellm":
            request = {**body, "model": model, "stream": True}
            async for chunk in self._litellm_chat().stream(request, route.litellm_params):
                yield chunk
            return
        payload = orjson.dumps({**body, "model": route.model, "stream": True})
        url = f"{route.api_base}/chat/completions"
        async with self._passthrough.stream(url, route.api_key, payload) as events:
            async for event in events:
                for line in event.splitlines():
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        return
                    yield _chunk(data)


def _chunk(data: bytes) -> dict[str, Any]:
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(f"the upstream sent a chunk that is not JSON: {data[:200]!r}",
                            status=502) from exc  # fmt: skip
    if not isinstance(chunk, dict):
        raise UpstreamError("the upstream sent a chunk that is not a JSON object", status=502)
    error = chunk.get("error")
    if error is not None:
        message = error.get("message") if isinstance(error, dict) else str(error)
        raise UpstreamError(f"the upstream failed mid-stream: {message}", status=502)
    return chunk


def message_content(completion: dict[str, Any]) -> str | None:
    """The text of choice 0's message (None when there is none: refusal, tool call only)."""
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    if not isinstance(message, dict):
        return None
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    return None
