"""Data at rest: the data dir and database are private, queued turn text holds no
credential, and a user's facts can be erased with their history (purge, whole collection)."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path
from typing import Any

import httpx

from proxy.models import Scope
from proxy.store.db import SqliteDatabase, open_database
from proxy.store.keys import KeyStore
from tests.conftest import Proxy, make_settings
from tests.fakes.upstream import FakeUpstream
from tests.test_extraction import FAST, Extraction, op, ops_reply


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _db(proxy: Proxy, sql: str, *args: Any) -> list[Any]:
    with sqlite3.connect(proxy.settings.db_path) as conn:
        return conn.execute(sql, args).fetchall()


def test_data_dir_and_database_are_private(make_proxy: Any, tmp_path: Path) -> None:
    proxy = make_proxy()
    httpx.patch(proxy.base_url + "/profile", json={"city": "Lisbon"})  # writes: WAL exists
    data = proxy.settings.data_dir
    assert _mode(data) == 0o700
    assert _mode(proxy.settings.db_path) == 0o600
    for suffix in ("-wal", "-shm"):
        side = Path(str(proxy.settings.db_path) + suffix)
        if side.exists():
            assert _mode(side) & 0o077 == 0, suffix
    assert _mode(proxy.settings.chroma_path) == 0o700


def test_a_looser_existing_data_dir_is_tightened(tmp_path: Path) -> None:
    data = tmp_path / "old"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    (data / "profilo.sqlite3").touch(mode=0o644)
    (data / "profilo.sqlite3").chmod(0o644)
    SqliteDatabase(data / "profilo.sqlite3").close()
    assert _mode(data) == 0o700 and _mode(data / "profilo.sqlite3") == 0o600


def test_queued_turn_text_holds_no_credential(make_proxy: Any, upstream: FakeUpstream) -> None:
    proxy = make_proxy()
    turn = [
        {"role": "user", "content": "my password is hunter22 and my key is "
         "sk-proj-AbCdEfGhIjKlMnOpQrStUv; I live in Lisbon"},
    ]  # fmt: skip
    r = httpx.post(
        proxy.base_url + "/interactions",
        json={"collection_id": "alice", "model": "gpt-4o-mini", "messages": turn},
    )
    assert r.status_code == 202, r.text
    (payload,) = _db(proxy, "SELECT payload FROM jobs")[0]
    text = json.loads(payload)["messages"][0]["content"]
    assert "hunter22" not in text and "sk-proj" not in text
    assert "[redacted]" in text and "Lisbon" in text
    # a chat turn too
    httpx.post(
        proxy.base_url + "/chat/completions",
        json={"model": "gpt-4o-mini", "user": "bob", "features": {"memory": True},
              "messages": [{"role": "user", "content": "card 4111 1111 1111 1111 please"}]},
    )  # fmt: skip
    texts = [json.loads(p)["messages"] for (p,) in _db(proxy, "SELECT payload FROM jobs")]
    assert not any("4111" in json.dumps(m) for m in texts)


def test_purge_removes_history_and_change_log(
    make_proxy: Any, upstream: FakeUpstream, tmp_path: Path
) -> None:
    extraction = Extraction(upstream)
    extraction.script(ops_reply(op("add", "diagnosis", "type 2 diabetes", kind="static")))
    proxy = make_proxy(learning={"run_worker": True, **FAST})
    r = httpx.post(
        proxy.base_url + "/interactions",
        json={"collection_id": "alice", "model": "gpt-4o-mini", "wait_for_learning_seconds": 10,
              "messages": [{"role": "user", "content": "I have type 2 diabetes"}]},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    base = proxy.base_url + "/profile"
    httpx.patch(base, params={"collection_id": "alice"}, json={"diagnosis": "diabetes (T2)"})
    httpx.patch(base, params={"collection_id": "bob"}, json={"diagnosis": "asthma"})
    facts = httpx.get(base + "/facts", params={"collection_id": "alice"}).json()["facts"]
    (fact,) = [f for f in facts if f["key"] == "diagnosis"]
    assert _db(proxy, "SELECT COUNT(*) FROM fact_versions WHERE fact_id = ?", fact["id"])[0][0]

    r = httpx.delete(
        f"{base}/facts/{fact['id']}", params={"collection_id": "alice", "purge": "true"}
    )
    assert r.status_code == 200, r.text
    everything = json.dumps(
        _db(proxy, "SELECT * FROM fact_versions") + _db(proxy, "SELECT * FROM changes")
        + _db(proxy, "SELECT payload FROM jobs WHERE collection_id = 'alice'")
    )  # fmt: skip
    assert "diabetes" not in everything
    assert "asthma" in everything  # bob's history is untouched
    changes = httpx.get(base + "/changes", params={"collection_id": "alice"}).json()
    assert "diabetes" not in json.dumps(changes)


def test_plain_delete_keeps_the_audit_trail(proxy: Proxy) -> None:
    base = proxy.base_url + "/profile"
    httpx.patch(base, params={"collection_id": "alice"}, json={"pet": "a cat named Tom"})
    (fact,) = httpx.get(base + "/facts", params={"collection_id": "alice"}).json()["facts"]
    assert httpx.delete(f"{base}/facts/{fact['id']}", params={"collection_id": "alice"}).is_success
    assert "Tom" in json.dumps(_db(proxy, "SELECT snapshot FROM fact_versions"))


def test_erase_a_collection(make_proxy: Any, upstream: FakeUpstream, tmp_path: Path) -> None:
    proxy = make_proxy(make_settings(tmp_path / "d", upstream, models={"dialectic": "m"}))
    keys = KeyStore(open_database(proxy.settings))
    acme = {"Authorization": "Bearer " + keys.create("acme")[1]}
    other = {"Authorization": "Bearer " + keys.create("other")[1]}
    for auth in (acme, other):
        for user in ("alice", "bob"):
            r = httpx.patch(
                proxy.base_url + "/profile", params={"collection_id": user},
                json={"secret_hobby": f"{user} knits"}, headers=auth,
            )  # fmt: skip
            assert r.status_code == 200, r.text
    httpx.post(
        proxy.base_url + "/profile/dialectic",
        json={"user_message": "what does alice do?", "collection_id": "alice"}, headers=acme,
    )  # fmt: skip
    httpx.post(
        proxy.base_url + "/interactions",
        json={"collection_id": "alice", "model": "m",
              "messages": [{"role": "user", "content": "alice knits"}]}, headers=acme,
    )  # fmt: skip
    r = httpx.delete(proxy.base_url + "/collections/alice", headers=acme)
    assert r.status_code == 200, r.text
    assert r.json()["deleted"] is True and r.json()["erased"]["facts"] == 1
    gone, kept = Scope("acme", "alice").key, Scope("other", "alice").key
    for table in ("facts", "fact_versions", "changes", "jobs", "dialectic_sessions"):
        assert _db(proxy, f"SELECT COUNT(*) FROM {table} WHERE scope_key = ?", gone)[0][0] == 0
    assert _db(proxy, "SELECT COUNT(*) FROM facts WHERE scope_key = ?", kept)[0][0] == 1
    got = httpx.get(proxy.base_url + "/profile", params={"collection_id": "alice"}, headers=acme)
    assert "knits" not in got.text
    search = httpx.post(
        proxy.base_url + "/profile/search", json={"query": "knits", "collection_id": "alice"},
        headers=acme,
    )  # fmt: skip
    assert search.status_code == 200 and search.json()["facts"] == []
    for auth, user in ((acme, "bob"), (other, "alice")):
        kept = httpx.get(proxy.base_url + "/profile", params={"collection_id": user}, headers=auth)
        assert "knits" in kept.text
