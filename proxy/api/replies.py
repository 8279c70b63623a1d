"""Service outcomes as HTTP responses: JSON bytes as they are, SSE streams unbuffered."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Response
from fastapi.responses import StreamingResponse

from proxy.services.chat import ChatOutcome

#: No proxy or client cache may hold a stream back.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def json_bytes(body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, media_type="application/json", headers=headers)


def event_stream(events: AsyncIterator[bytes], headers: dict[str, str] | None = None) -> Response:
    return StreamingResponse(
        events, media_type="text/event-stream", headers={**SSE_HEADERS, **(headers or {})}
    )


def outcome_response(outcome: ChatOutcome) -> Response:
    if outcome.stream is not None:
        return event_stream(outcome.stream, outcome.headers)
    assert outcome.json is not None
    return json_bytes(outcome.json, outcome.headers)
