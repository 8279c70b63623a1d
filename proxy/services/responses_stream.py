"""The bridge's streaming: chat-completion chunks in, Responses API events out.

``StreamBuilder`` follows OpenAI's event order: ``response.created``, ``response.in_progress``,
per output item ``output_item.added`` (+ ``content_part.added``), its deltas
(``output_text.delta`` / ``function_call_arguments.delta``), then at the end of the answer
every item's ``.done`` events, and the final ``response.completed`` (or
``response.incomplete``). An upstream failure after the stream started ends it with
``response.failed``: the response so far (items ``incomplete``), status ``failed`` and its
``error``. Every event carries a ``sequence_number``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.errors import ProxyError
from proxy.services.responses_objects import (
    call_item,
    message_item,
    new_id,
    response_object,
    usage_of,
)

OnEvent = Callable[[dict[str, Any]], Awaitable[None]]


def sse_event(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


@dataclass(slots=True)
class _Item:
    output_index: int
    item_id: str
    kind: str  # "message" | "function_call"
    text: list[str] = field(default_factory=list)
    call_id: str = ""
    name: str = ""


def _done(item: _Item, status: str) -> dict[str, Any]:
    """The output item ``item`` has become, with ``status``."""
    text = "".join(item.text)
    if item.kind == "message":
        return message_item(text, item_id=item.item_id, status=status)
    return call_item(item.call_id, item.name, text, item_id=item.item_id, status=status)


class StreamBuilder:
    def __init__(self, body: dict[str, Any], response_id: str) -> None:
        self._body = body
        self.response_id = response_id
        self._created = time.time()
        self._seq = 0
        self._items: list[_Item] = []
        self._message: _Item | None = None
        self._calls: dict[int, _Item] = {}
        self._usage: dict[str, Any] | None = None
        self._finish: str | None = None

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def _response(self, status: str, output: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
        return response_object(
            self._body, self.response_id, self._created, status=status, output=output, **kw
        )

    def start(self) -> list[dict[str, Any]]:
        response = self._response("in_progress", [])
        return [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
        ]

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """The events one chat chunk makes (choice 0 only)."""
        events: list[dict[str, Any]] = []
        usage = usage_of(chunk.get("usage"))
        if usage is not None:
            self._usage = usage
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                events += self._text(content)
            for call in delta.get("tool_calls") or []:
                events += self._call(call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return events

    def _text(self, piece: str) -> list[dict[str, Any]]:
        events = []
        item = self._message
        if item is None:
            item = self._message = _Item(len(self._items), new_id("msg"), "message")
            self._items.append(item)
            added = {**message_item("", item_id=item.item_id, status="in_progress"), "content": []}
            events.append(
                self._event(
                    "response.output_item.added", output_index=item.output_index, item=added
                )
            )
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            events.append(
                self._event(
                    "response.content_part.added",
                    item_id=item.item_id,
                    output_index=item.output_index,
                    content_index=0,
                    part=part,
                )
            )
        item.text.append(piece)
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=item.item_id,
                output_index=item.output_index,
                content_index=0,
                delta=piece,
                logprobs=[],
            )
        )
        return events

    def _call(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        events = []
        index = int(call.get("index") or 0)
        fn = call.get("function") or {}
        item = self._calls.get(index)
        if item is None:
            item = _Item(len(self._items), new_id("fc"), "function_call")
            item.call_id = str(call.get("id") or new_id("call"))
            item.name = str(fn.get("name") or "")
            self._calls[index] = item
            self._items.append(item)
            added = call_item(
                item.call_id, item.name, "", item_id=item.item_id, status="in_progress"
            )
            events.append(
                self._event(
                    "response.output_item.added", output_index=item.output_index, item=added
                )
            )
        elif fn.get("name"):
            item.name += str(fn["name"])
        arguments = fn.get("arguments")
        if isinstance(arguments, str) and arguments:
            item.text.append(arguments)
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item.item_id,
                    output_index=item.output_index,
                    delta=arguments,
                )
            )
        return events

    def finish(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Every item's closing events, and the final response (its terminal event is made
        by ``terminal`` once the response is stored)."""
        events: list[dict[str, Any]] = []
        output: list[dict[str, Any]] = []
        for item in self._items:
            text = "".join(item.text)
            done = _done(item, "completed")
            if item.kind == "message":
                part = done["content"][0]
                events.append(
                    self._event(
                        "response.output_text.done",
                        item_id=item.item_id,
                        output_index=item.output_index,
                        content_index=0,
                        text=text,
                        logprobs=[],
                    )
                )
                events.append(
                    self._event(
                        "response.content_part.done",
                        item_id=item.item_id,
                        output_index=item.output_index,
                        content_index=0,
                        part=part,
                    )
                )
            else:
                events.append(
                    self._event(
                        "response.function_call_arguments.done",
                        item_id=item.item_id,
                        output_index=item.output_index,
                        name=item.name,
                        arguments=text,
                    )
                )
            events.append(
                self._event("response.output_item.done", output_index=item.output_index, item=done)
            )
            output.append(done)
        incomplete = "max_output_tokens" if self._finish == "length" else None
        response = self._response(
            "incomplete" if incomplete else "completed",
            output,
            usage=self._usage,
            incomplete=incomplete,
        )
        return events, response

    def failed(self, exc: ProxyError) -> dict[str, Any]:
        """The failed response: what was streamed so far, each item ``incomplete``, and
        OpenAI's ``error``: ``server_error`` (the code OpenAI gives a failure mid-answer; its
        rate limits come before a stream starts, as an HTTP 429) and the message."""
        output = [_done(item, "incomplete") for item in self._items]
        error = {"code": "server_error", "message": exc.message}
        return self._response("failed", output, usage=self._usage, error=error)

    def terminal(self, response: dict[str, Any]) -> dict[str, Any]:
        kind = {"completed": "response.completed", "failed": "response.failed"}.get(
            response["status"], "response.incomplete"
        )
        return self._event(kind, response=response)


async def watch(events: AsyncIterator[bytes], on_event: OnEvent) -> AsyncIterator[bytes]:
    """Relay SSE bytes untouched; each complete event's JSON is shown to ``on_event`` first."""
    async for chunk in events:
        for line in chunk.splitlines():
            if line.startswith(b"data:"):
                try:
                    event = orjson.loads(line[5:].strip())
                except orjson.JSONDecodeError:
                    continue
                if isinstance(event, dict):
                    await on_event(event)
        yield chunk
