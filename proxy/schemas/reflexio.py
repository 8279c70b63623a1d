"""Reflexio's request and response shapes (``/api/...``), mapped from and to our facts.

A Reflexio "profile" is one fact: ``content`` is the fact rendered as text, ``profile_id`` its
id, ``last_modified_timestamp`` its ``updated_at`` (unix seconds, an int as Reflexio sends),
``generated_from_request_id`` and ``source`` come straight from the fact.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from proxy.identity import ID_SCHEMA
from proxy.models import Fact


class GetProfilesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
    user_id: str = Field(json_schema_extra=ID_SCHEMA)  # checked by scope_for
    top_k: int | None = Field(default=None, ge=1)
    start_time: int | None = Field(default=None, description="unix seconds, inclusive")
    end_time: int | None = Field(default=None, description="unix seconds, inclusive")


class DeleteProfileRequest(BaseModel):
    """Delete one profile by ``profile_id`` or every profile matching ``search_query``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
    user_id: str = Field(json_schema_extra=ID_SCHEMA)  # checked by scope_for
    profile_id: str | None = Field(default=None, min_length=1, max_length=256)
    search_query: str | None = Field(default=None, min_length=1, max_length=4000)
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_target(self) -> DeleteProfileRequest:
        if (self.profile_id is None) == (self.search_query is None):
            raise ValueError("send exactly one of profile_id or search_query")
        return self


def profile_json(fact: Fact, *, score: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "profile_id": fact.id,
        "user_id": fact.collection_id,
        "content": fact.text,
        "last_modified_timestamp": int(fact.updated_at),
        "generated_from_request_id": fact.generated_from_request_id,
        "source": fact.source,
        "custom_features": fact.metadata,
        "expiration_timestamp": int(fact.expires_at) if fact.expires_at is not None else None,
        "key": fact.key,
        "value": fact.value,
        "kind": fact.kind,
        "category": fact.category,
        "confidence": fact.confidence,
    }
    if score is not None:
        out["score"] = round(score, 6)
    return out


def snapshot_profile(snap: dict[str, Any]) -> dict[str, Any]:
    """A stored fact snapshot (change log) as a Reflexio profile."""
    return profile_json(Fact(**{k: v for k, v in snap.items() if k != "valid_to"}))
