"""Three replicas behind nginx (``bench/cluster.py``: Postgres, a Chroma server, nginx rendered
from ``deploy/nginx.conf``), proven by killing them.

- Mixed traffic from concurrent clients while one replica is SIGKILLed mid-extraction, another
  gets SIGTERM and is restarted (a rolling restart) and Chroma is stopped for a few seconds;
  then every answered turn was learnt exactly once, nothing was lost or duplicated, the change
  log and the index agree with the records, and the only 5xx are the killed replica's requests
  in flight (and searches while the index was down, a clean 503).
- Read-your-writes across replicas, and ``wait_for_learning_seconds`` on a replica that runs
  no worker.
- The tenancy random walk of tests/test_tenancy.py, its requests spread over the replicas.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest

from bench.cluster import Cluster
from bench.nginx import NGINX
from proxy.store.migrate import queue_reindex
from proxy.store.postgres import PostgresDatabase
from tests.cluster_checks import (
    Outcome,
    check_index,
    check_records,
    classify,
    client_scopes,
    same_hits,
    searches,
)
from tests.cluster_faults import Chaos, drain, extractions, inject_faults, items, replica_of
from tests.cluster_traffic import Client
from tests.fakes.upstream import FakeUpstream
from tests.test_extraction import MARKER, Extraction, prompt_of
from tests.test_tenancy import World, make_scopes, walk

pytestmark = pytest.mark.skipif(
    not NGINX.exists(), reason=f"{NGINX} is missing: `make nginx` installs Debian's nginx-light"
)

REPLICAS = 3
CLIENTS = 6
WALK_STEPS = 60
EXTRACTION_SECONDS = 0.6  # each extraction call: jobs are in flight when a replica dies
ENV = {
    "PROFILO_LEARNING__POLL_INTERVAL_SECONDS": "0.2",
    "PROFILO_LEARNING__BACKOFF_BASE_SECONDS": "0.2",
    "PROFILO_LEARNING__BACKOFF_CAP_SECONDS": "1",
    "PROFILO_LEARNING__MAX_ATTEMPTS": "30",  # outlives the Chroma outage and the restarts
    "PROFILO_LEARNING__MAX_QUEUED_JOBS_PER_ACCOUNT": "0",
    "PROFILO_LEARNING__MAX_JOBS_PER_MINUTE_PER_ACCOUNT": "0",
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def extraction(fake: FakeUpstream) -> Extraction:
    return Extraction(fake)


@pytest.fixture(scope="module")
def cluster(
    fake: FakeUpstream, extraction: Extraction, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    url = f"{fake.root}/r{{i}}/v1"  # the replica's index in the path: the fake tells them apart
    with Cluster(REPLICAS, upstream_url=url, env=ENV, root=root, lease_seconds=3) as c:
        yield c


@pytest.fixture(scope="module")
def db(cluster: Cluster) -> Iterator[PostgresDatabase]:
    database = PostgresDatabase(cluster.database_url, min_size=0, max_size=2, migrate=False)
    yield database
    database.close()


def logs(cluster: Cluster) -> str:
    parts = [f"--- replica {r.index} ---\n{r.tail(3000)}" for r in cluster.replicas]
    return "\n".join([*parts, f"--- nginx ---\n{cluster.nginx.errors()[-3000:]}"])


def test_mixed_traffic_survives_kill_sigterm_and_a_chroma_outage(
    cluster: Cluster,
    fake: FakeUpstream,
    extraction: Extraction,
    db: PostgresDatabase,
    capsys: pytest.CaptureFixture[str],
) -> None:
    extraction.default = items(EXTRACTION_SECONDS)
    tokens = {account: cluster.create_key(account) for account in ("shop-a", "shop-b")}
    stop = threading.Event()
    clients = []
    for k in range(CLIENTS):
        account = ("shop-a", "shop-b")[k % 2]
        collections = [f"c{k}-{j}" for j in range(3)]
        clients.append(Client(k, account, tokens[account], cluster.url + "/v1", collections, stop))
    for client in clients:
        client.start()
    chaos = Chaos()
    try:
        inject_faults(cluster, fake, chaos)
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=120)
    for client in clients:
        assert client.crashed is None, repr(client.crashed)
    drain(db)

    lines = {line.lb_id: line for line in cluster.nginx.lines()}
    addresses = [r.address for r in cluster.replicas]
    outcome: Outcome = classify(clients, lines, addresses, chaos)
    assert not outcome.unexpected, f"{outcome.unexpected}\n{logs(cluster)}"
    assert chaos.term_code == 0, logs(cluster)
    assert not outcome.during_term, (chaos, outcome.during_term)  # none failed in the drain
    # the drain was exercised: the replica served requests after SIGTERM, then refused
    # connections, which nginx sent to another replica
    sent, exited, back = chaos.term_wall
    termed = addresses[chaos.termed]
    drained = [x for x in lines.values() if x.upstreams[-1:] == [termed] and sent <= x.time]
    drained = [x for x in drained if x.time <= exited]
    refused = [x for x in lines.values() if termed in x.upstreams[:-1] and sent <= x.time <= back]
    assert drained, "no request reached the draining replica"
    facts = check_records(db, clients, outcome)
    # the turns whose extraction the kill cut short were learnt by another replica
    assert chaos.cut
    for n in chaos.cut:
        again = [r for r in extractions(fake) if f"I collect item {n}" in prompt_of(r)]
        assert {replica_of(r) for r in again} - {chaos.victim}, n
    scopes = client_scopes(clients)
    before = searches(cluster, tokens, scopes)  # each scope's pending index work applied first
    check_index(cluster, db, scopes)
    rebuilt = rebuild_index(cluster, db)
    after = searches(cluster, tokens, scopes)  # the same answers from a fresh index
    differ = {k: (v, after[k]) for k, v in before.items() if not same_hits(v, after[k])}
    assert not differ, differ
    total = sum(len(c.calls) for c in clients)
    with capsys.disabled():
        print(
            f"\ncluster: {total} requests from {CLIENTS} clients through nginx; replica "
            f"{chaos.victim} SIGKILLed with {len(chaos.cut)} extraction(s) in flight, replica "
            f"{chaos.termed} SIGTERMed and restarted (it served {len(drained)} requests while "
            f"draining, {len(refused)} refused were sent on by nginx, 0 failed), Chroma down "
            f"{chaos.chroma_up - chaos.chroma_down:.1f} s.\n5xx or cut short: "
            f"{len(outcome.killed)} in flight on the killed replica "
            f"({outcome.describe(outcome.killed)}); {len(outcome.index_down)} 503 while the "
            f"index was down ({outcome.describe(outcome.index_down)}); no other.\n"
            f"{outcome.turns} answered turns learnt once each, {facts} facts, the index equal "
            f"to the records in {len(scopes)} scopes and to a rebuild of {rebuilt} facts"
        )


def rebuild_index(cluster: Cluster, db: PostgresDatabase) -> int:
    """``profilo index rebuild`` (the lexical index), and the vectors from scratch: every
    collection dropped, every fact queued for the index (as ``profilo store migrate`` does)."""
    env = cluster.replica_env(0)
    cmd = [sys.executable, "-m", "proxy", "--data-dir", str(cluster.root / "cli"), "index"]
    done = subprocess.run([*cmd, "rebuild"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    client = cluster.chroma.client()
    for col in client.list_collections():
        client.delete_collection(col.name)
    return queue_reindex(db)


@dataclass
class Balancer:
    url: str

    @property
    def base_url(self) -> str:
        return self.url + "/v1"


def test_reads_see_writes_at_once_on_every_replica(
    cluster: Cluster, fake: FakeUpstream, extraction: Extraction
) -> None:
    extraction.default = items(0)
    token = cluster.create_key("ryw")
    auth = cluster.auth(token)
    scope = {"collection_id": "ryw"}
    for writer in cluster.replicas:
        key, value = f"boat_{writer.index}", f"sails a boat named Wave {writer.index}"
        r = httpx.patch(writer.url + "/v1/profile", params=scope, json={key: value}, headers=auth)
        assert r.status_code == 200, r.text
        for reader in cluster.replicas:  # the others at once: no wait, no retry
            body = {**scope, "query": value, "threshold": 0, "top_k": 1}
            r = httpx.post(reader.url + "/v1/profile/search", json=body, headers=auth)
            assert r.status_code == 200, r.text
            assert [f["key"] for f in r.json()["facts"]] == [key], (writer.index, reader.index)

    # wait_for_learning_seconds on a replica without a worker: another replica learns the turn
    front = cluster.replicas[-1]
    seen = len(fake.requests)
    cluster.restart(front.index, env={"PROFILO_LEARNING__RUN_WORKER": "false"})
    try:
        body = {**scope, "model": "gpt-4o-mini", "wait_for_learning_seconds": 20}
        turn = {"role": "user", "content": "I collect item 900001"}
        r = httpx.post(
            front.url + "/v1/interactions", json={**body, "messages": [turn]}, headers=auth,
            timeout=30,
        )  # fmt: skip
        assert r.status_code == 200 and r.json()["status"] == "done", r.text
        chat = openai.OpenAI(base_url=front.url + "/v1", api_key=token, max_retries=0)
        raw = chat.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "I collect item 900002"}],
            extra_body={**scope, "features": {"learning": True}, "wait_for_learning_seconds": 20},
        )
        assert raw.headers["x-profilo-learning"] == "done"
        for reader in cluster.replicas:
            r = httpx.get(reader.url + "/v1/profile", params=scope, headers=auth)
            keys = {f["key"] for f in r.json()["profile"]["static"]}
            assert {"item_900001", "item_900002"} <= keys, (reader.index, keys)
        learnt_by = {replica_of(r) for r in fake.requests[seen:] if MARKER in prompt_of(r)}
        assert learnt_by and front.index not in learnt_by, learnt_by
    finally:
        cluster.restart(front.index)


def test_tenancy_walk_through_the_balancer(
    cluster: Cluster, fake: FakeUpstream, extraction: Extraction
) -> None:
    balancer = Balancer(cluster.url)
    scopes = make_scopes(balancer, cluster.create_key, accounts=("walk-a", "walk-b"))  # type: ignore[arg-type]
    seen = len(cluster.nginx.lines())
    walk(World(balancer, fake, scopes), extraction, WALK_STEPS)  # type: ignore[arg-type]
    served = {line.upstreams[-1] for line in cluster.nginx.lines()[seen:] if line.upstreams}
    assert served == {r.address for r in cluster.replicas}  # spread over every replica
