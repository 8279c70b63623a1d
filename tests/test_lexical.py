"""The lexical (FTS5) index never drifts from the facts: every write path through real HTTP,
expiry, a restart with a damaged index, and ``profilo index rebuild``; lexical hits never
cross scopes."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx

from proxy.cli import main as cli_main
from proxy.models import Scope
from proxy.store.db import open_database
from proxy.store.keys import KeyStore
from proxy.store.lexical import LexicalIndex
from tests.conftest import Proxy

HTTP = httpx.Client(timeout=60)
JsonObj = dict[str, Any]


def call(proxy: Proxy, method: str, path: str, token: str | None = None, **kw: Any) -> JsonObj:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = HTTP.request(method, proxy.base_url + path, headers=headers, **kw)
    assert r.status_code in (200, 201), f"{method} {path}: {r.status_code} {r.text}"
    body: JsonObj = r.json()
    return body


def search(proxy: Proxy, query: str, token: str | None = None, **fields: Any) -> list[JsonObj]:
    body = {"query": query, "threshold": 0, **fields}
    facts: list[JsonObj] = call(proxy, "POST", "/profile/search", token, json=body)["facts"]
    return facts


def in_step(db_path: Path) -> dict[str, tuple[str, str]]:
    """Asserts the FTS rows (and per-scope counts) are exactly the facts'; returns them."""
    with closing(sqlite3.connect(db_path)) as conn:
        facts = {
            row[0]: (row[1], f"{row[2].replace('_', ' ')}: {row[3]}")
            for row in conn.execute("SELECT id, scope_key, key, value FROM facts")
        }
        fts = {
            row[0]: (row[1], row[2])
            for row in conn.execute("SELECT fact_id, scope_key, text FROM facts_fts")
        }
        fts_rows = conn.execute("SELECT count(*) FROM facts_fts").fetchone()[0]
        counts = dict(conn.execute("SELECT scope_key, n FROM facts_fts_counts WHERE n > 0"))
    assert fts == facts and fts_rows == len(facts)
    expected: dict[str, int] = {}
    for scope_key, _ in facts.values():
        expected[scope_key] = expected.get(scope_key, 0) + 1
    assert counts == expected
    return fts


def texts(db_path: Path) -> set[str]:
    return {text for _, text in in_step(db_path).values()}


def test_every_write_path_keeps_the_index_in_step(proxy: Proxy) -> None:
    db = proxy.settings.db_path
    fact = call(proxy, "POST", "/profile/facts", json={"key": "home", "value": "Lisbon"})
    call(proxy, "PATCH", "/profile", json={"pet": "a beagle called Rex", "collection_id": "u1"})
    assert texts(db) == {"home: Lisbon", "pet: a beagle called Rex"}
    # update (value and key): the old text is gone from the index, the new one is found
    call(proxy, "PATCH", f"/profile/facts/{fact['id']}", json={"value": "Porto"})
    call(proxy, "PATCH", f"/profile/facts/{fact['id']}", json={"key": "hometown"})
    assert texts(db) == {"hometown: Porto", "pet: a beagle called Rex"}
    assert [f["value"] for f in search(proxy, "Porto")] == ["Porto"]
    # supersede through PATCH /v1/profile: one row, the new value
    call(
        proxy, "PATCH", "/profile", json={"pet": "a tabby cat called Mochi", "collection_id": "u1"}
    )
    assert texts(db) == {"hometown: Porto", "pet: a tabby cat called Mochi"}
    hits = search(proxy, "Mochi", collection_id="u1")
    assert hits and hits[0]["value"] == "a tabby cat called Mochi"
    # delete by id, then delete by query
    call(proxy, "DELETE", f"/profile/facts/{fact['id']}")
    assert texts(db) == {"pet: a tabby cat called Mochi"}
    gone = call(
        proxy,
        "POST",
        "/profile/delete",
        json={"search_query": "Mochi", "threshold": 0, "collection_id": "u1"},
    )
    assert gone, gone
    assert texts(db) == set()


def test_expired_facts_are_never_returned_and_leave_the_index_when_purged(
    proxy: Proxy,
) -> None:
    db = proxy.settings.db_path
    body = {"key": "mood", "value": "nervous about the Zanzibar trip", "kind": "dynamic"}
    call(proxy, "POST", "/profile/facts", json={**body, "ttl_seconds": 1})
    call(proxy, "POST", "/profile/facts", json={"key": "trip", "value": "Zanzibar in May"})
    assert {f["key"] for f in search(proxy, "Zanzibar")} == {"mood", "trip"}
    time.sleep(1.2)  # let the dynamic fact expire
    assert {f["key"] for f in search(proxy, "Zanzibar")} == {"trip"}
    # writing the key again purges the expired row (closed into history) in the same
    # transaction as the new one: the index holds the new text only
    call(proxy, "PATCH", "/profile", json={"mood": "relaxed"})
    assert texts(db) == {"mood: relaxed", "trip: Zanzibar in May"}


def test_a_damaged_index_is_rebuilt_at_start_up_and_by_the_cli(
    make_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    proxy = make_proxy()
    call(proxy, "PATCH", "/profile", json={"city": "Kraków", "collection_id": "u1"})
    call(proxy, "PATCH", "/profile", json={"car": "a Nissan Leaf", "collection_id": "u2"})
    before = in_step(proxy.settings.db_path)
    proxy.server.__exit__(None, None, None)
    with closing(sqlite3.connect(proxy.settings.db_path)) as conn:
        conn.execute("DELETE FROM facts_fts WHERE text LIKE 'car%'")  # rows lost
        conn.execute("DROP TRIGGER facts_fts_update")  # and a trigger
        conn.commit()
    restarted = make_proxy()  # start-up finds them out of step and rebuilds
    assert in_step(restarted.settings.db_path) == before
    assert [f["key"] for f in search(restarted, "Leaf", collection_id="u2")] == ["car"]
    call(restarted, "PATCH", "/profile", json={"car": "a cargo bike", "collection_id": "u2"})
    assert "car: a cargo bike" in texts(restarted.settings.db_path)  # the trigger is back
    restarted.server.__exit__(None, None, None)

    with closing(sqlite3.connect(restarted.settings.db_path)) as conn:
        conn.execute("DROP TABLE facts_fts")
        conn.commit()
    data_dir = str(restarted.settings.data_dir)
    assert cli_main(["--data-dir", data_dir, "index", "rebuild"]) == 0
    assert texts(restarted.settings.db_path) == {"city: Kraków", "car: a cargo bike"}


def test_lexical_hits_never_cross_scopes(proxy: Proxy) -> None:
    keys = KeyStore(open_database(proxy.settings))
    _, acme = keys.create("acme")
    _, globex = keys.create("globex")
    secret = {"plan": "surprise party at the Quetzal Lounge"}
    call(proxy, "PATCH", "/profile", acme, json={**secret, "collection_id": "u2"})
    call(proxy, "PATCH", "/profile", globex, json={**secret, "collection_id": "u1"})
    for i in range(25):  # enough facts for the common-word path to run in these scopes
        call(proxy, "PATCH", "/profile", acme, json={f"note_{i}": f"Quetzal note {i}"})
    call(proxy, "PATCH", "/profile", acme, json={"plan": "dinner", "collection_id": "u1"})
    assert [f["value"] for f in search(proxy, "Quetzal Lounge", acme, collection_id="u2")] == [
        secret["plan"]
    ]
    for token, collection in ((acme, "u1"), (acme, None), (globex, None), (globex, "u3")):
        hits = search(proxy, "Quetzal Lounge party", token, collection_id=collection)
        assert secret["plan"] not in {f["value"] for f in hits}, (collection, hits)
    # the store itself: a scope's lexical query never returns another scope's fact
    lexical = LexicalIndex(open_database(proxy.settings))
    got = lexical.search(Scope("acme", "u1"), ["quetzal", "lounge"], 50)
    listed = call(proxy, "GET", "/profile/facts", acme, params={"collection_id": "u1"})
    assert {fact_id for fact_id, _ in got} <= {f["id"] for f in listed["facts"]}
