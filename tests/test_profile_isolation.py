"""Isolation: nothing crosses accounts (API keys) or collections, on any profile endpoint.

Five scopes hold facts with the same keys: two accounts, each with its account-wide profile,
and collections of which one name (``u1``) exists in both accounts. Every endpoint is tried
from every scope against every other scope's facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from proxy.store.db import open_database
from proxy.store.keys import KeyStore
from tests.conftest import Proxy
from tests.fakes.schema import validate_error

JsonObj = dict[str, Any]
#: One client for the module: a new httpx client per call costs ~80 ms (TLS context set-up).
HTTP = httpx.Client(timeout=60)


@dataclass
class Tenant:
    """One scope: an account's key and optionally a collection."""

    proxy: Proxy
    account: str
    token: str
    collection: str | None

    @property
    def label(self) -> str:
        return f"{self.account}/{self.collection or '*'}"

    def params(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        out = dict(extra or {})
        if self.collection is not None:
            out["collection_id"] = self.collection
        return out

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        scoped: bool = True,
    ) -> httpx.Response:
        return HTTP.request(
            method,
            self.proxy.base_url + path,
            json=json,
            params=self.params(params) if scoped else params,
            headers={"Authorization": f"Bearer {self.token}"},
        )

    def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> JsonObj:
        r = self.call(method, path, **kw)
        assert r.status_code == status, f"{self.label} {method} {path}: {r.status_code} {r.text}"
        body: JsonObj = r.json()
        return body

    def fact_ids(self) -> set[str]:
        return {f["id"] for f in self.ok("GET", "/profile/facts", params={"limit": 500})["facts"]}


def _tenants(proxy: Proxy) -> list[Tenant]:
    keys = KeyStore(open_database(proxy.settings))
    _, acme = keys.create("acme")
    _, globex = keys.create("globex")
    return [
        Tenant(proxy, "acme", acme, None),
        Tenant(proxy, "acme", acme, "u1"),
        Tenant(proxy, "acme", acme, "u2"),
        Tenant(proxy, "globex", globex, None),
        Tenant(proxy, "globex", globex, "u1"),
    ]


def _seed(tenants: list[Tenant]) -> dict[str, dict[str, str]]:
    """The same keys in every scope, values naming the scope; returns {label: {key: id}}."""
    ids: dict[str, dict[str, str]] = {}
    for t in tenants:
        body = {
            "name": f"name of {t.label}",
            "private_note": f"the secret password of {t.label}",
            "hobby": f"{t.label} plays chess",
        }
        t.ok("PATCH", "/profile", json=body)  # collection as a query parameter
        fact = t.ok(
            "POST",
            "/profile/facts",
            201,
            json={
                "key": "note",
                "value": f"a note about passwords for {t.label}",
                "source": "support_chat",
                "metadata": {"tier": "gold"},
                **({"collection_id": t.collection} if t.collection else {}),
            },
            scoped=False,  # collection in the body this time
        )
        assert fact["collection_id"] == t.collection
        listed = t.ok("GET", "/profile/facts")["facts"]
        ids[t.label] = {f["key"]: f["id"] for f in listed}
        assert ids[t.label]["note"] == fact["id"] and len(listed) == 4
    return ids


def _not_found_like_missing(t: Tenant, method: str, fact_id: str, json: Any = None) -> None:
    missing = "fact_" + "0" * 32
    r = t.call(method, f"/profile/facts/{fact_id}", json=json)
    m = t.call(method, f"/profile/facts/{missing}", json=json)
    assert r.status_code == m.status_code == 404, (t.label, method, r.text)
    validate_error(r.json())
    assert r.json() == {
        "error": m.json()["error"]
        | {"message": m.json()["error"]["message"].replace(missing, fact_id)}
    }


def test_every_endpoint_is_isolated(proxy: Proxy) -> None:
    tenants = _tenants(proxy)
    ids = _seed(tenants)
    all_ids = {i for per in ids.values() for i in per.values()}
    assert len(all_ids) == 4 * len(tenants)

    for t in tenants:
        mine = set(ids[t.label].values())
        others = all_ids - mine
        # GET /v1/profile
        profile = t.ok("GET", "/profile")
        assert profile["name"] == f"name of {t.label}"
        assert profile["collection_id"] == t.collection
        got = {f["id"] for f in profile["profile"]["static"] + profile["profile"]["dynamic"]}
        assert got == mine - {ids[t.label]["name"]}
        assert profile["fact_count"] == 4
        # GET /v1/profile/facts
        assert t.fact_ids() == mine
        # search: everything the scope holds, nothing else, even at threshold 0
        for body in (
            {"query": "secret password", "threshold": 0, "top_k": 100},
            {"query": "note", "threshold": 0, "source": "support_chat"},
            {"query": "note", "threshold": 0, "custom_feature": "tier=gold"},
        ):
            hits = t.ok("POST", "/profile/search", json=body)["facts"]
            assert {h["id"] for h in hits} <= mine and hits, (t.label, body)
            assert all(h["collection_id"] == t.collection for h in hits)
        # the change log
        changes = t.ok("GET", "/profile/changes")["changes"]
        assert len(changes) == 2
        logged = {
            f["id"]
            for c in changes
            for f in c["added"] + c["removed"] + [u["after"] for u in c["updated"]]
        }
        assert logged == mine
        assert all(c["collection_id"] == t.collection for c in changes)
        # per-fact endpoints on another scope's ids: 404, exactly like an unknown id
        for other in sorted(others):
            _not_found_like_missing(t, "GET", other)
            _not_found_like_missing(t, "PATCH", other, json={"value": "hijacked"})
            _not_found_like_missing(t, "DELETE", other)
            r = t.call("POST", "/profile/delete", json={"fact_id": other})
            assert r.status_code == 404, (t.label, r.text)

    # nothing above changed anything
    for t in tenants:
        assert t.fact_ids() == set(ids[t.label].values())
        values = {f["value"] for f in t.ok("GET", "/profile/facts")["facts"]}
        assert all(t.label in v for v in values), values

    # PATCH /v1/profile of a shared key only touches its own scope
    acme_u1 = tenants[1]
    acme_u1.ok("PATCH", "/profile", json={"private_note": "changed in acme/u1"})
    for t in tenants:
        secret = next(
            f["value"]
            for f in t.ok("GET", "/profile")["profile"]["static"]
            if f["key"] == "private_note"
        )
        assert secret == (
            "changed in acme/u1" if t is acme_u1 else f"the secret password of {t.label}"
        )

    # delete by query deletes only within its scope
    for t in tenants[:2]:
        body = {"search_query": "secret password", "threshold": 0, "top_k": 100}
        deleted = {d["id"] for d in t.ok("POST", "/profile/delete", json=body)["deleted"]}
        mine = set(ids[t.label].values())
        assert ids[t.label]["private_note"] in deleted and deleted <= mine, t.label
        assert t.fact_ids() == mine - deleted
    for t in tenants[2:]:
        assert t.fact_ids() == set(ids[t.label].values()), t.label
        assert len(t.ok("GET", "/profile/changes")["changes"]) == 2


def test_unscoped_read_never_returns_collection_facts(proxy: Proxy) -> None:
    tenants = _tenants(proxy)
    acme_wide, acme_u1 = tenants[0], tenants[1]
    acme_u1.ok("PATCH", "/profile", json={"name": "Ursula", "hobby": "rowing"})
    wide = acme_wide.ok("GET", "/profile")
    assert wide["name"] is None and wide["fact_count"] == 0
    assert wide["profile"] == {"static": [], "dynamic": []}
    assert acme_wide.fact_ids() == set()
    assert (
        acme_wide.ok("POST", "/profile/search", json={"query": "rowing", "threshold": 0})["facts"]
        == []
    )
    assert acme_wide.ok("GET", "/profile/changes")["changes"] == []
    # and the key space is per scope: the same key can be created account-wide
    acme_wide.ok("POST", "/profile/facts", 201, json={"key": "hobby", "value": "golf"})
    assert {f["value"] for f in acme_u1.ok("GET", "/profile/facts")["facts"]} == {
        "rowing",
        "Ursula",
    }


def test_user_id_is_an_alias_of_collection_id(proxy: Proxy) -> None:
    tenants = _tenants(proxy)
    acme = tenants[0]
    fact = acme.ok(
        "POST", "/profile/facts", 201, json={"key": "diet", "value": "vegan", "user_id": "alice"}
    )
    assert fact["collection_id"] == "alice"
    by_alias = acme.ok("GET", "/profile", params={"user_id": "alice"})
    by_name = acme.ok("GET", "/profile", params={"collection_id": "alice"})
    assert by_alias == by_name and by_name["profile"]["static"][0]["id"] == fact["id"]
    assert (
        acme.ok("GET", f"/profile/facts/{fact['id']}", params={"user_id": "alice"})["id"]
        == (fact["id"])
    )
    hits = acme.ok(
        "POST", "/profile/search", json={"query": "food", "threshold": 0, "user_id": "alice"}
    )
    assert [h["id"] for h in hits["facts"]] == [fact["id"]]
    # both given and equal is fine
    acme.ok("GET", "/profile", params={"user_id": "alice", "collection_id": "alice"})
    assert (
        acme.ok("PATCH", "/profile", json={"diet": "vegetarian", "user_id": "alice"})["updated"]
        == 1
    )
    assert acme.fact_ids() == set()  # none of this reached the account-wide scope


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/profile", None),
        ("PATCH", "/profile", {"hobby": "x", "collection_id": "b"}),
        ("PATCH", "/profile", {"hobby": "x", "user_id": "b"}),
        ("GET", "/profile/facts", None),
        ("POST", "/profile/facts", {"key": "k", "value": "v", "collection_id": "b"}),
        ("POST", "/profile/facts", {"key": "k", "value": "v", "user_id": "b"}),
        ("POST", "/profile/search", {"query": "x", "collection_id": "b"}),
        ("POST", "/profile/delete", {"search_query": "x", "collection_id": "b"}),
        ("GET", "/profile/changes", None),
    ],
)
def test_query_and_body_scope_disagreeing_is_a_400(
    proxy: Proxy, method: str, path: str, body: JsonObj | None
) -> None:
    before = HTTP.get(proxy.base_url + "/profile/changes", params={"collection_id": "a"}).json()
    params = {"collection_id": "a"}
    if body is None:
        params["user_id"] = "b"
    r = HTTP.request(method, proxy.base_url + path, params=params, json=body)
    assert r.status_code == 400, r.text
    validate_error(r.json())
    assert r.json()["error"]["param"] == "collection_id"
    for scope in ("a", "b"):
        assert (
            HTTP.get(proxy.base_url + "/profile", params={"collection_id": scope}).json()[
                "fact_count"
            ]
            == 0
        )
    assert HTTP.get(proxy.base_url + "/profile/changes", params={"collection_id": "a"}).json() == (
        before
    )


def test_scope_disagreement_on_fact_routes(proxy: Proxy) -> None:
    r = HTTP.post(
        proxy.base_url + "/profile/facts", json={"key": "k", "value": "v", "collection_id": "a"}
    )
    fid = r.json()["id"]
    for method, body in (
        ("PATCH", {"value": "w", "collection_id": "b"}),
        ("GET", None),
        ("DELETE", None),
    ):
        params = {"collection_id": "a"} if body else {"collection_id": "a", "user_id": "b"}
        r = HTTP.request(method, f"{proxy.base_url}/profile/facts/{fid}", params=params, json=body)
        assert r.status_code == 400, (method, r.text)
        validate_error(r.json())
    fact = HTTP.get(f"{proxy.base_url}/profile/facts/{fid}", params={"collection_id": "a"}).json()
    assert fact["value"] == "v"


def test_config_and_auth_are_per_account(proxy: Proxy) -> None:
    tenants = _tenants(proxy)
    acme, globex = tenants[0], tenants[3]
    config = acme.ok("GET", "/config") | {
        "profile_extractor_config": {"context_prompt": "acme support chats"}
    }
    acme.ok("PUT", "/config", json=config)
    assert acme.ok("GET", "/config")["profile_extractor_config"]["context_prompt"] == (
        "acme support chats"
    )
    assert globex.ok("GET", "/config")["profile_extractor_config"]["context_prompt"] is None
    # once keys exist, no key (or a wrong one) reads nothing
    for headers in ({}, {"Authorization": "Bearer pk-wrong"}):
        for method, path in (("GET", "/profile"), ("GET", "/profile/facts"), ("GET", "/config")):
            r = HTTP.request(method, proxy.base_url + path, headers=headers)
            assert r.status_code == 401, r.text
            validate_error(r.json())
