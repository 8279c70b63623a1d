"""Parsing and checking of OpenAI-shaped request bodies (kept as dicts: forwarded verbatim)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.errors import BadRequest
from proxy.identity import ID_SCHEMA, optional_end_user_id

#: Fields that belong to the proxy: taken out before a request is forwarded.
PROXY_FIELDS = ("features", "collection_id", "wait_for_learning_seconds")
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_WAIT_FOR_LEARNING = 20.0


BOOL_FEATURES = (
    "memory",
    "user_profile",
    "learning",
    "include_low_confidence",
    "return_memory_context",
)
MAX_MEMORY_LIMIT = 100


def _chat_request_schema() -> dict[str, Any]:
    """The JSON schema of what ``parse_chat_request`` accepts (for the OpenAPI document).
    Other OpenAI fields are allowed and forwarded as they are."""
    scope_id = {"type": "string", **ID_SCHEMA}
    features: dict[str, Any] = {name: {"type": "boolean"} for name in BOOL_FEATURES}
    features["memory_limit"] = {"type": "integer", "minimum": 1, "maximum": MAX_MEMORY_LIMIT}
    features["collection_id"] = scope_id
    message = {
        "type": "object",
        "required": ["role"],
        "properties": {"role": {"enum": sorted(ROLES)}, "content": {"type": "string"}},
    }
    return {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "pattern": r"\S"},
            "messages": {"type": "array", "minItems": 1, "items": message},
            "stream": {"type": "boolean"},
            "user": {"type": "string"},
            "features": {"type": "object", "properties": features},
            "collection_id": scope_id,
            "wait_for_learning_seconds": {
                "type": "number",
                "minimum": 0,
                "maximum": MAX_WAIT_FOR_LEARNING,
            },
        },
    }


@dataclass(slots=True)
class ChatRequest:
    body: dict[str, Any]  # what the upstream gets: the client's body less the proxy's fields
    features: dict[str, Any] = field(default_factory=dict)  # only the keys the client set
    collection_id: str | None = None
    wait_for_learning_seconds: float = 0.0

    @property
    def user(self) -> str | None:
        """OpenAI's ``user`` as sent (None: absent, blank or not a string); it is checked as an
        end-user id only where it names the collection (``chat_scope``)."""
        user = self.body.get("user")
        return user if isinstance(user, str) and user.strip() else None

    @property
    def model(self) -> str:
        return str(self.body["model"])

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise BadRequest("the request body is empty; a JSON object is required")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data


def parse_chat_request(raw: bytes) -> ChatRequest:
    body = parse_json_object(raw)
    model = body.get("model")
    if model is None:
        raise BadRequest("you must provide a model parameter", param="model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("'model' must be a non-empty string", param="model")
    messages = body.get("messages")
    if messages is None:
        raise BadRequest("'messages' is a required property", param="messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"'messages[{i}]' must be an object", param=f"messages[{i}]")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:  # a dict or list is unhashable
            raise BadRequest(
                f"'messages[{i}].role' must be one of {sorted(ROLES)}, got {role!r}",
                param=f"messages[{i}].role",
            )
    return take_proxy_fields(body)


def take_proxy_fields(body: dict[str, Any]) -> ChatRequest:
    """Check ``stream`` and take the proxy's own fields (``features``, ``collection_id``,
    ``wait_for_learning_seconds``) out of an OpenAI request body (chat or Responses API)."""
    if "stream" in body and not isinstance(body["stream"], bool | None):
        raise BadRequest("'stream' must be a boolean", param="stream")
    raw_features = body.pop("features", None)
    collection_id = optional_end_user_id(body.pop("collection_id", None))
    features = parse_features(raw_features)
    if collection_id is None and raw_features and "collection_id" in raw_features:
        collection_id = optional_end_user_id(
            raw_features["collection_id"], "features.collection_id"
        )
    wait = check_wait_seconds(body.pop("wait_for_learning_seconds", None))
    return ChatRequest(
        body=body, features=features, collection_id=collection_id, wait_for_learning_seconds=wait
    )


def check_wait_seconds(value: Any, param: str = "wait_for_learning_seconds") -> float:
    """Hebbrix's ``wait_for_learning_seconds``: 0-20 (None: 0)."""
    if value is None:
        return 0.0
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value <= MAX_WAIT_FOR_LEARNING
    ):
        raise BadRequest(
            f"'{param}' must be a number from 0 to {MAX_WAIT_FOR_LEARNING:g}", param=param
        )
    return float(value)


def parse_features(raw: Any) -> dict[str, Any]:
    """The feature switches a client set (unknown names are ignored; wrong types are 400)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadRequest("'features' must be an object", param="features")
    out: dict[str, Any] = {}
    for name in BOOL_FEATURES:
        if name in raw and raw[name] is not None:
            if not isinstance(raw[name], bool):
                raise BadRequest(f"'features.{name}' must be a boolean", param=f"features.{name}")
            out[name] = raw[name]
    limit = raw.get("memory_limit")
    if limit is not None:
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= MAX_MEMORY_LIMIT
        ):
            raise BadRequest(
                f"'features.memory_limit' must be an integer from 1 to {MAX_MEMORY_LIMIT}",
                param="features.memory_limit",
            )
        out["memory_limit"] = limit
    return out


CHAT_REQUEST_SCHEMA = _chat_request_schema()
