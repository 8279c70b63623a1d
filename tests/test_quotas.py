"""Per-account quotas (facts, collections, dialectic sessions): 429 ``quota_exceeded`` with
nothing written; learned facts over quota are dropped and counted; other accounts unaffected."""

from __future__ import annotations

from typing import Any

import httpx

from proxy.store.db import open_database
from proxy.store.keys import KeyStore
from tests.conftest import Proxy
from tests.fakes.schema import validate_error
from tests.fakes.upstream import FakeUpstream
from tests.test_extraction import FAST, Extraction, op, ops_reply


def _auth(proxy: Proxy, *names: str) -> list[dict[str, str]]:
    keys = KeyStore(open_database(proxy.settings))
    return [{"Authorization": "Bearer " + keys.create(n)[1]} for n in names]


def _patch(proxy: Proxy, auth: dict[str, str], user: str, facts: dict[str, str]) -> Any:
    return httpx.patch(
        proxy.base_url + "/profile", params={"collection_id": user}, json=facts, headers=auth
    )


def _count(proxy: Proxy, account: str) -> int:
    with open_database(proxy.settings).read() as conn:
        return int(
            conn.execute("SELECT COUNT(*) FROM facts WHERE account = ?", (account,)).fetchone()[0]
        )


def test_fact_quota(make_proxy: Any) -> None:
    proxy = make_proxy(quotas={"max_facts_per_account": 3})
    acme, other = _auth(proxy, "acme", "other")
    assert _patch(proxy, acme, "u", {"a": "1", "b": "2"}).status_code == 200
    r = _patch(proxy, acme, "u", {"c": "3", "d": "4"})  # 4 > 3: the whole write is refused
    assert r.status_code == 429, r.text
    validate_error(r.json())
    assert r.json()["error"]["code"] == "quota_exceeded"
    assert _count(proxy, "acme") == 2
    assert _patch(proxy, acme, "u", {"a": "one", "c": "3"}).status_code == 200  # 3: at quota
    assert _patch(proxy, acme, "u", {"a": "uno"}).status_code == 200  # updates still work
    r = httpx.post(
        proxy.base_url + "/profile/facts", json={"key": "e", "value": "5", "collection_id": "u"},
        headers=acme,
    )  # fmt: skip
    assert r.status_code == 429
    facts = httpx.get(proxy.base_url + "/profile/facts", params={"collection_id": "u"},
                      headers=acme).json()["facts"]  # fmt: skip
    httpx.delete(f"{proxy.base_url}/profile/facts/{facts[0]['id']}",
                 params={"collection_id": "u"}, headers=acme)  # fmt: skip
    assert _patch(proxy, acme, "u", {"e": "5"}).status_code == 200  # a delete frees a slot
    assert _patch(proxy, other, "u", {"a": "1", "b": "2", "c": "3"}).status_code == 200


def test_collection_quota(make_proxy: Any) -> None:
    proxy = make_proxy(quotas={"max_collections_per_account": 2})
    (acme,) = _auth(proxy, "acme")
    assert _patch(proxy, acme, "alice", {"a": "1"}).status_code == 200
    assert _patch(proxy, acme, "bob", {"a": "1"}).status_code == 200
    r = _patch(proxy, acme, "carol", {"a": "1"})
    assert r.status_code == 429 and r.json()["error"]["code"] == "quota_exceeded"
    assert _patch(proxy, acme, "alice", {"b": "2"}).status_code == 200  # existing ones grow
    assert httpx.delete(proxy.base_url + "/collections/bob", headers=acme).status_code == 200
    assert _patch(proxy, acme, "carol", {"a": "1"}).status_code == 200


def test_dialectic_session_quota(make_proxy: Any, upstream: FakeUpstream) -> None:
    proxy = make_proxy(
        models={"dialectic": "gpt-4o-mini"}, quotas={"max_dialectic_sessions_per_account": 1}
    )
    (acme,) = _auth(proxy, "acme")
    url = proxy.base_url + "/profile/dialectic"
    first = httpx.post(url, json={"user_message": "who?"}, headers=acme)
    assert first.status_code == 200, first.text
    calls = len(upstream.requests)
    r = httpx.post(url, json={"user_message": "who again?"}, headers=acme)
    assert r.status_code == 429 and r.json()["error"]["code"] == "quota_exceeded"
    assert len(upstream.requests) == calls  # refused before the paid answer
    again = httpx.post(
        url, json={"user_message": "and?", "session_id": first.json()["session_id"]},
        headers=acme,
    )  # fmt: skip
    assert again.status_code == 200  # an open session goes on


def test_learned_facts_over_quota_are_dropped(make_proxy: Any, upstream: FakeUpstream) -> None:
    extraction = Extraction(upstream)
    extraction.script(ops_reply(op("add", "a", "1"), op("add", "b", "2"), op("add", "c", "3")))
    proxy = make_proxy(learning={"run_worker": True, **FAST}, quotas={"max_facts_per_account": 2})
    r = httpx.post(
        proxy.base_url + "/interactions",
        json={"collection_id": "u", "model": "gpt-4o-mini", "wait_for_learning_seconds": 10,
              "messages": [{"role": "user", "content": "a 1, b 2, c 3"}]},
    )  # fmt: skip
    body = r.json()
    assert body["status"] == "done", body
    assert body["result"]["dropped"] == {"quota": 1} and body["result"]["added"] == 2
