"""The operator's API for usage limits: ``/admin/limits/{account}``, behind
``usage.admin_key`` (a bearer token of its own, never an account's key). Unset: no admin
API (404). Accounts read their limits at ``GET /v1/usage/limits`` and never change them."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from proxy.config import resolve_secret
from proxy.deps import get_services
from proxy.errors import NotFound, Unauthorized
from proxy.identity import end_user_id
from proxy.schemas.usage import LimitsBody


def _operator(request: Request) -> None:
    expected = resolve_secret(get_services(request).settings.usage.admin_key)
    if not expected:
        raise NotFound("the admin API is off (set usage.admin_key)", code="unknown_url")
    given = request.headers.get("authorization", "")
    token = given[7:] if given[:7].lower() == "bearer " else ""
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise Unauthorized("this route takes the admin key (usage.admin_key)")


#: The key is checked before the body is read or validated.
router = APIRouter(prefix="/admin/limits", tags=["admin"], dependencies=[Depends(_operator)])


@router.get("/{account}", summary="An account's limits and its keys'")
async def read(request: Request, account: str) -> dict[str, Any]:
    return await get_services(request).usage.limits(end_user_id(account, "account"))


@router.put("/{account}", summary="Set an account's limits, or one key's (key_id)")
async def write(
    request: Request,
    account: str,
    body: LimitsBody,
    key_id: str | None = Query(None, max_length=64),
) -> dict[str, Any]:
    service = get_services(request).usage
    account = end_user_id(account, "account")
    await asyncio.to_thread(service.set_limits, account, key_id, body.limits())
    return await service.limits(account)
