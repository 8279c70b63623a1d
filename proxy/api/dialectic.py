"""POST /v1/profile/dialectic: ask plain-language questions about a user."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response

from proxy.api.replies import event_stream
from proxy.deps import current_account, get_services, request_id, scope_for
from proxy.models import Account
from proxy.schemas.dialectic import DialecticRequest

router = APIRouter(prefix="/v1/profile", tags=["dialectic"])


@router.post(
    "/dialectic",
    response_model=None,
    summary="Ask a question about the user (multi-turn with session_id)",
)
async def dialectic(
    request: Request,
    req: DialecticRequest,
    account: Account = Depends(current_account),
    collection_id: str | None = Query(None),
    user_id: str | None = Query(None),
) -> Response | dict[str, Any]:
    scope = scope_for(account, collection_id, user_id, req.collection_id)
    service = get_services(request).dialectic
    if req.stream:
        prepared, events = await service.ask_stream(
            scope, req, request_id=request_id(request), key_id=account.key_id
        )
        headers = {
            "X-Profilo-Session-Id": prepared.session_id,
            "X-Profilo-Fact-Ids": ",".join(c.fact.id for c in prepared.context.chosen),
        }
        return event_stream(events, headers)
    answer = await service.ask(scope, req, request_id=request_id(request), key_id=account.key_id)
    return {
        "assistant_message": answer.text,
        "response": answer.text,  # legacy alias
        "session_id": answer.session_id,
        "collection_id": scope.collection_id,
        "fact_ids": [c.fact.id for c in answer.context.chosen],
        "facts": answer.context.as_json(),
        "model": answer.model,
        "usage": answer.usage,
    }
