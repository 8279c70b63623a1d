"""Request and response shapes of the profile API (Hebbrix's field names)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from proxy.identity import ID_SCHEMA
from proxy.models import Fact

Kind = Literal["static", "dynamic"]
#: Integers the records can store (orjson writes at most 64 bits); larger ones fail validation.
JSONInt = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
JSONScalar = str | JSONInt | float | bool
FactValue = JSONScalar | list[JSONScalar]
#: A fact's metadata: a small flat object (bounded like a fact's key and value).
MetaKey = Annotated[str, Field(min_length=1, max_length=64)]
MetaScalar = Annotated[str, Field(max_length=2000)] | JSONInt | float | bool
Metadata = Annotated[dict[MetaKey, MetaScalar], Field(max_length=50)]
FACT_ID_PATTERN = r"^fact_[0-9a-f]{32}$"
#: Longest TTL a request may set (100 years): later expiries are not representable dates.
MAX_TTL_SECONDS = 100 * 365 * 24 * 3600


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return (
        dt.datetime.fromtimestamp(ts, dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def fact_json(fact: Fact, *, score: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": fact.id,
        "key": fact.key,
        "value": fact.value,
        "kind": fact.kind,
        "category": fact.category,
        "confidence": fact.confidence,
        "source": fact.source,
        "collection_id": fact.collection_id,
        "created_at": iso(fact.created_at),
        "updated_at": iso(fact.updated_at),
        "expires_at": iso(fact.expires_at),
        "valid_from": iso(fact.valid_from),
        "valid_to": None,
        "generated_from_request_id": fact.generated_from_request_id,
        "session_id": fact.session_id,
        "metadata": fact.metadata,
        "content": fact.text,
    }
    if score is not None:
        out["score"] = round(score, 6)
    return out


def snapshot_json(snap: dict[str, Any]) -> dict[str, Any]:
    """A stored fact snapshot (change log, history) in the API's shape."""
    fact = Fact(**{k: v for k, v in snap.items() if k != "valid_to"})
    out = fact_json(fact)
    out["valid_to"] = iso(snap.get("valid_to"))
    return out


class _Scoped(BaseModel):
    """``collection_id`` with Reflexio's ``user_id`` alias (both may not disagree)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
    # checked by scope_for (proxy/identity.py): one rule wherever an id comes from
    collection_id: str | None = Field(default=None, json_schema_extra=ID_SCHEMA)
    user_id: str | None = Field(default=None, json_schema_extra=ID_SCHEMA)

    @model_validator(mode="after")
    def _one_scope(self) -> _Scoped:
        if self.user_id is not None:
            if self.collection_id is not None and self.collection_id != self.user_id:
                raise ValueError("collection_id and user_id disagree; send one of them")
            self.collection_id = self.user_id
        return self


class FactCreate(_Scoped):
    key: str = Field(min_length=1)
    value: FactValue
    kind: Kind = "static"
    category: str | None = None
    confidence: float = Field(default=1.0, ge=0.0, le=1.0)
    source: str | None = Field(default=None, max_length=200)
    metadata: Metadata = Field(default_factory=dict)
    session_id: str | None = Field(default=None, max_length=256)
    ttl_seconds: int | None = Field(default=None, ge=1, le=MAX_TTL_SECONDS)


class FactUpdate(_Scoped):
    key: str | None = Field(default=None, min_length=1)
    value: FactValue | None = None
    kind: Kind | None = None
    category: str | None = None
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    source: str | None = Field(default=None, max_length=200)
    metadata: Metadata | None = None
    ttl_seconds: int | None = Field(default=None, ge=1, le=MAX_TTL_SECONDS)


class SearchRequest(_Scoped):
    query: str = Field(min_length=1, max_length=4000)
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1)
    source: str | None = None
    kind: Kind | None = None
    custom_feature: str | dict[str, JSONScalar] | None = None


class DeleteByQuery(_Scoped):
    search_query: str | None = Field(default=None, min_length=1, max_length=4000)
    fact_id: str | None = Field(default=None, pattern=FACT_ID_PATTERN)
    profile_id: str | None = Field(default=None, pattern=FACT_ID_PATTERN)
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1)
    dry_run: StrictBool = False  # as strict as PATCH /v1/profile's: "false" is not False

    @model_validator(mode="after")
    def _one_target(self) -> DeleteByQuery:
        targets = [t for t in (self.search_query, self.fact_id, self.profile_id) if t]
        if len(targets) != 1:
            raise ValueError("send exactly one of search_query, fact_id (or profile_id)")
        return self


class ExtractorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    profile_content_definition_prompt: str | None = Field(default=None, max_length=20000)
    context_prompt: str | None = Field(default=None, max_length=20000)
    should_extract_profile_prompt_override: str | None = Field(default=None, max_length=20000)


class FeatureDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    memory: bool = False
    user_profile: bool = False
    learning: bool = True


class AccountConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    profile_extractor_config: ExtractorConfig = Field(default_factory=ExtractorConfig)
    features: FeatureDefaults = Field(default_factory=FeatureDefaults)
