"""What tests/test_cluster.py checks after its faults: the clients' answers against nginx's
access log (who answered, who failed) and against the records, the change log and the index.

A write whose answer was lost (a 502 from a killed replica) may or may not have committed: it
is *unknown*, and its key is never touched again; everything else is exact.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from bench.cluster import Cluster
from bench.nginx import AccessLine
from proxy.models import Scope
from proxy.store.index import collection_name
from proxy.store.postgres import PostgresDatabase
from tests.cluster_traffic import INDEX_DOWN, Call, Client

TURNS = ("chat", "stream", "publish")


@dataclass
class Outcome:
    killed: list[Call] = field(default_factory=list)  # in flight on the SIGKILLed replica
    index_down: list[Call] = field(default_factory=list)  # 503: the Chroma server was down
    during_term: list[Call] = field(default_factory=list)  # failed during the SIGTERM drain
    unexpected: list[str] = field(default_factory=list)
    retried: set[int] = field(default_factory=set)  # id() of DELETEs nginx re-sent (404 then)
    turns: int = 0

    @staticmethod
    def describe(calls: list[Call]) -> str:
        kinds = Counter(f"{c.kind} {c.status if c.error is None else 'cut'}" for c in calls)
        return ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())) or "none"


# nginx may still hold a keep-alive connection to the killed replica for a moment after the
# process is gone (until its worker reads the close): a PATCH or POST written into that socket
# fails with a 502 and is never re-sent (it is not idempotent), so the kill's window for
# "in flight on the killed replica" runs this long past its exit.
STALE_CONNECTION_SECONDS = 1.0


def _overlaps(call: Call, start: float, end: float) -> bool:
    return call.started <= end and call.ended >= start


def classify(
    clients: list[Client], lines: dict[str, AccessLine], addresses: list[str], chaos: Any
) -> Outcome:
    """Sorts every failed call: in flight on the killed replica, a search while the index was
    down, or unexpected (anything else, the SIGTERMed replica's included)."""
    out = Outcome()
    victim = addresses[chaos.victim]
    for client in clients:
        for call in client.calls:
            line = lines.get(call.lb_id)
            where = f"{call.kind} {call.status} {call.error} {call.body!r:.300} via {line}"
            if call.kind == "delete" and call.status == 404:
                if line is not None and len(line.upstreams) > 1:  # re-sent after a failure
                    out.retried.add(id(call))
                else:
                    out.unexpected.append(where)
                continue
            if not call.failed:
                if call.status is not None and call.status >= 400:
                    out.unexpected.append(where)
                continue
            if (
                line is not None
                and victim in line.upstreams
                and _overlaps(call, chaos.killed_at, chaos.dead_at + STALE_CONNECTION_SECONDS)
            ):
                out.killed.append(call)
            elif (
                call.kind in ("search", "dialectic")  # writes commit, chats fail open
                and call.status == 503
                and INDEX_DOWN in str(call.body)
                and _overlaps(call, chaos.chroma_down, chaos.chroma_up + 5)
            ):
                out.index_down.append(call)
            else:
                out.unexpected.append(where)
                if _overlaps(call, chaos.term_at, chaos.term_done):
                    out.during_term.append(call)
    return out


@dataclass
class Expected:
    """One scope's end state as its client was told it."""

    turns: dict[int, str] = field(default_factory=dict)  # answered: item number -> request id
    maybe_turns: set[int] = field(default_factory=set)
    notes: dict[str, int | None] = field(default_factory=dict)  # key -> version, None: deleted
    unknown_notes: set[str] = field(default_factory=set)
    writes: set[str] = field(default_factory=set)  # request ids with one change-log entry each
    unknown_writes: int = 0


def expected(client: Client, outcome: Outcome) -> dict[str, Expected]:
    scopes: dict[str, Expected] = defaultdict(Expected)
    for call in client.calls:
        e = scopes[call.collection]
        answered = not call.failed and call.status in (200, 202)
        if call.kind in TURNS:
            n = int(call.detail["n"])
            if answered:
                if call.kind == "chat":
                    assert call.detail["learning"] == "queued", call
                e.turns[n] = call.profilo_id
                outcome.turns += 1
            else:
                e.maybe_turns.add(n)
        elif call.kind in ("patch", "delete") and "key" in call.detail:
            key = str(call.detail["key"])
            deleting = call.kind == "delete"
            if answered:
                e.notes[key] = None if deleting else int(call.detail["version"])
                e.writes.add(call.profilo_id)
            elif id(call) in outcome.retried:
                e.notes[key] = None
                e.unknown_writes += 1
            else:
                e.unknown_notes.add(key)
                e.notes.pop(key, None)
                e.unknown_writes += 1
    return scopes


def _rows(db: PostgresDatabase, sql: str, *args: Any) -> list[Any]:
    with db.read() as conn:
        return list(conn.execute(sql, args).fetchall())


def check_records(db: PostgresDatabase, clients: list[Client], outcome: Outcome) -> int:
    """Every answered turn learnt exactly once, no fact lost or duplicated, the change log
    complete; returns how many facts were checked."""
    checked = 0
    for client in clients:
        for collection, e in expected(client, outcome).items():
            scope = (client.account, collection)
            facts = {
                r["key"]: r
                for r in _rows(
                    db,
                    "SELECT key, value, generated_from_request_id FROM facts "
                    "WHERE account = ? AND collection_id = ?",
                    *scope,
                )
            }
            values = [r["value"] for r in facts.values()]
            assert len(values) == len(set(values)), (scope, sorted(values))  # no duplicate
            for key, row in facts.items():
                kind, _, number = key.partition("_")
                assert client.home.get(int(number)) == collection, (scope, key)  # no leak
                if kind == "item":
                    assert int(number) in e.turns or int(number) in e.maybe_turns, (scope, key)
                    assert row["value"] == f"collects item {number}", (scope, dict(row))
                else:
                    assert kind == "note", (scope, key)
                    assert key in e.notes or key in e.unknown_notes, (scope, key)
            for n, rid in e.turns.items():  # answered turns: learnt, by their own job
                row = facts.get(f"item_{n}")
                assert row is not None, f"{scope}: the answered turn {n} ({rid}) was lost"
                assert row["generated_from_request_id"] == rid, (scope, n, dict(row))
            for key, version in e.notes.items():
                if version is None:
                    assert key not in facts, (scope, key, "deleted, but still there")
                else:
                    want = f"{key.replace('_', ' ')} version {version}"
                    assert key in facts and facts[key]["value"] == want, (
                        scope,
                        key,
                        facts.get(key),
                    )
            checked += len(facts)
            _check_log(db, scope, e)
    return checked


def _check_log(db: PostgresDatabase, scope: tuple[str, str], e: Expected) -> None:
    jobs = _rows(db, "SELECT id, status FROM jobs WHERE account = ? AND collection_id = ?", *scope)
    status = {r["id"]: r["status"] for r in jobs}
    assert set(status.values()) <= {"done"}, (scope, Counter(status.values()))
    assert set(e.turns.values()) <= set(status), (scope, "an answered turn has no job")
    changes = _rows(
        db,
        "SELECT request_id, added FROM changes WHERE account = ? AND collection_id = ?",
        *scope,
    )
    per_request = Counter(r["request_id"] for r in changes)
    for job_id in status:  # every job applied exactly once: one change-log entry
        assert per_request[job_id] == 1, (scope, job_id, per_request[job_id])
    for rid in e.writes:
        assert per_request[rid] == 1, (scope, rid, per_request[rid])
    added = {r["request_id"]: [s["key"] for s in orjson.loads(r["added"])] for r in changes}
    for n, rid in e.turns.items():
        assert added[rid] == [f"item_{n}"], (scope, n, added[rid])
    others = sum(n for rid, n in per_request.items() if rid not in status and rid not in e.writes)
    assert others <= e.unknown_writes, (scope, others, e.unknown_writes)


def client_scopes(clients: list[Client]) -> list[Scope]:
    return [Scope(c.account, collection) for c in clients for collection in c.collections]


def check_index(cluster: Cluster, db: PostgresDatabase, scopes: list[Scope]) -> None:
    """Once each scope was searched (a search applies the scope's pending index work first):
    nothing pending, and each scope's Chroma collection holds exactly its facts' ids."""
    deadline = time.monotonic() + 30
    while True:
        pending = _rows(db, "SELECT count(*) FROM index_outbox")[0][0]
        if not pending:
            break
        assert time.monotonic() < deadline, f"{pending} index updates still pending"
        time.sleep(0.5)
    client = cluster.chroma.client()
    for scope in scopes:
        ids = {r[0] for r in _rows(db, "SELECT id FROM facts WHERE scope_key = ?", scope.key)}
        try:
            indexed = set(client.get_collection(collection_name(scope)).get(include=[])["ids"])
        except Exception:  # never written, or emptied
            indexed = set()
        assert indexed == ids, (
            scope,
            "indexed only:",
            indexed - ids,
            "records only:",
            ids - indexed,
        )


def searches(
    cluster: Cluster, tokens: dict[str, str], scopes: list[Scope]
) -> dict[tuple[str, str | None, str], list[tuple[str, float]]]:
    """A few searches per scope through the balancer: (fact id, score) in rank order."""
    out = {}
    with httpx.Client(base_url=cluster.url + "/v1", timeout=60) as http:
        for scope in scopes:
            for query in ("which items are collected", "note version 2", "collects item 7"):
                body = {"query": query, "collection_id": scope.collection_id, "threshold": 0}
                auth = cluster.auth(tokens[scope.account])
                r = http.post("/profile/search", json=body, headers=auth)
                assert r.status_code == 200, r.text
                hits = [(f["id"], round(f["score"], 5)) for f in r.json()["facts"]]
                out[(scope.account, scope.collection_id, query)] = hits
    return out


def same_hits(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> bool:
    """The same facts with the same scores (to float noise: the vectors are float32)."""
    x, y = dict(a), dict(b)
    return x.keys() == y.keys() and all(abs(x[k] - y[k]) < 1e-4 for k in x)
