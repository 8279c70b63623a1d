"""Stored chat completions (``store: true``): kept by the proxy for every completion that went
through it, served by OpenAI's routes (list, retrieve, update metadata, delete, messages).

The proxy serves its own copy, for every provider (litellm routes included) and only to the
account that created it; ``store`` is still forwarded, so OpenAI keeps its copy too. An id
the proxy does not hold is a 404 and never reaches the upstream. A streamed completion is
assembled from its chunks and stored before ``[DONE]`` is relayed; a non-streamed one before
the answer is returned, so a GET right after it finds it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Literal, cast

import orjson

from proxy.errors import BadRequest, NotFound
from proxy.models import Account
from proxy.services.chat import ChatOutcome
from proxy.services.responses_objects import list_page
from proxy.store.completions import CompletionStore, StoredCompletion

log = logging.getLogger("profilo.completions")

MAX_METADATA_KEYS, MAX_KEY_CHARS, MAX_VALUE_CHARS = 16, 64, 512


def check_metadata(value: Any) -> dict[str, str]:
    """OpenAI's metadata rules: at most 16 string pairs, keys <= 64, values <= 512 chars."""
    if not isinstance(value, dict) or len(value) > MAX_METADATA_KEYS:
        raise BadRequest(
            f"'metadata' must be an object of at most {MAX_METADATA_KEYS} string pairs",
            param="metadata",
        )
    for key, item in value.items():
        if not isinstance(item, str) or len(key) > MAX_KEY_CHARS or len(item) > MAX_VALUE_CHARS:
            raise BadRequest(
                f"metadata.{key[:64]}: keys are at most {MAX_KEY_CHARS} characters and values "
                f"strings of at most {MAX_VALUE_CHARS}",
                param=f"metadata.{key[:64]}",
            )
    return cast(dict[str, str], value)


def _request_metadata(body: dict[str, Any]) -> dict[str, str]:
    value = body.get("metadata")
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if isinstance(v, str)}


class StoredCompletions:
    def __init__(self, store: CompletionStore, retention_days: float) -> None:
        self._store = store
        self._retention = retention_days * 86400

    # ---- recording -------------------------------------------------------------------------

    async def record(
        self, account: Account, messages: list[dict[str, Any]], body: dict[str, Any],
        outcome: ChatOutcome,
    ) -> ChatOutcome:  # fmt: skip
        """Store the answer of a ``store: true`` request (the outcome is relayed unchanged)."""
        metadata = _request_metadata(body)
        if outcome.json is not None:
            try:
                completion = orjson.loads(outcome.json)
            except orjson.JSONDecodeError:
                return outcome
            if isinstance(completion, dict) and isinstance(completion.get("id"), str):
                await self._put(account, {**completion, "metadata": metadata}, messages, metadata)
        elif outcome.stream is not None:
            outcome.stream = self._store_after_stream(outcome.stream, account, messages, metadata)
        return outcome

    async def _put(
        self, account: Account, completion: dict[str, Any], messages: list[dict[str, Any]],
        metadata: dict[str, str],
    ) -> None:  # fmt: skip
        try:
            await asyncio.to_thread(self._store.put, account.id, completion, messages, metadata)
        except Exception as exc:  # the answer still goes out; the copy is missing (logged)
            log.error("stored completion not written: %s", type(exc).__name__)

    async def _store_after_stream(
        self, events: AsyncIterator[bytes], account: Account, messages: list[dict[str, Any]],
        metadata: dict[str, str],
    ) -> AsyncIterator[bytes]:  # fmt: skip
        chunks: list[dict[str, Any]] = []
        stored = False
        try:
            async for event in events:
                if not stored and b"data:" in event:
                    for line in event.splitlines():
                        if not line.startswith(b"data:"):
                            continue
                        data = line[5:].strip()
                        if data == b"[DONE]":
                            stored = True
                            if chunks:
                                completion = assemble(chunks) | {"metadata": metadata}
                                await self._put(account, completion, messages, metadata)
                            break
                        try:
                            chunk = orjson.loads(data)
                        except orjson.JSONDecodeError:
                            continue
                        if isinstance(chunk, dict):
                            chunks.append(chunk)
                yield event
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    # ---- the routes ----------------------------------------------------------------------

    async def _get(self, account: Account, completion_id: str) -> StoredCompletion:
        found = await asyncio.to_thread(self._store.get, account.id, completion_id)
        if found is None:
            raise NotFound(
                f"Chat completion with id '{completion_id[:200]}' not found.",
                param="completion_id",
            )
        return found

    async def retrieve(self, account: Account, completion_id: str) -> dict[str, Any]:
        return (await self._get(account, completion_id)).completion

    async def list(self, account: Account, params: dict[str, str]) -> dict[str, Any]:
        page = _page_params(params, default_order="asc")
        metadata = {
            k[len("metadata[") : -1]: v
            for k, v in params.items()
            if k.startswith("metadata[") and k.endswith("]")
        }
        rows, more = await asyncio.to_thread(
            self._store.list, account.id, model=params.get("model"), metadata=metadata,
            after=params.get("after"), limit=page[0], order=page[1],
        )  # fmt: skip
        data = [r.completion for r in rows]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": more,
        }

    async def update(self, account: Account, completion_id: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or "metadata" not in body:
            raise BadRequest("'metadata' is a required property", param="metadata")
        extra = set(body) - {"metadata"}
        if extra:
            raise BadRequest(f"only 'metadata' can be updated, not {sorted(extra)}", param="body")
        metadata = {} if body["metadata"] is None else check_metadata(body["metadata"])
        await self._get(account, completion_id)
        await asyncio.to_thread(self._store.update_metadata, account.id, completion_id, metadata)
        return await self.retrieve(account, completion_id)

    async def delete(self, account: Account, completion_id: str) -> dict[str, Any]:
        await self._get(account, completion_id)
        await asyncio.to_thread(self._store.delete, account.id, completion_id)
        return {"object": "chat.completion.deleted", "id": completion_id, "deleted": True}

    async def messages(
        self, account: Account, completion_id: str, params: dict[str, str]
    ) -> dict[str, Any]:
        stored = await self._get(account, completion_id)
        items = [_store_message(completion_id, i, m) for i, m in enumerate(stored.messages)]
        return list_page(items, {"order": "asc", **params})

    async def purge(self) -> int:
        return await asyncio.to_thread(self._store.purge, time.time() - self._retention)


def _page_params(
    params: dict[str, str], *, default_order: str
) -> tuple[int, Literal["asc", "desc"]]:
    order = params.get("order", default_order)
    if order not in ("asc", "desc"):
        raise BadRequest("'order' must be 'asc' or 'desc'", param="order")
    try:
        limit = int(params.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise BadRequest("'limit' must be an integer from 1 to 100", param="limit")
    return limit, cast(Literal["asc", "desc"], order)


def _store_message(completion_id: str, index: int, message: Any) -> dict[str, Any]:
    """A request message as OpenAI's messages list shows it (text in ``content``; a parts
    array also in ``content_parts``)."""
    message = message if isinstance(message, dict) else {}
    content = message.get("content")
    out: dict[str, Any] = {**message, "id": f"{completion_id}-{index}"}
    if isinstance(content, list):
        texts = [
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        ]
        out["content"] = "\n".join(texts) or None
        out["content_parts"] = content
    else:
        out["content_parts"] = None
    return out


def assemble(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``chat.completion`` a stream of ``chat.completion.chunk`` objects amounts to."""
    first = chunks[0]
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    for chunk in chunks:
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            slot = choices.setdefault(
                int(choice.get("index", 0)),
                {"content": [], "refusal": [], "tools": {}, "finish": None, "role": "assistant"},
            )
            delta = choice.get("delta") or {}
            slot["role"] = delta.get("role") or slot["role"]
            for name in ("content", "refusal"):
                if isinstance(delta.get(name), str):
                    slot[name].append(delta[name])
            for call in delta.get("tool_calls") or ():
                tool = slot["tools"].setdefault(
                    call.get("index", 0), {"id": None, "type": "function",
                                           "function": {"name": "", "arguments": ""}}
                )  # fmt: skip
                tool["id"] = call.get("id") or tool["id"]
                fn = call.get("function") or {}
                tool["function"]["name"] += fn.get("name") or ""
                tool["function"]["arguments"] += fn.get("arguments") or ""
            slot["finish"] = choice.get("finish_reason") or slot["finish"]
    out_choices = []
    for index in sorted(choices):
        slot = choices[index]
        message: dict[str, Any] = {
            "role": slot["role"],
            "content": "".join(slot["content"]) if slot["content"] else None,
            "refusal": "".join(slot["refusal"]) if slot["refusal"] else None,
        }
        if slot["tools"]:
            message["tool_calls"] = [slot["tools"][k] for k in sorted(slot["tools"])]
        out_choices.append(
            {"index": index, "message": message, "finish_reason": slot["finish"], "logprobs": None}
        )
    completion = {
        "id": first.get("id"),
        "object": "chat.completion",
        "created": first.get("created"),
        "model": first.get("model"),
        "choices": out_choices,
        "usage": usage,
    }
    for key in ("system_fingerprint", "service_tier"):
        if first.get(key) is not None:
            completion[key] = first[key]
    return completion
