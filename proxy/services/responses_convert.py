"""Responses API -> chat completions: input items to chat messages, a Responses request to a
chat request (pure functions; the objects built back are in ``responses_objects``, the
streaming events in ``responses_stream``)."""

from __future__ import annotations

import uuid
from typing import Any

from proxy.errors import BadRequest

#: Request fields with a chat-completions counterpart of the same name and meaning.
SAME_FIELDS = ("temperature", "top_p", "parallel_tool_calls", "user", "top_logprobs")
TEXT_PARTS = frozenset({"input_text", "output_text", "text", "summary_text"})


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def parts_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", p.get("refusal", "")))
            for p in content
            if isinstance(p, dict) and (p.get("type") in TEXT_PARTS or p.get("type") == "refusal")
        )
    return ""


def _user_content(content: Any, param: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"'{param}' must be a string or an array", param=param)
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in TEXT_PARTS:
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "input_image" and part.get("image_url"):
            image = {"url": part["image_url"], "detail": part.get("detail") or "auto"}
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise BadRequest(
                f"'{param}[{i}]': content of type {kind!r} is not supported by this model's "
                "route (chat-completions bridge)",
                param=f"{param}[{i}]",
            )
    if all(p["type"] == "text" for p in parts):  # plain text: what every chat provider takes
        return "".join(p["text"] for p in parts)
    return parts


def normalize_input(raw: Any) -> list[dict[str, Any]]:
    """The request's ``input`` as a list of items (a string is one user message)."""
    if raw is None:
        return []
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": raw}]
    if not isinstance(raw, list):
        raise BadRequest("'input' must be a string or an array of items", param="input")
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise BadRequest(f"'input[{i}]' must be an object", param=f"input[{i}]")
    return list(raw)


def items_to_messages(
    items: list[dict[str, Any]], param: str = "input", *, strict: bool = True
) -> list[dict[str, Any]]:
    """Chat messages for Responses items. Reasoning items have no chat form and are skipped;
    consecutive function calls become one assistant message with several tool calls. Items
    with no chat form are a 400 (``strict``, the bridge) or skipped (memory and learning
    reading a request that goes to an upstream with the Responses API)."""
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        kind = item.get("type") or ("message" if "role" in item else None)
        where = f"{param}[{i}]"
        if kind == "message":
            role = item.get("role")
            if role == "assistant":
                out.append({"role": "assistant", "content": parts_text(item.get("content"))})
            elif role in ("system", "developer"):
                out.append({"role": role, "content": parts_text(item.get("content"))})
            elif role == "user":
                try:
                    content = _user_content(item.get("content"), f"{where}.content")
                except BadRequest:
                    if strict:
                        raise
                    content = parts_text(item.get("content"))
                out.append({"role": "user", "content": content})
            elif strict:
                raise BadRequest(f"'{where}.role' {role!r} is not valid", param=f"{where}.role")
        elif kind == "function_call":
            call = {
                "id": str(item.get("call_id") or item.get("id") or new_id("call")),
                "type": "function",
                "function": {
                    "name": str(item.get("name", "")),
                    "arguments": str(item.get("arguments") or "{}"),
                },
            }
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
                if not last.get("content"):
                    last["content"] = None
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else parts_text(output)
            out.append({"role": "tool", "tool_call_id": str(item.get("call_id")), "content": text})
        elif kind in ("reasoning", "item_reference") or not strict:
            continue
        else:
            raise BadRequest(
                f"'{where}': items of type {kind!r} are not supported by this model's route "
                "(chat-completions bridge)",
                param=where,
            )
    return out


def with_ids(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Input items as stored and listed by ``input_items``: each with an id and a status,
    message content as parts."""
    out = []
    for item in items:
        kind = item.get("type") or "message"
        prefix = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}
        stored = {**item, "type": kind, "id": item.get("id") or new_id(prefix.get(kind, "item"))}
        stored.setdefault("status", "completed")
        if kind == "message" and isinstance(item.get("content"), str):
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            text_part: dict[str, Any] = {"type": part, "text": item["content"]}
            if part == "output_text":
                text_part["annotations"] = []
            stored["content"] = [text_part]
        out.append(stored)
    return out


def _tool(tool: Any, i: int) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise BadRequest(
            f"'tools[{i}]': tools of type {kind!r} are not supported by this model's route "
            "(chat-completions bridge); function tools are",
            param=f"tools[{i}]",
        )
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def chat_request(
    body: dict[str, Any], instructions: str | None, history: list[dict[str, Any]]
) -> dict[str, Any]:
    """The chat request answering a Responses request: instructions as the system message,
    then the earlier turns (``history``, chat-shaped), then this request's input."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    messages += history
    messages += items_to_messages(normalize_input(body.get("input")))
    if not messages:
        raise BadRequest("'input' is required", param="input")
    chat: dict[str, Any] = {"model": body["model"], "messages": messages}
    chat.update({k: body[k] for k in SAME_FIELDS if body.get(k) is not None})
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise BadRequest("'tools' must be an array", param="tools")
        chat["tools"] = [_tool(t, i) for i, t in enumerate(tools)]
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    text_format = (
        (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    )
    if isinstance(text_format, dict) and text_format.get("type") == "json_schema":
        schema = {
            k: text_format[k]
            for k in ("name", "schema", "strict", "description")
            if k in text_format
        }
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif isinstance(text_format, dict) and text_format.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat
