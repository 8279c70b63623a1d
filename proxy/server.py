"""``profilo serve``'s HTTP server: uvicorn with the connection limits of ``server.*``.

uvicorn bounds idle keep-alive connections and (``limit_concurrency``) how many are open, but
not how long a client may take to send a request head (a client trickling header bytes holds
its connection forever), nor, with the httptools parser, its size (it keeps every header it is
sent: hundreds of MB in seconds on loopback). ``HeadTimeoutProtocol`` closes a connection whose
request line and headers are not complete ``header_timeout_seconds`` after it opened (or after
the previous response on it), and answers 431 and closes once a head passes
``max_header_bytes``. Bodies are bounded by the middleware (read only after authentication,
size and time limits).

``DrainingServer`` is uvicorn's server with a graceful shutdown in front of its own
(``proxy/drain.py``): the first SIGTERM / SIGINT starts draining, the listening socket closes
``server.drain_delay_seconds`` later, then uvicorn's shutdown waits for what is in flight
(``server.shutdown_timeout_seconds``) and runs the lifespan shutdown. A second signal exits at
once (uvicorn's force exit). The signal is not raised again after the shutdown (uvicorn's own
``handle_exit`` does that, which made the exit status -15 instead of 0).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from types import FrameType
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from proxy.config import Settings
from proxy.drain import Drain
from proxy.errors import ProxyError

log = logging.getLogger("profilo.server")


class HeadTimeoutProtocol(HttpToolsProtocol):
    head_timeout: float = 10.0
    max_head_bytes: int = 64 * 1024
    drain: Drain | None = None  # while draining, no request follows a response on a connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_pending = False  # a request head is being parsed
        self._head_bytes = 0  # bytes received since it began (one read chunk of slack)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_pending, self._head_bytes = True, 0

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._head_pending or self.transport.is_closing():
            return
        self._head_bytes += len(data)
        if self._head_bytes > self.max_head_bytes:
            self._head_too_large()

    def _head_too_large(self) -> None:
        error = ProxyError(
            f"request line and headers are larger than {self.max_head_bytes} bytes "
            "(server.max_header_bytes)",
            status=431,
            type="invalid_request_error",
            code="headers_too_large",
        )
        body = orjson.dumps(error.envelope())
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._disarm()
        self._head_pending = False
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # its head is complete: it starts now, no timer
        super().on_response_complete()
        if pipelined or self.transport.is_closing():
            return
        if self.drain is not None and self.drain.draining:
            # a response begun before the drain said keep-alive: close now that it is whole
            self.transport.close()
            return
        self._arm()  # the next request's head has the same time (idle: keep-alive's)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def protocol(
    head_timeout: float, max_head_bytes: int = 64 * 1024, drain: Drain | None = None
) -> type[HeadTimeoutProtocol]:
    attrs = {"head_timeout": head_timeout, "max_head_bytes": max_head_bytes, "drain": drain}
    return type("HeadTimeout", (HeadTimeoutProtocol,), attrs)


def uvicorn_options(settings: Settings, drain: Drain | None = None) -> dict[str, Any]:
    server = settings.server
    return {
        "host": settings.host,
        "port": settings.port,
        "http": protocol(server.header_timeout_seconds, server.max_header_bytes, drain),
        "timeout_keep_alive": server.keep_alive_seconds,
        "limit_concurrency": server.limit_concurrency or None,
        "timeout_graceful_shutdown": server.shutdown_timeout_seconds,
    }


class DrainingServer(uvicorn.Server):
    """uvicorn's server, draining ``delay`` seconds between the first signal and its shutdown."""

    def __init__(self, config: uvicorn.Config, drain: Drain, delay: float) -> None:
        super().__init__(config)
        self.drain = drain
        self.delay = delay
        self._stop_at: float | None = None  # time.monotonic() when the socket closes

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._stop_at is not None or self.should_exit:
            self.should_exit = self.force_exit = True  # a second signal: exit at once
            return
        self._stop_at = time.monotonic() + self.delay
        self.drain.begin()
        log.warning(
            "%s: draining (/readyz 503, Connection: close) for %g s, then closing the listening "
            "socket and waiting up to %g s for requests in flight (a second signal exits now)",
            signal.Signals(sig).name, self.delay, self.config.timeout_graceful_shutdown,
        )  # fmt: skip

    async def on_tick(self, counter: int) -> bool:
        if self._stop_at is not None and time.monotonic() >= self._stop_at:
            self.should_exit = True
        return await super().on_tick(counter)
