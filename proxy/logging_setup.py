"""Structured logs: one JSON object per line, stamped with the request id of the request being
served (a context variable the middleware sets; threads started with ``to_thread`` inherit it).

What is logged, at any level: method, route template, path (never the query string), status,
duration, request id, account id. Never logged: API keys or the ``Authorization`` header,
request or response bodies (chat messages, facts, questions).

``configure`` is called by ``profilo serve`` (a process-wide choice), not by ``create_app``.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from typing import Any, Literal, TextIO

import orjson

from proxy.schemas.profile import iso

LogFormat = Literal["json", "text"]

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "profilo_request_id", default=None
)

#: LogRecord attributes that are not "extra" fields.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "color_message"}  # uvicorn's ANSI-coloured copy of the message
)
_HANDLER_NAME = "profilo"


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record (None outside a request) unless one was given."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure(
    level: str = "info", fmt: LogFormat = "json", stream: TextIO | None = None
) -> logging.Handler:
    """Send every log record (profilo's, uvicorn's, libraries') through one handler on the
    root logger, replacing the one a previous call installed. Returns the handler."""
    handler: logging.Handler = (
        logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    )
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER_NAME or type(old) is logging.StreamHandler:
            root.removeHandler(old)  # ours from before, or basicConfig's
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # the middleware logs each request
    return handler


def unconfigure(handler: logging.Handler) -> None:
    logging.getLogger().removeHandler(handler)
    logging.getLogger("uvicorn.access").disabled = False
