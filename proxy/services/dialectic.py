"""The dialectic: plain-language questions about a user, answered from their facts by an LLM,
as a conversation whose earlier turns are part of the next call's context."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from proxy.config import Settings
from proxy.errors import NotFound, ProxyError, UpstreamError
from proxy.llm.completer import Completer, message_content
from proxy.models import Account, Features, Scope
from proxy.prompts import Prompts
from proxy.schemas.dialectic import DialecticRequest
from proxy.services.memory import MemoryContext, MemoryService
from proxy.services.metering import Meter
from proxy.services.sse import DONE, sse_data, sse_error
from proxy.store.sessions import SessionStore, Turn

DEFAULT_MODEL = "gpt-4o-mini"


@dataclass(slots=True)
class Prepared:
    session_id: str
    model: str
    messages: list[dict[str, Any]]
    context: MemoryContext


@dataclass(slots=True)
class Answer:
    text: str
    session_id: str
    model: str
    context: MemoryContext
    usage: dict[str, Any] | None = None


class DialecticService:
    def __init__(
        self,
        memory: MemoryService,
        sessions: SessionStore,
        prompts: Prompts,
        completer: Completer,
        settings: Settings,
    ) -> None:
        self._memory = memory
        self._sessions = sessions
        self._prompts = prompts
        self._completer = completer
        self._max_turns = settings.dialectic.max_history_turns
        self._model = settings.models.dialectic or settings.models.extraction or DEFAULT_MODEL

    def _prepare(self, scope: Scope, req: DialecticRequest) -> Prepared:
        session_id = req.session_id
        history: list[Turn] = []
        if session_id is not None:
            if not self._sessions.exists(scope, session_id):
                raise NotFound(
                    f"no dialectic session {session_id!r} for this user", param="session_id"
                )
            history = self._sessions.turns(scope, session_id, self._max_turns)
        else:
            self._sessions.admit(scope.account)  # a new session: within the account's quota
        model = req.model or self._model
        features = Features(memory=True, user_profile=True)
        question = [{"role": "user", "content": req.text}]
        context = self._memory.build(scope, features, question, model)
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": self._prompts.dialectic(memory=context.block)}
        ]
        for turn in history:
            messages += [
                {"role": "user", "content": turn.question},
                {"role": "assistant", "content": turn.answer},
            ]
        messages += question
        return Prepared(session_id or SessionStore.new_id(), model, messages, context)

    async def ask(
        self, scope: Scope, req: DialecticRequest, *, request_id: str, key_id: str | None = None
    ) -> Answer:
        prepared = await asyncio.to_thread(self._prepare, scope, req)
        completion = await self._completer.complete(
            {"model": prepared.model, "messages": prepared.messages},
            _meter(scope, prepared, key_id),
        )
        text = message_content(completion)
        if text is None:
            raise UpstreamError("the model gave no answer text", status=502)
        await asyncio.to_thread(self._store, scope, prepared, req.text, text, request_id)
        usage = completion.get("usage")
        return Answer(
            text,
            prepared.session_id,
            prepared.model,
            prepared.context,
            usage if isinstance(usage, dict) else None,
        )

    async def ask_stream(
        self, scope: Scope, req: DialecticRequest, *, request_id: str, key_id: str | None = None
    ) -> tuple[Prepared, AsyncIterator[bytes]]:
        """SSE in OpenAI's chunk format, ``[DONE]`` last; the turn is stored once the answer
        is complete (a failed stream stores nothing)."""
        prepared = await asyncio.to_thread(self._prepare, scope, req)
        chunks = self._completer.stream(
            {"model": prepared.model, "messages": prepared.messages},
            _meter(scope, prepared, key_id),
        )
        first = await anext(chunks, None)  # errors before the first chunk: a normal error reply

        async def relay() -> AsyncIterator[bytes]:
            parts: list[str] = []
            try:
                pending = [first] if first is not None else []
                async for chunk in _chain(pending, chunks):
                    for choice in chunk.get("choices") or []:
                        if isinstance(choice, dict) and choice.get("index", 0) == 0:
                            delta = choice.get("delta") or {}
                            if isinstance(delta.get("content"), str):
                                parts.append(delta["content"])
                    yield sse_data(chunk)
                await asyncio.to_thread(
                    self._store, scope, prepared, req.text, "".join(parts), request_id
                )
                yield DONE
            except ProxyError as exc:
                yield sse_error(exc)

        return prepared, relay()

    def _store(
        self, scope: Scope, prepared: Prepared, question: str, answer: str, request_id: str
    ) -> None:
        fact_ids = [c.fact.id for c in prepared.context.chosen]
        self._sessions.append(
            scope, prepared.session_id, Turn(question, answer, fact_ids), request_id=request_id
        )


def _meter(scope: Scope, prepared: Prepared, key_id: str | None) -> Meter:
    return Meter(Account(scope.account, key_id), scope.collection_id, prepared.model,
                 "/v1/profile/dialectic", kind="dialectic",
                 memory_tokens=prepared.context.tokens)  # fmt: skip


async def _chain(
    first: list[dict[str, Any]], rest: AsyncIterator[dict[str, Any]]
) -> AsyncIterator[dict[str, Any]]:
    for item in first:
        yield item
    async for item in rest:
        yield item
