"""GET /v1/collections: the caller account's collections that hold facts (newest first)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from proxy.deps import current_account, get_services, scope_for
from proxy.models import Account
from proxy.schemas.profile import iso
from proxy.store.collections import Collections

router = APIRouter(prefix="/v1/collections", tags=["profile"])


@router.get("", summary="The account's collections with live facts")
def list_collections(
    request: Request,
    account: Account = Depends(current_account),
    limit: int = Query(1000, ge=1, le=10000),
) -> dict[str, Any]:
    rows = Collections(get_services(request).db).of_account(account.id, limit=limit)
    return {
        "object": "list",
        "data": [
            {
                "collection_id": r.collection_id,
                "fact_count": r.fact_count,
                "updated_at": iso(r.updated_at),
            }
            for r in rows
        ],
    }


@router.delete("/{collection_id}", summary="Erase everything stored about one end user")
def erase_collection(
    request: Request, collection_id: str, account: Account = Depends(current_account)
) -> dict[str, Any]:
    scope = scope_for(account, collection_id)
    counts = get_services(request).profile.erase_collection(scope)
    return {"object": "collection.deleted", "collection_id": collection_id, "deleted": True,
            "erased": counts}  # fmt: skip
