"""/v1/profile/facts: per-fact CRUD with filters and cursor pagination."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from proxy.deps import current_account, get_services, request_id, scope_for
from proxy.models import Account
from proxy.schemas.profile import FactCreate, FactUpdate, Kind, fact_json, snapshot_json
from proxy.store.facts import FactFilter

router = APIRouter(prefix="/v1/profile/facts", tags=["facts"])

FACT_ID = Path(..., min_length=1, max_length=64, pattern=r"^fact_[0-9a-f]{32}$")


@router.get("", summary="List facts")
def list_facts(
    request: Request,
    account: Account = Depends(current_account),
    collection_id: str | None = Query(None),
    user_id: str | None = Query(None),
    kind: Kind | None = Query(None),
    category: str | None = Query(None),
    source: str | None = Query(None),
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, max_length=200),
) -> dict[str, Any]:
    scope = scope_for(account, collection_id, user_id)
    facts, next_cursor = get_services(request).profile.list_facts(
        scope, FactFilter(kind=kind, category=category, source=source), limit=limit, cursor=cursor
    )
    return {
        "facts": [fact_json(f) for f in facts],
        "has_more": next_cursor is not None,
        "next_cursor": next_cursor,
        "collection_id": scope.collection_id,
    }


@router.post("", status_code=201, summary="Create a fact (409 when its key exists)")
def create_fact(
    request: Request,
    req: FactCreate,
    account: Account = Depends(current_account),
    collection_id: str | None = Query(None),
    user_id: str | None = Query(None),
) -> JSONResponse:
    scope = scope_for(account, collection_id, user_id, req.collection_id)
    fact = get_services(request).profile.create_fact(scope, req, request_id=request_id(request))
    return JSONResponse(fact_json(fact), status_code=201)


@router.get("/{fact_id}", summary="One fact, with its closed versions")
def get_fact(
    request: Request,
    fact_id: str = FACT_ID,
    account: Account = Depends(current_account),
    collection_id: str | None = Query(None),
    user_id: str | None = Query(None),
) -> dict[str, Any]:
    scope = scope_for(account, collection_id, user_id)
    profile = get_services(request).profile
    fact = profile.get_fact(scope, fact_id)
    return fact_json(fact) | {
        "history": [snapshot_json(s) for s in profile.records.history(scope, fact_id)]
    }


@router.patch("/{fact_id}", summary="Edit a fact (its old value is kept as history)")
def update_fact(
    request: Request,
    req: FactUpdate,
    fact_id: str = FACT_ID,
    account: Account = Depends(current_account),
    collection_id: str | None = Query(None),
    user_id: str | None = Query(None),
) -> dict[str, Any]:
    scope = scope_for(account, collection_id, user_id, req.collection_id)
    fact = get_services(request).profile.update_fact(
        scope, fact_id, req, request_id=request_id(request)
    )
    return fact_json(fact)


@router.delete("/{fact_id}", summary="Delete a fact")
def delete_fact(
    request: Request,
    fact_id: str = FACT_ID,
    account: Account = Depends(current_account),
    collection_id: str | None = Query(None),
    user_id: str | None = Query(None),
    purge: bool = Query(False, description="also erase its history and change-log entries"),
) -> dict[str, Any]:
    scope = scope_for(account, collection_id, user_id)
    fact = get_services(request).profile.delete_fact(
        scope, fact_id, request_id=request_id(request), purge=purge
    )
    return {"id": fact.id, "object": "profile.fact.deleted", "deleted": True, "key": fact.key}
