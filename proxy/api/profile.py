"""/v1/profile: the whole profile (GET, PATCH), search, delete by query, change log."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response

from proxy.deps import current_account, get_services, request_id, scope_for
from proxy.errors import BadRequest
from proxy.models import FLAT_KEYS, Account, Scope
from proxy.schemas.profile import DeleteByQuery, SearchRequest, fact_json, iso, snapshot_json
from proxy.services import rerank
from proxy.services.profile import PatchResult
from proxy.store.changes import ChangeQuery
from proxy.store.facts import Change

router = APIRouter(prefix="/v1/profile", tags=["profile"])


def _profile_json(scope: Scope, facts: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"collection_id": scope.collection_id}
    out |= {key: None for key in FLAT_KEYS}
    static: list[dict[str, Any]] = []
    dynamic: list[dict[str, Any]] = []
    for fact in facts:
        if fact.key in FLAT_KEYS:
            out[fact.key] = fact.value
            continue
        (static if fact.kind == "static" else dynamic).append(fact_json(fact))
    for bucket in (static, dynamic):
        bucket.sort(key=lambda f: (-f["confidence"], f["key"]))
    out["profile"] = {"static": static, "dynamic": dynamic}
    out["fact_count"] = len(facts)
    out["updated_at"] = iso(max((f.updated_at for f in facts), default=None))
    return out


def _patch_json(scope: Scope, result: PatchResult, dry_run: bool) -> dict[str, Any]:
    if dry_run:
        return {
            "status": "preview",
            "would_update": len(result.updated),
            "would_create": len(result.created),
            "would_delete": len(result.deleted),
            "collection_id": scope.collection_id,
            "changes": result.diff,
        }
    parts = [f"Updated {len(result.updated)}", f"created {len(result.created)}"]
    if result.deleted:
        parts.append(f"deleted {len(result.deleted)}")
    return {
        "status": "success",
        "updated": len(result.updated),
        "created": len(result.created),
        "deleted": len(result.deleted),
        "unchanged": len(result.unchanged),
        "message": ", ".join(parts) + " profile facts",
        "collection_id": scope.collection_id,
        "changes": result.diff,
    }


def change_json(change: Change) -> dict[str, Any]:
    return {
        "id": change.id,
        "request_id": change.request_id,
        "created_at": iso(change.created_at),
        "collection_id": change.collection_id,
        "source": change.source,
        "added": [snapshot_json(s) for s in change.added],
        "updated": [
            {"before": snapshot_json(u["before"]), "after": snapshot_json(u["after"])}
            for u in change.updated
        ],
        "removed": [snapshot_json(s) for s in change.removed],
    }


@router.get("", summary="The user's profile")
def get_profile(
    request: Request,
    account: Account = Depends(current_account),
    collection_id: str | None = Query(None),
    user_id: str | None = Query(None),
) -> dict[str, Any]:
    scope = scope_for(account, collection_id, user_id)
    return _profile_json(scope, get_services(request).profile.facts(scope))


@router.patch("", summary="Set profile facts from a flat {key: value} body")
def patch_profile(
    request: Request,
    body: dict[str, Any] = Body(...),
    account: Account = Depends(current_account),
    collection_id: str | None = Query(None),
    user_id: str | None = Query(None),
) -> dict[str, Any]:
    items = dict(body)
    dry_run = items.pop("dry_run", False)
    if not isinstance(dry_run, bool):
        raise BadRequest("'dry_run' must be a boolean", param="dry_run")
    ids = [items.pop(name, None) for name in ("collection_id", "user_id")]
    for value in ids:
        if value is not None and not isinstance(value, str):
            raise BadRequest("'collection_id' must be a string", param="collection_id")
    scope = scope_for(account, collection_id, user_id, *ids)
    result = get_services(request).profile.patch_profile(
        scope, items, dry_run=dry_run, request_id=request_id(request)
    )
    return _patch_json(scope, result, dry_run)


@router.post("/search", summary="Semantic search over the profile's facts")
def search_profile(
    request: Request,
    response: Response,
    req: SearchRequest,
    account: Account = Depends(current_account),
    collection_id: str | None = Query(None),
    user_id: str | None = Query(None),
) -> dict[str, Any]:
    scope = scope_for(account, collection_id, user_id, req.collection_id)
    rerank.outcome.set(None)
    hits = get_services(request).profile.search(scope, req)
    if (reranked := rerank.outcome.get()) is not None:
        response.headers["X-Profilo-Rerank"] = reranked
    return {
        "facts": [fact_json(h.fact, score=h.score) for h in hits],
        "collection_id": scope.collection_id,
    }


@router.post("/delete", summary="Delete the facts matching a query (or one id); dry_run previews")
def delete_by_query(
    request: Request,
    req: DeleteByQuery,
    account: Account = Depends(current_account),
    collection_id: str | None = Query(None),
    user_id: str | None = Query(None),
) -> dict[str, Any]:
    scope = scope_for(account, collection_id, user_id, req.collection_id)
    hits = get_services(request).profile.delete_matching(scope, req, request_id=request_id(request))
    listed = [
        {
            "id": h.fact.id,
            "key": h.fact.key,
            "value": h.fact.value,
            "content": h.fact.text,
            "score": round(h.score, 6),
        }
        for h in hits
    ]
    verb = "Would delete" if req.dry_run else "Deleted"
    return {
        "status": "preview" if req.dry_run else "success",
        "success": True,
        "dry_run": req.dry_run,
        "deleted": [] if req.dry_run else listed,
        "would_delete": listed if req.dry_run else [],
        "count": len(listed),
        "message": f"{verb} {len(listed)} profile facts",
        "collection_id": scope.collection_id,
    }


@router.get("/changes", summary="The change log, newest first")
def list_changes(
    request: Request,
    account: Account = Depends(current_account),
    collection_id: str | None = Query(None),
    user_id: str | None = Query(None),
    request_id_: str | None = Query(None, alias="request_id"),
    since: float | None = Query(None, description="unix time, inclusive"),
    until: float | None = Query(None, description="unix time, inclusive"),
    limit: int = Query(50, ge=1, le=500),
    cursor: int | None = Query(
        None, ge=1, le=2**63 - 1, description="next_cursor of the previous page"
    ),
) -> dict[str, Any]:
    scope = scope_for(account, collection_id, user_id)
    q = ChangeQuery(
        request_id=request_id_, since=since, until=until, before_seq=cursor, limit=limit + 1
    )
    rows = get_services(request).changes.entries(scope, q)
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "changes": [change_json(c) for _, c in rows],
        "has_more": more,
        "next_cursor": rows[-1][0] if more and rows else None,
        "collection_id": scope.collection_id,
    }
