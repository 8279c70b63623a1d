"""The profile API through real HTTP with the real embedder: the seeds' own examples.

Hebbrix: GET / PATCH ``/v1/profile``, the scoped write with a dry-run preview, the scoped read.
Reflexio: search with threshold / source / custom_feature / kind, delete by id and by query
(dry run first), the change log after a series of edits, the extractor config. Plus persistence
across a restart and bad input (400 in OpenAI's envelope, nothing changed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.conftest import Proxy
from tests.fakes.schema import validate_error

JsonObj = dict[str, Any]
#: One client for the module: a new httpx client per call costs ~80 ms (TLS context set-up).
HTTP = httpx.Client(timeout=60)


def call(
    proxy: Proxy, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None
) -> httpx.Response:
    return HTTP.request(method, proxy.base_url + path, json=json, params=params)


def ok(r: httpx.Response, status: int = 200) -> JsonObj:
    assert r.status_code == status, f"{r.status_code}: {r.text}"
    body: JsonObj = r.json()
    return body


def bad(r: httpx.Response, status: int = 400) -> JsonObj:
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text}"
    body: JsonObj = r.json()
    validate_error(body)
    assert body["error"]["message"]
    return body


def create(proxy: Proxy, key: str, value: Any, **fields: Any) -> JsonObj:
    return ok(
        call(proxy, "POST", "/profile/facts", json={"key": key, "value": value, **fields}), 201
    )


def search(proxy: Proxy, query: str, **fields: Any) -> list[JsonObj]:
    facts: list[JsonObj] = ok(
        call(proxy, "POST", "/profile/search", json={"query": query, **fields})
    )["facts"]
    return facts


def state(proxy: Proxy, params: dict[str, Any] | None = None) -> tuple[JsonObj, JsonObj]:
    """What a bad request must not change: the profile and the change log of a scope."""
    return (
        ok(call(proxy, "GET", "/profile", params=params)),
        ok(call(proxy, "GET", "/profile/changes", params=params)),
    )


# -- Hebbrix ------------------------------------------------------------------------------


def test_hebbrix_update_then_get_profile(proxy: Proxy) -> None:
    r = call(
        proxy,
        "PATCH",
        "/profile",
        json={
            "name": "John Doe",
            "timezone": "UTC",
            "language": "en",
            "role": "Senior Engineer",
            "company": "Acme Inc",
        },
    )
    body = ok(r)
    assert body["status"] == "success"
    assert (body["updated"], body["created"]) == (0, 5)
    assert body["message"] == "Updated 0, created 5 profile facts"

    data = ok(call(proxy, "GET", "/profile"))
    assert (data["name"], data["timezone"], data["language"]) == ("John Doe", "UTC", "en")
    assert data["collection_id"] is None
    static = {f["key"]: f for f in data["profile"]["static"]}
    assert set(static) == {"role", "company"}  # flat fields are not repeated in the buckets
    assert data["profile"]["dynamic"] == []
    assert static["role"]["value"] == "Senior Engineer"
    assert static["role"]["category"] == "role"
    assert static["company"]["category"] == "other"  # unknown key: static / other
    for fact in static.values():
        assert fact["kind"] == "static"
        assert fact["confidence"] == 1.0
        assert fact["source"] == "api"
        assert fact["id"].startswith("fact_") and fact["updated_at"]
        assert fact["generated_from_request_id"] == r.headers["x-profilo-request-id"]

    # existing keys are updated in place, unchanged ones are not counted, new ones created
    body = ok(
        call(
            proxy,
            "PATCH",
            "/profile",
            json={"role": "Staff Engineer", "company": "Acme Inc", "hobby": "chess"},
        )
    )
    assert (body["status"], body["updated"], body["created"]) == ("success", 1, 1)
    assert body["message"] == "Updated 1, created 1 profile facts"
    data = ok(call(proxy, "GET", "/profile"))
    static2 = {f["key"]: f for f in data["profile"]["static"]}
    assert static2["role"]["value"] == "Staff Engineer"
    assert static2["role"]["id"] == static["role"]["id"]  # same fact, new value
    assert static2["hobby"]["value"] == "chess"
    assert data["fact_count"] == 6


def test_hebbrix_scoped_write_with_dry_run_preview(proxy: Proxy) -> None:
    collection = "coll_123"
    ok(call(proxy, "PATCH", "/profile", json={"name": "Account Owner", "role": "Admin"}))
    before = state(proxy, {"collection_id": collection})

    # 1) PREVIEW: the planned changes, nothing persisted
    preview = ok(
        call(
            proxy,
            "PATCH",
            "/profile",
            json={
                "role": "Product Manager",
                "timezone": "America/New_York",
                "collection_id": collection,
                "dry_run": True,
            },
        )
    )
    assert preview["status"] == "preview"
    assert (preview["would_update"], preview["would_create"]) == (0, 2)
    assert preview["collection_id"] == collection
    diff = {c["key"]: c for c in preview["changes"]}
    assert set(diff) == {"role", "timezone"}
    assert diff["role"]["action"] == "create" and diff["role"]["after"] == "Product Manager"
    assert diff["role"]["before"] is None
    assert state(proxy, {"collection_id": collection}) == before

    # 2) REAL WRITE
    written = ok(
        call(
            proxy,
            "PATCH",
            "/profile",
            json={
                "role": "Product Manager",
                "timezone": "America/New_York",
                "collection_id": collection,
            },
        )
    )
    assert written["status"] == "success"
    assert (written["updated"], written["created"]) == (0, 2)

    # a second preview now shows an in-place update with before / after
    preview = ok(
        call(
            proxy,
            "PATCH",
            "/profile",
            json={"role": "Director", "collection_id": collection, "dry_run": True},
        )
    )
    assert (preview["would_update"], preview["would_create"]) == (1, 0)
    (change,) = preview["changes"]
    assert (change["action"], change["before"], change["after"]) == (
        "update",
        "Product Manager",
        "Director",
    )

    # 3) SCOPED READ: only this collection's facts
    profile = ok(call(proxy, "GET", "/profile", params={"collection_id": collection}))
    assert profile["collection_id"] == collection
    assert profile["timezone"] == "America/New_York"
    assert profile["name"] is None  # the account-wide name does not leak in
    assert [(f["key"], f["value"]) for f in profile["profile"]["static"]] == [
        ("role", "Product Manager")
    ]
    assert all(f["collection_id"] == collection for f in profile["profile"]["static"])
    # and the unscoped read still holds only the account-wide facts
    unscoped = ok(call(proxy, "GET", "/profile"))
    assert unscoped["name"] == "Account Owner" and unscoped["timezone"] is None
    assert [(f["key"], f["value"]) for f in unscoped["profile"]["static"]] == [("role", "Admin")]


def test_patch_null_removes_a_fact(proxy: Proxy) -> None:
    ok(call(proxy, "PATCH", "/profile", json={"hobby": "chess", "pet": "cat"}))
    body = ok(call(proxy, "PATCH", "/profile", json={"hobby": None}))
    assert body["deleted"] == 1
    keys = [f["key"] for f in ok(call(proxy, "GET", "/profile"))["profile"]["static"]]
    assert keys == ["pet"]
    (latest,) = ok(call(proxy, "GET", "/profile/changes", params={"limit": 1}))["changes"]
    assert [f["key"] for f in latest["removed"]] == ["hobby"]
    assert latest["removed"][0]["valid_to"]


# -- Reflexio: search -------------------------------------------------------------------------

ALICE = "customer_alice"
ALICE_FACTS: list[JsonObj] = [
    {"key": "laptop", "value": "Prefers a lightweight Linux laptop for programming work"},
    {"key": "editor", "value": "Writes Python code in Neovim every day"},
    {
        "key": "support_issue",
        "value": "Had trouble resetting the account password last week",
        "source": "support_chat",
    },
    {
        "key": "refund",
        "value": "Asked customer support for a refund on a broken charger",
        "source": "support_chat",
    },
    {"key": "diet", "value": "Vegetarian, allergic to peanuts", "source": "onboarding"},
    {"key": "pet", "value": "Has a cat named Miso", "source": "onboarding"},
    {
        "key": "subscription",
        "value": "On the premium plan, uses the advanced analytics features",
        "metadata": {"subscription_tier": "premium", "seats": 5},
    },
    {
        "key": "mood",
        "value": "Stressed about a product launch deadline this Friday",
        "kind": "dynamic",
        "source": "support_chat",
    },
]


def _seed_alice(proxy: Proxy) -> dict[str, JsonObj]:
    return {f["key"]: create(proxy, **f, user_id=ALICE) for f in ALICE_FACTS}


def _assert_ranked(facts: list[JsonObj], threshold: float) -> None:
    scores = [f["score"] for f in facts]
    assert scores == sorted(scores, reverse=True), "results are best first"
    assert all(threshold <= s <= 1.0 for s in scores), scores


def test_reflexio_search_with_threshold_and_top_k(proxy: Proxy) -> None:
    created = _seed_alice(proxy)
    everything = search(proxy, "laptop preferences programming work", user_id=ALICE, threshold=0)
    _assert_ranked(everything, 0.0)  # (a fact may score below 0: cosine similarity)
    assert {f["id"] for f in everything} <= {f["id"] for f in created.values()}
    assert len(everything) > 3
    assert everything[0]["key"] == "laptop"
    top = everything[0]
    assert top["id"] == created["laptop"]["id"]
    assert top["content"] == "laptop: Prefers a lightweight Linux laptop for programming work"
    assert top["collection_id"] == ALICE and top["source"] == "api"
    assert top["generated_from_request_id"] and top["updated_at"]

    # a threshold between the best and the second best returns exactly the best
    cut = (everything[0]["score"] + everything[1]["score"]) / 2
    hits = search(
        proxy, "laptop preferences programming work", user_id=ALICE, threshold=cut, top_k=5
    )
    assert [f["key"] for f in hits] == ["laptop"]
    # nothing clears a threshold above the best score
    assert search(proxy, "laptop preferences programming work", user_id=ALICE, threshold=0.99) == []
    # top_k bounds the result, best first
    three = search(
        proxy, "laptop preferences programming work", user_id=ALICE, threshold=0, top_k=3
    )
    assert [f["id"] for f in three] == [f["id"] for f in everything[:3]]


def test_reflexio_search_filters(proxy: Proxy) -> None:
    _seed_alice(proxy)
    # source: only facts from support interactions
    chat = search(
        proxy, "customer support issues", user_id=ALICE, source="support_chat", threshold=0
    )
    _assert_ranked(chat, 0.0)
    assert {f["key"] for f in chat} == {"support_issue", "refund", "mood"}
    assert {f["key"] for f in chat[:2]} == {"support_issue", "refund"}
    assert all(f["source"] == "support_chat" for f in chat)
    # a threshold with a source filter
    strict = search(
        proxy, "customer support issues", user_id=ALICE, source="support_chat", threshold=0.35
    )
    _assert_ranked(strict, 0.35)
    assert {f["key"] for f in strict} <= {"support_issue", "refund"} and strict
    # custom_feature: a metadata key, a key=value pair, a mapping
    for feature in ("subscription_tier", "subscription_tier=premium", {"seats": 5}):
        hits = search(
            proxy, "premium features usage", user_id=ALICE, custom_feature=feature, threshold=0
        )
        assert [f["key"] for f in hits] == ["subscription"], feature
        assert hits[0]["metadata"] == {"subscription_tier": "premium", "seats": 5}
    for feature in ("subscription_tier=free", "no_such_feature", {"seats": 6}):
        assert search(proxy, "premium", user_id=ALICE, custom_feature=feature, threshold=0) == [], (
            feature
        )
    # kind
    dynamic = search(proxy, "deadline at work", user_id=ALICE, kind="dynamic", threshold=0)
    assert [f["key"] for f in dynamic] == ["mood"]
    assert dynamic[0]["expires_at"]
    static = search(proxy, "deadline at work", user_id=ALICE, kind="static", threshold=0)
    assert static and all(f["kind"] == "static" for f in static)
    # source + kind together
    both = search(proxy, "work", user_id=ALICE, kind="static", source="onboarding", threshold=0)
    assert {f["key"] for f in both} == {"diet", "pet"}


def test_search_reads_current_values_after_edits(proxy: Proxy) -> None:
    fact = create(proxy, "pet", "Has a cat named Miso")
    ok(call(proxy, "PATCH", f"/profile/facts/{fact['id']}", json={"value": "Has a dog named Rex"}))
    (hit,) = search(proxy, "dog", threshold=0)
    assert hit["value"] == "Has a dog named Rex"
    dog = hit["score"]
    (hit,) = search(proxy, "cat", threshold=0)
    assert hit["score"] < dog  # the index was re-embedded, not only the value read back


# -- Reflexio: delete ---------------------------------------------------------------------------


def test_delete_by_id(proxy: Proxy) -> None:
    created = _seed_alice(proxy)
    pet = created["pet"]["id"]
    r = call(proxy, "DELETE", f"/profile/facts/{pet}", params={"user_id": ALICE})
    assert ok(r) == {"id": pet, "object": "profile.fact.deleted", "deleted": True, "key": "pet"}
    bad(call(proxy, "GET", f"/profile/facts/{pet}", params={"user_id": ALICE}), 404)
    bad(call(proxy, "DELETE", f"/profile/facts/{pet}", params={"user_id": ALICE}), 404)
    assert "pet" not in {f["key"] for f in search(proxy, "pets", user_id=ALICE, threshold=0)}
    (latest,) = ok(call(proxy, "GET", "/profile/changes", params={"user_id": ALICE, "limit": 1}))[
        "changes"
    ]
    assert latest["request_id"] == r.headers["x-profilo-request-id"]
    assert [f["id"] for f in latest["removed"]] == [pet]
    # Reflexio's delete_profile(profile_id=...) through the delete endpoint
    diet = created["diet"]["id"]
    body = ok(call(proxy, "POST", "/profile/delete", json={"user_id": ALICE, "profile_id": diet}))
    assert [d["id"] for d in body["deleted"]] == [diet]
    bad(call(proxy, "GET", f"/profile/facts/{diet}", params={"user_id": ALICE}), 404)
    left = ok(call(proxy, "GET", "/profile/facts", params={"user_id": ALICE}))["facts"]
    assert len(left) == len(ALICE_FACTS) - 2


def test_delete_by_query_dry_run_then_real(proxy: Proxy) -> None:
    _seed_alice(proxy)
    scope = {"collection_id": ALICE}
    query = "photography camera lenses"
    ok(call(proxy, "PATCH", "/profile", json={**scope, "camera": "Beginner photographer"}))
    ok(call(proxy, "PATCH", "/profile", json={**scope, "lenses": "Wants wide-angle lenses"}))
    ranked = search(proxy, query, threshold=0, **scope)
    assert {f["key"] for f in ranked[:2]} == {"camera", "lenses"}
    cut = (ranked[1]["score"] + ranked[2]["score"]) / 2
    before = state(proxy, scope)

    body = {"search_query": query, "threshold": cut, "dry_run": True, **scope}
    preview = ok(call(proxy, "POST", "/profile/delete", json=body))
    assert preview["status"] == "preview" and preview["dry_run"] is True
    assert preview["deleted"] == []
    listed = {d["key"]: d for d in preview["would_delete"]}
    assert set(listed) == {"camera", "lenses"}
    assert listed["camera"]["content"] == "camera: Beginner photographer"
    assert state(proxy, scope) == before  # nothing deleted, nothing logged

    r = call(proxy, "POST", "/profile/delete", json=body | {"dry_run": False})
    done = ok(r)
    assert done["status"] == "success" and done["success"] is True
    assert sorted(d["id"] for d in done["deleted"]) == sorted(d["id"] for d in listed.values())
    assert done["message"] == "Deleted 2 profile facts"
    keys = {f["key"] for f in ok(call(proxy, "GET", "/profile/facts", params=scope))["facts"]}
    assert keys == {f["key"] for f in ALICE_FACTS}
    assert not {"camera", "lenses"} & {f["key"] for f in search(proxy, query, threshold=0, **scope)}
    entry = ok(
        call(
            proxy,
            "GET",
            "/profile/changes",
            params=scope | {"request_id": r.headers["x-profilo-request-id"]},
        )
    )["changes"]
    assert [sorted(f["key"] for f in e["removed"]) for e in entry] == [["camera", "lenses"]]
    # a query that matches nothing deletes nothing and logs nothing
    nothing = ok(
        call(proxy, "POST", "/profile/delete", json={"search_query": "zzz", "threshold": 0.99})
    )
    assert nothing["deleted"] == [] and nothing["count"] == 0


# -- Reflexio: change log ------------------------------------------------------------------------


def test_change_log_after_a_series_of_edits(proxy: Proxy) -> None:
    rids: list[str] = []

    def write(method: str, path: str, json: Any, status: int = 200) -> JsonObj:
        r = call(proxy, method, path, json=json)
        rids.append(r.headers["x-profilo-request-id"])
        return ok(r, status)

    fact = write("POST", "/profile/facts", {"key": "city", "value": "Lisbon"}, 201)
    write("PATCH", "/profile", {"city": "Porto"})
    write("PATCH", "/profile", {"hobby": "surfing", "pet": "cat"})
    write("PATCH", f"/profile/facts/{fact['id']}", {"confidence": 0.8})
    hobby = next(
        f for f in ok(call(proxy, "GET", "/profile"))["profile"]["static"] if f["key"] == "hobby"
    )
    write("DELETE", f"/profile/facts/{hobby['id']}", None)
    write("PATCH", "/profile", {"pet": "dog", "dry_run": True})  # a preview logs nothing
    write("PATCH", "/profile", {"pet": "cat"})  # no change, no entry

    log = ok(call(proxy, "GET", "/profile/changes"))
    changes = log["changes"]
    assert log["has_more"] is False and log["next_cursor"] is None
    assert [c["request_id"] for c in changes] == rids[:5][::-1]  # newest first
    assert [c["created_at"] for c in changes] == sorted(
        (c["created_at"] for c in changes), reverse=True
    )
    removed, confidence, added2, updated, added = changes
    assert [f["value"] for f in added["added"]] == ["Lisbon"] and added["updated"] == []
    (upd,) = updated["updated"]
    assert (upd["before"]["value"], upd["after"]["value"]) == ("Lisbon", "Porto")
    assert upd["before"]["id"] == upd["after"]["id"] == fact["id"]
    assert sorted(f["key"] for f in added2["added"]) == ["hobby", "pet"]
    (conf,) = confidence["updated"]
    assert (conf["before"]["confidence"], conf["after"]["confidence"]) == (1.0, 0.8)
    assert [f["key"] for f in removed["removed"]] == ["hobby"] and removed["added"] == []
    for c in changes:
        assert c["collection_id"] is None and c["source"] == "api" and c["created_at"]

    # filter by the X-Profilo-Request-Id of one write
    only = ok(call(proxy, "GET", "/profile/changes", params={"request_id": rids[1]}))["changes"]
    assert [c["id"] for c in only] == [updated["id"]]
    assert (
        ok(call(proxy, "GET", "/profile/changes", params={"request_id": "req_nope"}))["changes"]
        == []
    )

    # pagination
    page1 = ok(call(proxy, "GET", "/profile/changes", params={"limit": 2}))
    assert [c["id"] for c in page1["changes"]] == [c["id"] for c in changes[:2]]
    assert page1["has_more"] is True and page1["next_cursor"]
    page2 = ok(
        call(proxy, "GET", "/profile/changes", params={"limit": 2, "cursor": page1["next_cursor"]})
    )
    assert [c["id"] for c in page2["changes"]] == [c["id"] for c in changes[2:4]]
    page3 = ok(
        call(proxy, "GET", "/profile/changes", params={"limit": 2, "cursor": page2["next_cursor"]})
    )
    assert [c["id"] for c in page3["changes"]] == [changes[4]["id"]]
    assert page3["has_more"] is False and page3["next_cursor"] is None

    # time filters (unix seconds)
    assert ok(call(proxy, "GET", "/profile/changes", params={"since": 4102444800}))["changes"] == []
    assert ok(call(proxy, "GET", "/profile/changes", params={"until": 1}))["changes"] == []
    assert len(ok(call(proxy, "GET", "/profile/changes", params={"since": 1}))["changes"]) == 5


# -- config ------------------------------------------------------------------------------------

ECOMMERCE = {
    "profile_content_definition_prompt": (
        "Extract customer information including:\n- Product preferences and interests\n"
        "- Budget range or price sensitivity\n- Brand preferences\n"
    ),
    "context_prompt": "Analyzing e-commerce customer interactions to understand shopping behavior",
    "should_extract_profile_prompt_override": (
        "when customer mentions products, prices, preferences, or shopping-related information"
    ),
}


def test_config_defaults_and_round_trip(proxy: Proxy) -> None:
    config = ok(call(proxy, "GET", "/config"))
    assert config["profile_extractor_config"] == {
        "profile_content_definition_prompt": None,
        "context_prompt": None,
        "should_extract_profile_prompt_override": None,
    }
    config["profile_extractor_config"] = ECOMMERCE  # Reflexio: get, change, set
    put = ok(call(proxy, "PUT", "/config", json=config))
    assert put["success"] is True
    again = ok(call(proxy, "GET", "/config"))
    assert again == config
    assert again["profile_extractor_config"] == ECOMMERCE

    for broken in (
        {"profile_extractor_config": {"no_such_prompt": "x"}},
        {"profile_extractor_config": {"context_prompt": 5}},
        {"profile_extractor_config": "a string"},
        {"features": {"memory": "sometimes"}},
        {"unknown_section": {}},
        ["not", "an", "object"],
    ):
        bad(call(proxy, "PUT", "/config", json=broken))
    assert ok(call(proxy, "GET", "/config")) == config  # unchanged by the bad PUTs


# -- persistence -----------------------------------------------------------------------------


def test_profile_survives_a_restart(make_proxy: Callable[..., Proxy]) -> None:
    first = make_proxy()
    ok(call(first, "PATCH", "/profile", json={"name": "Ada", "pet": "Has a cat named Miso"}))
    create(first, "laptop", "Prefers a Linux laptop", collection_id="u1", source="support_chat")
    config = ok(call(first, "GET", "/config")) | {
        "profile_extractor_config": {"context_prompt": "support chats"}
    }
    ok(call(first, "PUT", "/config", json=config))
    changes_before = ok(call(first, "GET", "/profile/changes"))
    first.server.stop()

    second = make_proxy()  # same data dir, a new app and new stores
    assert second.settings.data_dir == first.settings.data_dir
    profile = ok(call(second, "GET", "/profile"))
    assert profile["name"] == "Ada"
    assert [f["key"] for f in profile["profile"]["static"]] == ["pet"]
    (hit,) = search(second, "pets", threshold=0.3)
    assert hit["key"] == "pet"
    (hit,) = search(second, "computer", threshold=0, collection_id="u1", source="support_chat")
    assert hit["key"] == "laptop"
    assert ok(call(second, "GET", "/profile/changes")) == changes_before
    assert ok(call(second, "GET", "/config"))["profile_extractor_config"]["context_prompt"] == (
        "support chats"
    )
    # and it keeps working for writes
    ok(call(second, "PATCH", "/profile", json={"pet": "Has a dog named Rex"}))
    assert search(second, "dog", threshold=0)[0]["value"] == "Has a dog named Rex"


# -- bad input -------------------------------------------------------------------------------


def test_bad_profile_and_search_input_is_a_400_that_changes_nothing(proxy: Proxy) -> None:
    ok(call(proxy, "PATCH", "/profile", json={"name": "Ada", "hobby": "chess"}))
    fact = create(proxy, "pet", "cat")
    before = state(proxy)
    too_long = "x" * (proxy.settings.profile.max_value_chars + 1)
    cases: list[tuple[str, str, Any, dict[str, Any] | None]] = [
        # PATCH /v1/profile
        ("PATCH", "/profile", ["not", "an", "object"], None),
        ("PATCH", "/profile", "a string", None),
        ("PATCH", "/profile", {}, None),
        ("PATCH", "/profile", {"": "empty key"}, None),
        ("PATCH", "/profile", {"!!!": "symbols only"}, None),
        ("PATCH", "/profile", {"hobby": too_long}, None),
        ("PATCH", "/profile", {"hobby": {"nested": "object"}}, None),
        ("PATCH", "/profile", {"hobby": ["ok", {"nested": 1}]}, None),
        ("PATCH", "/profile", {"hobby": "   "}, None),
        ("PATCH", "/profile", {"hobby": "go", "dry_run": "yes"}, None),
        ("PATCH", "/profile", {"hobby": "go", "dry_run": 1}, None),
        ("PATCH", "/profile", {"hobby": "go", "collection_id": 5}, None),
        ("PATCH", "/profile", {"Favorite Color": "red", "favorite_color": "blue"}, None),
        ("PATCH", "/profile", {"hobby": "go", "name": too_long}, None),  # all or nothing
        ("PATCH", "/profile", {"hobby": "go", "k" * 65: "x"}, None),
        # POST /v1/profile/search
        ("POST", "/profile/search", {"query": "x", "unknown": 1}, None),
        ("POST", "/profile/search", {"query": ""}, None),
        ("POST", "/profile/search", {}, None),
        ("POST", "/profile/search", {"query": 5}, None),
        ("POST", "/profile/search", {"query": "x", "threshold": 1.5}, None),
        ("POST", "/profile/search", {"query": "x", "threshold": -0.1}, None),
        ("POST", "/profile/search", {"query": "x", "threshold": "high"}, None),
        ("POST", "/profile/search", {"query": "x", "top_k": 0}, None),
        ("POST", "/profile/search", {"query": "x", "top_k": 10_000}, None),
        ("POST", "/profile/search", {"query": "x", "top_k": "many"}, None),
        ("POST", "/profile/search", {"query": "x", "kind": "forever"}, None),
        ("POST", "/profile/search", {"query": "x", "custom_feature": {"a": {"b": 1}}}, None),
        ("POST", "/profile/search", ["query"], None),
        # POST /v1/profile/delete
        ("POST", "/profile/delete", {}, None),
        ("POST", "/profile/delete", {"search_query": "cat", "dry_run": "maybe"}, None),
        ("POST", "/profile/delete", {"search_query": "cat", "dry_run": "false"}, None),
        ("POST", "/profile/delete", {"search_query": "cat", "dry_run": 0}, None),
        ("POST", "/profile/delete", {"search_query": "cat", "threshold": 2}, None),
        ("POST", "/profile/delete", {"search_query": "cat", "top_k": 0}, None),
        ("POST", "/profile/delete", {"search_query": "cat", "top_k": 10_000}, None),
        ("POST", "/profile/delete", {"search_query": "cat", "fact_id": fact["id"]}, None),
        ("POST", "/profile/delete", {"search_query": "cat", "bogus": True}, None),
        ("POST", "/profile/delete", {"fact_id": "not-a-fact-id"}, None),
        # GET /v1/profile/changes
        ("GET", "/profile/changes", None, {"limit": 0}),
        ("GET", "/profile/changes", None, {"limit": "ten"}),
        ("GET", "/profile/changes", None, {"cursor": "abc"}),
        ("GET", "/profile/changes", None, {"since": "yesterday"}),
        # collection_id in the query and the body disagreeing
        ("PATCH", "/profile", {"hobby": "go", "collection_id": "a"}, {"collection_id": "b"}),
        ("POST", "/profile/search", {"query": "x", "collection_id": "a"}, {"collection_id": "b"}),
        ("POST", "/profile/search", {"query": "x", "collection_id": "a", "user_id": "b"}, None),
        ("GET", "/profile", None, {"collection_id": "a", "user_id": "b"}),
        ("PATCH", "/profile", {"hobby": "go", "collection_id": ""}, None),
    ]
    for method, path, body, params in cases:
        r = call(proxy, method, path, json=body, params=params)
        assert r.status_code == 400, (method, path, body, params, r.status_code, r.text)
        validate_error(r.json())
        assert r.json()["error"]["type"] == "invalid_request_error"
    # JSON that Python parses but no record can hold
    for raw in (
        b'{"hobby": NaN}',
        b'{"hobby": Infinity}',
        b'{"hobby": ["a", -Infinity]}',
        b'{"hobby": 100000000000000000000000000000}',
    ):
        r = HTTP.patch(
            proxy.base_url + "/profile", content=raw, headers={"content-type": "application/json"}
        )
        assert r.status_code == 400, (raw, r.status_code, r.text)
        validate_error(r.json())
    too_many = {f"key_{i}": "x" for i in range(proxy.settings.profile.max_facts_per_request + 1)}
    bad(call(proxy, "PATCH", "/profile", json=too_many))
    bad(call(proxy, "GET", "/profile/changes", params={"cursor": 10**30}))
    assert state(proxy) == before
    assert state(proxy, {"collection_id": "a"})[0]["fact_count"] == 0
