"""``profilo serve``'s HTTP server: uvicorn with the connection limits of ``server.*``.

uvicorn bounds idle keep-alive connections and (``limit_concurrency``) how many are open, but
not how long a client may take to send a request head: a client trickling header bytes holds
its connection forever. ``HeadTimeoutProtocol`` closes a connection whose request line and
headers are not complete ``header_timeout_seconds`` after it opened (or after the previous
response on it). Bodies are bounded by the middleware (read only after authentication, size
and time limits).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from proxy.config import Settings

log = logging.getLogger("profilo.server")


class HeadTimeoutProtocol(HttpToolsProtocol):
    head_timeout: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm()

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
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request's head has the same time (idle: keep-alive's)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def protocol(head_timeout: float) -> type[HeadTimeoutProtocol]:
    return type("HeadTimeout", (HeadTimeoutProtocol,), {"head_timeout": head_timeout})


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    server = settings.server
    return {
        "host": settings.host,
        "port": settings.port,
        "http": protocol(server.header_timeout_seconds),
        "timeout_keep_alive": server.keep_alive_seconds,
        "limit_concurrency": server.limit_concurrency or None,
    }
