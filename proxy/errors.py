"""One error hierarchy, rendered in OpenAI's envelope by one handler (see app.py).

Imports nothing of the package.
"""

from __future__ import annotations

from typing import Any


class ProxyError(Exception):
    """Base of every error the proxy answers with. Subclasses fix status and type."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
        type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.headers = headers or {}

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class BadRequest(ProxyError):
    status = 400
    type = "invalid_request_error"


class SecretValue(BadRequest):
    """A fact that looks like a credential (``profile.redaction``): never stored."""

    code = "secret_value"


class Unauthorized(ProxyError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class NotFound(ProxyError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(ProxyError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class Conflict(ProxyError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class Forbidden(ProxyError):
    status = 403
    type = "permission_error"
    code = "forbidden"


class RequestTimeout(ProxyError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class TooManyRequests(ProxyError):
    """A per-account limit or quota (send ``Retry-After`` in ``headers`` when it passes)."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


class RateLimited(TooManyRequests):
    """A requests/min or tokens/min limit of the key or the account (``x-ratelimit-*`` and
    ``Retry-After`` in ``headers``)."""

    code = "rate_limit_exceeded"


class InsufficientQuota(TooManyRequests):
    """The monthly budget of the key or the account is spent (OpenAI's code and type)."""

    type = "insufficient_quota"
    code = "insufficient_quota"


class PayloadTooLarge(ProxyError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class UpstreamError(ProxyError):
    """The upstream answered with an error status; status and message are relayed."""

    type = "upstream_error"

    @classmethod
    def relayed(
        cls,
        message: str,
        status: int,
        *,
        type: Any = None,
        code: Any = None,
        param: Any = None,
        headers: dict[str, str] | None = None,
    ) -> UpstreamError:
        """The provider's error as it came (its fields checked for type): status, message,
        type, code, param and retry headers kept."""
        return cls(
            message,
            status=status,
            type=type if isinstance(type, str) else ("server_error" if status >= 500 else cls.type),
            code=str(code) if isinstance(code, (str, int)) and not isinstance(code, bool) else None,
            param=param if isinstance(param, str) else None,
            headers=headers or {},
        )


class UpstreamUnreachable(ProxyError):
    status = 502
    type = "upstream_error"
    code = "upstream_unreachable"


class UpstreamTimeout(ProxyError):
    status = 504
    type = "upstream_error"
    code = "upstream_timeout"


class Unavailable(ProxyError):
    status = 503
    type = "server_error"
    code = "unavailable"


class ConfigError(Exception):
    """Invalid configuration detected at start-up (not an HTTP error)."""
