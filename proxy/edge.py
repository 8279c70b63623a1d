"""What is decided from a request's head alone, before its body is read: CORS (preflights and
the headers of allowed origins) and the dev account's Host / Origin guard.

The dev account (no keys, loopback bind) has no secret a browser would lack, so it trusts the
request's origin instead: only loopback ``Host`` values (a DNS-rebinding page has its own
host name there) and no cross-origin request unless ``cors.allow_origins`` names it (a page's
"simple request", ``Content-Type: text/plain``, carries an ``Origin`` and is refused).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from proxy.config import CorsSettings
from proxy.errors import Forbidden

#: Response headers a browser page may read, besides every ``X-Profilo-*`` header the response
#: itself carries (listed per response, so a header added later is exposed too).
EXPOSED = (
    "X-Profilo-Request-Id, Retry-After, retry-after-ms, X-Request-Id, openai-processing-ms, "
    "openai-version"
)
METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
#: Request headers a page may send when the preflight asks for none in particular.
DEFAULT_ALLOWED = (
    "Authorization, Content-Type, X-Collection-Id, OpenAI-Organization, OpenAI-Project"
)


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def is_loopback_host(host: str | None) -> bool:
    """``Host`` (with or without a port) names this machine's loopback."""
    if not host:
        return False
    name = urlsplit("//" + host).hostname or ""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Cors:
    def __init__(self, settings: CorsSettings) -> None:
        self._origins = {o.rstrip("/") for o in settings.allow_origins}
        self._any = "*" in self._origins
        self.enabled = bool(self._origins)
        self._max_age = str(settings.max_age_seconds)

    def allowed(self, origin: str | None) -> bool:
        return origin is not None and (self._any or origin in self._origins)

    def preflight_headers(self, requested: str | None) -> list[tuple[bytes, bytes]]:
        """A preflight's own headers (an allowed origin's also get ``response_headers``)."""
        allow = requested or DEFAULT_ALLOWED  # the page's own list, for an allowed origin
        return [
            (b"access-control-allow-methods", METHODS.encode()),
            (b"access-control-allow-headers", allow.encode("latin-1")),
            (b"access-control-max-age", self._max_age.encode()),
            (b"vary", b"Access-Control-Request-Headers"),  # the allow list echoes them
        ]

    def response_headers(
        self, origin: str | None, response: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        """What CORS adds to a response: ``Vary: Origin`` whenever origins are configured
        (a cache must not give one origin's answer to another), and for an allowed origin
        ``Access-Control-Allow-Origin`` and the readable headers."""
        if not self.enabled:
            return []
        out = [(b"vary", b"Origin")]
        if origin is not None and self.allowed(origin):
            ours = [k for k, _ in response if k.lower().startswith(b"x-profilo-")]
            names = ", ".join([EXPOSED, *(k.decode("latin-1") for k in ours)])
            out.append((b"access-control-allow-origin", origin.encode("latin-1")))
            out.append((b"access-control-expose-headers", names.encode("latin-1")))
        return out


def same_origin(origin: str, host: str | None) -> bool:
    parts = urlsplit(origin)
    return bool(host) and parts.scheme in ("http", "https") and parts.netloc == host


def dev_guard(cors: Cors, host: str | None, origin: str | None) -> None:
    """Raises ``Forbidden`` for a dev-account request a browser page elsewhere could send."""
    if not is_loopback_host(host):
        raise Forbidden(
            "the dev account (no API keys) answers only requests to a loopback host name; "
            "create a key with 'profilo keys create ACCOUNT' to serve other names",
            code="host_not_allowed",
        )
    if origin is not None and not same_origin(origin, host) and not cors.allowed(origin):
        raise Forbidden(
            f"cross-origin request from {origin[:100]} refused: the dev account serves "
            "pages of other origins only when cors.allow_origins lists them",
            code="origin_not_allowed",
        )
