"""Every text a client sends is checked once, at the edge (``RequestContextMiddleware``), on the
raw bytes, before any route parses them: valid UTF-8, no byte order mark in front of a body, no
NUL and no lone surrogate (raw, or as a JSON ``\\u`` escape). A text that breaks the rule is the
same 400 (code ``invalid_text``) on every route. The check only reads: it never parses nor
rewrites a body, so a valid body reaches its route as it came.

Bodies of binary media types (multipart uploads, audio, images, octet streams) are not text and
are not checked. Imports nothing of the package but its errors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

from proxy.errors import BadRequest

CODE = "invalid_text"
BOM = b"\xef\xbb\xbf"
#: A JSON escape of a surrogate or of NUL (whether its backslash is itself escaped is checked
#: by counting the backslashes in front of it).
_SUSPECT_ESCAPE = re.compile(rb"\\u([dD][89a-fA-F][0-9a-fA-F]{2}|0000)")
_BINARY_TYPES = ("multipart/", "audio/", "image/", "video/", "application/octet-stream")


def _invalid(what: str, why: str, param: str | None = None) -> BadRequest:
    return BadRequest(f"{what} {why}", param=param, code=CODE)


def check_request_text(scope: Mapping[str, Any], body: bytes | bytearray) -> None:
    """The path, the query string and the body of an ASGI HTTP request."""
    check_path(scope.get("raw_path") or b"")
    check_query(scope.get("query_string") or b"")
    content_type = ""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            content_type = value.decode("latin-1")
    check_body(body, content_type)


def check_body(body: bytes | bytearray, content_type: str = "") -> None:
    """A 400 when a text body is not valid Unicode text or holds a NUL."""
    if not body or content_type.strip().lower().startswith(_BINARY_TYPES):
        return
    what = "the request body"
    if body.startswith(BOM):
        raise _invalid(what, "starts with a byte order mark (send UTF-8 without a BOM)")
    _check_bytes(body, what)
    if b"\\u" in body:
        _check_escapes(body, what)


def check_path(raw_path: bytes) -> None:
    """A 400 when the percent-decoded path is not valid UTF-8 text or holds a NUL."""
    if raw_path and b"%" in raw_path:
        _check_bytes(unquote_to_bytes(raw_path), "the request path")


def check_query(query_string: bytes) -> None:
    """A 400 when a query parameter's name or value, once percent-decoded, is not valid UTF-8
    text or holds a NUL (``%00``, ``%ED%A0%80``, ``%FF``...)."""
    if not query_string:
        return
    for pair in query_string.split(b"&"):
        name, _, value = pair.partition(b"=")
        param = unquote_to_bytes(name.replace(b"+", b" ")).decode("utf-8", "replace")
        for part in (name, value):
            raw = unquote_to_bytes(part.replace(b"+", b" "))
            _check_bytes(raw, f"the query parameter {param!r}", param)


def _check_bytes(raw: bytes | bytearray, what: str, param: str | None = None) -> None:
    if b"\x00" in raw:
        raise _invalid(what, "contains a NUL character", param)
    if not raw.isascii():
        try:
            raw.decode("utf-8")  # strict: also refuses encoded surrogates (ED A0 80)
        except UnicodeDecodeError:
            raise _invalid(what, "is not valid UTF-8", param) from None


def _check_escapes(body: bytes | bytearray, what: str) -> None:
    """NUL and lone surrogates written as JSON escapes (a surrogate pair is fine)."""
    high, high_end = 0, -1  # an open high surrogate: its low half must start at high_end
    for m in _SUSPECT_ESCAPE.finditer(body):
        start = m.start()
        slashes = 0
        while start - slashes - 1 >= 0 and body[start - slashes - 1] == 0x5C:
            slashes += 1
        if slashes % 2:  # "\\u0000": an escaped backslash, then plain text
            continue
        code = int(m.group(1), 16)
        if code == 0:
            raise _invalid(what, "contains a NUL character")
        if high and not (code >= 0xDC00 and start == high_end):
            raise _lone(what, high)
        if code >= 0xDC00 and not high:
            raise _lone(what, code)
        high, high_end = (code, m.end()) if code < 0xDC00 else (0, -1)
    if high:
        raise _lone(what, high)


def _lone(what: str, code: int) -> BadRequest:
    return _invalid(what, f"contains a lone surrogate (\\u{code:04x}): text must be valid Unicode")
