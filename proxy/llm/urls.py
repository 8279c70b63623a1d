"""Upstream URLs built from client input: every client-given part is one encoded path segment.

A model id or response id goes into an upstream URL only through ``segment``: it refuses what
could leave its segment (``.``/``..``, ``/``, ``\\``, an encoded slash or dot, control
characters) and percent-encodes the rest, so the upstream is asked for exactly
``{api_base}/{fixed path}/{that one id}`` and nothing else, with the operator's key.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlencode

from proxy.errors import BadRequest

#: Longest id put into an upstream URL (OpenAI's own ids are far shorter).
MAX_SEGMENT_CHARS = 512
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f/\\]|%(?:2f|5c|2e|00)", re.IGNORECASE)


def is_safe_segment(value: str) -> bool:
    return (
        0 < len(value) <= MAX_SEGMENT_CHARS
        and value not in (".", "..")
        and _FORBIDDEN.search(value) is None
    )


def segment(value: str, *, param: str) -> str:
    """``value`` encoded as one URL path segment, or a 400 naming ``param``."""
    if not is_safe_segment(value):
        raise BadRequest(
            f"'{param}' is not a valid id: it must be 1-{MAX_SEGMENT_CHARS} characters without "
            "'/', '\\', control characters or dot segments",
            param=param,
            code="invalid_id",
        )
    return quote(value, safe="-._~:@")


def upstream_url(api_base: str, *path: str, query: dict[str, str] | None = None) -> str:
    """``api_base`` + already-encoded segments (from ``segment`` or constants) + a query
    string built from ``query`` (never a client's raw query string)."""
    url = "/".join([api_base.rstrip("/"), *path])
    if query:
        url += "?" + urlencode(query)
    return url
