"""Learning from chat turns: prompt, operations, supersede/merge/delete, validation, fallback.

Every test runs the real app over HTTP. The fake upstream answers the proxy's extraction calls
(recognized by the prompt's marker) with scripted JSON; everything else gets its default reply.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import Proxy
from tests.fakes.upstream import (
    FakeUpstream,
    RecordedRequest,
    Reply,
    chat_chunks,
    chat_completion,
    error_reply,
    json_reply,
    sse_reply,
)

MARKER = "# profilo: fact extraction"
FAST = {"backoff_base_seconds": 0.01, "backoff_cap_seconds": 0.05, "poll_interval_seconds": 0.05}
Answer = Reply | Callable[[RecordedRequest], Reply]


def prompt_of(rec: RecordedRequest) -> str:
    messages = rec.json.get("messages") if isinstance(rec.json, dict) else None
    first = messages[0] if messages else {}
    return str(first.get("content", "")) if first.get("role") == "system" else ""


class Extraction:
    """Routes the fake upstream: extraction calls get the scripted answers (FIFO, then
    ``default``); other requests get the fake's usual replies."""

    def __init__(self, up: FakeUpstream) -> None:
        self.answers: deque[Answer] = deque()
        self.default: Answer = ops_reply()
        self.calls: list[RecordedRequest] = []
        original = up._default

        def route(rec: RecordedRequest) -> Reply:
            if MARKER not in prompt_of(rec):
                return original(rec)
            self.calls.append(rec)
            item = self.answers.popleft() if self.answers else self.default
            return item(rec) if callable(item) else item

        up._default = route  # type: ignore[method-assign]

    def script(self, *answers: Answer) -> Extraction:
        self.answers.extend(answers)
        return self

    @property
    def prompt(self) -> str:
        return prompt_of(self.calls[-1])


@pytest.fixture
def extraction(upstream: FakeUpstream) -> Extraction:
    return Extraction(upstream)


def op(
    name: str,
    key: str = "",
    value: str = "",
    *,
    id: str | None = None,
    kind: str = "static",
    category: str = "other",
    confidence: float = 0.9,
    source: int = 1,
) -> dict[str, Any]:
    return {
        "op": name,
        "id": id,
        "key": key,
        "value": value,
        "kind": kind,
        "category": category,
        "confidence": confidence,
        "source_message": source,
    }


def ops_reply(*ops: dict[str, Any]) -> Reply:
    return json_reply(chat_completion(json.dumps({"operations": list(ops)})))


def local_id(prompt: str, key: str) -> str:
    """The prompt's short id of the known fact with this key."""
    found = re.search(rf"^- (f\d+): {key} = ", prompt, re.MULTILINE)
    assert found, f"{key} is not among the known facts:\n{prompt}"
    return found.group(1)


def chat(proxy: Proxy, *messages: Any, wait: float = 10, **extra: Any) -> httpx.Response:
    msgs = [m if isinstance(m, dict) else {"role": "user", "content": m} for m in messages]
    body: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": msgs,
        "features": {"memory": True},
        "collection_id": "alice",
        "wait_for_learning_seconds": wait,
    }
    body.update(extra)
    r = httpx.post(proxy.base_url + "/chat/completions", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r


def profile(proxy: Proxy, collection: str = "alice") -> dict[str, Any]:
    r = httpx.get(proxy.base_url + "/profile", params={"collection_id": collection})
    assert r.status_code == 200
    return r.json()


def facts(proxy: Proxy, collection: str = "alice") -> dict[str, dict[str, Any]]:
    body = profile(proxy, collection)
    out = {f["key"]: f for f in body["profile"]["static"] + body["profile"]["dynamic"]}
    for key in ("name", "timezone", "language"):
        if body[key] is not None:
            out[key] = {"value": body[key]}
    return out


def job(proxy: Proxy, request_id: str) -> dict[str, Any]:
    r = httpx.get(proxy.base_url + f"/interactions/{request_id}")
    assert r.status_code == 200, r.text
    return r.json()


def changes(proxy: Proxy, collection: str = "alice", **params: Any) -> list[dict[str, Any]]:
    r = httpx.get(
        proxy.base_url + "/profile/changes", params={"collection_id": collection, **params}
    )
    return list(r.json()["changes"])


# ------------------------------------------------------------------------------------------------


def test_a_chat_turn_produces_facts(make_proxy: Any, extraction: Extraction) -> None:
    proxy = make_proxy(learning=FAST)
    extraction.script(
        ops_reply(
            op("add", "home_city", "Lyon", source=2),
            op("add", "name", "Alice", category="name", confidence=1.0, source=2),
            op("add", "trip", "off to Rome next week", kind="dynamic", category="goals", source=2),
        )
    )
    history = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "Hi! How can I help?"},
        {"role": "user", "content": "I'm Alice, I live in Lyon and I'm off to Rome next week."},
    ]
    r = chat(proxy, *history)
    rid = r.headers["x-profilo-request-id"]
    assert r.headers["x-profilo-learning"] == "done"
    assert r.json()["choices"][0]["message"]["content"] == "Hello from fake upstream"
    learned = facts(proxy)
    assert learned["name"]["value"] == "Alice"
    assert learned["home_city"]["value"] == "Lyon"
    trip = learned["trip"]
    assert trip["kind"] == "dynamic" and trip["expires_at"] is not None
    assert trip["source"] == "chat" and trip["generated_from_request_id"] == rid
    assert trip["category"] == "goals" and trip["confidence"] == 0.9
    # the extraction call: structured output, the chat's model, the turn with roles marked
    call = extraction.calls[-1].json
    assert call["model"] == "gpt-4o-mini"
    assert call["response_format"]["type"] == "json_schema"
    assert call["response_format"]["json_schema"]["strict"] is True
    prompt = extraction.prompt
    assert '[1] assistant (context only): "Hi! How can I help?"' in prompt
    assert "[2] user: \"I'm Alice, I live in Lyon" in prompt
    assert '[3] assistant (context only): "Hello from fake upstream"' in prompt
    assert "hello" not in prompt.split("The new turn")[1].split("[1]")[0]  # older turns left out
    # one change-log entry, with the request id
    log = changes(proxy)
    assert len(log) == 1 and log[0]["request_id"] == rid and len(log[0]["added"]) == 3
    status = job(proxy, rid)
    assert status["status"] == "done" and status["attempts"] == 1
    assert status["change"]["id"] == log[0]["id"]
    assert status["result"]["added"] == 3


def test_a_streamed_turn_is_learned_before_done(make_proxy: Any, extraction: Extraction) -> None:
    proxy = make_proxy(learning=FAST)
    extraction.script(ops_reply(op("add", "favorite_color", "green", category="preferences")))
    r = chat(proxy, "my favorite color is green", stream=True)
    assert r.headers["x-profilo-learning"] == "on"
    data = [line[6:] for line in r.text.split("\n") if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    text = "".join(json.loads(d)["choices"][0]["delta"].get("content") or "" for d in data[:-1])
    assert text == "Hello from fake upstream"
    # waited before [DONE]: the fact is there as soon as the stream is read
    assert facts(proxy)["favorite_color"]["value"] == "green"
    assert '[2] assistant (context only): "Hello from fake upstream"' in extraction.prompt
    assert job(proxy, r.headers["x-profilo-request-id"])["status"] == "done"


def test_contradictions_supersede_and_duplicates_merge(
    make_proxy: Any, extraction: Extraction
) -> None:
    proxy = make_proxy(learning=FAST)
    extraction.script(
        ops_reply(
            op("add", "home_city", "Paris"),
            op("add", "diet", "vegetarian", category="preferences"),
            op("add", "dog", "a beagle called Rex"),
        )
    )
    first = chat(proxy, "I live in Paris, I'm vegetarian and I have a beagle called Rex")
    city_id = facts(proxy)["home_city"]["id"]
    # a contradiction (same key, new value) supersedes; an update by id changes the diet;
    # the same key+value and a near-identical meaning under another key are merged
    extraction.script(
        lambda rec: ops_reply(
            op("add", "home_city", "Berlin"),
            op(
                "update",
                "diet",
                "vegan",
                id=local_id(prompt_of(rec), "diet"),
                category="preferences",
            ),
            op("add", "dog", "a beagle called Rex"),
            op("add", "pet", "a beagle named Rex"),
        )
    )
    second = chat(proxy, "I moved to Berlin and went vegan. Rex is still with me.")
    learned = facts(proxy)
    assert learned["home_city"]["value"] == "Berlin" and learned["home_city"]["id"] == city_id
    assert learned["diet"]["value"] == "vegan"
    assert "pet" not in learned and len(learned) == 3
    result = job(proxy, second.headers["x-profilo-request-id"])["result"]
    assert (result["updated"], result["added"], result["merged"]) == (2, 0, 2)
    r = httpx.get(proxy.base_url + f"/profile/facts/{city_id}", params={"collection_id": "alice"})
    history = r.json()["history"]
    assert [h["value"] for h in history] == ["Paris"] and history[0]["valid_to"] is not None
    assert r.json()["generated_from_request_id"] == second.headers["x-profilo-request-id"]
    log = changes(proxy)
    assert [c["request_id"] for c in log] == [
        second.headers["x-profilo-request-id"],
        first.headers["x-profilo-request-id"],
    ]
    pairs = {(u["before"]["value"], u["after"]["value"]) for u in log[0]["updated"]}
    assert pairs == {("Paris", "Berlin"), ("vegetarian", "vegan")}


def test_delete_of_a_known_fact(make_proxy: Any, extraction: Extraction) -> None:
    proxy = make_proxy(learning=FAST)
    extraction.script(ops_reply(op("add", "car", "a red Fiat 500"), op("add", "city", "Rome")))
    chat(proxy, "I drive a red Fiat 500 around Rome")
    extraction.script(lambda rec: ops_reply(op("delete", id=local_id(prompt_of(rec), "car"))))
    r = chat(proxy, "I sold my car, I cycle now")
    assert set(facts(proxy)) == {"city"}
    entry = changes(proxy)[0]
    assert entry["request_id"] == r.headers["x-profilo-request-id"]
    assert [f["value"] for f in entry["removed"]] == ["a red Fiat 500"]


def test_assistant_claims_and_invalid_operations_are_dropped(
    make_proxy: Any, extraction: Extraction
) -> None:
    proxy = make_proxy(learning=FAST)
    extraction.script(
        ops_reply(
            op("add", "favorite_opera", "La Traviata", source=1),  # said by the assistant
            op("add", "job", "astronaut", source=9),  # no such message
            op("add", "sport", "tennis", source=2),  # valid: the user's own words
            op("update", "sport", "golf", id="f7", source=2),  # no such known fact
            op("add", "empty", "  ", source=2),
            op("add", "mood", "happy", kind="forever", source=2),
            op("add", "hobby", "chess", category="hobbies", source=2),
            op("add", "height", "tall", confidence=1.5, source=2),
            op("none"),
        )
    )
    r = chat(
        proxy,
        {"role": "assistant", "content": "As an opera lover, you'll enjoy La Traviata!"},
        "I play tennis on Sundays.",
    )
    assert set(facts(proxy)) == {"sport"}
    result = job(proxy, r.headers["x-profilo-request-id"])["result"]
    assert result["dropped"] == {
        "assistant_source": 1,
        "unknown_source": 1,
        "unknown_id": 1,
        "empty_value": 1,
        "bad_kind": 1,
        "unknown_category": 1,
        "bad_confidence": 1,
    }
    assert result["none"] == 1 and result["operations"] == 9
    queue = httpx.get(proxy.base_url + "/admin/queue").json()
    assert queue["dropped_operations"]["assistant_source"] == 1


def test_the_extractor_config_changes_the_prompt(make_proxy: Any, extraction: Extraction) -> None:
    proxy = make_proxy(learning=FAST)
    chat(proxy, "hi there")
    default_prompt = extraction.prompt
    config = {
        "profile_extractor_config": {
            "profile_content_definition_prompt": "Extract the customer's shoe size and brands.",
            "context_prompt": "You are analyzing shoe-store support conversations.",
            "should_extract_profile_prompt_override": "when the customer talks about shoes",
        }
    }
    assert httpx.put(proxy.base_url + "/config", json=config).status_code == 200
    chat(proxy, "I wear size 42 Nikes")
    prompt = extraction.prompt
    for text in config["profile_extractor_config"].values():
        assert text.rstrip(".") in prompt and text.rstrip(".") not in default_prompt
    assert "only when the customer talks about shoes" in prompt
    assert "building a long-term profile" in default_prompt
    assert "building a long-term profile" not in prompt


def test_json_schema_falls_back_to_plain_json(make_proxy: Any, extraction: Extraction) -> None:
    proxy = make_proxy(learning=FAST)
    rejected = error_reply(
        400,
        "Invalid parameter: 'response_format' of type 'json_schema' is not supported with "
        "this model.",
        param="response_format",
    )
    extraction.script(
        rejected,
        error_reply(400, "response_format json_object is not supported", param="response_format"),
        ops_reply(op("add", "language", "fr", category="language")),
    )
    r = chat(proxy, "Je parle français")
    assert facts(proxy)["language"]["value"] == "fr"
    assert job(proxy, r.headers["x-profilo-request-id"])["attempts"] == 1
    formats = [c.json.get("response_format") for c in extraction.calls]
    assert formats == [formats[0], {"type": "json_object"}, None]
    assert formats[0]["type"] == "json_schema"
    assert "JSON" in extraction.prompt
    chat(proxy, "hello again")  # the model's answer format is remembered
    assert len(extraction.calls) == 4 and "response_format" not in extraction.calls[-1].json


def test_the_learning_switch(make_proxy: Any, extraction: Extraction) -> None:
    proxy = make_proxy(learning=FAST)

    def learned(r: httpx.Response) -> bool:
        rid = r.headers["x-profilo-request-id"]
        return httpx.get(proxy.base_url + f"/interactions/{rid}").status_code == 200

    r = chat(proxy, "I like jazz", features={"memory": True, "learning": False})
    assert not learned(r) and "x-profilo-learning" not in r.headers
    r = chat(proxy, "I like jazz", features={})  # no memory, no profile: no learning
    assert not learned(r)
    r = chat(proxy, "I like jazz", features={"learning": True})  # asked for on its own
    assert learned(r)
    r = chat(proxy, "I like jazz", features={"user_profile": True})
    assert learned(r)
    config = {"features": {"learning": False}}
    assert httpx.put(proxy.base_url + "/config", json=config).status_code == 200
    r = chat(proxy, "I like jazz", features={"memory": True, "learning": True})
    assert not learned(r)
    assert len(extraction.calls) == 2


def test_a_stream_the_client_leaves_is_not_learned(
    make_proxy: Any, upstream: FakeUpstream, extraction: Extraction
) -> None:
    proxy = make_proxy(learning=FAST)
    upstream.script(sse_reply(chat_chunks(["a"] * 20), delay_between=0.1))
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "I like jazz"}],
        "features": {"memory": True},
        "stream": True,
    }
    with httpx.stream("POST", proxy.base_url + "/chat/completions", json=body) as r:
        rid = r.headers["x-profilo-request-id"]
        next(r.iter_raw())  # the first event, then hang up
    upstream.wait_for(lambda: len(upstream.disconnects) == 1, timeout=5)  # upstream closed too
    assert httpx.get(proxy.base_url + f"/interactions/{rid}").status_code == 404
    assert not extraction.calls
