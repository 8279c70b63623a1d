"""Chat completions: route to the upstream, relay the answer (JSON or SSE) in OpenAI's shape."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from proxy.errors import ProxyError
from proxy.llm.passthrough import Passthrough
from proxy.llm.router import Route, UpstreamRouter
from proxy.models import Account, Features, Scope
from proxy.schemas.openai import ChatRequest
from proxy.services.account_config import AccountConfigService
from proxy.services.memory import MemoryContext, MemoryService, inject

log = logging.getLogger("profilo.chat")

DONE = b"data: [DONE]\n\n"


class LiteLLMChatLike(Protocol):
    async def complete(self, body: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]: ...

    def stream(
        self, body: dict[str, Any], params: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]: ...


@dataclass(slots=True)
class ChatOutcome:
    """Either a JSON body or an SSE byte stream, plus headers for the client."""

    json: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def sse_error(error: ProxyError) -> bytes:
    return b"event: error\ndata: " + orjson.dumps(error.envelope()) + b"\n\n"


def sse_data(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def chat_scope(account: Account, chat: ChatRequest, header_collection: str | None) -> Scope:
    """``collection_id`` (body, or inside ``features``) > ``X-Collection-Id`` > OpenAI ``user``;
    none of them: the account-wide profile."""
    return Scope(account.id, chat.collection_id or header_collection or chat.user)


def _header_safe(text: str) -> str:
    return re.sub(r"[^\x20-\x7e]", " ", text)[:200]


class ChatService:
    def __init__(
        self,
        router: UpstreamRouter,
        passthrough: Passthrough,
        litellm_chat: Callable[[], LiteLLMChatLike],
        memory: MemoryService,
        account_config: AccountConfigService,
        memory_timeout: float,
    ) -> None:
        self._router = router
        self._passthrough = passthrough
        self._litellm_chat = litellm_chat  # built on first use: importing litellm costs seconds
        self._memory = memory
        self._account_config = account_config
        self._memory_timeout = memory_timeout

    def features(self, account: Account, chat: ChatRequest) -> Features:
        """The account's default features, overridden by what the request set."""
        defaults = self._account_config.get(account.id).features
        merged = {"memory": defaults.memory, "user_profile": defaults.user_profile} | chat.features
        return Features(**merged)

    async def _remember(
        self, scope: Scope, features: Features, chat: ChatRequest, headers: dict[str, str]
    ) -> MemoryContext | None:
        """Build the memory block; on any failure answer without memory (fail open)."""
        try:
            ctx = await asyncio.wait_for(
                asyncio.to_thread(
                    self._memory.build, scope, features, chat.body["messages"], chat.model
                ),
                self._memory_timeout,
            )
        except Exception as exc:
            reason = (
                exc.message if isinstance(exc, ProxyError) else (str(exc) or type(exc).__name__)
            )
            if isinstance(exc, TimeoutError):
                reason = f"memory lookup exceeded {self._memory_timeout}s"
            log.warning("memory skipped (fail open): %s", reason)
            headers["X-Profilo-Memory-Facts"] = "0"
            headers["X-Profilo-Memory-Error"] = _header_safe(reason)
            return None
        headers["X-Profilo-Memory-Facts"] = str(len(ctx.chosen))
        headers["X-Profilo-Memory-Tokens"] = str(ctx.tokens)
        return ctx

    async def complete(
        self, chat: ChatRequest, account: Account, header_collection: str | None = None
    ) -> ChatOutcome:
        headers: dict[str, str] = {}
        features = self.features(account, chat)
        ctx: MemoryContext | None = None
        if features.any:
            scope = chat_scope(account, chat, header_collection)
            ctx = await self._remember(scope, features, chat, headers)
            if ctx is not None and ctx.block:
                chat.body = {**chat.body, "messages": inject(chat.body["messages"], ctx.block)}
        outcome = await self._forward(chat)
        outcome.headers.update(headers)
        if ctx is not None and features.return_memory_context and outcome.json is not None:
            answer = orjson.loads(outcome.json)
            if isinstance(answer, dict):
                answer["memory_context"] = ctx.as_json()
                outcome.json = orjson.dumps(answer)
        return outcome

    async def _forward(self, chat: ChatRequest) -> ChatOutcome:
        route = self._router.resolve(chat.model)
        body = chat.body
        if route.model != chat.model:
            body = {**body, "model": route.model}
        if route.kind == "litellm":
            return await self._via_litellm(route, chat, body)
        url = f"{route.api_base}/chat/completions"
        payload = orjson.dumps(body)
        if not chat.stream:
            reply = await self._passthrough.request("POST", url, route.api_key, payload)
            return ChatOutcome(json=reply.body)
        cm = self._passthrough.stream(url, route.api_key, payload)
        events = await cm.__aenter__()  # errors before the stream starts: a normal error reply

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for event in events:
                    yield event
            except ProxyError as exc:
                yield sse_error(exc)
            finally:
                await cm.__aexit__(None, None, None)

        return ChatOutcome(stream=relay())

    async def _via_litellm(
        self, route: Route, chat: ChatRequest, body: dict[str, Any]
    ) -> ChatOutcome:
        client = self._litellm_chat()
        request = {**body, "model": chat.model}
        if not chat.stream:
            return ChatOutcome(
                json=orjson.dumps(await client.complete(request, route.litellm_params))
            )
        chunks = client.stream(request, route.litellm_params)
        first = await anext(chunks, None)  # errors before the first chunk: a normal error reply

        async def relay() -> AsyncIterator[bytes]:
            try:
                if first is not None:
                    yield sse_data(first)
                async for chunk in chunks:
                    yield sse_data(chunk)
                yield DONE
            except ProxyError as exc:
                yield sse_error(exc)
            finally:
                await chunks.aclose()  # type: ignore[attr-defined]

        return ChatOutcome(stream=relay())
