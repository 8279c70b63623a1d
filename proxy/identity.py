"""End-user ids: one rule for every place an id comes from, on read and write paths alike.

An end-user id (a ``collection_id``) reaches the proxy as ``collection_id`` / ``user_id`` in a
body or a query string, as ``features.collection_id``, as a configured header
(``memory.user_headers``) or as OpenAI's ``user``. Whatever the source, it is 1-256 characters,
not only whitespace, with no control character (C0, DEL, C1) and no lone surrogate: so any id
the proxy writes under can be read and deleted through the profile API.

Imports nothing of the package but its errors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from proxy.errors import BadRequest

MAX_END_USER_ID = 256
#: What the OpenAPI document says of an id field (the check itself is ``end_user_id``).
ID_SCHEMA: dict[str, Any] = {"minLength": 1, "maxLength": MAX_END_USER_ID}
ID_CODE = "invalid_collection_id"
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def end_user_id(value: Any, param: str = "collection_id") -> str:
    """``value`` if it is a valid end-user id; otherwise a 400 naming ``param``."""
    if not isinstance(value, str):
        raise BadRequest(f"'{param}' must be a string", param=param, code=ID_CODE)
    if not value.strip():
        raise BadRequest(f"'{param}' must not be empty", param=param, code=ID_CODE)
    if len(value) > MAX_END_USER_ID:
        raise BadRequest(
            f"'{param}' is longer than {MAX_END_USER_ID} characters", param=param, code=ID_CODE
        )
    if _FORBIDDEN.search(value):
        raise BadRequest(
            f"'{param}' must not contain control characters or lone surrogates",
            param=param,
            code=ID_CODE,
        )
    return value


def optional_end_user_id(value: Any, param: str = "collection_id") -> str | None:
    return None if value is None else end_user_id(value, param)


def header_end_user(headers: Mapping[str, str], names: Sequence[str]) -> tuple[str, str] | None:
    """The first of the configured end-user headers the request carries (non-empty), as
    ``(name, value)``. The value is the header's bytes read as UTF-8; bytes that are not
    UTF-8 come out as lone surrogates, which ``end_user_id`` refuses."""
    for name in names:
        raw = headers.get(name)
        if raw:
            return name, raw.encode("latin-1").decode("utf-8", errors="surrogateescape")
    return None
