"""GET /v1/collections: the caller account's collections with live facts, nobody else's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from proxy.store.db import SqliteDatabase
from proxy.store.keys import KeyStore
from tests.conftest import Proxy, make_settings
from tests.fakes.upstream import FakeUpstream


def test_lists_own_collections_only(
    make_proxy: Callable[..., Proxy], upstream: FakeUpstream, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db = SqliteDatabase(data / "profilo.sqlite3")
    try:
        acme, other = KeyStore(db).create("acme")[1], KeyStore(db).create("other")[1]
    finally:
        db.close()
    proxy = make_proxy(make_settings(data, upstream))

    def patch(token: str, body: dict[str, str], collection: str | None) -> None:
        params = {"collection_id": collection} if collection else {}
        r = httpx.patch(
            proxy.base_url + "/profile",
            params=params,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200, r.text

    patch(acme, {"city": "Lisbon", "food": "ramen"}, "alice")
    patch(acme, {"plan": "pro"}, None)  # the account-wide profile
    patch(other, {"city": "Oslo"}, "mallory")

    def listed(token: str) -> list[dict[str, object]]:
        r = httpx.get(proxy.base_url + "/collections", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        return list(r.json()["data"])

    mine = {c["collection_id"]: c["fact_count"] for c in listed(acme)}
    assert mine == {"alice": 2, None: 1}
    assert [c["collection_id"] for c in listed(other)] == ["mallory"]
    assert listed(acme)[0]["collection_id"] is None  # most recently changed first
    assert httpx.get(proxy.base_url + "/collections").status_code == 401

    r = httpx.post(
        proxy.base_url + "/profile/delete",
        json={"search_query": "Oslo", "collection_id": "mallory"},
        headers={"Authorization": f"Bearer {other}"},
    )
    assert r.status_code == 200 and r.json()["count"] == 1
    assert listed(other) == []  # a collection with no live facts is not listed
