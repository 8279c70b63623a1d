"""How a key and value become a valid fact: normalized keys, bounded values, categories."""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from proxy.config import ProfileSettings
from proxy.errors import BadRequest, SecretValue
from proxy.models import CATEGORIES
from proxy.services.secrets import find_secret

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_WORD = re.compile(r"[^a-z0-9]+")
#: Keys a PATCH body reserves for itself (not facts).
RESERVED_KEYS = frozenset({"collection_id", "user_id", "dry_run"})


def normalize_key(raw: Any, rules: ProfileSettings, param: str = "key") -> str:
    """``"Favorite Color"``, ``"favoriteColor"``, ``"favorite-color"`` → ``favorite_color``."""
    if not isinstance(raw, str):
        raise BadRequest(f"'{param}' must be a string", param=param)
    key = _NON_WORD.sub("_", _CAMEL.sub("_", raw.strip()).lower()).strip("_")
    if not key:
        raise BadRequest(f"'{param}' must contain letters or digits, got {raw!r}", param=param)
    if len(key) > rules.max_key_chars:
        raise BadRequest(f"'{param}' is longer than {rules.max_key_chars} characters", param=param)
    if key in RESERVED_KEYS:
        raise BadRequest(f"'{key}' is a reserved name and cannot be a fact key", param=param)
    return key


def coerce_value(
    raw: Any, rules: ProfileSettings, param: str = "value", key: str | None = None
) -> str:
    """A fact value as text: strings as they are, numbers/booleans as JSON, lists joined.
    A value (or ``key``) that looks like a credential is refused (``SecretValue``)."""
    if isinstance(raw, str):
        value = raw.strip()
    elif _is_scalar(raw):
        value = orjson.dumps(raw).decode()
    elif isinstance(raw, list) and all(isinstance(v, str) or _is_scalar(v) for v in raw):
        value = ", ".join(v if isinstance(v, str) else orjson.dumps(v).decode() for v in raw)
    else:
        raise BadRequest(
            f"'{param}' must be a string, number, boolean or a list of those", param=param
        )
    if not value:
        raise BadRequest(f"'{param}' must not be empty", param=param)
    if len(value) > rules.max_value_chars:
        raise BadRequest(
            f"'{param}' is longer than {rules.max_value_chars} characters", param=param
        )
    kind = find_secret(key, value, rules.redaction)
    if kind is not None:
        raise SecretValue(
            f"'{param}' looks like a credential ({kind}); credentials are not stored as facts "
            "(see profile.redaction in the config)",
            param=param,
        )
    return value


def _is_scalar(raw: Any) -> bool:
    """A boolean, a 64-bit integer or a finite float (NaN / Infinity would be stored as
    ``null``; orjson refuses wider integers)."""
    if isinstance(raw, bool):
        return True
    if isinstance(raw, int):
        return -(2**63) <= raw < 2**63
    return isinstance(raw, float) and math.isfinite(raw)


def category_for(key: str, given: str | None = None) -> str:
    """An explicit known category wins; a key named like a category is that category;
    everything else is ``other``."""
    if given is not None:
        normalized = given.strip().lower()
        if normalized not in CATEGORIES:
            raise BadRequest(
                f"'category' must be one of {list(CATEGORIES)}, got {given!r}", param="category"
            )
        return normalized
    return key if key in CATEGORIES else "other"
