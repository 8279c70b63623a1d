"""ASGI middleware: a request id on every response, the body size limit, a last-resort 500.

Pure ASGI (no BaseHTTPMiddleware) so streamed responses are not buffered.
"""

from __future__ import annotations

import logging
import uuid

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.errors import PayloadTooLarge, ProxyError

log = logging.getLogger("profilo.http")

REQUEST_ID_HEADER = b"x-profilo-request-id"


def new_request_id() -> str:
    return "req_" + uuid.uuid4().hex


def error_body(error: ProxyError) -> bytes:
    return orjson.dumps(error.envelope())


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        rid = request_id.encode()
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, rid)]
            await send(message)

        async def reply(error: ProxyError) -> None:
            headers = [(b"content-type", b"application/json")]
            headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
            await send_with_id(
                {"type": "http.response.start", "status": error.status, "headers": headers}
            )
            await send({"type": "http.response.body", "body": error_body(error)})

        limit = self.max_body_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await reply(_too_large(limit))
                return

        # The whole body is read here (every route reads it whole anyway): a body over the
        # limit is a 413 before any route sees it, whatever parses it later.
        body = bytearray()
        first: Message | None = None
        while first is None:
            message = await receive()
            if message["type"] != "http.request":
                first = message  # the client went away
            else:
                body += message.get("body", b"")
                if len(body) > limit:
                    await reply(_too_large(limit))
                    return
                if not message.get("more_body", False):
                    first = {"type": "http.request", "body": bytes(body), "more_body": False}

        async def replay_receive() -> Message:
            nonlocal first
            if first is not None:
                message, first = first, None
                return message
            return await receive()

        try:
            await self.app(scope, replay_receive, send_with_id)
        except ProxyError as exc:
            if started:
                raise
            await reply(exc)
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id})
            if started:
                raise
            await reply(ProxyError("internal server error", code="internal_error"))


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
