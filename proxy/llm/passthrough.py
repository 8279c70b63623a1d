"""Direct pass-through to OpenAI-compatible upstreams over aiohttp.

Relays the upstream's bytes as they are (JSON body, SSE events) instead of re-serializing.
One ``aiohttp.ClientSession`` per app, opened in the lifespan.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from proxy.errors import ProxyError, UpstreamError, UpstreamTimeout, UpstreamUnreachable

_SEPARATORS = (b"\n\n", b"\r\n\r\n", b"\r\r")
_TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


@dataclass(slots=True)
class UpstreamReply:
    status: int
    content_type: str
    body: bytes


class Passthrough:
    def __init__(self, *, timeout: float, connect_timeout: float) -> None:
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=True,
            trust_env=False,
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("Passthrough used before start()")
        return self._session

    @staticmethod
    def _headers(api_key: str | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": "profilo"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        return headers

    async def request(
        self, method: str, url: str, api_key: str | None, body: bytes | None = None
    ) -> UpstreamReply:
        """A non-streaming call; an upstream error status raises ``UpstreamError``."""
        timeout = aiohttp.ClientTimeout(total=self._timeout, connect=self._connect_timeout)
        try:
            async with self.session.request(
                method, url, data=body, headers=self._headers(api_key), timeout=timeout
            ) as resp:
                data = await resp.read()
                if resp.status >= 400:
                    raise upstream_error(resp.status, data, resp.headers)
                return UpstreamReply(resp.status, resp.content_type, data)
        except _TRANSPORT_ERRORS as exc:
            raise _transport_error(exc) from exc

    @asynccontextmanager
    async def stream(
        self, url: str, api_key: str | None, body: bytes
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Open a streaming call. Errors before the first byte raise here (a normal error
        response is still possible); the yielded iterator gives whole SSE events as they come
        and raises ``ProxyError`` when the stream breaks later."""
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self._connect_timeout, sock_read=self._timeout
        )
        try:
            ctx = self.session.post(url, data=body, headers=self._headers(api_key), timeout=timeout)
            resp = await ctx.__aenter__()
        except _TRANSPORT_ERRORS as exc:
            raise _transport_error(exc) from exc
        try:
            if resp.status >= 400:
                raise upstream_error(resp.status, await resp.read(), resp.headers)
            yield _events(resp)
        finally:
            # Leaving early (client gone, error) closes the upstream connection: cancels it.
            resp.close()
            await ctx.__aexit__(None, None, None)


async def _events(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """Yield complete SSE events (separator included) as soon as each one is complete."""
    buffer = b""
    try:
        async for data in resp.content.iter_any():
            buffer += data
            cut = max(buffer.rfind(sep) + len(sep) if sep in buffer else 0 for sep in _SEPARATORS)
            if cut:
                yield buffer[:cut]
                buffer = buffer[cut:]
    except _TRANSPORT_ERRORS as exc:
        raise _transport_error(exc, mid_stream=True) from exc
    if buffer.strip():
        yield buffer + b"\n\n"


def upstream_error(status: int, data: bytes, headers: Any) -> UpstreamError:
    """The upstream's error, relayed with its status, message and ``Retry-After``."""
    message, type_, code, param = f"upstream returned HTTP {status}", None, None, None
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        text = data.decode("utf-8", "replace").strip()
        if text:
            message = f"{message}: {text[:500]}"
    else:
        err = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(err, dict):
            message = str(err.get("message") or message)
            type_, code, param = err.get("type"), err.get("code"), err.get("param")
        elif isinstance(err, str):
            message = err
    keep = {}
    for name in ("Retry-After", "retry-after-ms"):
        if name in headers:
            keep[name] = headers[name]
    return UpstreamError.relayed(message, status, type=type_, code=code, param=param, headers=keep)


def _transport_error(exc: BaseException, *, mid_stream: bool = False) -> ProxyError:
    if isinstance(exc, ProxyError):
        return exc
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return UpstreamTimeout("upstream timed out" + (" mid-stream" if mid_stream else ""))
    if mid_stream:
        return UpstreamUnreachable(f"upstream connection broke mid-stream: {exc!r}")
    return UpstreamUnreachable(f"upstream unreachable: {exc}")
