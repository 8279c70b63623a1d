"""POST /v1/profile/dialectic through real HTTP: grounded answers, sessions, streaming, scope."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from proxy.store.db import open_database
from proxy.store.keys import KeyStore
from tests.conftest import Proxy
from tests.fakes.schema import validate_chunk, validate_error
from tests.fakes.upstream import FakeUpstream, chat_chunks, chat_completion, json_reply, sse_reply


def ask(proxy: Proxy, token: str | None = None, **body: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(proxy.base_url + "/profile/dialectic", json=body, headers=headers, timeout=30)


def patch(proxy: Proxy, facts: dict[str, Any], token: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.patch(proxy.base_url + "/profile", json=facts, headers=headers, timeout=30)
    assert r.status_code == 200, r.text


def prompt_of(up: FakeUpstream) -> str:
    return "\n".join(str(m["content"]) for m in up.last.json["messages"])


def test_hebbrix_examples_run_unchanged(proxy: Proxy, upstream: FakeUpstream) -> None:
    patch(
        proxy,
        {
            "role": "Senior Engineer",
            "expertise": "distributed databases",
            "communication_style": "short written summaries",
            "collection_id": "u1",
        },
    )
    patch(proxy, {"role": "Florist", "collection_id": "u2"})
    upstream.script(json_reply(chat_completion("They focus on distributed databases.")))
    r = ask(
        proxy, user_message="What are this user's main professional interests?", collection_id="u1"
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["assistant_message"] == body["response"] == "They focus on distributed databases."
    assert body["session_id"].startswith("dlg_")
    assert len(body["fact_ids"]) == 3
    prompt = prompt_of(upstream)
    assert "distributed databases" in prompt and "Florist" not in prompt
    assert "don't know" in prompt  # the model is told not to invent
    assert upstream.last.json["model"] == "gpt-4o-mini"

    upstream.script(json_reply(chat_completion("Short written summaries.")))
    r2 = ask(
        proxy,
        user_message="Tell me more about how they like to communicate.",
        session_id=body["session_id"],
        collection_id="u1",
    )
    assert r2.status_code == 200 and r2.json()["session_id"] == body["session_id"]
    sent = upstream.last.json["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[1]["content"] == "What are this user's main professional interests?"
    assert sent[2]["content"] == "They focus on distributed databases."


def test_empty_profile_reaches_the_model_as_such(proxy: Proxy, upstream: FakeUpstream) -> None:
    upstream.script(json_reply(chat_completion("I don't know anything about this user yet.")))
    r = ask(proxy, question="Where does the user live?", collection_id="nobody")  # legacy field
    assert r.status_code == 200 and r.json()["fact_ids"] == []
    assert "No facts are known about this user yet." in prompt_of(upstream)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"user_message": "   "},
        {"user_message": "a", "message": "b"},
        {"user_message": "a", "question": "a"},
        {"user_message": "x" * 5000},
        {"user_message": 3},
        {"user_message": "a", "stream": "yes"},
        {"user_message": "a", "surprise": 1},
        {"user_message": "a", "collection_id": "x", "user_id": "y"},
    ],
)
def test_bad_questions_are_400_and_store_nothing(
    proxy: Proxy, upstream: FakeUpstream, body: dict[str, Any]
) -> None:
    r = ask(proxy, **body)
    assert r.status_code == 400, r.text
    validate_error(r.json())
    assert upstream.chat_requests() == []


def test_legacy_message_field_and_unknown_session(proxy: Proxy, upstream: FakeUpstream) -> None:
    r = ask(proxy, message="hi?", session_id="dlg_" + "0" * 32)
    assert r.status_code == 404
    validate_error(r.json())
    assert upstream.chat_requests() == []
    assert ask(proxy, message="hi?").status_code == 200


def test_sessions_and_facts_are_scoped(proxy: Proxy, upstream: FakeUpstream) -> None:
    keys = KeyStore(open_database(proxy.settings))
    _, acme = keys.create("acme")
    _, other = keys.create("other")
    patch(proxy, {"hobby": "sailing", "collection_id": "u1"}, token=acme)
    first = ask(proxy, acme, user_message="hobbies?", collection_id="u1").json()
    sid = first["session_id"]
    # another collection of the same account, and another account: the session does not exist
    assert (
        ask(proxy, acme, user_message="more?", session_id=sid, collection_id="u2").status_code
        == 404
    )
    assert (
        ask(proxy, other, user_message="more?", session_id=sid, collection_id="u1").status_code
        == 404
    )
    r = ask(proxy, other, user_message="hobbies?", collection_id="u1")
    assert r.json()["fact_ids"] == [] and "sailing" not in prompt_of(upstream)


def test_upstream_failure_stores_no_turn(proxy: Proxy, upstream: FakeUpstream) -> None:
    from tests.fakes.upstream import error_reply

    first = ask(proxy, user_message="q1").json()
    upstream.script(error_reply(500, "boom", type="server_error"))
    r = ask(proxy, user_message="q2", session_id=first["session_id"])
    assert r.status_code == 500 and "boom" in r.json()["error"]["message"]
    ask(proxy, user_message="q3", session_id=first["session_id"])
    users = [m["content"] for m in upstream.last.json["messages"] if m["role"] == "user"]
    assert users == ["q1", "q3"]  # the failed q2 left nothing behind


def test_streaming_answer(proxy: Proxy, upstream: FakeUpstream) -> None:
    patch(proxy, {"city": "Lisbon"})
    upstream.script(sse_reply(chat_chunks(["They live ", "in Lisbon."])))
    r = ask(proxy, user_message="Where do they live?", stream=True)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    sid = r.headers["x-profilo-session-id"]
    data = [line[6:] for line in r.text.split("\n") if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    for c in chunks:
        validate_chunk(c)
    assert upstream.last.json["stream"] is True
    ask(proxy, user_message="And before that?", session_id=sid)
    assert "They live in Lisbon." in [m["content"] for m in upstream.last.json["messages"]]
