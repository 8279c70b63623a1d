"""Tenancy under a random (seeded) workload: two accounts, each with its account-wide profile
and two collections (same names in both accounts). Writes, searches, chats with memory and
learning, dialectic, publishes, deletes and pokes at other scopes' ids are interleaved; after
every step no response body and no prompt the upstream received holds another scope's data.

Every scope writes only values carrying its own marker token, so a leak is a marker seen
where it does not belong. ``TENANCY_STEPS`` / ``TENANCY_SEED`` run a longer or other campaign.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.store.db import open_database
from proxy.store.keys import KeyStore
from tests.conftest import Proxy, make_settings
from tests.fakes.embedder import record_model_calls
from tests.fakes.upstream import FakeUpstream, RecordedRequest, Reply
from tests.test_extraction import FAST, Extraction, op, ops_reply
from tests.test_profile_isolation import Tenant

STEPS = int(os.environ.get("TENANCY_STEPS", "120"))
SEED = int(os.environ.get("TENANCY_SEED", "20261201"))


class Scope:
    def __init__(self, tenant: Tenant, marker: str) -> None:
        self.t = tenant
        self.marker = marker
        self.written: dict[str, str] = {}  # key -> fact id, written directly and not deleted
        self.sessions: list[str] = []
        self.n = 0

    def value(self) -> str:
        self.n += 1
        return f"{self.marker} detail number {self.n}"

    def body(self, extra: dict[str, Any]) -> dict[str, Any]:
        return {**extra, "collection_id": self.t.collection} if self.t.collection else extra


@pytest.fixture
def extraction(upstream: FakeUpstream) -> Extraction:
    return Extraction(upstream)


def _scopes(proxy: Proxy) -> list[Scope]:
    keys = KeyStore(open_database(proxy.settings))
    return make_scopes(proxy, lambda name: keys.create(name)[1])


def make_scopes(
    proxy: Proxy, create_key: Callable[[str], str], accounts: tuple[str, str] = ("acme", "globex")
) -> list[Scope]:
    """Two accounts (a key each), each with its account-wide scope and collections u1, u2."""
    tokens = {name: create_key(name) for name in accounts}
    out = []
    for account, token in tokens.items():
        for collection in (None, "u1", "u2"):
            marker = f"mk{len(out)}z{random.Random(len(out)).randrange(10**6):06d}"
            out.append(Scope(Tenant(proxy, account, token, collection), marker))
    return out


class World:
    def __init__(self, proxy: Proxy, upstream: FakeUpstream, scopes: list[Scope]) -> None:
        self.proxy = proxy  # anything with a base_url: one proxy, or a balancer (test_cluster)
        self.upstream = upstream
        self.scopes = scopes
        self.rng = random.Random(SEED)
        self.seen_upstream = len(upstream.requests)
        self.current: Scope = scopes[0]
        self.counts: dict[str, int] = {}

    def foreign(self, me: Scope) -> list[str]:
        return [s.marker for s in self.scopes if s is not me]

    def check(self, me: Scope, what: str, text: str) -> None:
        for marker in self.foreign(me):
            assert marker not in text, f"{me.t.label} {what}: holds {marker}:\n{text[:2000]}"

    def check_upstream(self, me: Scope, what: str) -> list[RecordedRequest]:
        new = self.upstream.requests[self.seen_upstream :]
        self.seen_upstream += len(new)
        for rec in new:
            self.check(me, f"{what} -> upstream {rec.path}", rec.body.decode("utf-8", "replace"))
        return new

    # -- actions ---------------------------------------------------------------------------
    def write(self, me: Scope) -> str:
        key = f"detail_{me.n + 1}"
        if self.rng.random() < 0.5:
            body = me.t.ok("PATCH", "/profile", json={key: me.value()})
            assert body["created"] == 1
            fact_id = next(f["id"] for f in self._facts(me) if f["key"] == key)
        else:
            fact_id = me.t.ok(
                "POST", "/profile/facts", 201, json={"key": key, "value": me.value()}
            )["id"]
        me.written[key] = fact_id
        return "write"

    def _facts(self, me: Scope) -> list[dict[str, Any]]:
        facts: list[dict[str, Any]] = me.t.ok("GET", "/profile/facts", params={"limit": 500})[
            "facts"
        ]
        return facts

    def read(self, me: Scope) -> str:
        path = self.rng.choice(["/profile", "/profile/facts", "/profile/changes"])
        r = me.t.call("GET", path)
        assert r.status_code == 200, r.text
        self.check(me, "GET " + path, r.text)
        if path == "/profile/facts":  # what it wrote is there
            assert set(me.written.values()) <= {f["id"] for f in r.json()["facts"]}
        return "read"

    def search(self, me: Scope) -> str:
        r = me.t.call("POST", "/profile/search", json={"query": "detail number", "threshold": 0})
        assert r.status_code == 200, r.text
        self.check(me, "search", r.text)
        return "search"

    def chat(self, me: Scope) -> str:
        stream = self.rng.random() < 0.3
        body = me.body(
            {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "what do you remember about me?"}],
                "features": {"memory": True, "user_profile": True},
                "wait_for_learning_seconds": 10,
                "stream": stream,
            }
        )
        r = httpx.post(
            self.proxy.base_url + "/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {me.t.token}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        self.check(me, "chat", r.text + str(r.headers))
        sent = self.check_upstream(me, "chat")
        chat_prompt = sent[0].body.decode()
        if me.written:  # user_profile injects its static facts: memory works at all
            assert me.marker in chat_prompt
        if not stream:
            status = r.headers["x-profilo-learning"]
            assert status == "done", status
        else:  # learnt in the background: done before the next step (another scope) asks
            self.wait_learned(me, r.headers["x-profilo-request-id"])
        return "chat"

    def wait_learned(self, me: Scope, request_id: str) -> None:
        deadline = time.monotonic() + 10
        while True:
            r = me.t.call("GET", f"/interactions/{request_id}", scoped=False)
            assert r.status_code == 200, r.text
            if r.json()["status"] in ("done", "failed"):
                assert r.json()["status"] == "done", r.text
                return
            assert time.monotonic() < deadline, r.text
            time.sleep(0.02)

    def dialectic(self, me: Scope) -> str:
        extra: dict[str, Any] = {"user_message": "what details do you know?"}
        if me.sessions and self.rng.random() < 0.5:
            extra["session_id"] = self.rng.choice(me.sessions)
        body = me.t.ok("POST", "/profile/dialectic", json=me.body(extra), scoped=False)
        me.sessions.append(body["session_id"])
        self.check(me, "dialectic", str(body))
        return "dialectic"

    def publish(self, me: Scope) -> str:
        body = me.body(
            {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "note this down please"}],
                "wait_for_learning_seconds": 10,
            }
        )
        r = me.t.call("POST", "/interactions", json=body, scoped=False)
        assert r.status_code == 200 and r.json()["status"] == "done", r.text
        self.check(me, "publish", r.text)
        return "publish"

    def delete(self, me: Scope) -> str:
        if not me.written:
            return self.write(me)
        key = self.rng.choice(sorted(me.written))
        fact_id = me.written.pop(key)
        if self.rng.random() < 0.5:
            r = me.t.call("DELETE", f"/profile/facts/{fact_id}")
        else:
            r = me.t.call("POST", "/profile/delete", json={"fact_id": fact_id})
        assert r.status_code == 200, r.text
        self.check(me, "delete", r.text)
        return "delete"

    def poke(self, me: Scope) -> str:
        """Ids of other scopes: reading, editing or deleting them is a 404 and changes nothing."""
        others = [(s, k, i) for s in self.scopes if s is not me for k, i in s.written.items()]
        if not others:
            return self.write(me)
        owner, _key, fact_id = self.rng.choice(others)
        method = self.rng.choice(["GET", "PATCH", "DELETE"])
        json = {"value": me.value()} if method == "PATCH" else None
        r = me.t.call(method, f"/profile/facts/{fact_id}", json=json)
        assert r.status_code == 404, (me.t.label, owner.t.label, r.text)
        self.check(me, "poke", r.text)
        assert fact_id in {f["id"] for f in self._facts(owner)}  # still there, unchanged
        return "poke"


def test_random_interleaving_never_crosses_scopes(
    make_proxy: Callable[..., Proxy], upstream: FakeUpstream, extraction: Extraction
) -> None:
    proxy = make_proxy(learning={**FAST, "run_worker": True})
    world = World(proxy, upstream, _scopes(proxy))
    walk(world, extraction, STEPS)


def walk(world: World, extraction: Extraction, steps: int) -> None:
    """``steps`` random actions of random scopes, each checked for leaks; then the end state."""
    scopes = world.scopes
    upstream = world.upstream
    seen = len(upstream.requests)

    def learned(rec: RecordedRequest) -> Reply:
        # the job learns a fact carrying the scope's marker (the scope asking right now)
        me = world.current
        return ops_reply(op("add", f"learned_{me.n + 1}", me.value()))

    extraction.default = learned
    actions = [
        (World.write, 5),
        (World.read, 3),
        (World.search, 3),
        (World.chat, 4),
        (World.dialectic, 2),
        (World.publish, 2),
        (World.delete, 2),
        (World.poke, 2),
    ]
    for step in range(steps):
        me = world.current = world.rng.choice(scopes)
        action = world.rng.choices([a for a, _ in actions], [w for _, w in actions])[0]
        done = action(world, me)
        world.counts[done] = world.counts.get(done, 0) + 1
        world.check_upstream(me, f"step {step} {done}")
    # the end state: every scope holds exactly its own data
    for me in scopes:
        facts = world._facts(me)
        assert {k for k in me.written} <= {f["key"] for f in facts}
        assert all(me.marker in f["value"] for f in facts), facts
    print(f"\ntenancy: {steps} steps over {len(scopes)} scopes: {world.counts}; "
          f"{len(upstream.requests) - seen} upstream prompts checked")  # fmt: skip
    assert world.counts.get("chat", 0) and world.counts.get("poke", 0)


# -- shared caches: another tenant's activity must not change what this one's requests cost --


def _victim_and_attacker(proxy: Proxy) -> tuple[dict[str, str], dict[str, str]]:
    keys = KeyStore(open_database(proxy.settings))
    victim = {"Authorization": "Bearer " + keys.create("victim")[1]}
    attacker = {"Authorization": "Bearer " + keys.create("attacker")[1]}
    return victim, attacker


SECRET_FACT = "Project Zebrafish acquisition closes in March"
PROBE = "zebrafish acquisition timeline"


def _probe(proxy: Proxy, auth: dict[str, str]) -> None:
    """What an attacker times: a search and a chat with memory for a guessed string."""
    r = httpx.post(
        proxy.base_url + "/profile/search", json={"query": PROBE}, headers=auth, timeout=30
    )
    assert r.status_code == 200, r.text
    r = httpx.post(
        proxy.base_url + "/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": PROBE}],
            "features": {"memory": True, "learning": False},
        },
        headers=auth,
        timeout=30,
    )
    assert r.status_code == 200, r.text


def test_embedding_cache_is_no_timing_oracle_between_accounts(
    make_proxy: Any, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """The harness: the attacker's probes make the embedding model compute exactly the same
    texts whether or not the victim wrote and searched those strings first (a shared cache
    answered them from the victim's entries: 2.6 ms instead of 11 ms, told apart 37 times in
    40). Equal work means equal timing; no wall clock is measured."""
    quiet = make_proxy(make_settings(tmp_path / "quiet", upstream))
    _, attacker = _victim_and_attacker(quiet)
    alone = record_model_calls(quiet)
    _probe(quiet, attacker)
    assert PROBE in alone.texts  # computed: nothing cached it for this account

    busy = make_proxy(make_settings(tmp_path / "busy", upstream))
    victim, attacker = _victim_and_attacker(busy)
    after_victim = record_model_calls(busy)
    r = httpx.post(
        busy.base_url + "/profile/facts",
        json={"key": "deal", "value": SECRET_FACT},
        headers=victim,
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text
    _probe(busy, victim)  # the victim's own searches fill the cache with these strings
    victim_work = list(after_victim.texts)
    assert PROBE in victim_work
    _probe(busy, victim)
    assert after_victim.texts == victim_work  # the victim's repeats are hits

    del after_victim.texts[:]
    _probe(busy, attacker)
    assert sorted(after_victim.texts) == sorted(alone.texts)  # same work as on a quiet proxy
