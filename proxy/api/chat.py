"""POST /v1/chat/completions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from proxy.api.replies import outcome_response
from proxy.deps import current_account, get_services, request_id, user_header
from proxy.models import Account
from proxy.schemas.openai import CHAT_REQUEST_SCHEMA, parse_chat_request

router = APIRouter()


@router.post(
    "/v1/chat/completions",
    summary="Create a chat completion (OpenAI-compatible)",
    # The body is parsed by hand (forwarded verbatim); its schema is documented here.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": CHAT_REQUEST_SCHEMA}},
        }
    },
)
async def chat_completions(
    request: Request, account: Account = Depends(current_account)
) -> Response:
    chat = parse_chat_request(await request.body())
    outcome = await get_services(request).chat.complete(
        chat, account, user_header(request), request_id(request)
    )
    return outcome_response(outcome)
