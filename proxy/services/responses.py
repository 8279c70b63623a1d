"""POST /v1/responses with memory, and the stored-response routes.

Where a request goes: an OpenAI-compatible route whose upstream serves the Responses API
(``responses_api: true``, the default) gets the request relayed byte for byte, stream or
not; litellm routes, routes configured ``responses_api: false``, and an upstream that answered
404 on ``/responses`` (remembered per api_base) go through the bridge, which answers with chat
completions and stores every response before its ``response.completed`` is sent.

Memory goes into ``instructions`` (merged with the client's own as in chat); ``input`` is
never rewritten. Features, scope and learning are chat's own (``ChatService``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson

from proxy.errors import BadRequest, NotFound, ProxyError, UpstreamError
from proxy.llm.completer import Completer
from proxy.llm.passthrough import Passthrough
from proxy.llm.router import Route, UpstreamRouter
from proxy.llm.urls import segment, upstream_url
from proxy.models import Account
from proxy.schemas.openai import ChatRequest
from proxy.services.chat import (
    ChatOutcome,
    ChatService,
    PendingTurn,
    chat_scope,
    metered_user,
    with_memory_context,
)
from proxy.services.memory import MemoryContext, merge_text
from proxy.services.metering import Meter, Metering
from proxy.services.responses_convert import (
    chat_request,
    items_to_messages,
    new_id,
    normalize_input,
    with_ids,
)
from proxy.services.responses_objects import completion_to_response, list_page, output_text
from proxy.services.responses_stream import StreamBuilder, sse_event, watch
from proxy.services.sse import relay
from proxy.store.responses import ResponseStore, StoredResponse

#: The events that end a Responses stream, each with the response and its usage.
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ResponsesService:
    def __init__(
        self,
        chat: ChatService,
        router: UpstreamRouter,
        passthrough: Passthrough,
        completer: Completer,
        store: ResponseStore,
        metering: Metering | None = None,
    ) -> None:
        self._chat = chat
        self._metering = metering
        self._router = router
        self._passthrough = passthrough
        self._completer = completer
        self._store = store
        self._no_responses_api: set[str] = set()  # api bases that answered 404 on /responses

    async def create(
        self,
        req: ChatRequest,
        account: Account,
        user_header: tuple[str, str] | None = None,
        request_id: str | None = None,
    ) -> ChatOutcome:
        body = req.body
        headers: dict[str, str] = {}
        meter = None
        if self._metering is not None:  # over a usage limit: 429 here, before anything else
            user = metered_user(account, req, user_header)
            meter = await self._metering.admit(account, user, req.model, "/v1/responses", headers)
        items = normalize_input(body.get("input"))
        prev = await self._previous(account, body.get("previous_response_id"))
        instructions: str | None = body.get("instructions")
        features = self._chat.features(account, req)
        turn: PendingTurn | None = None
        ctx: MemoryContext | None = None
        if features.any or features.learning:
            scope = chat_scope(account, req, user_header)
            messages = items_to_messages(items, strict=False)
            if features.learning:
                rid = request_id or "req_" + uuid.uuid4().hex
                wait = req.wait_for_learning_seconds
                turn = PendingTurn(rid, account.id, scope, messages, req.model, wait, "responses")
            if features.any:
                ctx = await self._chat.remember(scope, features, messages, req.model, headers)
                if ctx is not None and ctx.block:
                    instructions = merge_text(instructions, ctx.block)
                    if meter is not None:
                        meter.memory_tokens = ctx.tokens
        route = self._router.resolve(req.model)
        bridge = (
            route.kind == "litellm"
            or not route.responses_api
            or route.api_base in self._no_responses_api
        )
        if prev is not None:
            if prev.kind == "upstream" and bridge:
                raise BadRequest(
                    f"response '{prev.id}' was answered by an upstream with the Responses API; "
                    f"model '{req.model}' cannot continue it",
                    param="previous_response_id",
                )
            bridge = prev.kind == "bridge"
        outcome: ChatOutcome | None = None
        if not bridge:
            try:
                outcome = await self._upstream(route, req, instructions, account, turn, meter)
            except UpstreamError as exc:
                if exc.status not in (404, 405) or exc.code == "model_not_found" or prev:
                    raise
                self._no_responses_api.add(str(route.api_base))
        if outcome is None:
            outcome = await self._bridge(req, instructions, items, account, turn, meter)
        outcome.headers.update(headers)
        if turn is not None:
            outcome.headers.setdefault("X-Profilo-Learning", "on")
        if ctx is not None and features.return_memory_context and outcome.json is not None:
            outcome.json = with_memory_context(outcome.json, ctx)
        return outcome

    async def _previous(self, account: Account, prev_id: str | None) -> StoredResponse | None:
        if prev_id is None:
            return None
        prev = await asyncio.to_thread(self._store.get, account.id, prev_id)
        if prev is None:
            raise NotFound(
                f"Previous response with id '{prev_id}' not found.", param="previous_response_id"
            )
        return prev

    # ---- pass-through ------------------------------------------------------------------

    async def _upstream(
        self,
        route: Route,
        req: ChatRequest,
        instructions: str | None,
        account: Account,
        turn: PendingTurn | None,
        meter: Meter | None,
    ) -> ChatOutcome:
        body = {**req.body, "model": route.model}
        if instructions is not None:
            body["instructions"] = instructions
        url = f"{route.api_base}/responses"
        payload = orjson.dumps(body)
        prev_id = req.body.get("previous_response_id")

        async def record(response: Any) -> None:
            if isinstance(response, dict) and isinstance(response.get("id"), str):
                await asyncio.to_thread(
                    self._store.put,
                    account.id,
                    "upstream",
                    response["id"],
                    req.model,
                    previous_response_id=prev_id,
                )

        if not req.stream:
            reply = await self._passthrough.request("POST", url, route.api_key, payload)
            try:
                response = orjson.loads(reply.body)
            except orjson.JSONDecodeError:
                response = None
            await record(response)
            if meter is not None and self._metering is not None:
                usage = response.get("usage") if isinstance(response, dict) else None
                await self._metering.record(meter, usage)
            outcome = ChatOutcome(json=reply.body)
            if turn is not None and isinstance(response, dict):
                if response.get("status") == "completed":
                    status = await self._chat.learn(turn, output_text(response))
                    outcome.headers["X-Profilo-Learning"] = status
            return outcome

        async def on_event(event: dict[str, Any]) -> None:
            kind = event.get("type")
            if kind == "response.created":
                await record(event.get("response"))
            if kind in TERMINAL and meter is not None and self._metering is not None:
                await self._metering.record(meter, (event.get("response") or {}).get("usage"))
            if kind == "response.completed" and turn is not None:
                await self._chat.learn(turn, output_text(event.get("response") or {}))

        cm = self._passthrough.stream(url, route.api_key, payload)
        events = await cm.__aenter__()  # errors before the stream starts: a normal error reply

        return ChatOutcome(stream=relay(watch(events, on_event), cm))

    # ---- bridge ------------------------------------------------------------------------

    def _history(self, account: str, prev_id: str | None) -> list[dict[str, Any]]:
        if prev_id is None:
            return []
        messages: list[dict[str, Any]] = []
        for stored in self._store.chain(account, prev_id):
            messages += items_to_messages(stored.input_items)
            messages += items_to_messages(stored.response.get("output") or [], "output")
        return messages

    async def _save(
        self,
        account: Account,
        body: dict[str, Any],
        items: list[dict[str, Any]],
        response: dict[str, Any],
    ) -> None:
        if body.get("store") is False:
            return
        await asyncio.to_thread(
            self._store.put,
            account.id,
            "bridge",
            response["id"],
            str(body["model"]),
            previous_response_id=body.get("previous_response_id"),
            input_items=with_ids(items),
            response=response,
        )

    async def _bridge(
        self,
        req: ChatRequest,
        instructions: str | None,
        items: list[dict[str, Any]],
        account: Account,
        turn: PendingTurn | None,
        meter: Meter | None,
    ) -> ChatOutcome:
        body = req.body
        history = await asyncio.to_thread(
            self._history, account.id, body.get("previous_response_id")
        )
        chat_body = chat_request(body, instructions, history)
        if not req.stream:
            completion = await self._completer.complete(chat_body, meter)
            response = completion_to_response(body, new_id("resp"), completion)
            await self._save(account, body, items, response)
            outcome = ChatOutcome(json=orjson.dumps(response))
            if turn is not None and response["status"] == "completed":
                outcome.headers["X-Profilo-Learning"] = await self._chat.learn(
                    turn, output_text(response)
                )
            return outcome
        builder = StreamBuilder(body, new_id("resp"))
        chunks = self._completer.stream(chat_body, meter)
        first = await anext(chunks, None)  # errors before the first chunk: a normal error reply

        async def events() -> AsyncIterator[bytes]:
            try:
                for event in builder.start():
                    yield sse_event(event)
                if first is not None:
                    for event in builder.feed(first):
                        yield sse_event(event)
                async for chunk in chunks:
                    for event in builder.feed(chunk):
                        yield sse_event(event)
                closing, response = builder.finish()
                for event in closing:
                    yield sse_event(event)
                await self._save(account, body, items, response)
                if turn is not None and response["status"] == "completed":
                    await self._chat.learn(turn, output_text(response))
                yield sse_event(builder.terminal(response))
            except ProxyError as exc:  # after the stream started: a failed response
                failed = builder.failed(exc)
                await self._save(account, body, items, failed)
                yield sse_event(builder.terminal(failed))
            finally:
                await chunks.aclose()  # type: ignore[attr-defined]

        return ChatOutcome(stream=events())

    # ---- stored responses --------------------------------------------------------------

    async def _stored(self, account: Account, response_id: str) -> StoredResponse:
        stored = await asyncio.to_thread(self._store.get, account.id, response_id)
        if stored is None:
            raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
        return stored

    async def _relay(
        self,
        method: str,
        stored: StoredResponse,
        *sub: str,
        query: dict[str, str] | None = None,
    ) -> bytes:
        route = self._router.resolve(stored.model)
        id_ = segment(stored.id, param="response_id")
        url = upstream_url(route.api_base or "", "responses", id_, *sub, query=query)
        return (await self._passthrough.request(method, url, route.api_key)).body

    async def get(self, account: Account, response_id: str) -> bytes:
        stored = await self._stored(account, response_id)
        if stored.kind == "upstream":
            return await self._relay("GET", stored)
        return orjson.dumps(stored.response)

    async def delete(self, account: Account, response_id: str) -> bytes:
        stored = await self._stored(account, response_id)
        body = orjson.dumps({"id": response_id, "object": "response", "deleted": True})
        if stored.kind == "upstream":
            body = await self._relay("DELETE", stored)
        await asyncio.to_thread(self._store.delete, account.id, response_id)
        return body

    async def input_items(
        self, account: Account, response_id: str, params: dict[str, str]
    ) -> bytes:
        stored = await self._stored(account, response_id)
        if stored.kind == "upstream":
            return await self._relay("GET", stored, "input_items", query=params)
        return orjson.dumps(list_page(stored.input_items, params))
