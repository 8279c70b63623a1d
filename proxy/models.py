"""Domain objects shared by every layer. Imports nothing of the package."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

FactKind = Literal["static", "dynamic"]

#: Hebbrix's common profile fields, plus ``other`` for anything else.
CATEGORIES: tuple[str, ...] = (
    "name",
    "preferences",
    "interests",
    "expertise",
    "communication_style",
    "goals",
    "timezone",
    "language",
    "industry",
    "role",
    "personality_traits",
    "other",
)

#: Keys surfaced flat at the top level of ``GET /v1/profile``.
FLAT_KEYS: tuple[str, ...] = ("name", "timezone", "language")


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a read or write happens: one account, and one end user or the account-wide profile.

    ``collection_id`` None is the account-wide scope, which holds only the facts written without
    a collection. No store call exists without a Scope.
    """

    account: str
    collection_id: str | None = None

    def __post_init__(self) -> None:
        if not self.account:
            raise ValueError("a scope needs an account")

    @property
    def key(self) -> str:
        """Stable, opaque identifier of the scope (used to name index collections)."""
        raw = f"{self.account}\x00{self.collection_id if self.collection_id is not None else ''}"
        marker = "c" if self.collection_id is not None else "a"
        return marker + hashlib.sha256(raw.encode()).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    key_id: str | None = None  # None for the loopback dev account
    dev: bool = False


@dataclass(slots=True)
class Fact:
    id: str
    account: str
    collection_id: str | None
    key: str
    value: str
    kind: FactKind = "static"
    category: str = "other"
    confidence: float = 1.0
    source: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    expires_at: float | None = None
    valid_from: float = 0.0
    valid_to: float | None = None
    generated_from_request_id: str | None = None
    session_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The fact as one line of text: what is embedded and what Reflexio calls content."""
        return f"{self.key.replace('_', ' ')}: {self.value}"


@dataclass(slots=True)
class Features:
    """What a chat request asks of the proxy (Hebbrix's ``features`` names)."""

    memory: bool = False
    user_profile: bool = False
    learning: bool | None = None  # None: on whenever memory or user_profile is on
    memory_limit: int | None = None
    include_low_confidence: bool = False
    return_memory_context: bool = False

    @property
    def any(self) -> bool:
        return self.memory or self.user_profile


@dataclass(frozen=True, slots=True)
class Limits:
    """What the operator allows one account or one key (None: no limit)."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    monthly_budget: float | None = None  # in the cost map's currency (USD)
    extraction_jobs_per_minute: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "requests_per_minute": self.requests_per_minute,
            "tokens_per_minute": self.tokens_per_minute,
            "monthly_budget": self.monthly_budget,
            "extraction_jobs_per_minute": self.extraction_jobs_per_minute,
        }
