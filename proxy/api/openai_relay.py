"""POST /v1/embeddings, /v1/completions (legacy), /v1/moderations; GET /v1/models/{id}."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends, Request, Response

from proxy.api.replies import json_bytes, outcome_response
from proxy.deps import current_account, get_services
from proxy.models import Account
from proxy.schemas.openai import parse_json_object

router = APIRouter()


@router.post("/v1/embeddings", summary="Create embeddings")
async def embeddings(request: Request, account: Account = Depends(current_account)) -> Response:
    body = parse_json_object(await request.body())
    return json_bytes(await get_services(request).relay.embeddings(body))


@router.post("/v1/moderations", summary="Classify text (moderation)")
async def moderations(request: Request, account: Account = Depends(current_account)) -> Response:
    body = parse_json_object(await request.body())
    return json_bytes(await get_services(request).relay.moderations(body))


@router.post("/v1/completions", summary="Create a completion (legacy)")
async def completions(request: Request, account: Account = Depends(current_account)) -> Response:
    body = parse_json_object(await request.body())
    return outcome_response(await get_services(request).relay.completions(body))


@router.get("/v1/models/{model_id:path}", summary="Retrieve a model")
async def retrieve_model(
    model_id: str, request: Request, account: Account = Depends(current_account)
) -> Response:
    model = await get_services(request).models.get(model_id)
    return json_bytes(model if isinstance(model, bytes) else orjson.dumps(model))
