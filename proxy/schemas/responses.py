"""Parsing of Responses API request bodies (kept as dicts: forwarded verbatim)."""

from __future__ import annotations

from proxy.errors import BadRequest
from proxy.schemas.openai import ChatRequest, parse_json_object, take_proxy_fields


def parse_responses_request(raw: bytes) -> ChatRequest:
    """``POST /v1/responses``: the body less the proxy's fields (``features``,
    ``collection_id``, ``wait_for_learning_seconds``), which work as in chat."""
    body = parse_json_object(raw)
    model = body.get("model")
    if model is None:
        raise BadRequest("you must provide a model parameter", param="model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("'model' must be a non-empty string", param="model")
    for name in ("instructions", "previous_response_id"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise BadRequest(f"'{name}' must be a string", param=name)
    raw_input = body.get("input")
    if raw_input is not None and not isinstance(raw_input, str | list):
        raise BadRequest("'input' must be a string or an array of items", param="input")
    if raw_input is None and body.get("previous_response_id") is None:
        raise BadRequest("'input' is required", param="input")
    return take_proxy_fields(body)
