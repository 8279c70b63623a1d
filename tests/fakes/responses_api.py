"""The Responses API, legacy completions and moderations as the fake upstream speaks them.

Bodies and events here are what OpenAI sends (validated by the SDK's typed models in
tests/test_responses.py): a ``response`` object, and for ``stream: true`` SSE frames with
``event:`` lines and ``sequence_number``, ending with ``response.completed`` (no ``[DONE]``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import Any

_ids = itertools.count(1)
CREATED = 1_700_000_000


def _id(prefix: str) -> str:
    return f"{prefix}_fake{next(_ids)}"


def response_body(
    body: dict[str, Any], text: str, *, response_id: str | None = None, status: str = "completed"
) -> dict[str, Any]:
    """A ``response`` whose output is one assistant message with ``text``."""
    words = len(text.split())
    output = []
    if status == "completed":
        output = [
            {
                "id": _id("msg"),
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ]
    return {
        "id": response_id or _id("resp"),
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "metadata": {},
        "model": str(body.get("model") or "gpt-4o-mini"),
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "temperature": 1.0,
        "tool_choice": "auto",
        "tools": body.get("tools") or [],
        "top_p": 1.0,
        "usage": {
            "input_tokens": 10,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": words,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 10 + words,
        },
    }


def _frame(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def response_events(body: dict[str, Any], pieces: Sequence[str]) -> list[bytes]:
    """The SSE frames of a streamed response answering ``pieces``."""
    final = response_body(body, "".join(pieces))
    started = {**final, "status": "in_progress", "output": [], "usage": None}
    item = final["output"][0]
    part = {"type": "output_text", "text": "", "annotations": []}
    seq = itertools.count()
    common = {"item_id": item["id"], "output_index": 0, "content_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**item, "status": "in_progress", "content": []},
        },
        {"type": "response.content_part.added", **common, "part": part},
    ]
    for piece in pieces:
        events.append(
            {"type": "response.output_text.delta", **common, "delta": piece, "logprobs": []}
        )
    text = "".join(pieces)
    events += [
        {"type": "response.output_text.done", **common, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **common, "part": {**part, "text": text}},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": final},
    ]
    return [_frame({**e, "sequence_number": next(seq)}) for e in events]


def completion_body(body: dict[str, Any], text: str) -> dict[str, Any]:
    """A legacy ``text_completion``."""
    return {
        "id": _id("cmpl"),
        "object": "text_completion",
        "created": CREATED,
        "model": str(body.get("model")),
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
    }


def moderation_body(body: dict[str, Any]) -> dict[str, Any]:
    """Every input flagged when it contains 'kill', nothing else."""
    raw = body.get("input")
    inputs = raw if isinstance(raw, list) else [raw]
    categories = ("harassment", "hate", "self-harm", "sexual", "violence")
    results = []
    for text in inputs:
        flagged = "kill" in str(text)
        results.append(
            {
                "flagged": flagged,
                "categories": {c: (c == "violence" and flagged) for c in categories},
                "category_scores": {
                    c: (0.9 if c == "violence" and flagged else 0.01) for c in categories
                },
                "category_applied_input_types": {c: ["text"] for c in categories},
            }
        )
    return {"id": _id("modr"), "model": str(body.get("model")), "results": results}
