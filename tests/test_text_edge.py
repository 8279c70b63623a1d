"""Every text a client sends is checked once, at the edge: valid UTF-8, no BOM in front of a body,
no NUL, no lone surrogate (raw or as a JSON escape). The same 400 (``invalid_text``) on every
route; valid text (surrogate pairs, escaped backslashes that merely look like escapes) goes
through untouched."""

from __future__ import annotations

import sqlite3
from typing import Any

import httpx
import pytest

from tests.conftest import Proxy
from tests.fakes.upstream import FakeUpstream

#: One lone surrogate in every text field any route reads (unknown fields are refused or ignored
#: later: the edge refuses the body first, whatever the route).
LONE = (
    b'{"model": "gpt-4o-mini", "input": "\\udcff", "messages": [{"role": "user", '
    b'"content": "\\udcff"}], "query": "\\udcff", "search_query": "\\udcff", '
    b'"user_message": "\\udcff", "key": "pet", "value": "\\udcff", "pet": "\\udcff", '
    b'"user_id": "u1"}'
)
ROUTES = [
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/responses"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/completions"),
    ("PATCH", "/v1/profile"),
    ("POST", "/v1/profile/facts"),
    ("POST", "/v1/profile/search"),
    ("POST", "/v1/profile/delete"),
    ("POST", "/v1/interactions"),
    ("POST", "/v1/profile/dialectic"),
    ("PUT", "/v1/config"),
    ("POST", "/api/search_profiles"),
    ("POST", "/api/publish_interaction"),
    ("POST", "/api/get_profiles"),
    ("DELETE", "/api/delete_profile"),
]


def _stored(proxy: Proxy) -> list[Any]:
    with sqlite3.connect(proxy.settings.db_path) as conn:
        return [conn.execute(f"SELECT * FROM {t}").fetchall() for t in ("facts", "jobs")]


def test_the_same_400_on_every_route(proxy: Proxy, upstream: FakeUpstream) -> None:
    before = _stored(proxy)
    errors = []
    for method, path in ROUTES:
        r = httpx.request(
            method,
            proxy.url + path,
            content=LONE,
            headers={"content-type": "application/json"},
            timeout=30,
        )
        assert r.status_code == 400, (path, r.text)
        errors.append(r.json())
    assert all(e == errors[0] for e in errors), errors
    assert errors[0]["error"]["code"] == "invalid_text"
    assert "lone surrogate" in errors[0]["error"]["message"]
    assert _stored(proxy) == before and upstream.requests == []


@pytest.mark.parametrize(
    "query",
    ["collection_id=%00", "collection_id=a%ED%A0%80", "user_id=%FF", "%FF=x"],
)
def test_query_strings_are_checked_too(proxy: Proxy, query: str) -> None:
    for path in ("/v1/profile", "/v1/profile/facts", "/api/profile_change_log"):
        r = httpx.get(f"{proxy.url}{path}?{query}", timeout=30)
        assert r.status_code == 400, (path, query, r.text)
        assert r.json()["error"]["code"] == "invalid_text"


@pytest.mark.parametrize("path", ["/v1/profile/facts/fact_%00", "/v1/interactions/%ED%A0%80"])
def test_paths_are_checked_too(proxy: Proxy, path: str) -> None:
    r = httpx.get(proxy.url + path, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_text"


def test_valid_text_reaches_the_upstream_unchanged(proxy: Proxy, upstream: FakeUpstream) -> None:
    """A surrogate pair (escaped or raw UTF-8), a BOM character inside a string and escaped
    backslashes that only look like ``\\u0000`` / ``\\ud800`` are valid text."""
    body = (
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": '
        b'"\\ud83d\\ude00 \xf0\x9f\x98\x80 \xef\xbb\xbfbom \\\\u0000 \\\\ud800 caf\xc3\xa9"}]}'
    )
    r = httpx.post(
        proxy.base_url + "/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    sent = upstream.last.json["messages"][0]["content"]
    assert sent == "\U0001f600 \U0001f600 \ufeffbom \\u0000 \\ud800 café"


def test_profile_text_round_trips(proxy: Proxy) -> None:
    """What passes the edge is stored and read back as it was sent (create, then update)."""
    url = proxy.base_url + "/profile"
    for value in ("\U0001f600 first", "second \\ud800 \u2028 é"):
        r = httpx.patch(url, params={"collection_id": "u1"}, json={"note": value}, timeout=30)
        assert r.status_code == 200, r.text
        got = httpx.get(url, params={"collection_id": "u1"}, timeout=30).json()
        assert [f["value"] for f in got["profile"]["static"]] == [value]
