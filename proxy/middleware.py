"""ASGI middleware: a request id on every response, the body size limit, a last-resort 500.

Pure ASGI (no BaseHTTPMiddleware) so streamed responses are not buffered.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import anyio
import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.config import CorsSettings
from proxy.edge import Cors, dev_guard, header, is_loopback_host, same_origin
from proxy.errors import Forbidden, PayloadTooLarge, ProxyError, RequestTimeout
from proxy.logging_setup import request_id_var
from proxy.metrics import UNMATCHED, Metrics
from proxy.services.auth import resolve_account
from proxy.text_check import check_request_text

log = logging.getLogger("profilo.http")
access = logging.getLogger("profilo.access")

REQUEST_ID_HEADER = b"x-profilo-request-id"
#: Every route under these needs an account: it is resolved before the body is read.
GUARDED = ("/v1/", "/api/")


def new_request_id() -> str:
    return "req_" + uuid.uuid4().hex


def error_body(error: ProxyError) -> bytes:
    return orjson.dumps(error.envelope())


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        metrics: Metrics | None = None,
        cors: CorsSettings | None = None,
        body_timeout_seconds: float = 60.0,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics or Metrics()
        self.cors = Cors(cors or CorsSettings())
        self.body_timeout = body_timeout_seconds

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
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        origin = header(headers, b"origin")
        unread = _has_body(headers)  # a body not read yet: an early answer closes the connection

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                out = message.get("headers", [])
                extra = self.cors.response_headers(origin, out)
                message["headers"] = [*out, (REQUEST_ID_HEADER, rid), *extra]
            await send(message)

        async def reply(error: ProxyError) -> None:
            out = [(b"content-type", b"application/json")]
            out += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
            if unread:  # not drained either: the client is told, and the server hangs up
                out.append((b"connection", b"close"))
            await send_with_id(
                {"type": "http.response.start", "status": error.status, "headers": out}
            )
            await send({"type": "http.response.body", "body": error_body(error)})

        guarded = str(scope.get("path", "")).startswith(GUARDED)
        if scope.get("method") == "OPTIONS" and header(headers, b"access-control-request-method"):
            await self._preflight(scope, origin, headers, send_with_id, reply)
            return
        try:  # who is calling, from the head alone: an anonymous body is never read
            if guarded:
                await self._authenticate(scope, headers, origin)
            else:
                await self._guard_public(scope, headers, origin)
            body = await self._read_body(scope, receive)
            if body is None:
                return  # the client went away while sending
            unread = False
            check_request_text(scope, body)  # every text a client sends, checked once
        except ProxyError as exc:
            await reply(exc)
            return
        first: Message | None = {"type": "http.request", "body": body, "more_body": False}

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

    async def _preflight(
        self, scope: Scope, origin: str | None, headers: Any, send: Send, reply: Any
    ) -> None:
        """A CORS preflight: answered here for an allowed origin, refused for another."""
        if not self.cors.allowed(origin) or not str(scope.get("path", "")).startswith(GUARDED):
            await reply(
                Forbidden(
                    f"CORS origin {str(origin)[:100]} is not allowed (cors.allow_origins)",
                    code="origin_not_allowed",
                )
            )
            return
        out = self.cors.preflight_headers(header(headers, b"access-control-request-headers"))
        await send({"type": "http.response.start", "status": 204, "headers": out})
        await send({"type": "http.response.body", "body": b""})

    async def _authenticate(self, scope: Scope, headers: Any, origin: str | None) -> None:
        services = scope["app"].state.services
        account = await anyio.to_thread.run_sync(
            resolve_account, services.keys, services.settings.loopback,
            header(headers, b"authorization"),
        )  # fmt: skip
        if account.dev:
            dev_guard(self.cors, header(headers, b"host"), origin)
        state = scope.setdefault("state", {})
        state["account"], state["account_id"] = account, account.id

    async def _guard_public(self, scope: Scope, headers: Any, origin: str | None) -> None:
        """The routes that need no key (health, metrics, /ui, the OpenAPI document) get the
        dev account's Host / Origin guard too; the key table is read only when the request
        would be refused under the dev account."""
        host = header(headers, b"host")
        services = scope["app"].state.services
        if not services.settings.loopback:
            return
        if is_loopback_host(host) and (
            origin is None or same_origin(origin, host) or self.cors.allowed(origin)
        ):
            return
        if not await anyio.to_thread.run_sync(services.keys.any_exist):
            dev_guard(self.cors, host, origin)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, at most ``max_body_bytes`` (413), with no pause longer than
        ``body_timeout`` between two of its parts (408: a large upload over a slow link takes
        as long as it needs while it progresses); None when the client went away. Every route
        reads it whole anyway: a body over the limit is a 413 before any route sees it."""
        limit = self.max_body_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise _too_large(limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                with anyio.fail_after(self.body_timeout):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(
                    f"no part of the request body arrived for {self.body_timeout:g} s"
                ) from None
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)  # one allocation of the exact size

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        """Count the request by its route template (``/v1/profile/facts/{fact_id}``, never the
        raw path) and log one access line (no query string, no headers, no body)."""
        route = getattr(scope.get("route"), "path", None) or UNMATCHED
        method = str(scope.get("method", ""))
        self.metrics.request(route, method, status, seconds)
        path = str(scope.get("path", ""))
        fields = {"method": method, "route": route, "path": path, "status": status}
        account = scope.get("state", {}).get("account_id")
        if account is not None:
            fields["account"] = account  # the account's name, never its key
        fields["duration_ms"] = round(seconds * 1000, 2)
        access.info("%s %s %d", method, path, status, extra=fields)


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
