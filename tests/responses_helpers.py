"""Helpers shared by the Responses API tests: raw SSE reading and typed validation."""

from __future__ import annotations

import json
import typing
from typing import Any

import httpx
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel

from proxy.store.db import open_database
from proxy.store.jobs import Job, JobStore
from proxy.store.keys import KeyStore
from tests.conftest import Proxy
from tests.fakes.upstream import DEFAULT_CONTENT
from tests.test_memory_chat import ALICE, patch

#: The SDK's typed event models by their ``type`` (the union's discriminator).
EVENT_MODELS: dict[str, type[BaseModel]] = {
    typing.get_args(cls.model_fields["type"].annotation)[0]: cls
    for cls in typing.get_args(typing.get_args(ResponseStreamEvent)[0])
}


def validate_event(event: dict[str, Any]) -> BaseModel:
    """The event parsed by the SDK model of its type (raises on anything that model rejects)."""
    return EVENT_MODELS[event["type"]].model_validate(event)


def stream_raw(
    proxy: Proxy, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """POST a streamed /v1/responses; every event validated against the SDK's typed event
    models (strictly: no extra keys lost), its ``event:`` line matching its type, sequence
    numbers 0, 1, 2, ... and no ``[DONE]``."""
    events: list[dict[str, Any]] = []
    with httpx.stream(
        "POST",
        proxy.base_url + "/responses",
        json={**body, "stream": True},
        headers=headers or {},
        timeout=30,
    ) as r:
        text = r.read().decode()
    assert r.status_code == 200, text
    assert "[DONE]" not in text
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        event = json.loads(lines["data"])
        assert lines["event"] == event["type"]
        validate_event(event)
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return r, events


def accounts(proxy: Proxy, *names: str) -> list[str]:
    keys = KeyStore(open_database(proxy.settings))
    return [keys.create(name)[1] for name in names]


def job(proxy: Proxy, account: str, request_id: str) -> Job | None:
    return JobStore(open_database(proxy.settings)).get(account, request_id)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def memory_context_answer(proxy: Proxy) -> tuple[Response, list[dict[str, Any]]]:
    """A non-streamed /v1/responses asking for ``return_memory_context``, through the SDK:
    the answer, and its ``memory_context`` checked against the facts of ALICE and the
    memory headers."""
    patch(proxy, ALICE, "alice")
    raw = proxy.client().responses.with_raw_response.create(
        model="gpt-4o-mini",
        input="Recommend a book for me",
        extra_body={
            "features": {"user_profile": True, "return_memory_context": True},
            "collection_id": "alice",
        },
    )
    out = raw.parse()
    assert out.output_text == DEFAULT_CONTENT
    context = (out.model_extra or {})["memory_context"]
    assert len(context) == int(raw.headers["x-profilo-memory-facts"]) > 0
    assert {item["key"]: item["value"] for item in context}.items() <= ALICE.items()
    assert all(item["id"].startswith("fact_") for item in context)
    without = proxy.client().responses.create(
        model="gpt-4o-mini",
        input="Recommend a book for me",
        extra_body={"features": {"user_profile": True}, "collection_id": "alice"},
    )
    assert "memory_context" not in (without.model_extra or {})
    return out, context
