"""Run an ASGI app under a real uvicorn server in a background thread (for end-to-end tests).

::

    with ServerThread(app) as srv:
        httpx.get(srv.url + "/healthz")
        openai.OpenAI(base_url=srv.url + "/v1", api_key="k")

The server gets its own event loop and a pre-bound socket on 127.0.0.1 (no port race);
``lifespan="on"``, so a start-up failure in the app's lifespan is raised from ``__enter__``
(``ServerStartError``, chained to the app's exception when it can be captured).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

__all__ = ["ServerStartError", "ServerThread", "free_port"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (racy by nature; ServerThread doesn't use it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerStartError(RuntimeError):
    pass


class _PromptServer(uvicorn.Server):
    """``uvicorn.Server`` that stops as soon as it is told to, with the same order of steps.

    The suite starts and stops some 2,000 servers; uvicorn's main loop looks at
    ``should_exit`` every 0.1 s and its shutdown pauses a fixed 0.1 s before waiting for
    connections, ~0.2 s of idle time each. Here ``request_exit`` wakes the loop at once and
    the drain polls every 5 ms. Still: stop accepting, ask every connection to close, wait
    for connections and request tasks (at most ``timeout_graceful_shutdown``, then cancel
    what is left), then the app's lifespan shutdown.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    def request_exit(self) -> None:
        self.should_exit = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                loop.call_soon_threadsafe(wake.set)

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        tick = 0
        while not await self.on_tick(tick):
            tick = (tick + 1) % 864000
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        state = self.server_state
        grace = self.config.timeout_graceful_shutdown
        deadline = time.monotonic() + (grace if grace is not None else float("inf"))
        while (state.connections or state.tasks) and not self.force_exit:
            if time.monotonic() >= deadline:
                for task in state.tasks:
                    task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
                break
            await asyncio.sleep(0.005)
        for server in self.servers:
            await server.wait_closed()
        if not self.force_exit:
            await self.lifespan.shutdown()


class ServerThread:
    def __init__(
        self,
        app: Any,
        *,
        startup_timeout: float = 20.0,
        graceful_timeout: int = 2,
        log_level: str = "warning",
        **config_kwargs: Any,
    ) -> None:
        self.app = app
        self.startup_timeout = startup_timeout
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = int(self._sock.getsockname()[1])
        self._lifespan_error: BaseException | None = None
        self._lifespan_message: str | None = None
        self.config = uvicorn.Config(
            self._wrap(app),
            host="127.0.0.1",
            port=self.port,
            lifespan="on",
            log_level=log_level,
            timeout_graceful_shutdown=graceful_timeout,
            **config_kwargs,
        )
        self.server = _PromptServer(self.config)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def _wrap(self, app: Any) -> ASGIApp:
        async def wrapped(
            scope: Scope,
            receive: Callable[[], Awaitable[Message]],
            send: Callable[[Message], Awaitable[None]],
        ) -> None:
            if scope["type"] != "lifespan":
                await app(scope, receive, send)
                return

            async def send_spy(message: Message) -> None:
                if message.get("type") == "lifespan.startup.failed":
                    self._lifespan_message = str(message.get("message", ""))
                await send(message)

            try:
                await app(scope, receive, send_spy)
            except BaseException as exc:
                self._lifespan_error = exc
                raise

        return wrapped

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self._sock])
        except BaseException as exc:  # SystemExit on start-up failure, OSError, ...
            self._error = exc

    def start(self) -> ServerThread:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="ServerThread", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self.server.started:
            if not self._thread.is_alive():
                self._raise_start_error()
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(f"server did not start within {self.startup_timeout}s")
            time.sleep(0.01)
        return self

    def _raise_start_error(self) -> None:
        self._close_socket()
        cause = self._lifespan_error or self._error
        detail = self._lifespan_message or (repr(cause) if cause else "thread exited")
        raise ServerStartError(f"server failed to start: {detail}") from cause

    def stop(self) -> None:
        self.server.request_exit()
        if self._thread is not None:
            self._thread.join(timeout=15)
            if self._thread.is_alive():
                self.server.force_exit = True
                self._thread.join(timeout=5)
        self._close_socket()

    def _close_socket(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
