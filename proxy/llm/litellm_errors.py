"""litellm's exceptions as ``proxy.errors`` kinds: the provider's status, message, type,
code and ``Retry-After`` kept; timeouts and connection failures told apart."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any

from proxy.errors import ProxyError, UpstreamError, UpstreamTimeout, UpstreamUnreachable

log = logging.getLogger(__name__)

_TIMEOUTS = frozenset(
    "Timeout APITimeoutError TimeoutException TimeoutError ServerTimeoutError".split()
)
_UNREACHABLE = frozenset(
    "APIConnectionError ConnectError NetworkError ClientConnectionError ConnectionError "
    "gaierror".split()
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, the exception it wraps (litellm's ``original_exception``) and its causes."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 16:
        cur = todo.pop(0)
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        wrapped = getattr(cur, "original_exception", None)
        todo += [wrapped if isinstance(wrapped, BaseException) else None]
        todo += [cur.__cause__, cur.__context__]


def map_error(exc: BaseException) -> ProxyError:
    """A litellm / transport exception as a ``proxy.errors`` kind. litellm wraps transport
    failures inconsistently (a refused connection to Anthropic is an ``InternalServerError``
    with status 500), so the causes are looked at first: a timeout or a connection error
    anywhere in the chain decides; otherwise the provider's HTTP status does."""
    chain = list(_chain(exc))
    for found in chain:
        if isinstance(found, ProxyError):
            return found
    names = [{cls.__name__ for cls in type(e).__mro__} for e in chain]
    if any(n & _TIMEOUTS for n in names):
        return UpstreamTimeout(f"upstream timed out: {_clean(str(exc))}")
    if any(n & _UNREACHABLE for n in names):
        return UpstreamUnreachable(f"upstream unreachable: {_clean(str(exc))}")
    for found in chain:
        status = getattr(found, "status_code", None)
        if getattr(getattr(found, "original_exception", None), "status_code", None):
            continue  # a wrapper (MidStreamFallbackError): the wrapped error says it better
        if isinstance(status, int) and 400 <= status <= 599:
            return _upstream_error(found, status)
    log.error("litellm failed", exc_info=exc)
    return ProxyError(f"litellm failed: {type(exc).__name__}: {_clean(str(exc))}")


_PREFIX = re.compile(r"^(?:litellm\.\w+:\s*)+")


_SUFFIX = re.compile(r"\s*Handle with `litellm\.\w+`\.?\s*$")


def _clean(text: str) -> str:
    return _SUFFIX.sub("", _PREFIX.sub("", text)).strip()[:1000]


def _upstream_error(exc: BaseException, status: int) -> UpstreamError:
    message = (
        _clean(str(getattr(exc, "message", None) or exc)) or f"upstream returned HTTP {status}"
    )
    type_: Any = None
    code: Any = None
    param: Any = None
    err = _provider_error(getattr(exc, "body", None)) or _provider_error(message)
    if err is not None:
        message = str(err.get("message") or message)
        type_, code, param = err.get("type"), err.get("code"), err.get("param")
    return UpstreamError.relayed(
        message, status, type=type_, code=code, param=param, headers=_retry_headers(exc)
    )


def _provider_error(source: Any) -> dict[str, Any] | None:
    """The ``error`` object of a provider's JSON error body (given parsed, or inside text)."""
    parsed = source
    if isinstance(source, str):
        start, end = source.find("{"), source.rfind("}")
        if start < 0 or end <= start:
            return None
        try:
            parsed = json.loads(source[start : end + 1])
        except ValueError:
            return None
    if not isinstance(parsed, dict):
        return None
    err = parsed.get("error", parsed)
    if isinstance(err, str):
        return {"message": err}
    return err if isinstance(err, dict) and err.get("message") else None


def _retry_headers(exc: BaseException) -> dict[str, str]:
    keep: dict[str, str] = {}
    response = getattr(exc, "response", None)
    for source in (
        getattr(exc, "litellm_response_headers", None),
        getattr(exc, "headers", None),
        getattr(response, "headers", None),
    ):
        if not source:
            continue
        for name, out in (("retry-after", "Retry-After"), ("retry-after-ms", "retry-after-ms")):
            value = source.get(name) or source.get(out)
            if value is not None and out not in keep:
                keep[out] = str(value)
    return keep
