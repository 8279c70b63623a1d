"""/api/... (Reflexio's routes) over raw HTTP, shaped like the seed's curl calls: shapes,
bad input (4xx in OpenAI's envelope, nothing changed), auth and tenancy."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from proxy.store.db import open_database
from proxy.store.keys import KeyStore
from tests.conftest import Proxy


@pytest.fixture
def keys(proxy: Proxy) -> tuple[str, str]:
    store = KeyStore(open_database(proxy.settings))
    return store.create("acme")[1], store.create("other")[1]


def call(
    proxy: Proxy, method: str, route: str, token: str | None, body: Any = None
) -> httpx.Response:
    headers = {"User-Agent": "my-agent-reflexio"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.request(method, f"{proxy.url}/api/{route}", json=body, headers=headers, timeout=30)


def add_fact(proxy: Proxy, token: str, user: str, key: str, value: str, **extra: Any) -> str:
    r = httpx.post(
        proxy.base_url + "/profile/facts",
        json={"collection_id": user, "key": key, "value": value} | extra,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_shapes_of_search_get_and_change_log(proxy: Proxy, keys: tuple[str, str]) -> None:
    acme, _ = keys
    fid = add_fact(
        proxy,
        acme,
        "customer_alice",
        "laptop",
        "lightweight, for programming",
        source="onboarding",
        metadata={"tier": "pro"},
    )
    r = call(
        proxy,
        "POST",
        "search_profiles",
        acme,
        {
            "user_id": "customer_alice",
            "query": "laptop for programming",
            "threshold": 0.3,
            "top_k": 5,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    [profile] = body["user_profiles"]
    assert profile["profile_id"] == fid and profile["user_id"] == "customer_alice"
    assert profile["content"] == "laptop: lightweight, for programming"
    assert profile["source"] == "onboarding" and profile["custom_features"] == {"tier": "pro"}
    assert isinstance(profile["last_modified_timestamp"], int)
    fact = httpx.get(
        proxy.base_url + f"/profile/facts/{fid}",
        params={"collection_id": "customer_alice"},
        headers={"Authorization": f"Bearer {acme}"},
    ).json()
    assert profile["generated_from_request_id"] == fact["generated_from_request_id"]

    r = call(proxy, "POST", "get_profiles", acme, {"user_id": "customer_alice", "top_k": 50})
    assert r.status_code == 200 and [p["profile_id"] for p in r.json()["user_profiles"]] == [fid]

    r = call(proxy, "GET", "profile_change_log", acme)
    assert r.status_code == 200
    [entry] = r.json()["profile_change_logs"]
    assert entry["user_id"] == "customer_alice" and entry["removed_profiles"] == []
    assert [p["profile_id"] for p in entry["added_profiles"]] == [fid]
    assert entry["request_id"] == fact["generated_from_request_id"]


def test_delete_by_query_and_id_with_curl_shapes(proxy: Proxy, keys: tuple[str, str]) -> None:
    acme, _ = keys
    add_fact(proxy, acme, "customer_frank", "outdated_info", "deprecated preferences for fax")
    keep = add_fact(proxy, acme, "customer_frank", "name", "Frank")
    r = call(
        proxy,
        "DELETE",
        "delete_profile",
        acme,
        {
            "user_id": "customer_frank",
            "search_query": "outdated information deprecated preferences",
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["success"] is True and r.json()["message"] == "deleted 1 profile(s)"
    r = call(
        proxy,
        "DELETE",
        "delete_profile",
        acme,
        {"user_id": "customer_frank", "profile_id": "specific_profile_uuid_here"},
    )
    assert r.status_code == 404 and r.json()["error"]["param"] == "profile_id"
    r = call(
        proxy, "DELETE", "delete_profile", acme, {"user_id": "customer_frank", "profile_id": keep}
    )
    assert r.status_code == 200 and r.json()["deleted_profile_ids"] == [keep]
    r = call(proxy, "POST", "get_profiles", acme, {"user_id": "customer_frank"})
    assert r.json()["user_profiles"] == []


@pytest.mark.parametrize(
    ("method", "route", "body", "param"),
    [
        ("POST", "search_profiles", {"user_id": "u"}, "query"),
        ("POST", "search_profiles", {"user_id": "u", "query": "x", "threshold": 2}, "threshold"),
        ("POST", "search_profiles", {"user_id": "u", "query": "x", "top_k": 10**6}, "top_k"),
        ("POST", "get_profiles", {"top_k": 5}, "user_id"),
        ("DELETE", "delete_profile", {"user_id": "u"}, None),
        (
            "DELETE",
            "delete_profile",
            {"user_id": "u", "profile_id": "p", "search_query": "q"},
            None,
        ),
        (
            "POST",
            "set_config",
            {"profile_extractor_config": {"bogus": "x"}},
            "profile_extractor_config.bogus",
        ),
        ("POST", "publish_interaction", {"user_id": "u", "interaction_data_list": []}, None),
    ],
)
def test_bad_input_is_4xx_and_changes_nothing(
    proxy: Proxy, keys: tuple[str, str], method: str, route: str, body: Any, param: str | None
) -> None:
    acme, _ = keys
    fid = add_fact(proxy, acme, "u", "pet", "has a cat")
    r = call(proxy, method, route, acme, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    if param is not None:
        assert error["param"] == param
    assert [
        p["profile_id"]
        for p in call(proxy, "POST", "get_profiles", acme, {"user_id": "u"}).json()["user_profiles"]
    ] == [fid]
    assert (
        call(proxy, "GET", "get_config", acme).json()["profile_extractor_config"]["context_prompt"]
        is None
    )
    queue = httpx.get(proxy.base_url + "/admin/queue", headers={"Authorization": f"Bearer {acme}"})
    assert queue.json()["depth"] == 0


def test_keys_and_tenancy(proxy: Proxy, keys: tuple[str, str]) -> None:
    acme, other = keys
    fid = add_fact(proxy, acme, "alice", "private_note", "acme's customer detail")
    add_fact(proxy, acme, "bob", "private_note", "bob's customer detail")
    assert call(proxy, "POST", "get_profiles", None, {"user_id": "alice"}).status_code == 401
    assert call(proxy, "POST", "get_profiles", "pk-wrong", {"user_id": "alice"}).status_code == 401
    # another account sees nothing and can delete nothing
    search = {"user_id": "alice", "query": "customer detail", "threshold": 0.0}
    assert call(proxy, "POST", "search_profiles", other, search).json()["user_profiles"] == []
    assert (
        call(proxy, "POST", "get_profiles", other, {"user_id": "alice"}).json()["user_profiles"]
        == []
    )
    assert call(proxy, "GET", "profile_change_log", other).json()["profile_change_logs"] == []
    r = call(proxy, "DELETE", "delete_profile", other, {"user_id": "alice", "profile_id": fid})
    assert r.status_code == 404
    r = call(
        proxy,
        "DELETE",
        "delete_profile",
        other,
        {"user_id": "alice", "search_query": "customer detail"},
    )
    assert r.json()["deleted_profile_ids"] == []
    call(proxy, "POST", "set_config", other, {"profile_extractor_config": {"context_prompt": "x"}})
    assert (
        call(proxy, "GET", "get_config", acme).json()["profile_extractor_config"]["context_prompt"]
        is None
    )
    # another user of the same account: not by id, not by query, not in search
    r = call(proxy, "DELETE", "delete_profile", acme, {"user_id": "bob", "profile_id": fid})
    assert r.status_code == 404
    found = call(proxy, "POST", "search_profiles", acme, search | {"user_id": "bob"}).json()
    assert [p["content"] for p in found["user_profiles"]] == ["private note: bob's customer detail"]
    log = call(proxy, "GET", "profile_change_log?user_id=bob", acme).json()["profile_change_logs"]
    assert [e["user_id"] for e in log] == ["bob"]
    # alice's fact survived all of it
    assert [
        p["profile_id"]
        for p in call(proxy, "POST", "get_profiles", acme, {"user_id": "alice"}).json()[
            "user_profiles"
        ]
    ] == [fid]
