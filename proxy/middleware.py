"""ASGI middleware: a request id on every response, the body size limit, a last-resort 500.

Pure ASGI (no BaseHTTPMiddleware) so streamed responses are not buffered.
"""

from __future__ import annotations

import logging
import time
import uuid

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.errors import PayloadTooLarge, ProxyError
from proxy.logging_setup import request_id_var
from proxy.metrics import UNMATCHED, Metrics
from proxy.text_check import check_request_text

log = logging.getLogger("profilo.http")
access = logging.getLogger("profilo.access")

REQUEST_ID_HEADER = b"x-profilo-request-id"


def new_request_id() -> str:
    return "req_" + uuid.uuid4().hex


def error_body(error: ProxyError) -> bytes:
    return orjson.dumps(error.envelope())


class RequestContextMiddleware:
    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, metrics: Metrics | None = None
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics or Metrics()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)  # every log line of this request carries it
        clock = time.perf_counter()
        status = 500

        async def send_seen(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._handle(scope, receive, send_seen, request_id)
        finally:
            self._observe(scope, status, time.perf_counter() - clock)
            request_id_var.reset(token)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
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
        try:  # every text a client sends, checked once before any route parses it
            check_request_text(scope, body)
        except ProxyError as exc:
            await reply(exc)
            return

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

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        """Count the request by its route template (``/v1/profile/facts/{fact_id}``, never the
        raw path) and log one access line (no query string, no headers, no body)."""
        route = getattr(scope.get("route"), "path", None) or UNMATCHED
        method = str(scope.get("method", ""))
        self.metrics.request(route, method, status, seconds)
        path = str(scope.get("path", ""))
        fields = {"method": method, "route": route, "path": path, "status": status}
        fields["duration_ms"] = round(seconds * 1000, 2)
        access.info("%s %s %d", method, path, status, extra=fields)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
