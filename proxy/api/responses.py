"""POST /v1/responses and the stored-response routes (OpenAI's Responses API)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from proxy.api.replies import json_bytes, outcome_response
from proxy.deps import current_account, get_services, request_id, user_header
from proxy.models import Account
from proxy.schemas.responses import parse_responses_request

router = APIRouter()


@router.post("/v1/responses", summary="Create a model response (OpenAI Responses API)")
async def create_response(
    request: Request, account: Account = Depends(current_account)
) -> Response:
    req = parse_responses_request(await request.body())
    outcome = await get_services(request).responses.create(
        req, account, user_header(request), request_id(request)
    )
    return outcome_response(outcome)


@router.get("/v1/responses/{response_id}", summary="Get a stored response")
async def get_response(
    response_id: str, request: Request, account: Account = Depends(current_account)
) -> Response:
    return json_bytes(await get_services(request).responses.get(account, response_id))


@router.delete("/v1/responses/{response_id}", summary="Delete a stored response")
async def delete_response(
    response_id: str, request: Request, account: Account = Depends(current_account)
) -> Response:
    return json_bytes(await get_services(request).responses.delete(account, response_id))


@router.get("/v1/responses/{response_id}/input_items", summary="List a response's input items")
async def list_input_items(
    response_id: str, request: Request, account: Account = Depends(current_account)
) -> Response:
    body = await get_services(request).responses.input_items(
        account, response_id, dict(request.query_params)
    )
    return json_bytes(body)
