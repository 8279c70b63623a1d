"""/api/...: Reflexio's REST routes, thin adapters over the same services as /v1.

Search and delete go through ``ProfileService``, publishing through the /v1/interactions
route, the change log through ``ChangeLog``, config through ``AccountConfigService``. Auth is
the same ``Authorization: Bearer`` key.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from proxy.api import interactions
from proxy.deps import current_account, get_services, request_id, scope_for
from proxy.errors import NotFound
from proxy.identity import ID_SCHEMA
from proxy.models import Account
from proxy.schemas.profile import FACT_ID_PATTERN, AccountConfig, DeleteByQuery, SearchRequest
from proxy.schemas.reflexio import (
    DeleteProfileRequest,
    GetProfilesRequest,
    profile_json,
    snapshot_profile,
)
from proxy.store.changes import ChangeQuery
from proxy.store.facts import Change

router = APIRouter(prefix="/api", tags=["reflexio"])


def change_log_json(change: Change) -> dict[str, Any]:
    """One change-log entry; an update is its old version removed and its new one added."""
    return {
        "id": change.id,
        "user_id": change.collection_id,
        "request_id": change.request_id,
        "source": change.source,
        "created_at": int(change.created_at),
        "added_profiles": [snapshot_profile(s) for s in change.added]
        + [snapshot_profile(u["after"]) for u in change.updated],
        "removed_profiles": [snapshot_profile(s) for s in change.removed]
        + [snapshot_profile(u["before"]) for u in change.updated],
    }


@router.post("/search_profiles", summary="Semantic search over a user's profiles")
def search_profiles(
    request: Request, req: SearchRequest, account: Account = Depends(current_account)
) -> dict[str, Any]:
    scope = scope_for(account, req.collection_id)
    hits = get_services(request).profile.search(scope, req)
    return {
        "success": True,
        "user_profiles": [profile_json(h.fact, score=h.score) for h in hits],
        "msg": None,
    }


@router.post("/publish_interaction", summary="Publish interactions to learn from")
async def publish_interaction(
    request: Request,
    req: interactions.PublishInteractions,
    account: Account = Depends(current_account),
) -> JSONResponse:
    return await interactions.publish(request, req, account)


@router.post("/get_profiles", summary="A user's profiles, oldest first")
def get_profiles(
    request: Request, req: GetProfilesRequest, account: Account = Depends(current_account)
) -> dict[str, Any]:
    scope = scope_for(account, req.user_id)
    profile = get_services(request).profile
    limit = req.top_k if req.top_k is not None else profile.rules.max_top_k
    facts = [
        f
        for f in profile.facts(scope)
        if (req.start_time is None or f.updated_at >= req.start_time)
        and (req.end_time is None or f.updated_at <= req.end_time)
    ]
    return {"success": True, "user_profiles": [profile_json(f) for f in facts[:limit]], "msg": None}


@router.get("/profile_change_log", summary="The account's profile changes, oldest first")
def profile_change_log(
    request: Request,
    account: Account = Depends(current_account),
    user_id: str | None = Query(None, json_schema_extra=ID_SCHEMA),
    limit: int = Query(500, ge=1, le=5000),
) -> dict[str, Any]:
    changes = get_services(request).changes
    q = ChangeQuery(limit=limit)
    if user_id is None:
        rows = changes.entries(None, q, account=account.id)
    else:
        rows = changes.entries(scope_for(account, user_id), q)
    return {
        "success": True,
        "profile_change_logs": [change_log_json(c) for _, c in reversed(rows)],
    }


@router.delete("/delete_profile", summary="Delete a profile by id, or the ones matching a query")
def delete_profile(
    request: Request, req: DeleteProfileRequest, account: Account = Depends(current_account)
) -> dict[str, Any]:
    scope = scope_for(account, req.user_id)
    if req.profile_id is not None and not re.fullmatch(FACT_ID_PATTERN, req.profile_id):
        raise NotFound(f"no profile with id {req.profile_id!r} for this user", param="profile_id")
    query = DeleteByQuery(
        user_id=req.user_id,
        profile_id=req.profile_id,
        search_query=req.search_query,
        threshold=req.threshold,
        top_k=req.top_k,
    )
    gone = get_services(request).profile.delete_matching(
        scope, query, request_id=request_id(request)
    )
    return {
        "success": True,
        "message": f"deleted {len(gone)} profile(s)",
        "deleted_profile_ids": [h.fact.id for h in gone],
    }


@router.get("/get_config", summary="The account's config")
def get_config(request: Request, account: Account = Depends(current_account)) -> dict[str, Any]:
    return get_services(request).account_config.get(account.id).model_dump()


@router.post("/set_config", summary="Replace the account's config")
def set_config(
    request: Request, config: AccountConfig, account: Account = Depends(current_account)
) -> dict[str, Any]:
    stored = get_services(request).account_config.put(account.id, config)
    return {"success": True, "message": "config updated", "config": stored.model_dump()}
