"""Typed results of the client (pydantic). Reflexio's names for the /api routes, Hebbrix's
for /v1. Unknown fields the server adds later are kept (``extra="allow"``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Result(BaseModel):
    model_config = ConfigDict(extra="allow")

    def __getitem__(self, name: str) -> Any:
        """``response["success"]`` works as well as ``response.success`` (Reflexio's
        examples use both)."""
        try:
            return getattr(self, name)
        except AttributeError:
            raise KeyError(name) from None


# -- Reflexio ------------------------------------------------------------------------------
class UserProfile(_Result):
    profile_id: str
    user_id: str | None = None
    content: str
    last_modified_timestamp: int
    generated_from_request_id: str | None = None
    source: str | None = None
    custom_features: dict[str, Any] = Field(default_factory=dict)
    expiration_timestamp: int | None = None
    score: float | None = None


class SearchUserProfileResponse(_Result):
    success: bool = True
    user_profiles: list[UserProfile] = Field(default_factory=list)
    msg: str | None = None


class GetUserProfilesResponse(SearchUserProfileResponse):
    pass


class PublishUserInteractionResponse(_Result):
    success: bool = True
    message: str | None = None
    request_id: str
    status: str


class ProfileChangeLog(_Result):
    id: str
    user_id: str | None = None
    request_id: str | None = None
    source: str | None = None
    created_at: int
    added_profiles: list[UserProfile] = Field(default_factory=list)
    removed_profiles: list[UserProfile] = Field(default_factory=list)


class ProfileChangeLogResponse(_Result):
    success: bool = True
    profile_change_logs: list[ProfileChangeLog] = Field(default_factory=list)


class DeleteProfileResponse(_Result):
    success: bool
    message: str = ""
    deleted_profile_ids: list[str] = Field(default_factory=list)


class ProfileExtractorConfig(_Result):
    profile_content_definition_prompt: str | None = None
    context_prompt: str | None = None
    should_extract_profile_prompt_override: str | None = None


class FeatureDefaults(_Result):
    memory: bool = False
    user_profile: bool = False
    learning: bool = True


class Config(_Result):
    """The account's config. Assigning a plain dict to ``profile_extractor_config`` (as
    Reflexio's examples do) validates it into the typed model."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    profile_extractor_config: ProfileExtractorConfig = Field(default_factory=ProfileExtractorConfig)
    features: FeatureDefaults = Field(default_factory=FeatureDefaults)


class SetConfigResponse(_Result):
    success: bool
    message: str | None = None
    config: Config | None = None


# -- Hebbrix-style /v1 -----------------------------------------------------------------------
class Fact(_Result):
    id: str
    key: str
    value: Any
    kind: str
    category: str
    confidence: float
    source: str | None = None
    collection_id: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    expires_at: str | None = None
    generated_from_request_id: str | None = None
    session_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    content: str = ""
    score: float | None = None


class FactPage(_Result):
    facts: list[Fact]
    has_more: bool = False
    next_cursor: str | None = None
    collection_id: str | None = None


class ProfileBuckets(_Result):
    static: list[Fact] = Field(default_factory=list)
    dynamic: list[Fact] = Field(default_factory=list)


class Profile(_Result):
    collection_id: str | None = None
    name: Any = None
    timezone: Any = None
    language: Any = None
    profile: ProfileBuckets = Field(default_factory=ProfileBuckets)
    fact_count: int = 0
    updated_at: str | None = None


class PatchResult(_Result):
    """A PATCH's outcome: ``status`` is ``success`` or, for a dry run, ``preview``
    (then ``would_update`` / ``would_create`` / ``would_delete``)."""

    status: str
    collection_id: str | None = None
    changes: list[dict[str, Any]] = Field(default_factory=list)


class DeletedFact(_Result):
    id: str
    deleted: bool
    key: str


class DialecticResponse(_Result):
    assistant_message: str
    session_id: str
