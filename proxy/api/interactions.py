"""/v1/interactions: publish turns without chatting (Reflexio's publish_interaction), and the
status of any learning job (a chat turn's job id is its ``X-Profilo-Request-Id``)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from proxy.api.profile import change_json
from proxy.deps import current_account, get_services, request_id, scope_for
from proxy.errors import BadRequest, NotFound
from proxy.identity import ID_SCHEMA
from proxy.models import Account
from proxy.schemas.openai import MAX_WAIT_FOR_LEARNING
from proxy.schemas.profile import iso
from proxy.services.container import Services
from proxy.store.changes import ChangeQuery
from proxy.store.jobs import Job

router = APIRouter(prefix="/v1/interactions", tags=["interactions"])

DEFAULT_SOURCE = "interaction"


class InteractionMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")  # Reflexio's other interaction fields
    role: str
    content: str = Field(min_length=1, max_length=100_000)

    @field_validator("role")
    @classmethod
    def _role(cls, value: str) -> str:
        role = value.strip().lower()
        if role not in ("user", "assistant"):
            raise ValueError(f"role must be 'user' or 'assistant' (any case), got {value!r}")
        return role


class PublishInteractions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # checked by scope_for (proxy/identity.py): one rule wherever an id comes from
    collection_id: str | None = Field(default=None, json_schema_extra=ID_SCHEMA)
    user_id: str | None = Field(default=None, json_schema_extra=ID_SCHEMA)
    interaction_data_list: list[InteractionMessage] | None = Field(default=None, max_length=200)
    interactions: list[InteractionMessage] | None = Field(default=None, max_length=200)
    messages: list[InteractionMessage] | None = Field(default=None, max_length=200)
    session_id: str | None = Field(default=None, max_length=256)
    source: str | None = Field(default=None, min_length=1, max_length=200)
    model: str | None = Field(default=None, min_length=1, max_length=256)
    wait_for_learning_seconds: float = Field(default=0.0, ge=0.0, le=MAX_WAIT_FOR_LEARNING)

    @model_validator(mode="after")
    def _one_list(self) -> PublishInteractions:
        given = [m for m in (self.interaction_data_list, self.interactions, self.messages) if m]
        if len(given) != 1:
            raise ValueError(
                "send the turn as one non-empty list: interaction_data_list or messages"
            )
        if not any(m.role == "user" for m in given[0]):
            raise ValueError("the interaction has no user message: there is nothing to learn from")
        return self

    @property
    def turn(self) -> list[InteractionMessage]:
        return self.interaction_data_list or self.interactions or self.messages or []


def job_json(services: Services, job: Job) -> dict[str, Any]:
    out: dict[str, Any] = {
        "request_id": job.id,
        "status": job.status,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "error": job.error,
        "collection_id": job.collection_id,
        "session_id": job.payload.get("session_id"),
        "source": job.payload.get("source"),
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "next_attempt_at": iso(job.next_run_at) if job.status == "queued" else None,
    }
    if job.status == "done":
        result = job.result or {}
        out["result"] = {k: v for k, v in result.items() if k != "change_id"}
        entries = services.changes.entries(job.scope, ChangeQuery(request_id=job.id, limit=1))
        out["change"] = change_json(entries[0][1]) if entries else None
    return out


@router.post("", summary="Publish a turn to learn from (202; 200 when it waited and finished)")
async def publish(
    request: Request, req: PublishInteractions, account: Account = Depends(current_account)
) -> JSONResponse:
    services = get_services(request)
    scope = scope_for(account, req.collection_id, req.user_id)
    model = req.model or services.settings.models.extraction
    if not model:
        raise BadRequest(
            "no extraction model: send 'model' or configure models.extraction", param="model"
        )
    limit = services.settings.learning.max_message_chars
    job_id = request_id(request)
    payload = {
        "messages": [{"role": m.role, "content": m.content[:limit]} for m in req.turn],
        "session_id": req.session_id,
        "source": req.source or DEFAULT_SOURCE,
        "model": model,
    }
    await services.learning.enqueue(job_id, scope, payload, account.key_id)
    job: Job | None = None
    if req.wait_for_learning_seconds > 0:
        job = await services.learning.wait(account.id, job_id, req.wait_for_learning_seconds)
    if job is None:
        job = await asyncio.to_thread(services.jobs.get, account.id, job_id)
        assert job is not None
    body = await asyncio.to_thread(job_json, services, job)
    body |= {"success": True, "message": f"learning {job.status}"}
    return JSONResponse(body, status_code=200 if job.finished else 202)


@router.get("/{job_id}", summary="A learning job's status and, when done, the change it made")
def status(
    request: Request,
    job_id: str = Path(..., min_length=1, max_length=64),
    account: Account = Depends(current_account),
) -> dict[str, Any]:
    services = get_services(request)
    job = services.jobs.get(account.id, job_id)
    if job is None:
        raise NotFound(f"no learning job with request id {job_id!r}", param="request_id")
    return job_json(services, job)
