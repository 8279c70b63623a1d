"""POST /v1/embeddings, /v1/completions (legacy), /v1/moderations; GET /v1/models/{id}."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse

from proxy.api.chat import SSE_HEADERS
from proxy.deps import current_account, get_services
from proxy.models import Account
from proxy.schemas.openai import parse_json_object

router = APIRouter()


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json")


@router.post("/v1/embeddings", summary="Create embeddings")
async def embeddings(request: Request, account: Account = Depends(current_account)) -> Response:
    body = parse_json_object(await request.body())
    return _json(await get_services(request).relay.embeddings(body))


@router.post("/v1/moderations", summary="Classify text (moderation)")
async def moderations(request: Request, account: Account = Depends(current_account)) -> Response:
    body = parse_json_object(await request.body())
    return _json(await get_services(request).relay.moderations(body))


@router.post("/v1/completions", summary="Create a completion (legacy)")
async def completions(request: Request, account: Account = Depends(current_account)) -> Response:
    body = parse_json_object(await request.body())
    outcome = await get_services(request).relay.completions(body)
    if outcome.stream is not None:
        return StreamingResponse(
            outcome.stream, media_type="text/event-stream", headers=SSE_HEADERS
        )
    assert outcome.json is not None
    return _json(outcome.json)


@router.get("/v1/models/{model_id:path}", summary="Retrieve a model")
async def retrieve_model(
    model_id: str, request: Request, account: Account = Depends(current_account)
) -> Response:
    return _json(await get_services(request).relay.model(model_id))
