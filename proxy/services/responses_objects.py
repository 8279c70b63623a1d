"""Responses API objects the bridge builds: output items, usage, the ``response`` object,
a chat completion as a response, the cursor list of ``input_items``."""

from __future__ import annotations

import time
from typing import Any

from proxy.errors import BadRequest
from proxy.services.extraction import text_of
from proxy.services.responses_convert import new_id, parts_text


def message_item(text: str, *, item_id: str | None = None, status: str = "completed") -> dict:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {
        "id": item_id or new_id("msg"),
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [part],
    }


def call_item(
    call_id: str,
    name: str,
    arguments: str,
    *,
    item_id: str | None = None,
    status: str = "completed",
) -> dict[str, Any]:
    return {
        "id": item_id or new_id("fc"),
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def usage_of(usage: Any) -> dict[str, Any] | None:
    if not isinstance(usage, dict):
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    written = (usage.get("prompt_tokens_details") or {}).get("cache_write_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": int(cached), "cache_write_tokens": int(written)},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(reasoning)},
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }


def response_object(
    body: dict[str, Any],
    response_id: str,
    created_at: float,
    *,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None = None,
    incomplete: str | None = None,
    error: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A ``response`` object echoing the request's settings (the client's ``instructions``,
    not the memory block); ``error`` ({code, message}) for a failed one."""
    text: dict[str, Any] = body["text"] if isinstance(body.get("text"), dict) else {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(created_at),
        "status": status,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {},
        "model": body["model"],
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, **text},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation") or "disabled",
        "usage": usage,
        "user": body.get("user"),
    }


def completion_to_response(
    body: dict[str, Any], response_id: str, completion: dict[str, Any]
) -> dict[str, Any]:
    """A non-streamed ``chat.completion`` as a ``response``."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    content = message.get("content")
    text = content if isinstance(content, str) else text_of(content)
    if text:
        output.append(message_item(text))
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        part = {"type": "refusal", "refusal": message["refusal"]}
        output.append({**message_item(""), "content": [part]})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        output.append(
            call_item(str(call.get("id")), str(fn.get("name")), str(fn.get("arguments") or ""))
        )
    incomplete = "max_output_tokens" if choice.get("finish_reason") == "length" else None
    return response_object(
        body,
        response_id,
        time.time(),
        status="incomplete" if incomplete else "completed",
        output=output,
        usage=usage_of(completion.get("usage")),
        incomplete=incomplete,
    )


def output_text(response: dict[str, Any]) -> str:
    """The text of a response's output messages (what learning takes as the reply)."""
    texts = []
    for item in response.get("output") or []:
        if isinstance(item, dict) and item.get("type") == "message":
            texts.append(parts_text(item.get("content")))
    return "".join(texts)


def list_page(items: list[dict[str, Any]], params: dict[str, str]) -> dict[str, Any]:
    """OpenAI's cursor list: ``order`` (default desc), ``after`` (an item id), ``limit``
    (1-100, default 20)."""
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadRequest("'order' must be 'asc' or 'desc'", param="order")
    try:
        limit = int(params.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise BadRequest("'limit' must be an integer from 1 to 100", param="limit")
    ordered = items if order == "asc" else items[::-1]
    after = params.get("after")
    if after is not None:
        ids = [i.get("id") for i in ordered]
        if after not in ids:
            raise BadRequest(f"'after': no item with id '{after}'", param="after")
        ordered = ordered[ids.index(after) + 1 :]
    page = ordered[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(ordered) > limit,
    }
