"""Per-fact CRUD (``/v1/profile/facts[/{id}]``) through real HTTP: create, 409 on a duplicate
key, key normalization, history on update, filters and cursor pagination, expiry of dynamic
facts, and bad input (400 in OpenAI's envelope, nothing changed)."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.conftest import Proxy, wait_until
from tests.fakes.schema import validate_error

JsonObj = dict[str, Any]
#: One client for the module: a new httpx client per call costs ~80 ms (TLS context set-up).
HTTP = httpx.Client(timeout=60)


def call(
    proxy: Proxy,
    method: str,
    path: str,
    *,
    json: Any = None,
    params: dict[str, Any] | None = None,
) -> httpx.Response:
    return HTTP.request(method, proxy.base_url + path, json=json, params=params)


def ok(r: httpx.Response, status: int = 200) -> JsonObj:
    assert r.status_code == status, f"{r.status_code}: {r.text}"
    body: JsonObj = r.json()
    return body


def create(proxy: Proxy, key: str, value: Any, **fields: Any) -> JsonObj:
    return ok(
        call(proxy, "POST", "/profile/facts", json={"key": key, "value": value, **fields}), 201
    )


def listing(proxy: Proxy, **params: Any) -> JsonObj:
    return ok(call(proxy, "GET", "/profile/facts", params=params))


def state(proxy: Proxy) -> tuple[JsonObj, JsonObj, JsonObj]:
    return (
        ok(call(proxy, "GET", "/profile")),
        ok(call(proxy, "GET", "/profile/changes")),
        listing(proxy, limit=500),
    )


def test_create_get_and_normalized_key(proxy: Proxy) -> None:
    r = call(
        proxy,
        "POST",
        "/profile/facts",
        json={
            "key": "Favorite Color",
            "value": "teal",
            "category": "Preferences",
            "confidence": 0.9,
            "source": "onboarding",
            "session_id": "sess_1",
            "metadata": {"channel": "web", "verified": True, "score": 3},
        },
    )
    fact = ok(r, 201)
    assert fact["id"].startswith("fact_")
    assert fact["key"] == "favorite_color"
    assert (fact["value"], fact["kind"], fact["category"]) == ("teal", "static", "preferences")
    assert (fact["confidence"], fact["source"], fact["session_id"]) == (0.9, "onboarding", "sess_1")
    assert fact["metadata"] == {"channel": "web", "verified": True, "score": 3}
    assert fact["collection_id"] is None and fact["expires_at"] is None
    assert fact["valid_to"] is None and fact["created_at"] == fact["updated_at"]
    assert fact["generated_from_request_id"] == r.headers["x-profilo-request-id"]
    got = ok(call(proxy, "GET", f"/profile/facts/{fact['id']}"))
    assert got == fact | {"history": []}
    for raw in ("favoriteColor", "favorite-color", "  FAVORITE_COLOR  ", "favorite color!"):
        r = call(proxy, "POST", "/profile/facts", json={"key": raw, "value": "red"})
        assert r.status_code == 409, (raw, r.text)
    # list values and numbers become text
    assert create(proxy, "languages", ["en", "fr", 3])["value"] == "en, fr, 3"
    assert create(proxy, "age", 42)["value"] == "42"
    assert create(proxy, "name", "Ada")["category"] == "name"  # key named like a category


def test_duplicate_key_is_a_409_naming_the_existing_fact(proxy: Proxy) -> None:
    first = create(proxy, "favorite_color", "teal")
    before = state(proxy)
    r = call(proxy, "POST", "/profile/facts", json={"key": "Favorite Color", "value": "red"})
    assert r.status_code == 409
    validate_error(r.json())
    assert first["id"] in r.json()["error"]["message"]
    assert r.json()["error"]["param"] == "key"
    assert state(proxy) == before
    # the same key in another collection is another fact
    other = create(proxy, "favorite_color", "red", collection_id="u2")
    assert other["id"] != first["id"] and other["collection_id"] == "u2"


def test_update_keeps_history(proxy: Proxy) -> None:
    fact = create(proxy, "city", "Lisbon", source="onboarding")
    time.sleep(0.01)  # distinct timestamps for valid_from / valid_to
    r = call(proxy, "PATCH", f"/profile/facts/{fact['id']}", json={"value": "Porto"})
    updated = ok(r)
    assert updated["id"] == fact["id"] and updated["value"] == "Porto"
    assert updated["created_at"] == fact["created_at"]
    assert updated["updated_at"] > fact["updated_at"]
    assert updated["source"] == "onboarding"  # untouched fields stay
    assert updated["generated_from_request_id"] == r.headers["x-profilo-request-id"]
    ok(call(proxy, "PATCH", f"/profile/facts/{fact['id']}", json={"value": "Madrid"}))

    got = ok(call(proxy, "GET", f"/profile/facts/{fact['id']}"))
    assert got["value"] == "Madrid" and got["valid_to"] is None
    old, middle = got["history"]
    assert (old["value"], middle["value"]) == ("Lisbon", "Porto")
    assert old["valid_to"] == middle["valid_from"]  # closed when the next version began
    assert middle["valid_to"] == got["valid_from"]
    assert all(h["id"] == fact["id"] for h in got["history"])
    # a PATCH that changes nothing writes nothing
    n = len(ok(call(proxy, "GET", "/profile/changes"))["changes"])
    ok(call(proxy, "PATCH", f"/profile/facts/{fact['id']}", json={"value": "Madrid"}))
    assert len(ok(call(proxy, "GET", "/profile/changes"))["changes"]) == n
    assert len(ok(call(proxy, "GET", f"/profile/facts/{fact['id']}"))["history"]) == 2


def test_patch_fact_fields(proxy: Proxy) -> None:
    fact = create(proxy, "mood", "tired", kind="dynamic")
    assert fact["expires_at"]
    other = create(proxy, "hobby", "chess")
    patched = ok(
        call(
            proxy,
            "PATCH",
            f"/profile/facts/{fact['id']}",
            json={
                "key": "Current Goal",
                "kind": "static",
                "category": "goals",
                "confidence": 0.4,
                "metadata": {"from": "survey"},
            },
        )
    )
    assert patched["key"] == "current_goal" and patched["kind"] == "static"
    assert patched["expires_at"] is None  # static facts do not expire
    assert (patched["category"], patched["confidence"]) == ("goals", 0.4)
    assert patched["metadata"] == {"from": "survey"} and patched["value"] == "tired"
    # renaming onto an existing key is a conflict naming that fact
    r = call(proxy, "PATCH", f"/profile/facts/{fact['id']}", json={"key": "hobby"})
    assert r.status_code == 409 and other["id"] in r.json()["error"]["message"]
    validate_error(r.json())
    # the edit shows in GET /v1/profile and in search
    profile = ok(call(proxy, "GET", "/profile"))
    assert {f["key"] for f in profile["profile"]["static"]} == {"current_goal", "hobby"}
    hits = ok(call(proxy, "POST", "/profile/search", json={"query": "goal", "threshold": 0}))
    assert "current_goal" in {h["key"] for h in hits["facts"]}


def test_list_filters_and_cursor_pagination(proxy: Proxy) -> None:
    ids = [
        create(proxy, f"fact {i}", f"value {i}", source="import" if i % 2 else "api")["id"]
        for i in range(7)
    ]
    dyn = create(proxy, "mood", "calm", kind="dynamic", category="personality_traits")["id"]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3, "kind": "static"}
        if cursor:
            params["cursor"] = cursor
        page = listing(proxy, **params)
        pages += 1
        assert len(page["facts"]) <= 3
        seen += [f["id"] for f in page["facts"]]
        assert page["has_more"] is (page["next_cursor"] is not None)
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert pages == 3 and seen == ids  # oldest first, each fact exactly once
    assert [f["id"] for f in listing(proxy, source="import")["facts"]] == ids[1::2]
    assert [f["id"] for f in listing(proxy, kind="dynamic")["facts"]] == [dyn]
    assert [f["id"] for f in listing(proxy, category="personality_traits")["facts"]] == [dyn]
    assert listing(proxy, source="nowhere")["facts"] == []
    full = listing(proxy)
    assert len(full["facts"]) == 8 and full["has_more"] is False and full["next_cursor"] is None
    # a cursor stays valid after the fact it points at is deleted
    page = listing(proxy, limit=3)
    ok(call(proxy, "DELETE", f"/profile/facts/{page['facts'][-1]['id']}"))
    rest = listing(proxy, limit=10, cursor=page["next_cursor"])
    assert [f["id"] for f in rest["facts"]] == [*ids[3:], dyn]


def test_dynamic_facts_expire(proxy: Proxy) -> None:
    stays = create(proxy, "city", "Lisbon")
    mood = create(proxy, "mood", "excited about the trip", kind="dynamic", ttl_seconds=1)
    assert mood["expires_at"] and mood["expires_at"] > mood["created_at"]
    profile = ok(call(proxy, "GET", "/profile"))
    assert [f["key"] for f in profile["profile"]["dynamic"]] == ["mood"]

    def gone() -> bool:
        return ok(call(proxy, "GET", "/profile"))["profile"]["dynamic"] == []

    wait_until(gone, "the expired fact to go", timeout=20)
    assert [f["id"] for f in listing(proxy)["facts"]] == [stays["id"]]
    assert listing(proxy, kind="dynamic")["facts"] == []
    hits = ok(call(proxy, "POST", "/profile/search", json={"query": "trip", "threshold": 0}))
    assert mood["id"] not in {h["id"] for h in hits["facts"]}
    r = call(proxy, "GET", f"/profile/facts/{mood['id']}")
    assert r.status_code == 404
    validate_error(r.json())
    assert (
        call(proxy, "PATCH", f"/profile/facts/{mood['id']}", json={"value": "x"}).status_code == 404
    )
    assert call(proxy, "DELETE", f"/profile/facts/{mood['id']}").status_code == 404
    # the key is free again
    again = create(proxy, "mood", "relaxed", kind="dynamic")
    assert again["id"] != mood["id"]
    assert ok(call(proxy, "GET", "/profile"))["profile"]["dynamic"][0]["value"] == "relaxed"


def test_dynamic_ttl_from_settings(make_proxy: Callable[..., Proxy]) -> None:
    proxy = make_proxy(profile={"dynamic_ttl_seconds": 1})
    ok(call(proxy, "PATCH", "/profile", json={"hobby": "chess"}))
    mood = create(proxy, "mood", "sleepy", kind="dynamic")
    assert [f["id"] for f in listing(proxy, kind="dynamic")["facts"]] == [mood["id"]]
    wait_until(
        lambda: listing(proxy, kind="dynamic")["facts"] == [], "no dynamic fact left", timeout=20
    )
    # PATCH /v1/profile of the expired key creates it again (as static)
    body = ok(call(proxy, "PATCH", "/profile", json={"mood": "awake"}))
    assert (body["created"], body["updated"]) == (1, 0)
    assert {f["key"] for f in ok(call(proxy, "GET", "/profile"))["profile"]["static"]} == {
        "hobby",
        "mood",
    }


def test_bad_fact_input_is_a_400_that_changes_nothing(proxy: Proxy) -> None:
    fact = create(proxy, "pet", "cat")
    fid = fact["id"]
    create(proxy, "hobby", "chess")
    before = state(proxy)
    too_long = "x" * (proxy.settings.profile.max_value_chars + 1)
    cases: list[tuple[str, str, Any, dict[str, Any] | None]] = [
        # POST /v1/profile/facts
        ("POST", "/profile/facts", {"key": "a", "value": "b", "unknown": 1}, None),
        ("POST", "/profile/facts", {"value": "no key"}, None),
        ("POST", "/profile/facts", {"key": "no value"}, None),
        ("POST", "/profile/facts", {"key": "", "value": "b"}, None),
        ("POST", "/profile/facts", {"key": "  ", "value": "b"}, None),
        ("POST", "/profile/facts", {"key": "!!!", "value": "b"}, None),
        ("POST", "/profile/facts", {"key": 5, "value": "b"}, None),
        ("POST", "/profile/facts", {"key": "dry_run", "value": "b"}, None),
        ("POST", "/profile/facts", {"key": "a", "value": ""}, None),
        ("POST", "/profile/facts", {"key": "a", "value": too_long}, None),
        ("POST", "/profile/facts", {"key": "a", "value": {"nested": "object"}}, None),
        ("POST", "/profile/facts", {"key": "a", "value": None}, None),
        ("POST", "/profile/facts", {"key": "a", "value": "b", "kind": "forever"}, None),
        ("POST", "/profile/facts", {"key": "a", "value": "b", "confidence": 1.5}, None),
        ("POST", "/profile/facts", {"key": "a", "value": "b", "confidence": "sure"}, None),
        ("POST", "/profile/facts", {"key": "a", "value": "b", "category": "hobbies"}, None),
        ("POST", "/profile/facts", {"key": "a", "value": "b", "metadata": {"x": {"y": 1}}}, None),
        ("POST", "/profile/facts", {"key": "a", "value": "b", "metadata": ["x"]}, None),
        ("POST", "/profile/facts", {"key": "a", "value": "b", "ttl_seconds": 0}, None),
        ("POST", "/profile/facts", {"key": "a", "value": "b", "collection_id": ""}, None),
        ("POST", "/profile/facts", {"key": "a", "value": "b", "collection_id": 7}, None),
        ("POST", "/profile/facts", ["key", "value"], None),
        (
            "POST",
            "/profile/facts",
            {"key": "a", "value": "b", "collection_id": "x"},
            {"user_id": "y"},
        ),
        # malformed ids
        ("GET", "/profile/facts/not-a-fact", None, None),
        ("GET", "/profile/facts/fact_XYZ", None, None),
        ("GET", "/profile/facts/" + "f" * 70, None, None),
        ("PATCH", "/profile/facts/not-a-fact", {"value": "x"}, None),
        ("DELETE", "/profile/facts/not-a-fact", None, None),
        ("DELETE", "/profile/facts/fact_" + "0" * 31 + "'", None, None),
        # PATCH /v1/profile/facts/{id}
        ("PATCH", f"/profile/facts/{fid}", ["value", "x"], None),
        ("PATCH", f"/profile/facts/{fid}", "x", None),
        ("PATCH", f"/profile/facts/{fid}", {}, None),
        ("PATCH", f"/profile/facts/{fid}", {"value": "x", "unknown": 1}, None),
        ("PATCH", f"/profile/facts/{fid}", {"value": too_long}, None),
        ("PATCH", f"/profile/facts/{fid}", {"value": {"a": 1}}, None),
        ("PATCH", f"/profile/facts/{fid}", {"value": None}, None),
        ("PATCH", f"/profile/facts/{fid}", {"key": "%%%"}, None),
        ("PATCH", f"/profile/facts/{fid}", {"confidence": -1}, None),
        ("PATCH", f"/profile/facts/{fid}", {"kind": "sometimes"}, None),
        ("PATCH", f"/profile/facts/{fid}", {"category": "nope"}, None),
        # GET /v1/profile/facts
        ("GET", "/profile/facts", None, {"limit": 0}),
        ("GET", "/profile/facts", None, {"limit": 100_000}),
        ("GET", "/profile/facts", None, {"kind": "forever"}),
        ("GET", "/profile/facts", None, {"cursor": "not a cursor"}),
        ("GET", "/profile/facts", None, {"cursor": "!!!"}),
    ]
    for method, path, body, params in cases:
        r = call(proxy, method, path, json=body, params=params)
        assert r.status_code == 400, (method, path, body, params, r.status_code, r.text)
        validate_error(r.json())
        assert r.json()["error"]["type"] == "invalid_request_error"
    # JSON that Python parses but no record can hold: NaN / Infinity, expiries past year 9999
    for method, path, raw in (
        ("POST", "/profile/facts", b'{"key": "a", "value": Infinity}'),
        ("POST", "/profile/facts", b'{"key": "a", "value": [1, NaN]}'),
        ("POST", "/profile/facts", b'{"key": "a", "value": "b", "metadata": {"x": NaN}}'),
        ("POST", "/profile/facts", b'{"key": "a", "value": "b", "confidence": NaN}'),
        ("POST", "/profile/facts", b'{"key": "a", "value": "b", "ttl_seconds": 10000000000000}'),
        ("PATCH", f"/profile/facts/{fid}", b'{"ttl_seconds": 10000000000000}'),
        ("PATCH", f"/profile/facts/{fid}", b'{"value": -Infinity}'),
    ):
        r = HTTP.request(
            method, proxy.base_url + path, content=raw, headers={"content-type": "application/json"}
        )
        assert r.status_code == 400, (method, path, raw, r.status_code, r.text)
        validate_error(r.json())
    assert state(proxy) == before
    # well-formed but unknown ids are 404s, not 400s
    missing = "fact_" + "0" * 32
    for method in ("GET", "DELETE"):
        r = call(proxy, method, f"/profile/facts/{missing}")
        assert r.status_code == 404
        validate_error(r.json())
    assert call(proxy, "PATCH", f"/profile/facts/{missing}", json={"value": "x"}).status_code == 404
    assert state(proxy) == before


def test_concurrent_writes_of_one_key(proxy: Proxy) -> None:
    """Key uniqueness comes from the database: racing creates give one 201 and 409s."""

    def post(i: int) -> int:
        body = {"key": "favorite color", "value": f"color {i}"}
        return HTTP.post(proxy.base_url + "/profile/facts", json=body).status_code

    def patch(i: int) -> int:
        return HTTP.patch(proxy.base_url + "/profile", json={"city": f"city {i}"}).status_code

    with ThreadPoolExecutor(8) as pool:
        created = sorted(pool.map(post, range(8)))
        patched = list(pool.map(patch, range(8)))
    assert created == [201] + [409] * 7
    assert patched == [200] * 8
    facts = listing(proxy)["facts"]
    assert sorted(f["key"] for f in facts) == ["city", "favorite_color"]
    city = next(f for f in facts if f["key"] == "city")
    history = ok(call(proxy, "GET", f"/profile/facts/{city['id']}"))["history"]
    changes = ok(call(proxy, "GET", "/profile/changes", params={"limit": 500}))["changes"]
    # one create, then an update (closing one version) per PATCH that changed the value
    assert len(changes) == 1 + 1 + len(history)
