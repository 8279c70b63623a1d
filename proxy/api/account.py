"""/v1/config: the account's profile-extractor config and feature defaults."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from proxy.deps import current_account, get_services
from proxy.models import Account
from proxy.schemas.profile import AccountConfig

router = APIRouter(prefix="/v1/config", tags=["config"])


@router.get("", summary="The account's config (defaults when nothing was set)")
def get_config(request: Request, account: Account = Depends(current_account)) -> dict[str, Any]:
    return get_services(request).account_config.get(account.id).model_dump()


@router.put("", summary="Replace the account's config")
def put_config(
    request: Request, config: AccountConfig, account: Account = Depends(current_account)
) -> dict[str, Any]:
    stored = get_services(request).account_config.put(account.id, config)
    return stored.model_dump() | {"success": True}
