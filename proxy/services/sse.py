"""Server-sent events as the proxy writes them: OpenAI's ``data:`` lines, ``[DONE]``, and the
final ``error`` event of a stream that fails after it started."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson

from proxy.errors import ProxyError

DONE = b"data: [DONE]\n\n"


def sse_error(error: ProxyError) -> bytes:
    return b"event: error\ndata: " + orjson.dumps(error.envelope()) + b"\n\n"


def sse_data(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


async def relay(
    events: AsyncIterator[bytes], upstream: AbstractAsyncContextManager[Any]
) -> AsyncIterator[bytes]:
    """Relay an upstream stream that has already started (``upstream`` entered): an error from
    here on becomes a final ``error`` event, and the upstream call is always closed."""
    try:
        async for event in events:
            yield event
    except ProxyError as exc:
        yield sse_error(exc)
    finally:
        await upstream.__aexit__(None, None, None)
