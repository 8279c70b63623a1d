"""Validation of bodies against OpenAI's published chat-completions JSON Schemas.

The fixture (``tests/fixtures/openai-chat-completions-schemas.json``) is a slice of OpenAI's
OpenAPI 3.1 spec. It still uses OpenAPI's ``nullable: true``, which a plain JSON-Schema
validator ignores (so valid ``null`` values would be rejected); we rewrite it into
``anyOf: [<schema>, {"type": "null"}]`` recursively, then validate with Draft 2020-12,
resolving ``$ref: "#/components/schemas/..."`` against the whole document.

Usage::

    from tests.fakes.schema import validate_response, validate_chunk
    validate_response(resp_json)          # raises SchemaError with a readable message
"""

from __future__ import annotations

import json
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = [
    "FIXTURES_DIR",
    "SCHEMA_PATH",
    "SchemaError",
    "is_valid",
    "load_spec",
    "validate",
    "validate_chunk",
    "validate_error",
    "validate_request",
    "validate_response",
    "validator_for",
]

# tests/fakes/schema.py -> parents[1] = tests
FIXTURES_DIR: Path = Path(__file__).resolve().parents[1] / "fixtures"
SCHEMA_PATH: Path = FIXTURES_DIR / "openai-chat-completions-schemas.json"

_DOC_URI = "urn:openai-openapi"

REQUEST = "CreateChatCompletionRequest"
RESPONSE = "CreateChatCompletionResponse"
CHUNK = "CreateChatCompletionStreamResponse"
ERROR_RESPONSE = "ErrorResponse"
ERROR = "Error"


class SchemaError(AssertionError):
    """A body does not validate against OpenAI's schema (an AssertionError, for pytest)."""

    def __init__(self, schema_name: str, errors: list[ValidationError], instance: Any) -> None:
        self.schema_name = schema_name
        self.errors = errors
        self.instance = instance
        super().__init__(_format(schema_name, errors, instance))


def _format(schema_name: str, errors: list[ValidationError], instance: Any) -> str:
    best = best_match(errors)
    lines = [
        f"{schema_name}: {len(errors)} validation error(s); most relevant:",
        f"  at {best.json_path}: {_short(best.message)}",
    ]
    for err in errors[:8]:
        if err is best:
            continue
        lines.append(f"  at {err.json_path}: {_short(err.message)}")
    body = json.dumps(instance, default=str)
    lines.append(f"  instance: {_short(body, 600)}")
    return "\n".join(lines)


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _denullable(node: Any) -> Any:
    """Rewrite OpenAPI ``nullable: true`` into a JSON-Schema ``anyOf`` with ``null``."""
    if isinstance(node, list):
        return [_denullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _denullable(value) for key, value in node.items()}
    nullable = out.pop("nullable", None)
    if nullable is True:  # a property *named* "nullable" would be a dict, not True
        return {"anyOf": [out, {"type": "null"}]}
    if nullable is not None and nullable is not False:
        out["nullable"] = nullable  # not the keyword: put it back
    return out


@lru_cache(maxsize=1)
def load_spec() -> dict[str, Any]:
    """The fixture document with ``nullable`` rewritten (cached)."""
    if not SCHEMA_PATH.is_file():
        raise FileNotFoundError(f"OpenAI schema fixture not found at {SCHEMA_PATH}")
    raw = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    spec: dict[str, Any] = _denullable(raw)
    return spec


@lru_cache(maxsize=1)
def _registry() -> Registry:
    resource = Resource.from_contents(load_spec(), default_specification=DRAFT202012)
    return Registry().with_resource(_DOC_URI, resource)


@cache
def validator_for(schema_name: str) -> Draft202012Validator:
    """A compiled Draft 2020-12 validator for ``components.schemas[schema_name]``."""
    schemas = load_spec()["components"]["schemas"]
    if schema_name not in schemas:
        raise KeyError(f"no schema {schema_name!r} in {SCHEMA_PATH.name}")
    schema = {"$ref": f"{_DOC_URI}#/components/schemas/{schema_name}"}
    return Draft202012Validator(schema, registry=_registry())


def validate(schema_name: str, obj: Any) -> Any:
    """Validate ``obj`` against a named component schema; return it, or raise SchemaError."""
    errors = sorted(validator_for(schema_name).iter_errors(obj), key=lambda e: e.json_path)
    if errors:
        raise SchemaError(schema_name, errors, obj)
    return obj


def is_valid(schema_name: str, obj: Any) -> bool:
    return bool(validator_for(schema_name).is_valid(obj))


def validate_response(obj: Any) -> Any:
    """A non-streaming ``chat.completion`` body."""
    return validate(RESPONSE, obj)


def validate_chunk(obj: Any) -> Any:
    """One ``chat.completion.chunk`` (a parsed ``data:`` line of a stream)."""
    return validate(CHUNK, obj)


def validate_error(obj: Any) -> Any:
    """An error envelope ``{"error": {"message", "type", "param", "code"}}``."""
    return validate(ERROR_RESPONSE, obj)


def validate_request(obj: Any) -> Any:
    """A ``POST /v1/chat/completions`` request body."""
    return validate(REQUEST, obj)
