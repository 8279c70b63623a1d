"""Chat messages as text: what memory searches with and what extraction reads."""

from __future__ import annotations

from typing import Any


def text_of(content: Any) -> str:
    """A message's ``content`` as plain text: a string as it is, the text parts of a
    multi-part content joined, anything else empty."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        ).strip()
    return ""


def latest_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return text_of(message.get("content"))
    return ""
