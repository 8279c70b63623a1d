"""GET /v1/usage (the caller account's metered usage) and GET /v1/usage/limits (its limits:
read only; the operator sets them, ``proxy/api/usage_admin.py`` and ``profilo limits``)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from proxy.deps import current_account, get_services
from proxy.models import Account
from proxy.services.usage import parse_time

router = APIRouter(prefix="/v1/usage", tags=["usage"])


@router.get("", summary="The account's usage: tokens, memory tokens and cost, grouped")
async def usage(
    request: Request,
    account: Account = Depends(current_account),
    since: str | None = Query(None, alias="from", max_length=40),
    until: str | None = Query(None, alias="to", max_length=40),
    group_by: Literal["day", "model", "end_user", "key", "kind"] = Query("day"),
) -> dict[str, Any]:
    return await get_services(request).usage.report(
        account.id, parse_time(since, "from"), parse_time(until, "to"), group_by
    )


@router.get("/limits", summary="The limits set for the account and its keys (read only)")
async def limits(request: Request, account: Account = Depends(current_account)) -> dict[str, Any]:
    return await get_services(request).usage.limits(account.id)
