"""End-user identity: configured user headers (Open WebUI, LibreChat) and one id rule everywhere.

Precedence: the body's ``collection_id`` (top level or in ``features``) > the configured headers
(``memory.user_headers``, in their order) > OpenAI ``user`` > the account-wide profile. Any id,
wherever it comes from, is 1-256 characters with no control character and no lone surrogate:
what can be written can be read and deleted through the profile API.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import Proxy
from tests.fakes.upstream import FakeUpstream

OPEN_WEBUI = "X-OpenWebUI-User-Id"
HEADERS = [OPEN_WEBUI, "X-Collection-Id"]
PETS = {"u-alice": "a beagle called Rex", "u-bob": "a tabby cat called Tom", None: "no pet at all"}
PROFILE = {"features": {"user_profile": True}}
ID_CODE = "invalid_collection_id"


def seed(proxy: Proxy) -> None:
    for who, pet in PETS.items():
        params = {"collection_id": who} if who else {}
        r = httpx.patch(proxy.base_url + "/profile", params=params, json={"pet": pet}, timeout=30)
        assert r.status_code == 200, r.text


def injected(up: FakeUpstream) -> Any:
    """Whose pet the upstream's last chat request was told about (None: the account-wide one)."""
    messages = up.chat_requests()[-1].json["messages"]
    system = messages[0]["content"] if messages[0]["role"] == "system" else ""
    found = [who for who, pet in PETS.items() if pet in system]
    assert len(found) == 1, system
    return found[0]


def jobs(proxy: Proxy) -> list[tuple[Any, ...]]:
    with sqlite3.connect(proxy.settings.db_path) as conn:
        return conn.execute("SELECT id, collection_id FROM jobs ORDER BY seq").fetchall()


def facts(proxy: Proxy) -> list[tuple[Any, ...]]:
    with sqlite3.connect(proxy.settings.db_path) as conn:
        return conn.execute("SELECT * FROM facts ORDER BY rowid").fetchall()


@pytest.fixture
def ui_proxy(make_proxy: Callable[..., Proxy]) -> Proxy:
    proxy = make_proxy(memory={"user_headers": HEADERS})
    seed(proxy)
    return proxy


def test_open_webui_header_gives_each_user_their_own_memory(
    ui_proxy: Proxy, upstream: FakeUpstream
) -> None:
    for who in ("u-alice", "u-bob"):
        client = ui_proxy.client(default_headers={OPEN_WEBUI: who})
        out = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "What pet do I have?"}],
            extra_body=PROFILE,
        )
        assert out.choices[0].message.content
        assert injected(upstream) == who
    # the same client, a per-request header
    client = ui_proxy.client()
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "What pet do I have?"}],
        extra_body=PROFILE,
        extra_headers={OPEN_WEBUI: "u-bob"},
    )
    assert injected(upstream) == "u-bob"
    # the turn is learned under the header's user too
    assert {c for _, c in jobs(ui_proxy)} == {"u-alice", "u-bob"}


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        ({"collection_id": "u-bob"}, {OPEN_WEBUI: "u-alice"}, "u-bob"),  # body > header
        ({"features": {"collection_id": "u-bob"}}, {OPEN_WEBUI: "u-alice"}, "u-bob"),
        ({"user": "u-bob"}, {OPEN_WEBUI: "u-alice"}, "u-alice"),  # header > user
        ({}, {OPEN_WEBUI: "u-alice", "X-Collection-Id": "u-bob"}, "u-alice"),  # listed order
        ({}, {"X-Collection-Id": "u-bob"}, "u-bob"),  # the second header alone
        ({"user": "u-bob"}, {OPEN_WEBUI: ""}, "u-bob"),  # an empty header is absent
        ({"user": "u-alice"}, {}, "u-alice"),
        ({}, {"X-OpenWebUI-User-Name": "u-alice"}, None),  # not a configured header
    ],
)
def test_precedence(
    ui_proxy: Proxy,
    upstream: FakeUpstream,
    body: dict[str, Any],
    headers: dict[str, str],
    expected: str | None,
) -> None:
    features = {"user_profile": True, **body.pop("features", {})}
    ui_proxy.client().chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "What pet do I have?"}],
        extra_body={"features": features, **body},
        extra_headers=headers,
    )
    assert injected(upstream) == expected


def test_default_headers_are_x_collection_id_only(
    make_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    proxy = make_proxy()
    assert proxy.settings.memory.user_headers == ["X-Collection-Id"]
    seed(proxy)
    client = proxy.client()
    for headers, expected in (
        ({OPEN_WEBUI: "u-alice"}, None),
        ({"X-Collection-Id": "u-bob"}, "u-bob"),
    ):
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "What pet do I have?"}],
            extra_body=PROFILE,
            extra_headers=headers,
        )
        assert injected(upstream) == expected


def test_responses_api_uses_the_header_too(ui_proxy: Proxy, upstream: FakeUpstream) -> None:
    client = ui_proxy.client(default_headers={OPEN_WEBUI: "u-bob"})
    client.responses.create(model="gpt-4o-mini", input="What pet do I have?", extra_body=PROFILE)
    sent = [r for r in upstream.requests if r.path.endswith("/responses")][-1].json
    assert PETS["u-bob"] in sent["instructions"] and PETS["u-alice"] not in sent["instructions"]


# -- one rule for an end-user id, wherever it comes from -------------------------------------------

LONG = "u" * 300
HUGE = "u" * 1_000_000
MAX = "é" * 255 + "z"  # 256 characters (513 bytes): the longest id


def _chat(proxy: Proxy, body: dict[str, Any], headers: Any = None) -> httpx.Response:
    payload = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "features": {"memory": True},
        **body,
    }
    return httpx.post(
        proxy.base_url + "/chat/completions", json=payload, headers=headers, timeout=60
    )


def _id_routes(bad: str) -> list[tuple[str, str, dict[str, Any], Any]]:
    """Every way an end-user id reaches the proxy, with ``bad`` as the id (a query string of a
    million characters is refused by the HTTP server itself: only bodies then)."""
    msg = [{"role": "user", "content": "I have a dog"}]
    q = {"collection_id": bad}
    routes = [
        ("GET", "/v1/profile", q, None),
        ("GET", "/v1/profile", {"user_id": bad}, None),
        ("PATCH", "/v1/profile", q, {"pet": "x"}),
        ("PATCH", "/v1/profile", {}, {"pet": "x", "collection_id": bad}),
        ("PATCH", "/v1/profile", {}, {"pet": "x", "user_id": bad}),
        ("GET", "/v1/profile/changes", q, None),
        ("POST", "/v1/profile/search", {}, {"query": "pet", "collection_id": bad}),
        ("POST", "/v1/profile/delete", {}, {"search_query": "pet", "user_id": bad}),
        ("GET", "/v1/profile/facts", q, None),
        ("POST", "/v1/profile/facts", {}, {"key": "pet", "value": "x", "collection_id": bad}),
        ("POST", "/v1/interactions", {}, {"collection_id": bad, "model": "m", "messages": msg}),
        ("POST", "/v1/interactions", {}, {"user_id": bad, "model": "m", "messages": msg}),
        ("POST", "/v1/profile/dialectic", {}, {"user_message": "who?", "collection_id": bad}),
        ("POST", "/v1/profile/dialectic", q, {"user_message": "who?"}),
        ("POST", "/api/get_profiles", {}, {"user_id": bad}),
        ("POST", "/api/search_profiles", {}, {"user_id": bad, "query": "pet"}),
        ("POST", "/api/publish_interaction", {}, {"user_id": bad, "model": "m", "messages": msg}),
        ("DELETE", "/api/delete_profile", {}, {"user_id": bad, "search_query": "pet"}),
        ("GET", "/api/profile_change_log", {"user_id": bad}, None),
    ]
    return [r for r in routes if len(bad) < 10_000 or not r[2]]


BAD_IDS = {
    "300-chars": LONG,
    "1M-chars": HUGE,
    "C0-control": "a\x01b",
    "tab": "tab\there",
    "C1-control": "a\x9bb",
    "blank": "  ",
}


@pytest.mark.parametrize("bad", list(BAD_IDS.values()), ids=list(BAD_IDS))
def test_a_bad_id_is_400_everywhere_and_stores_nothing(
    ui_proxy: Proxy, upstream: FakeUpstream, bad: str
) -> None:
    before, sent = (facts(ui_proxy), jobs(ui_proxy)), len(upstream.requests)
    tries: list[tuple[str, httpx.Response]] = []
    for method, path, params, body in _id_routes(bad):
        r = httpx.request(method, ui_proxy.url + path, params=params, json=body, timeout=60)
        tries.append((f"{method} {path} {sorted(params)} {sorted(body or {})}", r))
    tries.append(("chat collection_id", _chat(ui_proxy, {"collection_id": bad})))
    tries.append(("chat features", _chat(ui_proxy, {"features": {"collection_id": bad}})))
    if bad.strip():  # a blank `user` is no user (the account-wide profile), as before
        tries.append(("chat user", _chat(ui_proxy, {"user": bad})))
        tries.append(("responses user", httpx.post(
            ui_proxy.base_url + "/responses",
            json={"model": "gpt-4o-mini", "input": "hi", "user": bad, **PROFILE}, timeout=60,
        )))  # fmt: skip
    if len(bad) < 1000 and bad.isprintable() and bad.strip():  # what HTTP lets through a header
        tries.append(("chat header", _chat(ui_proxy, {}, {OPEN_WEBUI: bad})))
    for what, r in tries:
        assert r.status_code == 400, (what, r.text[:300])
        error = r.json()["error"]
        assert error["code"] == ID_CODE and error["type"] == "invalid_request_error", what
        assert error["param"] in ("collection_id", "user_id", "user", "features.collection_id",
                                  OPEN_WEBUI), what  # fmt: skip
    assert (facts(ui_proxy), jobs(ui_proxy)) == before  # no fact, no job
    assert len(upstream.requests) == sent  # nothing reached the upstream


def test_a_header_that_is_not_utf8_or_too_long_is_400(
    ui_proxy: Proxy, upstream: FakeUpstream
) -> None:
    before = jobs(ui_proxy)
    for value in (b"\xff\xfeid", b"u" * 300, "é".encode("latin-1")):
        r = _chat(ui_proxy, {}, [(OPEN_WEBUI.encode(), value)])
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == OPEN_WEBUI
        assert r.json()["error"]["code"] == ID_CODE
    # a UTF-8 header value is read as UTF-8 (what a browser or Node sends)
    r = _chat(ui_proxy, {"features": {"learning": True}}, [(OPEN_WEBUI.encode(), "zoë".encode())])
    assert r.status_code == 200, r.text
    assert jobs(ui_proxy)[len(before) :][0][1] == "zoë"


def test_a_bad_user_is_not_checked_when_memory_does_not_use_it(
    ui_proxy: Proxy, upstream: FakeUpstream
) -> None:
    """No memory, no learning: ``user`` is OpenAI's business, relayed as it came."""
    r = httpx.post(
        ui_proxy.base_url + "/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi"}],
            "user": LONG,
        },
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert upstream.last.json["user"] == LONG
    assert jobs(ui_proxy) == []


@pytest.mark.parametrize("via", ["user", "header", "body"])
def test_the_longest_id_is_written_read_and_deleted(
    ui_proxy: Proxy, upstream: FakeUpstream, via: str
) -> None:
    """256 characters (non-ASCII) through chat: learned under it, readable, deletable."""
    r = httpx.patch(
        ui_proxy.base_url + "/profile", json={"pet": "a parrot", "collection_id": MAX}, timeout=30
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = {"features": {"user_profile": True}}
    headers: list[tuple[bytes, bytes]] = []
    if via == "user":
        body["user"] = MAX
    elif via == "header":
        headers = [(OPEN_WEBUI.encode(), MAX.encode())]
    else:
        body["collection_id"] = MAX
    r = _chat(ui_proxy, body, headers)
    assert r.status_code == 200, r.text
    assert "a parrot" in upstream.chat_requests()[-1].json["messages"][0]["content"]
    assert [c for _, c in jobs(ui_proxy)] == [MAX]  # the turn is learned under the same id
    profile = httpx.get(ui_proxy.base_url + "/profile", params={"collection_id": MAX}, timeout=30)
    assert profile.status_code == 200 and profile.json()["collection_id"] == MAX
    [fact] = profile.json()["profile"]["static"]
    reflexio = httpx.post(ui_proxy.url + "/api/get_profiles", json={"user_id": MAX}, timeout=30)
    assert [p["profile_id"] for p in reflexio.json()["user_profiles"]] == [fact["id"]]
    gone = httpx.delete(
        ui_proxy.base_url + f"/profile/facts/{fact['id']}", params={"user_id": MAX}, timeout=30
    )
    assert gone.status_code == 200, gone.text
    after = httpx.get(ui_proxy.base_url + "/profile", params={"collection_id": MAX}, timeout=30)
    assert after.json()["fact_count"] == 0
