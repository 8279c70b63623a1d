"""Graceful shutdown: one app's draining state (``app.state.drain``) and its mark on the wire.

On SIGTERM or SIGINT ``profilo serve`` (``proxy.server.DrainingServer``), in order:

1. at once ``Drain.begin()``: ``/readyz`` answers 503 ``draining``; every response says
   ``Connection: close`` and a response already under way when the signal came is followed by a
   close (``proxy.server.HeadTimeoutProtocol``), so a load balancer's keep-alive connection is
   closed by this server after a complete response, never while the balancer may be sending
   its next request; the learning worker claims no more jobs;
2. for ``server.drain_delay_seconds`` it still accepts and serves (the balancer's health
   checks see "not ready" and stop sending);
3. the listening socket closes (new connections are refused: nginx's ``proxy_next_upstream
   error`` retries them on another replica); requests and streams in flight get
   ``server.shutdown_timeout_seconds`` to finish;
4. the lifespan shutdown: the worker cancels its running jobs and hands them back to the queue
   (``JobStore.release``), then the process exits 0. A second signal exits at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("profilo.drain")


class Drain:
    """Whether the app is shutting down. ``begin`` runs in a signal handler (the event loop's
    thread, between two bytecodes): it only sets flags and calls its listeners, which must do
    no more than that either."""

    def __init__(self) -> None:
        self.draining = False
        self.began_at: float | None = None  # time.monotonic()
        self._listeners: list[Callable[[], None]] = []

    def on_begin(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` when draining begins (at once if it already has: a signal
        during the start-up)."""
        self._listeners.append(listener)
        if self.draining:
            listener()

    def begin(self) -> bool:
        """Start draining; False when it had already begun."""
        if self.draining:
            return False
        self.draining, self.began_at = True, time.monotonic()
        for listener in self._listeners:
            try:
                listener()
            except Exception:  # a listener's failure must not stop the shutdown
                log.exception("drain listener %r failed", listener)
        return True

    def describe(self) -> str:
        """``ok``, or why this replica takes no new work."""
        if not self.draining or self.began_at is None:
            return "ok"
        return f"draining: shutting down ({time.monotonic() - self.began_at:.1f} s ago)"


class ConnectionCloseMiddleware:
    """While draining, every response carries ``Connection: close`` (uvicorn then closes the
    connection once the response is complete). Pure ASGI: streams pass through unbuffered."""

    def __init__(self, app: ASGIApp, *, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and self.drain.draining:
                kept = [h for h in message.get("headers", []) if h[0].lower() != b"connection"]
                message = {**message, "headers": [*kept, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)
