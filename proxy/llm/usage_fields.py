"""OpenAI's ``usage``: asking a stream for its usage chunk, reading the token counts."""

from __future__ import annotations

from typing import Any


def ask_for_usage(body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A streamed request's body asking the upstream for its usage chunk
    (``stream_options.include_usage``); True when the client had not asked (the chunk is then
    the proxy's, not the client's)."""
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return body, False
    merged = {**options, "include_usage": True} if isinstance(options, dict) else {}
    return {**body, "stream_options": merged or {"include_usage": True}}, True


def usage_numbers(usage: Any) -> tuple[int, int] | None:
    """(prompt, completion) tokens of an OpenAI ``usage`` object: chat completions'
    (``prompt_tokens``) or the Responses API's (``input_tokens``); None: not one."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    prompt = prompt if isinstance(prompt, int) and not isinstance(prompt, bool) else 0
    completion = (
        completion if isinstance(completion, int) and not isinstance(completion, bool) else 0
    )
    return max(0, prompt), max(0, completion)
