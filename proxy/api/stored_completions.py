"""Stored chat completions: GET /v1/chat/completions (list), GET/POST/DELETE
/v1/chat/completions/{id}, GET /v1/chat/completions/{id}/messages (per account)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from proxy.deps import current_account, get_services
from proxy.models import Account
from proxy.schemas.openai import parse_json_object

router = APIRouter()


@router.get("/v1/chat/completions", summary="List stored chat completions")
async def list_completions(
    request: Request, account: Account = Depends(current_account)
) -> dict[str, Any]:
    params = dict(request.query_params)
    return await get_services(request).stored_completions.list(account, params)


@router.get("/v1/chat/completions/{completion_id}", summary="Get a stored chat completion")
async def retrieve(
    completion_id: str, request: Request, account: Account = Depends(current_account)
) -> dict[str, Any]:
    return await get_services(request).stored_completions.retrieve(account, completion_id)


@router.post(
    "/v1/chat/completions/{completion_id}", summary="Update a stored chat completion's metadata"
)
async def update(
    completion_id: str, request: Request, account: Account = Depends(current_account)
) -> dict[str, Any]:
    body = parse_json_object(await request.body())
    return await get_services(request).stored_completions.update(account, completion_id, body)


@router.delete("/v1/chat/completions/{completion_id}", summary="Delete a stored chat completion")
async def delete(
    completion_id: str, request: Request, account: Account = Depends(current_account)
) -> dict[str, Any]:
    return await get_services(request).stored_completions.delete(account, completion_id)


@router.get(
    "/v1/chat/completions/{completion_id}/messages",
    summary="List the messages of a stored chat completion",
)
async def messages(
    completion_id: str, request: Request, account: Account = Depends(current_account)
) -> dict[str, Any]:
    params = dict(request.query_params)
    return await get_services(request).stored_completions.messages(account, completion_id, params)
