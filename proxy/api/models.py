"""GET /v1/models: the configured models and the upstream's own, in OpenAI's list format."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from proxy.deps import current_account, get_services
from proxy.models import Account

router = APIRouter()


@router.get("/v1/models", summary="List models")
async def list_models(
    request: Request, account: Account = Depends(current_account)
) -> dict[str, Any]:
    return {"object": "list", "data": await get_services(request).models.list()}
