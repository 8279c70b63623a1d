"""The extraction model's answer: parsed, and every operation checked.

An answer that is not JSON of the expected shape is an ``AnswerError`` (a failed attempt,
retried), never an empty success. Inside a well-formed answer, each operation that is not
valid is dropped and counted by reason, never repaired by guessing.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from proxy.config import ProfileSettings
from proxy.errors import BadRequest, SecretValue
from proxy.models import CATEGORIES, FactKind
from proxy.services.fact_rules import coerce_value, normalize_key

log = logging.getLogger("profilo.extraction")

OpName = Literal["add", "update", "delete"]
OPS = ("add", "update", "delete", "none")

#: The structured-output schema (``response_format: json_schema``, strict).
OPERATIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["operations"],
    "properties": {
        "operations": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": [
                    "op",
                    "id",
                    "key",
                    "value",
                    "kind",
                    "category",
                    "confidence",
                    "source_message",
                ],
                "properties": {
                    "op": {"type": "string", "enum": list(OPS)},
                    "id": {"type": ["string", "null"]},
                    "key": {"type": "string"},
                    "value": {"type": "string"},
                    "kind": {"type": "string", "enum": ["static", "dynamic"]},
                    "category": {"type": "string", "enum": list(CATEGORIES)},
                    "confidence": {"type": "number"},
                    "source_message": {"type": "integer"},
                },
            },
        }
    },
}

_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n(.*)\n\s*```$", re.DOTALL)


class AnswerError(Exception):
    """The model's answer is not the JSON asked for: the attempt failed."""


@dataclass(slots=True)
class Operation:
    op: OpName
    target: str | None  # the prompt's local id (update / delete)
    key: str | None  # normalized; None for delete (and update keeping its key)
    value: str | None
    kind: FactKind
    category: str
    confidence: float
    source_message: int


@dataclass(slots=True)
class Checked:
    operations: list[Operation] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    none: int = 0
    total: int = 0


def parse_answer(text: str | None) -> list[Any]:
    """The ``operations`` list of the model's answer (a Markdown code fence is tolerated)."""
    if text is None or not text.strip():
        raise AnswerError("the model's answer is empty")
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise AnswerError(f"the model's answer is not JSON ({_described(text)})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("operations"), list):
        shape = 'the model\'s answer is not {"operations": [...]}'
        raise AnswerError(f"{shape} ({_described(text)})")
    return list(data["operations"])


def _described(text: str) -> str:
    """An unusable answer said without its content (it may repeat what the user said: logs
    and the job's error get its length and a hash; the text itself only at debug level)."""
    digest = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:12]
    log.debug("unusable extraction answer %s: %r", digest, text[:300])
    return f"{len(text)} characters, sha256 {digest}"


class _Drop(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_operations(
    raw_ops: list[Any],
    *,
    shown: set[str],
    user_messages: set[int],
    assistant_messages: set[int],
    rules: ProfileSettings,
) -> Checked:
    """Validate each operation against the prompt the model saw."""
    out = Checked(total=len(raw_ops))
    targets: set[str] = set()
    added_keys: set[str] = set()
    for raw in raw_ops:
        try:
            op = _check_one(raw, shown, user_messages, assistant_messages, rules)
        except _Drop as drop:
            out.dropped[drop.reason] += 1
            continue
        if op is None:
            out.none += 1
            continue
        if op.target is not None:
            if op.target in targets:
                out.dropped["duplicate"] += 1
                continue
            targets.add(op.target)
        if op.op == "add" and op.key is not None:
            if op.key in added_keys:
                out.dropped["duplicate"] += 1
                continue
            added_keys.add(op.key)
        out.operations.append(op)
    return out


def _check_one(
    raw: Any,
    shown: set[str],
    user_messages: set[int],
    assistant_messages: set[int],
    rules: ProfileSettings,
) -> Operation | None:
    if not isinstance(raw, dict):
        raise _Drop("malformed")
    name = raw.get("op")
    if name not in OPS:
        raise _Drop("unknown_op")
    if name == "none":
        return None
    source = raw.get("source_message")
    if isinstance(source, float) and source.is_integer():
        source = int(source)
    if not isinstance(source, int) or isinstance(source, bool):
        raise _Drop("unknown_source")
    if source in assistant_messages:
        raise _Drop("assistant_source")
    if source not in user_messages:
        raise _Drop("unknown_source")
    target: str | None = None
    if name in ("update", "delete"):
        target = raw.get("id")
        if not isinstance(target, str) or target not in shown:
            raise _Drop("unknown_id")
    if name == "delete":
        return Operation("delete", target, None, None, "static", "other", 1.0, source)
    key = _key(raw.get("key"), rules, required=name == "add")
    value = _value(raw.get("value"), rules, key)
    kind = raw.get("kind")
    if kind not in ("static", "dynamic"):
        raise _Drop("bad_kind")
    category = raw.get("category")
    if not isinstance(category, str) or category.strip().lower() not in CATEGORIES:
        raise _Drop("unknown_category")
    confidence = raw.get("confidence")
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, int | float)
        or not 0.0 <= confidence <= 1.0
    ):
        raise _Drop("bad_confidence")
    op: OpName = "add" if name == "add" else "update"
    return Operation(
        op, target, key, value, kind, category.strip().lower(), float(confidence), source
    )


def _key(raw: Any, rules: ProfileSettings, *, required: bool) -> str | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        if required:
            raise _Drop("bad_key")
        return None  # an update that keeps the fact's key
    try:
        return normalize_key(raw, rules)
    except BadRequest as exc:
        raise _Drop("bad_key") from exc


def _value(raw: Any, rules: ProfileSettings, key: str | None = None) -> str:
    if (
        raw is None
        or (isinstance(raw, str | list) and not raw)
        or (isinstance(raw, str) and not raw.strip())
    ):
        raise _Drop("empty_value")
    try:
        return coerce_value(raw, rules, key=key)
    except SecretValue as exc:
        raise _Drop("secret") from exc  # a credential is never learned
    except BadRequest as exc:
        raise _Drop("bad_value") from exc
