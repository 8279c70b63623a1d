"""Several processes on one PostgreSQL: shared records, one queue, fencing, outages.

A real throwaway cluster (``bench/pg_cluster.py``), real proxies under uvicorn, real OS
processes claiming from the queue. The rest of the suite's record tests run on Postgres too
(``tests/records_backend.py``); these are the cases only several replicas can show.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.pg_cluster import PgCluster
from proxy.models import Scope
from proxy.store.jobs import JobStore, LeaseLost, NewJob
from proxy.store.postgres import PostgresDatabase
from tests.conftest import make_settings
from tests.fakes.upstream import FakeUpstream
from tests.test_extraction import FAST, Extraction
from tests.test_worker import fact_from_turn

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def database(pg_cluster: PgCluster) -> Iterator[str]:
    name = "r_" + uuid.uuid4().hex[:16]
    url = pg_cluster.create_database(name)
    yield url
    if pg_cluster.started:
        pg_cluster.drop_database(name)


def _replica(make_proxy: Any, tmp_path: Path, upstream: FakeUpstream, name: str, url: str) -> Any:
    settings = make_settings(tmp_path / name, upstream, store={"database_url": url})
    return make_proxy(settings)


def test_a_write_on_one_replica_is_read_on_the_other_at_once(
    make_proxy: Any, tmp_path: Path, upstream: FakeUpstream, database: str
) -> None:
    a = _replica(make_proxy, tmp_path, upstream, "a", database)
    b = _replica(make_proxy, tmp_path, upstream, "b", database)
    params = {"collection_id": "alice"}
    r = httpx.patch(a.base_url + "/profile", params=params, json={"city": "Lyon"})
    assert r.status_code == 200, r.text
    body = httpx.get(b.base_url + "/profile", params=params).json()
    assert [(f["key"], f["value"]) for f in body["profile"]["static"]] == [("city", "Lyon")]
    # a cached record (the account config) is not served stale on B after a write on A
    before = httpx.get(b.url + "/v1/config").json()  # B caches it
    memory = bool(before["features"].get("memory"))
    changed = {**before, "features": {**before["features"], "memory": not memory}}
    for _ in range(3):  # flip it back and forth: each time B sees the new value at once
        assert httpx.put(a.url + "/v1/config", json=changed).status_code == 200
        assert httpx.get(b.url + "/v1/config").json() == changed
        changed, before = before, changed


_WORKER = textwrap.dedent(
    """
    import sys, time
    from proxy.store.jobs import JobStore
    from proxy.store.postgres import PostgresDatabase

    url, name = sys.argv[1], sys.argv[2]
    db = PostgresDatabase(url, min_size=1, max_size=2, migrate=False)
    jobs = JobStore(db)
    idle = 0
    while idle < 20:
        claimed = jobs.claim(10, lease=30)
        if not claimed:
            idle += 1
            time.sleep(0.02)
            continue
        idle = 0
        for job in claimed:
            with db.write() as conn:
                conn.execute(
                    "INSERT INTO applied (job_id, scope_key, job_seq, worker) VALUES (?, ?, ?, ?)",
                    (job.id, job.scope.key, job.seq, name),
                )
                JobStore.mark_done(conn, job.id, {}, time.time(), job.token)
    db.close()
    """
)


def _applied_table(url: str) -> PostgresDatabase:
    db = PostgresDatabase(url, min_size=0, max_size=2)
    with db.write() as conn:
        conn.execute(
            "CREATE TABLE applied (n BIGSERIAL PRIMARY KEY, job_id TEXT NOT NULL, "
            "scope_key TEXT NOT NULL, job_seq BIGINT NOT NULL, worker TEXT NOT NULL)"
        )
    return db


def test_two_processes_drain_2000_jobs_once_each_in_scope_order(database: str) -> None:
    db = _applied_table(database)
    jobs = JobStore(db)
    scopes = [Scope(f"acct{i % 5}", f"user{i}") for i in range(50)]
    batch = [NewJob(f"job-{n}", scopes[n % 50], {"n": n}) for n in range(2000)]
    jobs.enqueue_many(batch, max_attempts=3)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, database, name],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for name in ("w1", "w2", "w3")
    ]
    for proc in procs:
        assert proc.wait(timeout=300) == 0
    with db.read() as conn:
        rows = conn.execute("SELECT job_id, scope_key, job_seq, worker FROM applied ORDER BY n")
        rows = rows.fetchall()
        done = conn.execute("SELECT COUNT(*) FROM jobs WHERE status = 'done'").fetchone()[0]
    assert done == 2000
    assert len(rows) == 2000 and len({r[0] for r in rows}) == 2000  # each applied once
    last: dict[str, int] = {}
    for _, scope_key, seq, _ in rows:  # commit order per scope follows enqueue order
        assert seq > last.get(scope_key, -1)
        last[scope_key] = seq
    workers = {r[3] for r in rows}
    assert len(workers) >= 2, workers  # the work was shared, not taken by one process
    db.close()


_PAUSED = textwrap.dedent(
    """
    import sys, time
    from proxy.store.jobs import JobStore, LeaseLost
    from proxy.store.postgres import PostgresDatabase

    db = PostgresDatabase(sys.argv[1], min_size=1, max_size=1, migrate=False)
    jobs = JobStore(db)
    [job] = jobs.claim(1, lease=1.0)
    print(job.token, flush=True)
    sys.stdin.readline()  # the test pauses us (SIGSTOP) here, then resumes us
    try:
        with db.write() as conn:
            conn.execute(
                "INSERT INTO applied (job_id, scope_key, job_seq, worker) VALUES (?, ?, ?, ?)",
                (job.id, job.scope.key, job.seq, "paused"),
            )
            JobStore.mark_done(conn, job.id, {}, time.time(), job.token)
    except LeaseLost:
        sys.exit(3)
    sys.exit(0)
    """
)


def test_a_worker_paused_past_its_lease_cannot_apply(database: str) -> None:
    db = _applied_table(database)
    jobs = JobStore(db)
    jobs.enqueue("job-1", Scope("acme", "alice"), {}, max_attempts=5)
    paused = subprocess.Popen(
        [sys.executable, "-c", _PAUSED, database],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert paused.stdout is not None and paused.stdin is not None
        old_token = int(paused.stdout.readline())
        os.kill(paused.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 30
        while not jobs.expire_leases():  # the lease runs out: any replica takes it over
            assert time.monotonic() < deadline
            time.sleep(0.2)
        [mine] = jobs.claim(1, lease=30)
        assert mine.token > old_token
        os.kill(paused.pid, signal.SIGCONT)
        paused.stdin.write("go\n")
        paused.stdin.flush()
        assert paused.wait(timeout=30) == 3  # its token is stale: LeaseLost, nothing applied
        with db.write() as conn:
            conn.execute(
                "INSERT INTO applied (job_id, scope_key, job_seq, worker) VALUES (?, ?, ?, ?)",
                (mine.id, mine.scope.key, mine.seq, "taker"),
            )
            JobStore.mark_done(conn, mine.id, {}, time.time(), mine.token)
        with pytest.raises(LeaseLost):  # and a late finish with the old token changes nothing
            with db.write() as conn:
                JobStore.mark_done(conn, mine.id, {}, time.time(), old_token)
        with db.read() as conn:
            workers = [r[0] for r in conn.execute("SELECT worker FROM applied").fetchall()]
        assert workers == ["taker"]
        assert jobs.get("acme", "job-1").status == "done"  # type: ignore[union-attr]
    finally:
        if paused.poll() is None:
            os.kill(paused.pid, signal.SIGCONT)
            paused.kill()
        db.close()


def test_postgres_down_fails_open_then_resumes_by_itself(
    make_proxy: Any, tmp_path: Path, upstream: FakeUpstream
) -> None:
    with PgCluster() as cluster:  # its own server: this test stops it
        url = cluster.create_database("outage")
        proxy = _replica(make_proxy, tmp_path, upstream, "a", url)
        profile = proxy.base_url + "/profile"
        assert httpx.patch(profile, json={"pet": "a cat"}).status_code == 200
        cluster.stop_server("fast")
        chat = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "hello"}],
            "features": {"memory": True},
        }
        r = httpx.post(proxy.base_url + "/chat/completions", json=chat, timeout=60)
        assert r.status_code == 200, r.text  # answered without memory (fail open)
        r = httpx.patch(profile, json={"boat": "a sailing boat"}, timeout=60)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "database_unavailable"
        assert int(r.headers["retry-after"]) >= 1
        cluster.start_server()
        deadline = time.monotonic() + 30
        while True:  # back by itself: no restart of the proxy
            r = httpx.patch(profile, json={"boat": "a sailing boat"}, timeout=60)
            if r.status_code == 200:
                break
            assert r.status_code == 503 and time.monotonic() < deadline, r.text
            time.sleep(0.2)
        keys = sorted(f["key"] for f in httpx.get(profile).json()["profile"]["static"])
        assert keys == ["boat", "pet"]  # nothing lost, the refused write left nothing


def test_waiting_for_learning_works_when_another_replica_runs_the_job(
    make_proxy: Any, tmp_path: Path, upstream: FakeUpstream, database: str
) -> None:
    extraction = Extraction(upstream)
    extraction.default = fact_from_turn
    front = _replica(make_proxy, tmp_path, upstream, "front", database)  # its worker is off
    worker = make_proxy(
        make_settings(
            tmp_path / "worker",
            upstream,
            store={"database_url": database},
            learning={**FAST, "run_worker": True},
        )
    )
    assert worker.url != front.url
    r = httpx.post(
        front.url + "/v1/interactions",
        json={
            "collection_id": "alice",
            "messages": [{"role": "user", "content": "turn elsewhere"}],
            "model": "gpt-4o-mini",
            "wait_for_learning_seconds": 20,
        },
        timeout=30,
    )
    assert r.status_code == 200 and r.json()["status"] == "done", r.text  # waited on the front
    profile = httpx.get(front.base_url + "/profile", params={"collection_id": "alice"}).json()
    assert [f["key"] for f in profile["profile"]["static"]] == ["turn_elsewhere"]


def test_pgvector_keeps_each_facts_vector_in_its_row_and_searches_one_scope(
    make_proxy: Any, tmp_path: Path, upstream: FakeUpstream, database: str
) -> None:
    settings = make_settings(
        tmp_path / "v", upstream, store={"database_url": database, "vector_backend": "pgvector"}
    )
    proxy = make_proxy(settings)
    url = proxy.base_url + "/profile"
    for user, facts in (
        ("alice", {"city": "Lives in Lyon", "pet": "Has a cat named Miso"}),
        ("bob", {"city": "Lives in Oslo", "food": "Loves sushi"}),
    ):
        assert httpx.patch(url, params={"collection_id": user}, json=facts).status_code == 200
    search = {"query": "where does the user live", "threshold": 0}
    hits = httpx.post(url + "/search", params={"collection_id": "alice"}, json=search).json()
    assert "Lyon" in str(hits) and "Oslo" not in str(hits)  # one scope only
    db = PostgresDatabase(database, min_size=0, max_size=1, migrate=False)
    with db.read() as conn:
        rows = conn.execute(
            "SELECT collection_id, vector_dims(embedding) FROM facts ORDER BY collection_id"
        ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [("alice", 384)] * 2 + [("bob", 384)] * 2
    # a deleted fact takes its vector with it; search no longer finds it
    assert httpx.patch(url, params={"collection_id": "alice"}, json={"city": None}).status_code
    hits = httpx.post(url + "/search", params={"collection_id": "alice"}, json=search).json()
    assert "Lyon" not in str(hits)
    with db.read() as conn:
        assert (
            conn.execute("SELECT count(*) FROM facts WHERE embedding IS NOT NULL").fetchone()[0]
            == 3
        )
    db.close()
