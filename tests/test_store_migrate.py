"""``profilo store migrate --to postgresql://…`` (``proxy/store/migrate.py``): an embedded
install moved into Postgres.

A store seeded through the proxy's own API (keys, facts with history and a deletion, jobs in
several states, account config, a dialectic session, a stored chat completion and response)
is migrated by the command and by the function; re-runs are no-ops, interrupted runs resume,
a target that differs fails with exit code 1, the source file never changes, and a proxy on
the migrated database answers the same profile and change log as the embedded one.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from bench.pg_cluster import PgCluster
from proxy.models import Scope
from proxy.store import migrate as migrate_mod
from proxy.store.account_config import AccountConfigStore
from proxy.store.db import open_database
from proxy.store.jobs import JobStore
from proxy.store.keys import KeyStore
from proxy.store.migrate import TABLES, MigrationFailed, migrate, queue_reindex
from proxy.store.postgres import PostgresDatabase
from proxy.store.sessions import SessionStore, Turn
from tests.conftest import MODEL_CACHE, Proxy, make_settings, wait_until
from tests.fakes.upstream import FakeUpstream

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.sqlite_only  # the source is the SQLite file


def _wait_for_usage(db_file: Path, events: int) -> None:
    """The proxy writes usage events in the background (within ``usage.flush_seconds``): the
    seed's must be in the file before a migration reads it, or they land in the middle of one."""

    def recorded() -> bool:
        with sqlite3.connect(db_file) as conn:
            (count,) = conn.execute("SELECT count(*) FROM usage_events").fetchone()
        return bool(count >= events)

    wait_until(recorded, f"{events} usage events", timeout=15)


def _seed(proxy: Proxy) -> str:
    db = open_database(proxy.settings)
    token = KeyStore(db).create("acme")[1]
    KeyStore(db).create("Zed-Corp")  # sorts differently bytewise and in most collations
    auth = {"Authorization": f"Bearer {token}"}
    url = proxy.base_url + "/profile"
    for user, facts in (("alice", {"city": "Lyon", "pet": "a cat"}), ("bob", {"job": "nurse"})):
        r = httpx.patch(url, params={"collection_id": user}, json=facts, headers=auth)
        assert r.status_code == 200, r.text
    for value in ("Paris", "Rome"):  # the same key twice: two closed versions
        r = httpx.patch(url, params={"collection_id": "alice"}, json={"city": value}, headers=auth)
        assert r.status_code == 200, r.text
    r = httpx.patch(url, params={"collection_id": "alice"}, json={"pet": None}, headers=auth)
    assert r.status_code == 200, r.text  # a deletion
    client = proxy.client(token)
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], store=True
    )
    client.responses.create(model="gpt-4o-mini", input="hello", store=True)
    jobs = JobStore(db)
    for n in range(5):
        jobs.enqueue(f"job-{n}", Scope("acme", f"u{n}"), {"messages": []}, max_attempts=3)
    first, second, third = jobs.claim(3)  # one failed, one retried, one left running
    jobs.fail(first.id, "gave up", token=first.token)
    jobs.retry(second.id, "later", 0.0, token=second.token)
    assert third.status == "running"
    _wait_for_usage(proxy.settings.db_path, 2)
    configs = AccountConfigStore(db)
    configs.put(
        "acme",
        {
            "profile_extractor_config": {"context_prompt": "a travel app"},
            "features": {"memory": True},
        },
    )
    configs.put("Zed-Corp", {"features": {"learning": False}})
    turn = Turn("where does alice live?", "Rome", ["fact_x"])
    SessionStore(db, 3600).append(
        Scope("acme", "alice"), SessionStore.new_id(), turn, request_id=None
    )
    db.close()
    return token


def _answers(proxy: Proxy, token: str, upstream: FakeUpstream) -> dict[str, Any]:
    """Profile, change log, search hits and the memory a chat injects, per user."""
    auth = {"Authorization": f"Bearer {token}"}
    out: dict[str, Any] = {}
    for user in ("alice", "bob"):
        params = {"collection_id": user}
        out[user] = httpx.get(proxy.url + "/v1/profile", params=params, headers=auth).json()
        changes = httpx.get(proxy.url + "/v1/profile/changes", params=params, headers=auth)
        out[user + "/changes"] = changes.json()
        found = httpx.post(
            proxy.url + "/v1/profile/search",
            params=params,
            json={"query": "which city does the user live in", "threshold": 0, "top_k": 5},
            headers=auth,
        )
        assert found.status_code == 200, found.text
        out[user + "/search"] = sorted(hit["key"] for hit in found.json()["facts"])
        proxy.client(token).chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Where do I live, and what do I do?"}],
            extra_body={
                "features": {"memory": True, "user_profile": True, "learning": False},
                "collection_id": user,
            },
        )
        out[user + "/chat"] = upstream.last.json["messages"]
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rows(conn: Any, table: str, key: str, columns: list[str], pg: bool) -> list[list[Any]]:
    order = f'{key} COLLATE "C"' if pg and key != "seq" else key
    rows = conn.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}").fetchall()
    return [[migrate_mod._norm(v) for v in row] for row in rows]


def _assert_same(db_file: Path, url: str, *, outbox_extra: bool = False) -> None:
    """Independently of the module's checksum: every table row for row."""
    with sqlite3.connect(db_file) as src, psycopg.connect(url) as dst:
        for table, key in TABLES:
            columns = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]
            want = _rows(src, table, key, columns, pg=False)
            got = _rows(dst, table, key, columns, pg=True)
            if table == "index_outbox" and outbox_extra:
                got = got[: len(want)]
            assert got == want, table
        assert src.execute("SELECT count(*) FROM jobs").fetchone()[0] == 5


def _cmd(source: Proxy, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "proxy", "--data-dir", str(source.settings.data_dir), "store",
           "migrate", "--to", url, *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROFILO_EMBEDDING__CACHE_DIR": str(MODEL_CACHE)}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _new_db(pg_cluster: PgCluster) -> str:
    return pg_cluster.create_database("m_" + uuid.uuid4().hex[:12])


def test_command_copies_everything_validates_and_the_copy_serves_the_same(
    make_proxy: Any, tmp_path: Path, upstream: FakeUpstream, pg_cluster: PgCluster
) -> None:
    source = make_proxy()
    token = _seed(source)
    before = _answers(source, token, upstream)
    db_file = source.settings.db_path
    _wait_for_usage(db_file, 4)  # the seed's two requests and the two chats of _answers
    digest = _sha(db_file)

    url = _new_db(pg_cluster)
    done = _cmd(source, url, "--batch-size", "2")  # several batches per table
    assert done.returncode == 0, done.stderr
    assert "validated" in done.stdout
    assert "facts: 2 rows (2 copied this run)" in done.stdout
    assert "fact_versions: 3 rows (3 copied this run)" in done.stdout
    _assert_same(db_file, url, outbox_extra=True)
    with psycopg.connect(url) as conn:
        queued = conn.execute("SELECT count(DISTINCT fact_id) FROM index_outbox").fetchone()
        usage = conn.execute(
            "SELECT sum(facts), sum(collections) FROM account_usage WHERE account = 'acme'"
        )
        assert usage.fetchone() == (2, 2)
    assert queued == (2,)  # every fact waits for the vector index

    again = _cmd(source, url)
    assert again.returncode == 0, again.stderr  # a re-run: nothing to copy, still valid
    assert "copied this run" in again.stdout
    assert all("(0 copied" in line for line in again.stdout.splitlines() if "rows (" in line)
    _assert_same(db_file, url, outbox_extra=True)
    assert _sha(db_file) == digest  # the source never changes

    # a proxy on the migrated records answers as the embedded one did
    settings = make_settings(tmp_path / "pg", upstream, store={"database_url": url})
    migrated = make_proxy(settings)
    assert _answers(migrated, token, upstream) == before
    auth = {"Authorization": f"Bearer {token}"}
    hits = httpx.post(
        migrated.base_url + "/profile/search",
        params={"collection_id": "alice"},
        json={"query": "which city", "threshold": 0},
        headers=auth,
    ).json()
    assert "Rome" in str(hits)  # the start-up replay indexed the migrated facts
    # new writes get new sequence numbers (the identity sequences were moved past the copy)
    r = httpx.patch(
        migrated.base_url + "/profile",
        params={"collection_id": "alice"},
        json={"city": "Oslo"},
        headers=auth,
    )
    assert r.status_code == 200, r.text
    changes = httpx.get(
        migrated.base_url + "/profile/changes", params={"collection_id": "alice"}, headers=auth
    ).json()
    assert changes["changes"][1:] == before["alice/changes"]["changes"]  # newest first
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM fact_versions").fetchone() == (4,)

    # the target no longer matches (it was written to): exit 1 with a clear message
    failed = _cmd(source, url)
    assert failed.returncode == 1
    assert "migration failed" in failed.stderr and "facts" in failed.stderr
    assert _sha(db_file) == digest


def test_interrupted_runs_resume_and_end_identical(
    make_proxy: Any, pg_cluster: PgCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_proxy()
    _seed(source)
    db_file = source.settings.db_path
    digest = _sha(db_file)
    url = _new_db(pg_cluster)
    target = PostgresDatabase(url, min_size=0, max_size=2)
    try:
        with pytest.raises(MigrationFailed, match="interrupted"):
            migrate(db_file, target, batch_size=1, progress=False, max_batches=4)
        # a crash inside a batch (the connection dropped): that batch is rolled back
        real, calls = migrate_mod._insert, []

        def flaky(*args: Any) -> int:
            calls.append(1)
            if len(calls) == 6:
                raise RuntimeError("connection lost")
            return real(*args)

        monkeypatch.setattr(migrate_mod, "_insert", flaky)
        with pytest.raises(RuntimeError):
            migrate(db_file, target, batch_size=1, progress=False)
        monkeypatch.setattr(migrate_mod, "_insert", real)

        reports = migrate(db_file, target, batch_size=1, progress=False)
        assert [r.table for r in reports] == [t for t, _ in TABLES]
        total = sum(r.rows for r in reports)
        assert 0 < sum(r.copied for r in reports) < total  # resumed, not redone
        _assert_same(db_file, url)
        # the same run again: nothing copied, same content
        assert sum(r.copied for r in migrate(db_file, target, progress=False)) == 0
        _assert_same(db_file, url)

        # a row missing below the resume point (not in key order): a full pass restores it
        with target.write() as conn:
            conn.execute("DELETE FROM facts WHERE key = 'job'")
            conn.execute("DELETE FROM jobs WHERE seq = (SELECT min(seq) FROM jobs)")
        reports = migrate(db_file, target, batch_size=2, progress=False)
        assert {r.table: r.copied for r in reports if r.copied} == {"facts": 1, "jobs": 1}
        _assert_same(db_file, url)

        # sequences: the next identity value is past every copied seq
        with target.read() as conn:
            for table, key in TABLES:
                if key == "seq":
                    top = conn.execute(f"SELECT max(seq) FROM {table}").fetchone()[0]
                    nxt = conn.execute(
                        f"SELECT nextval(pg_get_serial_sequence('{table}', 'seq'))"
                    ).fetchone()[0]
                    assert top is None or nxt > top, table

        assert queue_reindex(target) == 2
        assert queue_reindex(target) == 0  # idempotent
        migrate(db_file, target, progress=False)  # the extra outbox rows are not a difference
    finally:
        target.close()
    assert _sha(db_file) == digest


def test_a_different_target_fails_validation(make_proxy: Any, pg_cluster: PgCluster) -> None:
    source = make_proxy()
    _seed(source)
    db_file = source.settings.db_path
    url = _new_db(pg_cluster)
    target = PostgresDatabase(url, min_size=0, max_size=2)
    try:
        migrate(db_file, target, progress=False)
        with target.write() as conn:
            conn.execute("UPDATE changes SET source = 'tampered' WHERE seq = 1")
        with pytest.raises(MigrationFailed, match=r"changes: .*different content"):
            migrate(db_file, target, progress=False)
        with target.write() as conn:
            conn.execute("UPDATE changes SET source = NULL WHERE seq = 1")
            conn.execute(
                "INSERT INTO api_keys (id, account, key_hash, prefix, created_at) "
                "VALUES ('key_zzzz', 'x', 'h', 'p', 1)"
            )
        with pytest.raises(MigrationFailed, match=r"api_keys: .*extra rows"):
            migrate(db_file, target, progress=False)
    finally:
        target.close()


def test_text_keys_compare_bytewise_under_a_non_c_collation(
    make_proxy: Any, pg_cluster: PgCluster
) -> None:
    """``account_config`` is keyed by account names: 'Zed-Corp' < 'acme' bytewise, but not
    in a linguistic collation; the copy's resume point and the checksum must not depend on it."""
    source = make_proxy()
    _seed(source)
    name = "m_icu_" + uuid.uuid4().hex[:8]
    with psycopg.connect(pg_cluster.url, autocommit=True) as conn:
        try:
            conn.execute(
                f'CREATE DATABASE "{name}" TEMPLATE template0 LOCALE_PROVIDER icu '
                "ICU_LOCALE 'en-US' LOCALE 'C'"
            )
        except psycopg.Error as exc:
            pytest.skip(f"no ICU collation in this Postgres: {exc}")
    url = pg_cluster.url_for(name)
    target = PostgresDatabase(url, min_size=0, max_size=2)
    try:
        with pytest.raises(MigrationFailed, match="interrupted"):
            migrate(source.settings.db_path, target, batch_size=1, progress=False, max_batches=3)
        migrate(source.settings.db_path, target, batch_size=1, progress=False)
        with target.read() as conn:
            order = [r[0] for r in conn.execute("SELECT account FROM account_config ORDER BY 1")]
        assert order == ["acme", "Zed-Corp"]  # the database's own order is not bytewise
        _assert_same(source.settings.db_path, url)
    finally:
        target.close()


def test_source_problems_are_reported(tmp_path: Path, pg_cluster: PgCluster) -> None:
    url = _new_db(pg_cluster)
    target = PostgresDatabase(url, min_size=0, max_size=2)
    try:
        with pytest.raises(MigrationFailed, match="no records database"):
            migrate(tmp_path / "missing.sqlite3", target)
        old = tmp_path / "old.sqlite3"
        with sqlite3.connect(old) as conn:
            conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY)")
            conn.execute("INSERT INTO schema_version VALUES (1)")
        with pytest.raises(MigrationFailed, match="profilo db upgrade"):
            migrate(old, target)
        with pytest.raises(MigrationFailed, match="batch-size"):
            migrate(old, target, batch_size=0)
    finally:
        target.close()


def test_numbers_normalize_alike() -> None:
    norm = migrate_mod._norm
    assert norm(5) == norm(5.0) == 5
    assert norm(0.1) != norm(0.1000000001)
    assert norm(None) is None and norm("5") == "5" and norm("5") != norm(5)
