"""OpenAI-schema-true chat answers rebuilt from litellm's objects, field by field: litellm's
dumps miss ``logprobs``/``refusal``, carry nulls where OpenAI allows none, and add keys of
their own."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
_FINISH_ALIASES = dict(  # provider words litellm may leave unmapped
    end_turn="stop", stop_sequence="stop", eos="stop", max_tokens="length",
    tool_use="tool_calls", refusal="content_filter", safety="content_filter",
)  # fmt: skip
SERVICE_TIERS = frozenset({"auto", "default", "flex", "scale", "priority", "fast"})
DELTA_ROLES = frozenset({"developer", "system", "user", "assistant", "tool"})
_USAGE_DETAILS = {  # OpenAI's keys only (litellm adds its own)
    "prompt_tokens_details": "audio_tokens cached_tokens text_tokens image_tokens "
    "cache_write_tokens".split(),
    "completion_tokens_details": "accepted_prediction_tokens audio_tokens reasoning_tokens "
    "text_tokens rejected_prediction_tokens".split(),
}


def as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        return dict(obj)
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return dict(dump())
    return dict(vars(obj)) if hasattr(obj, "__dict__") else {}


def _finish(value: Any) -> str | None:
    if value is None or value in FINISH_REASONS:
        return value
    return _FINISH_ALIASES.get(str(value), "stop")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_to_openai(usage: Any) -> dict[str, Any] | None:
    if usage is None:
        return None
    raw = as_dict(usage)
    prompt, completion = _int(raw.get("prompt_tokens")), _int(raw.get("completion_tokens"))
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": _int(raw.get("total_tokens")) or prompt + completion,
    }
    for name, keys in _USAGE_DETAILS.items():
        details = raw.get(name)
        if details is None:
            continue
        found = as_dict(details)
        kept = {k: found[k] for k in keys if isinstance(found.get(k), int)}
        if kept:
            out[name] = kept
    return out


def _logprobs(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    raw = as_dict(value)
    if not isinstance(raw.get("content"), list):
        return None
    refusal = raw.get("refusal")
    return {"content": raw["content"], "refusal": refusal if isinstance(refusal, list) else None}


def _arguments(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value if value is not None else {})


def _function(value: Any, *, partial: bool) -> dict[str, str]:
    fn = as_dict(value or {})
    if partial:  # a stream delta: only the pieces present
        return {k: fn[k] for k in ("name", "arguments") if isinstance(fn.get(k), str)}
    return {"name": str(fn.get("name") or ""), "arguments": _arguments(fn.get("arguments"))}


def _tool_calls(calls: Any, *, partial: bool) -> list[dict[str, Any]]:
    out = []
    for i, call in enumerate(calls or []):
        raw = as_dict(call)
        function = _function(raw.get("function"), partial=partial)
        if not partial:
            out.append(
                {"id": str(raw.get("id") or f"call_{i}"), "type": "function", "function": function}
            )
            continue
        item: dict[str, Any] = {"index": _int(raw.get("index")) if "index" in raw else i}
        if isinstance(raw.get("id"), str) and raw["id"]:  # the first delta of a call
            item.update(id=raw["id"], type="function")
        if function:
            item["function"] = function
        out.append(item)
    return out


def _message(raw: Mapping[str, Any]) -> dict[str, Any]:
    content, refusal = raw.get("content"), raw.get("refusal")
    out: dict[str, Any] = {
        "role": "assistant",
        "content": content if isinstance(content, str) else None,
        "refusal": refusal if isinstance(refusal, str) else None,
    }
    tool_calls = _tool_calls(raw.get("tool_calls"), partial=False)
    if tool_calls:
        out["tool_calls"] = tool_calls
    if raw.get("function_call") is not None:  # deprecated ``functions`` API
        out["function_call"] = _function(raw["function_call"], partial=False)
    annotations = raw.get("annotations")
    if isinstance(annotations, list) and annotations:
        out["annotations"] = [as_dict(a) for a in annotations]
    return out


def _delta(raw: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if raw.get("role") in DELTA_ROLES:
        out["role"] = raw["role"]
    tool_calls = _tool_calls(raw.get("tool_calls"), partial=True)
    content = raw.get("content")
    if isinstance(content, str) and (content or not tool_calls):  # not litellm's "" + tool
        out["content"] = content
    if tool_calls:
        out["tool_calls"] = tool_calls
    if isinstance(raw.get("refusal"), str):
        out["refusal"] = raw["refusal"]
    if raw.get("function_call") is not None:
        out["function_call"] = _function(raw["function_call"], partial=True)
    return out


def _head(raw: Mapping[str, Any], model: str, kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": str(raw.get("id") or "chatcmpl-litellm"),
        "object": kind,
        "created": _int(raw.get("created")),
        "model": model,
    }
    if isinstance(raw.get("system_fingerprint"), str):
        out["system_fingerprint"] = raw["system_fingerprint"]
    if raw.get("service_tier") in SERVICE_TIERS:
        out["service_tier"] = raw["service_tier"]
    return out


def completion_to_openai(raw: Mapping[str, Any], model: str) -> dict[str, Any]:
    """A litellm ``ModelResponse`` (dumped) as an OpenAI ``chat.completion``."""
    out = _head(raw, model, "chat.completion")
    out["choices"] = [
        {
            "index": _int(c.get("index")) or i,
            "message": _message(as_dict(c.get("message") or {})),
            "logprobs": _logprobs(c.get("logprobs")),
            "finish_reason": _finish(c.get("finish_reason")) or "stop",
        }
        for i, c in enumerate(map(as_dict, raw.get("choices") or []))
    ]
    usage = usage_to_openai(raw.get("usage"))
    if usage is not None:
        out["usage"] = usage
    return out


def chunk_to_openai(
    raw: Mapping[str, Any], model: str, *, include_usage: bool = False
) -> dict[str, Any] | None:
    """A litellm ``ModelResponseStream`` (dumped) as an OpenAI ``chat.completion.chunk``;
    None for a chunk that says nothing (litellm's usage-only chunk: the caller keeps its usage
    and sends it last, as OpenAI does)."""
    choices = []
    for i, c in enumerate(map(as_dict, raw.get("choices") or [])):
        delta = _delta(as_dict(c.get("delta") or {}))
        finish = _finish(c.get("finish_reason"))
        if delta or finish is not None:
            logprobs = _logprobs(c.get("logprobs"))
            index = _int(c.get("index")) or i
            choices.append(
                {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            )
    if not choices:
        return None
    out = _head(raw, model, "chat.completion.chunk")
    out["choices"] = choices
    if include_usage:
        out["usage"] = None
    return out
