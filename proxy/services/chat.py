"""Chat completions: route to the upstream, relay the answer (JSON or SSE) in OpenAI's shape."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from proxy.errors import ProxyError, TooManyRequests, Unavailable
from proxy.identity import end_user_id
from proxy.llm.passthrough import Passthrough
from proxy.llm.router import Route, UpstreamRouter
from proxy.metrics import Metrics
from proxy.models import Account, Features, Scope
from proxy.schemas.openai import ChatRequest
from proxy.services.account_config import AccountConfigService
from proxy.services.extraction import LearningQueue, chat_turn
from proxy.services.memory import MemoryContext, MemoryService, inject
from proxy.services.metering import Metering
from proxy.services.sse import DONE, relay, sse_data, sse_error

log = logging.getLogger("profilo.chat")


class LiteLLMChatLike(Protocol):
    async def complete(self, body: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]: ...

    def stream(
        self, body: dict[str, Any], params: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]: ...


RecordStored = Callable[
    [Account, list[dict[str, Any]], dict[str, Any], "ChatOutcome"], Awaitable["ChatOutcome"]
]


@dataclass(slots=True)
class ChatOutcome:
    """Either a JSON body or an SSE byte stream, plus headers for the client."""

    json: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def chat_scope(account: Account, chat: ChatRequest, header: tuple[str, str] | None) -> Scope:
    """``collection_id`` (body, or inside ``features``) > the first configured end-user header
    present (``memory.user_headers``, given as ``(name, value)``) > OpenAI ``user``; none of them:
    the account-wide profile. The one used is checked as an end-user id (a 400 naming it)."""
    if chat.collection_id is not None:  # checked when the body was parsed
        return Scope(account.id, chat.collection_id)
    if header is not None:
        return Scope(account.id, end_user_id(header[1], header[0]))
    if chat.user is not None:
        return Scope(account.id, end_user_id(chat.user, "user"))
    return Scope(account.id)


def metered_user(account: Account, chat: ChatRequest, header: tuple[str, str] | None) -> str | None:
    """The end user a chat is metered for (None: the account; also when the id is invalid
    and memory is off, so the request goes on as before)."""
    try:
        return chat_scope(account, chat, header).collection_id
    except ProxyError:
        return None


def _header_safe(text: str) -> str:
    return re.sub(r"[^\x20-\x7e]", " ", text)[:200]


@dataclass(slots=True)
class PendingTurn:
    """A turn to learn from once the answer is complete."""

    request_id: str
    account: str
    scope: Scope
    messages: list[dict[str, Any]]  # the client's messages (before memory injection)
    model: str
    wait: float
    source: str = "chat"  # the job's source: which endpoint the turn came through
    key_id: str | None = None  # the API key it came with (its extraction jobs/min)


def with_memory_context(answer: bytes, ctx: MemoryContext) -> bytes:
    """A JSON answer with ``memory_context`` (the facts injected) added; not an object: as is."""
    try:
        obj = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return answer
    if not isinstance(obj, dict):
        return answer
    obj["memory_context"] = ctx.as_json()
    return orjson.dumps(obj)


def _choice0_delta(data: bytes) -> str | None:
    """Choice 0's content delta in one SSE ``data:`` payload (None: none or not JSON)."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    choices = obj.get("choices") if isinstance(obj, dict) else None
    for choice in choices if isinstance(choices, list) else ():
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            delta = choice.get("delta")
            content = delta.get("content") if isinstance(delta, dict) else None
            return content if isinstance(content, str) else None
    return None


def _reply_text(body: bytes) -> str | None:
    try:
        answer = orjson.loads(body)
        content = answer["choices"][0]["message"]["content"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


class ChatService:
    def __init__(
        self,
        router: UpstreamRouter,
        passthrough: Passthrough,
        litellm_chat: Callable[[], LiteLLMChatLike],
        memory: MemoryService,
        account_config: AccountConfigService,
        memory_timeout: float,
        learning: LearningQueue | None = None,
        max_message_chars: int = 8000,
        metrics: Metrics | None = None,
        store: RecordStored | None = None,
        metering: Metering | None = None,
    ) -> None:
        self._router = router
        self._passthrough = passthrough
        self._litellm_chat = litellm_chat  # built on first use: importing litellm costs seconds
        self._memory = memory
        self._account_config = account_config
        self._memory_timeout = memory_timeout
        self._learning = learning
        self._max_message_chars = max_message_chars
        self._metrics = metrics or Metrics()
        self._store = store  # keeps `store: true` completions (services/stored_completions)
        self._metering = metering  # usage records and limits (services/metering, limits)

    def features(self, account: Account, chat: ChatRequest) -> Features:
        """The account's default features, overridden by what the request set. ``learning``
        comes out resolved: on with memory or user_profile (or when asked for), unless the
        request or the account config turns it off."""
        defaults = self._account_config.get(account.id).features
        merged = {"memory": defaults.memory, "user_profile": defaults.user_profile} | chat.features
        features = Features(**merged)
        asked = features.learning if features.learning is not None else features.any
        features.learning = bool(asked and defaults.learning and self._learning is not None)
        return features

    async def remember(
        self,
        scope: Scope,
        features: Features,
        messages: list[dict[str, Any]],
        model: str,
        headers: dict[str, str],
    ) -> MemoryContext | None:
        """Build the memory block for ``messages`` (chat-shaped); on any failure answer
        without memory (fail open)."""
        try:
            ctx = await asyncio.wait_for(
                asyncio.to_thread(self._memory.build, scope, features, messages, model),
                self._memory_timeout,
            )
        except Exception as exc:
            reason = (
                exc.message if isinstance(exc, ProxyError) else (str(exc) or type(exc).__name__)
            )
            if isinstance(exc, TimeoutError):
                reason = f"memory lookup exceeded {self._memory_timeout}s"
            log.warning("memory skipped (fail open): %s", reason)
            self._metrics.memory_errors.inc()
            headers["X-Profilo-Memory-Facts"] = "0"
            headers["X-Profilo-Memory-Error"] = _header_safe(reason)
            return None
        headers["X-Profilo-Memory-Facts"] = str(len(ctx.chosen))
        self._metrics.memory_facts.observe(len(ctx.chosen))
        headers["X-Profilo-Memory-Tokens"] = str(ctx.tokens)
        return ctx

    async def complete(
        self,
        chat: ChatRequest,
        account: Account,
        user_header: tuple[str, str] | None = None,
        request_id: str | None = None,
    ) -> ChatOutcome:
        headers: dict[str, str] = {}
        meter = None
        if self._metering is not None:  # over a usage limit: 429 here, before anything else
            user = metered_user(account, chat, user_header)
            meter = await self._metering.start(chat, account, user, headers)
        client_messages = chat.body["messages"]  # as sent (before any memory is injected)
        features = self.features(account, chat)
        ctx: MemoryContext | None = None
        turn: PendingTurn | None = None
        if features.any or features.learning:
            scope = chat_scope(account, chat, user_header)
            if features.learning and await self._admitted(account, headers):
                turn = PendingTurn(
                    request_id or "req_" + uuid.uuid4().hex,
                    account.id,
                    scope,
                    chat.body["messages"],
                    chat.model,
                    chat.wait_for_learning_seconds,
                    key_id=account.key_id,
                )
            if features.any:
                ctx = await self.remember(
                    scope, features, chat.body["messages"], chat.model, headers
                )
            if ctx is not None and ctx.block:
                chat.body = {**chat.body, "messages": inject(chat.body["messages"], ctx.block)}
        outcome = await self._forward(chat)
        if meter is not None and self._metering is not None:
            meter.memory_tokens = ctx.tokens if ctx is not None else 0
            await self._metering.settle(meter, outcome)
        if self._store is not None and chat.body.get("store") is True:
            outcome = await self._store(account, client_messages, chat.body, outcome)
        outcome.headers.update(headers)
        if turn is not None:
            if outcome.json is not None:
                status = await self.learn(turn, _reply_text(outcome.json))
                outcome.headers["X-Profilo-Learning"] = status
            elif outcome.stream is not None:
                outcome.stream = self._learn_after_stream(outcome.stream, turn)
                outcome.headers["X-Profilo-Learning"] = "on"
        if ctx is not None and features.return_memory_context and outcome.json is not None:
            outcome.json = with_memory_context(outcome.json, ctx)
        return outcome

    async def _admitted(self, account: Account, headers: dict[str, str]) -> bool:
        """Whether the account's queue limits take this turn; else the chat goes on and says
        why its learning was skipped."""
        assert self._learning is not None
        try:
            await self._learning.admit(account.id, account.key_id)
        except TooManyRequests as exc:
            headers["X-Profilo-Learning"] = "skipped"
            headers["X-Profilo-Learning-Reason"] = str(exc.code)
            self._metrics.learning_skipped.labels(str(exc.code)).inc()
            return False
        except Unavailable as exc:  # the records unreachable: answer, say it was not queued
            log.error("turn not queued for learning (fail open): %s", exc.message)
            headers["X-Profilo-Learning"] = "error"
            return False
        return True

    async def learn(self, turn: PendingTurn, reply: str | None) -> str:
        """Queue the turn (committed before the answer goes out); wait for it if asked.
        A queue failure never fails the chat (fail open): it is logged and reported."""
        assert self._learning is not None
        messages = chat_turn(turn.messages, reply, self._max_message_chars)
        if messages is None:
            return "skipped"
        payload = {"messages": messages, "source": turn.source, "model": turn.model}
        try:
            await self._learning.enqueue(turn.request_id, turn.scope, payload, turn.key_id)
            if turn.wait <= 0:
                return "queued"
            job = await self._learning.wait(turn.account, turn.request_id, turn.wait)
        except TooManyRequests as exc:  # the limit was reached while this turn was answered
            self._metrics.learning_skipped.labels(str(exc.code)).inc()
            return "skipped"
        except Exception as exc:
            log.error("turn not queued for learning (fail open): %s", exc)
            return "error"
        return job.status if job is not None else "queued"

    async def _learn_after_stream(
        self, events: AsyncIterator[bytes], turn: PendingTurn
    ) -> AsyncIterator[bytes]:
        """Relay the events untouched, reading choice 0's text on the way; once the stream
        ended normally (``[DONE]``), queue the turn before ``[DONE]`` is sent."""
        parts: list[str] = []
        learned = False
        try:
            async for event in events:
                if not learned and b"data:" in event:
                    for line in event.splitlines():
                        if not line.startswith(b"data:"):
                            continue
                        data = line[5:].strip()
                        if data == b"[DONE]":
                            learned = True
                            await self.learn(turn, "".join(parts))
                            break
                        piece = _choice0_delta(data)
                        if piece:
                            parts.append(piece)
                yield event
        finally:  # the client went away: close the upstream stream now, not at collection
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

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
            with self._metrics.upstream("chat", route.kind):
                reply = await self._passthrough.request("POST", url, route.api_key, payload)
            return ChatOutcome(json=reply.body)
        cm = self._passthrough.stream(url, route.api_key, payload)
        with self._metrics.upstream("chat", route.kind):
            events = await cm.__aenter__()  # errors before the stream starts: a normal error reply

        return ChatOutcome(stream=relay(events, cm))

    async def _via_litellm(
        self, route: Route, chat: ChatRequest, body: dict[str, Any]
    ) -> ChatOutcome:
        client = self._litellm_chat()
        request = {**body, "model": chat.model}
        if not chat.stream:
            with self._metrics.upstream("chat", route.kind):
                answer = await client.complete(request, route.litellm_params)
            return ChatOutcome(json=orjson.dumps(answer))
        chunks = client.stream(request, route.litellm_params)
        with self._metrics.upstream("chat", route.kind):
            first = await anext(chunks, None)  # errors before the first chunk: a normal error reply

        async def chunks_as_sse() -> AsyncIterator[bytes]:
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

        return ChatOutcome(stream=chunks_as_sse())
