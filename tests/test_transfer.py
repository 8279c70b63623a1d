"""``profilo store migrate --to postgresql://…``: an embedded install moved into Postgres.

A store seeded through the proxy's own API (keys, facts with history and a deletion, jobs in
several states, a stored completion) is migrated, re-run, interrupted and resumed; the source
file never changes; a proxy on the migrated database answers the same profile, change log
and search as the embedded one.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.pg_cluster import PgCluster
from proxy.models import Scope
from proxy.store.db import open_database
from proxy.store.jobs import JobStore
from proxy.store.keys import KeyStore
from proxy.store.postgres import PostgresDatabase
from proxy.store.transfer import TABLES, MigrationFailed, migrate
from tests.conftest import MODEL_CACHE, Proxy, make_settings
from tests.fakes.upstream import FakeUpstream

ROOT = Path(__file__).resolve().parent.parent


def _seed(proxy: Proxy) -> str:
    db = open_database(proxy.settings)
    token = KeyStore(db).create("acme")[1]
    KeyStore(db).create("other")
    auth = {"Authorization": f"Bearer {token}"}
    url = proxy.base_url + "/profile"
    for user, facts in (("alice", {"city": "Lyon", "pet": "a cat"}), ("bob", {"job": "nurse"})):
        r = httpx.patch(url, params={"collection_id": user}, json=facts, headers=auth)
        assert r.status_code == 200, r.text
    r = httpx.patch(url, params={"collection_id": "alice"}, json={"city": "Paris"}, headers=auth)
    assert r.status_code == 200  # a closed version in the history
    r = httpx.patch(url, params={"collection_id": "alice"}, json={"pet": None}, headers=auth)
    assert r.status_code == 200, r.text  # a deletion
    client = proxy.client(token)
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], store=True
    )
    jobs = JobStore(db)
    for n in range(4):
        jobs.enqueue(f"job-{n}", Scope("acme", f"u{n}"), {"messages": []}, max_attempts=3)
    first, second = jobs.claim(2)
    jobs.fail(first.id, "gave up", token=first.token)
    jobs.retry(second.id, "later", 0.0, token=second.token)
    db.close()
    return token


def _answers(proxy_url: str, token: str) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {token}"}
    out: dict[str, Any] = {}
    for user in ("alice", "bob"):
        params = {"collection_id": user}
        out[user] = httpx.get(proxy_url + "/v1/profile", params=params, headers=auth).json()
        changes = httpx.get(proxy_url + "/v1/profile/changes", params=params, headers=auth)
        out[user + "/changes"] = changes.json()
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.sqlite_only
def test_migrate_round_trips_resumes_and_serves_the_same(
    make_proxy: Any, tmp_path: Path, upstream: FakeUpstream, pg_cluster: PgCluster
) -> None:
    source = make_proxy()
    token = _seed(source)
    before = _answers(source.url, token)
    db_file = source.settings.db_path
    digest = _sha(db_file)

    # the command, as an operator runs it (small batches: several per table)
    url = pg_cluster.create_database("m_" + uuid.uuid4().hex[:12])
    cmd = [sys.executable, "-m", "proxy", "--data-dir", str(source.settings.data_dir), "store",
           "migrate", "--to", url, "--batch-size", "2"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROFILO_EMBEDDING__CACHE_DIR": str(MODEL_CACHE)}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "validated" in done.stdout
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr  # re-run: nothing to copy, still valid
    assert _sha(db_file) == digest  # the source never changes

    # an interrupted run, then the re-run that finishes it
    other = pg_cluster.create_database("m_" + uuid.uuid4().hex[:12])
    target = PostgresDatabase(other, min_size=0, max_size=2)
    with pytest.raises(MigrationFailed, match="interrupted"):
        migrate(db_file, target, batch_size=1, progress=False, max_batches=5)
    reports = migrate(db_file, target, batch_size=1, progress=False)
    assert [r.table for r in reports] == [t for t, _ in TABLES]
    assert sum(r.copied for r in reports) < sum(r.rows for r in reports)  # resumed, not redone
    with target.read() as conn:
        statuses = sorted(r[0] for r in conn.execute("SELECT status FROM jobs").fetchall())
        versions = conn.execute("SELECT count(*) FROM fact_versions").fetchone()[0]
    assert statuses == ["failed", "queued", "queued", "queued"]
    assert versions == 2  # the closed Lyon version and the deleted pet
    # a changed target row is caught by the validation
    with target.write() as conn:
        conn.execute("UPDATE facts SET value = 'Berlin' WHERE key = 'city'")
    with pytest.raises(MigrationFailed, match="facts"):
        migrate(db_file, target, progress=False)
    target.close()

    # a proxy on the migrated records answers as the embedded one did, search included
    settings = make_settings(tmp_path / "pg", upstream, store={"database_url": url})
    migrated = make_proxy(settings)
    assert _answers(migrated.url, token) == before
    hits = httpx.post(
        migrated.base_url + "/profile/search",
        params={"collection_id": "alice"},
        json={"query": "which city", "threshold": 0},
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    assert "Paris" in str(hits)
