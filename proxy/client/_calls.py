"""What each client method sends and how its answer is read; shared by the sync and async
clients, which only differ in how they send."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from proxy.client import types as t

T = TypeVar("T", bound=BaseModel)

DEFAULT_URL = "http://127.0.0.1:8080"
#: The longest a publish may wait for its learning job (the server's own limit).
MAX_PUBLISH_WAIT = 20.0


class ProfiloError(Exception):
    """An error answer of the server (OpenAI's envelope), or an unreadable one."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param


@dataclass(slots=True)
class Call(Generic[T]):
    method: str
    path: str
    result: type[T]
    json: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    #: A 404 is an answer, not an error (Reflexio's delete: ``success`` False).
    not_found: T | None = None


def settings(url_endpoint: str | None, api_key: str | None) -> tuple[str, dict[str, str]]:
    """The base URL and headers: arguments, then PROFILO_URL / PROFILO_API_KEY, then
    Reflexio's REFLEXIO_URL / REFLEXIO_API_KEY."""
    url = (
        url_endpoint
        or os.environ.get("PROFILO_URL")
        or os.environ.get("REFLEXIO_URL")
        or DEFAULT_URL
    )
    key = api_key or os.environ.get("PROFILO_API_KEY") or os.environ.get("REFLEXIO_API_KEY")
    headers = {"User-Agent": "profilo-client/0.1"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return url.rstrip("/"), headers


def parse(call: Call[T], response: httpx.Response) -> T:
    if response.status_code == 404 and call.not_found is not None:
        message = _error_fields(response).get("message") or "not found"
        return call.not_found.model_copy(update={"message": message})
    if response.status_code >= 400:
        err = _error_fields(response)
        raise ProfiloError(
            response.status_code,
            str(err.get("message") or response.text[:500]),
            type=err.get("type"),
            code=err.get("code"),
            param=err.get("param"),
        )
    return call.result.model_validate(response.json())


def _error_fields(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    err = body.get("error") if isinstance(body, dict) else None
    return err if isinstance(err, dict) else {}


def scoped(collection_id: str | None) -> dict[str, Any]:
    return {"collection_id": collection_id} if collection_id is not None else {}


def drop_none(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# -- Reflexio --------------------------------------------------------------------------------
def search_user_profiles(
    user_id: str,
    query: str,
    threshold: float | None,
    top_k: int | None,
    source: str | None,
    custom_feature: str | dict[str, Any] | None,
) -> Call[t.SearchUserProfileResponse]:
    body = drop_none(
        user_id=user_id,
        query=query,
        threshold=threshold,
        top_k=top_k,
        source=source,
        custom_feature=custom_feature,
    )
    return Call("POST", "/api/search_profiles", t.SearchUserProfileResponse, json=body)


def publish_interaction(
    user_id: str,
    interactions: list[dict[str, Any]],
    session_id: str | None,
    source: str | None,
    wait_seconds: float,
) -> Call[t.PublishUserInteractionResponse]:
    body = drop_none(
        user_id=user_id,
        interaction_data_list=[
            m.model_dump() if isinstance(m, BaseModel) else dict(m) for m in interactions
        ],
        session_id=session_id,
        source=source,
    )
    if wait_seconds > 0:
        body["wait_for_learning_seconds"] = min(wait_seconds, MAX_PUBLISH_WAIT)
    return Call("POST", "/api/publish_interaction", t.PublishUserInteractionResponse, json=body)


def get_profiles(
    user_id: str, top_k: int | None, start_time: int | None, end_time: int | None
) -> Call[t.GetUserProfilesResponse]:
    body = drop_none(user_id=user_id, top_k=top_k, start_time=start_time, end_time=end_time)
    return Call("POST", "/api/get_profiles", t.GetUserProfilesResponse, json=body)


def get_profile_change_log(
    user_id: str | None, limit: int | None
) -> Call[t.ProfileChangeLogResponse]:
    params = drop_none(user_id=user_id, limit=limit)
    return Call("GET", "/api/profile_change_log", t.ProfileChangeLogResponse, params=params)


def delete_profile(
    user_id: str, profile_id: str | None, search_query: str | None
) -> Call[t.DeleteProfileResponse]:
    body = drop_none(user_id=user_id, profile_id=profile_id, search_query=search_query)
    return Call(
        "DELETE",
        "/api/delete_profile",
        t.DeleteProfileResponse,
        json=body,
        not_found=t.DeleteProfileResponse(success=False),
    )


def get_config() -> Call[t.Config]:
    return Call("GET", "/api/get_config", t.Config)


def set_config(config: t.Config | dict[str, Any]) -> Call[t.SetConfigResponse]:
    body = config.model_dump() if isinstance(config, BaseModel) else dict(config)
    return Call("POST", "/api/set_config", t.SetConfigResponse, json=body)


# -- Hebbrix-style /v1 -----------------------------------------------------------------------
def get_profile(collection_id: str | None) -> Call[t.Profile]:
    return Call("GET", "/v1/profile", t.Profile, params=scoped(collection_id))


def patch_profile(
    collection_id: str | None, fields: dict[str, Any], dry_run: bool
) -> Call[t.PatchResult]:
    body = dict(fields) | {"dry_run": dry_run}
    return Call("PATCH", "/v1/profile", t.PatchResult, json=body, params=scoped(collection_id))


def list_facts(
    collection_id: str | None,
    kind: str | None,
    category: str | None,
    source: str | None,
    limit: int | None,
    cursor: str | None,
) -> Call[t.FactPage]:
    params = scoped(collection_id) | drop_none(
        kind=kind, category=category, source=source, limit=limit, cursor=cursor
    )
    return Call("GET", "/v1/profile/facts", t.FactPage, params=params)


def get_fact(collection_id: str | None, fact_id: str) -> Call[t.Fact]:
    return Call("GET", f"/v1/profile/facts/{fact_id}", t.Fact, params=scoped(collection_id))


def create_fact(collection_id: str | None, fields: dict[str, Any]) -> Call[t.Fact]:
    return Call("POST", "/v1/profile/facts", t.Fact, json=fields, params=scoped(collection_id))


def update_fact(collection_id: str | None, fact_id: str, fields: dict[str, Any]) -> Call[t.Fact]:
    return Call(
        "PATCH", f"/v1/profile/facts/{fact_id}", t.Fact, json=fields, params=scoped(collection_id)
    )


def delete_fact(collection_id: str | None, fact_id: str) -> Call[t.DeletedFact]:
    return Call(
        "DELETE", f"/v1/profile/facts/{fact_id}", t.DeletedFact, params=scoped(collection_id)
    )


def dialectic(
    collection_id: str | None, question: str, session_id: str | None, model: str | None
) -> Call[t.DialecticResponse]:
    body = scoped(collection_id) | drop_none(
        user_message=question, session_id=session_id, model=model
    )
    return Call("POST", "/v1/profile/dialectic", t.DialecticResponse, json=body)
