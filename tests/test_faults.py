"""Faults, each with its defined behaviour (README "Reliability"):

- upstream slow but inside ``upstream.timeout``: the answer is relayed;
- a stream stalling past the timeout, or its connection dropped: the stream ends with an
  ``event: error`` (OpenAI envelope) and no learning job is queued for the truncated turn;
- upstream 429 (``Retry-After`` relayed) or 5xx on a learning chat: relayed, nothing queued;
- the retrieval index (Chroma) down: chat answers without memory (fail open), writes and
  learned facts land in SQLite and its outbox, and are indexed once the index is back;
- the SQLite file locked by another process: writes answer 503 ``database_locked`` with
  ``Retry-After`` after ``store.sqlite_busy_timeout_ms``, reads and plain chat go on, the
  file stays consistent;
- ``kill -9`` under chat load with extraction jobs queued: after restart every acknowledged
  turn is learned exactly once (see also tests/test_worker.py for the queue-only case).

The non-stream timeout (504), unreachable upstream (502) and plain error relays are in
tests/test_chat.py; a Chroma server outage in tests/test_chroma_server.py.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.errors import Unavailable
from tests.conftest import Proxy
from tests.fakes.schema import validate_error
from tests.fakes.upstream import (
    FakeUpstream,
    chat_chunks,
    chat_completion,
    error_reply,
    hang_reply,
    json_reply,
    sse_reply,
)
from tests.records_backend import records_at
from tests.test_extraction import FAST, Extraction, facts, op, ops_reply
from tests.test_worker import fact_from_turn, serve, wait_done

MESSAGES = [{"role": "user", "content": "I like jazz"}]


@pytest.fixture
def extraction(upstream: FakeUpstream) -> Extraction:
    return Extraction(upstream)


def learning_chat(proxy: Proxy, *, stream: bool = False, **extra: Any) -> httpx.Response:
    body = {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "features": {"memory": True},
        "collection_id": "alice",
        "stream": stream,
        **extra,
    }
    return httpx.post(proxy.base_url + "/chat/completions", json=body, timeout=30)


def job_status(proxy: Proxy, request_id: str) -> int:
    return httpx.get(proxy.base_url + f"/interactions/{request_id}").status_code


def sse(raw: bytes) -> list[tuple[str | None, str]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        event = None
        data = []
        for line in block.splitlines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        out.append((event, "\n".join(data)))
    return out


# -- the upstream ----------------------------------------------------------------------------


def test_a_slow_upstream_inside_the_timeout_is_relayed(
    make_proxy: Any, upstream: FakeUpstream
) -> None:
    proxy = make_proxy(upstream={"api_base": upstream.url, "timeout": 5})
    upstream.script(hang_reply(1.0, then=json_reply(chat_completion("late but here"))))
    out = proxy.client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert out.choices[0].message.content == "late but here"
    upstream.script(sse_reply(chat_chunks(["a", "b", "c"]), first_delay=0.5, delay_between=0.5))
    stream = proxy.client().chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "abc"


@pytest.mark.parametrize("fault", ["stall", "drop"])
def test_a_broken_stream_ends_with_an_error_event_and_learns_nothing(
    make_proxy: Any, upstream: FakeUpstream, extraction: Extraction, fault: str
) -> None:
    proxy = make_proxy(
        upstream={"api_base": upstream.url, "timeout": 0.5}, learning={**FAST, "run_worker": True}
    )
    pieces = ["I", " like", " jazz", " too"]
    broken = (
        sse_reply(chat_chunks(pieces), delay_between=3)  # stalls after the first chunk
        if fault == "stall"
        else sse_reply(chat_chunks(pieces), drop_after=2)
    )
    upstream.script(broken)
    r = learning_chat(proxy, stream=True)
    assert r.status_code == 200  # the stream had started
    events = sse(r.content)
    assert "[DONE]" not in [data for _, data in events]
    event, data = events[-1]
    assert event == "error"
    error = validate_error(json.loads(data))["error"]
    expected = "upstream_timeout" if fault == "stall" else "upstream_unreachable"
    assert error["code"] == expected
    rid = r.headers["x-profilo-request-id"]
    time.sleep(0.3)  # a job, if one were (wrongly) queued, would be visible by now
    assert job_status(proxy, rid) == 404  # the truncated turn is not learned
    assert extraction.calls == []
    # the same chat streamed whole is learned: the check above can fail
    upstream.script(sse_reply(chat_chunks(pieces)))
    r = learning_chat(proxy, stream=True, wait_for_learning_seconds=10)
    assert sse(r.content)[-1] == (None, "[DONE]")
    assert job_status(proxy, r.headers["x-profilo-request-id"]) == 200


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_upstream_429_and_500_are_relayed_and_queue_nothing(
    make_proxy: Any, upstream: FakeUpstream, extraction: Extraction, stream: bool
) -> None:
    proxy = make_proxy(learning={**FAST, "run_worker": True})
    upstream.script(
        error_reply(429, "slow down", type="rate_limit_error", headers={"Retry-After": "12"}),
        error_reply(500, "upstream exploded", type="server_error"),
    )
    r = learning_chat(proxy, stream=stream)
    assert r.status_code == 429 and r.headers["retry-after"] == "12"
    assert validate_error(r.json())["error"]["message"] == "slow down"
    assert job_status(proxy, r.headers["x-profilo-request-id"]) == 404
    r = learning_chat(proxy, stream=stream)
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
    assert job_status(proxy, r.headers["x-profilo-request-id"]) == 404
    r = learning_chat(proxy, stream=stream, wait_for_learning_seconds=10)
    assert r.status_code == 200
    assert job_status(proxy, r.headers["x-profilo-request-id"]) == 200
    assert len(extraction.calls) == 1


# -- the retrieval index -----------------------------------------------------------------------


def test_index_outage_fails_open_and_loses_no_write(
    make_proxy: Any, upstream: FakeUpstream, extraction: Extraction
) -> None:
    proxy = make_proxy(learning={**FAST, "run_worker": True})
    services = proxy.server.app.state.services
    url = proxy.base_url + "/profile"
    assert httpx.patch(url, params={"collection_id": "alice"}, json={"pet": "a cat"}).is_success

    def down(*args: Any, **kwargs: Any) -> Any:
        raise Unavailable("retrieval index unavailable: test outage")

    for name in ("upsert", "delete", "query"):
        setattr(services.index, name, down)
    try:
        # a direct write commits; its index work waits in the outbox
        r = httpx.patch(url, params={"collection_id": "alice"}, json={"boat": "a sailing boat"})
        assert r.status_code == 200 and r.json()["created"] == 1, r.text
        # chat answers without memory and still learns, into the records
        extraction.script(ops_reply(op("add", "music", "likes jazz")))
        r = learning_chat(proxy, wait_for_learning_seconds=10)
        assert r.status_code == 200
        assert "test outage" in r.headers["x-profilo-memory-error"]
        assert r.headers["x-profilo-learning"] == "done"
        assert set(facts(proxy)) == {"pet", "boat", "music"}
        assert services.outbox.depth() >= 2
        r = httpx.post(url + "/search", json={"query": "sailing", "collection_id": "alice"})
        assert r.status_code == 503 and validate_error(r.json())
    finally:
        for name in ("upsert", "delete", "query"):
            delattr(services.index, name)  # back to the class's methods: the index is up
    # the next search of the scope applies the outbox first: nothing was lost
    r = httpx.post(url + "/search", json={"query": "sailing boat", "collection_id": "alice"})
    assert r.status_code == 200 and r.json()["facts"][0]["key"] == "boat", r.text
    r = httpx.post(url + "/search", json={"query": "jazz music", "collection_id": "alice"})
    assert r.json()["facts"][0]["key"] == "music", r.text
    assert services.outbox.depth() == 0


# -- the records database ----------------------------------------------------------------------


@pytest.mark.sqlite_only
def test_a_locked_database_is_a_503_and_corrupts_nothing(
    make_proxy: Any, upstream: FakeUpstream
) -> None:
    proxy = make_proxy(store={"sqlite_busy_timeout_ms": 300})
    url = proxy.base_url + "/profile"
    assert httpx.patch(url, json={"pet": "a cat"}).status_code == 200
    other = sqlite3.connect(proxy.settings.db_path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    try:
        r = httpx.patch(url, json={"boat": "a sailing boat"}, timeout=30)
        assert r.status_code == 503, r.text
        assert validate_error(r.json())["error"]["code"] == "database_locked"
        assert r.headers["retry-after"] == "1"
        r = httpx.post(url + "/facts", json={"key": "car", "value": "a red car"}, timeout=30)
        assert r.status_code == 503
        # reads and plain chat go on (WAL readers are not blocked)
        assert [f["key"] for f in httpx.get(url).json()["profile"]["static"]] == ["pet"]
        out = proxy.client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert out.choices[0].message.content
        # a learning chat answers; its turn could not be queued and says so (fail open)
        r = learning_chat(proxy)
        assert r.status_code == 200 and r.headers["x-profilo-learning"] == "error"
    finally:
        other.execute("ROLLBACK")
        other.close()
    r = httpx.patch(url, json={"boat": "a sailing boat"})
    assert r.status_code == 200 and r.json()["created"] == 1
    with sqlite3.connect(proxy.settings.db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        keys = [k for (k,) in db.execute("SELECT key FROM facts ORDER BY key")]
    assert keys == ["boat", "pet"]  # the refused writes left nothing behind


# -- the process ---------------------------------------------------------------------------------


def test_kill_9_under_chat_load_loses_and_repeats_no_turn(
    tmp_path: Path, make_proxy: Any, upstream: FakeUpstream, extraction: Extraction
) -> None:
    data = tmp_path / "data"  # make_proxy's data dir: the restart reads the same records
    extraction.default = lambda rec: hang_reply(0.3, then=fact_from_turn(rec))
    acked: list[str] = []  # turns the proxy answered: their job was committed first
    stop = threading.Event()

    def load(url: str, user: int) -> None:
        with httpx.Client(timeout=30) as client:
            for n in range(1000):
                if stop.is_set():
                    return
                body = {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"turn u{user}-{n}"}],
                    "features": {"memory": True},
                    "collection_id": f"load{user}",
                }
                try:
                    r = client.post(url + "/v1/chat/completions", json=body)
                except httpx.TransportError:
                    return  # killed
                assert r.status_code == 200, r.text
                assert r.headers["x-profilo-learning"] == "queued"
                acked.append(r.headers["x-profilo-request-id"])

    with serve(data, upstream) as (url, proc):
        threads = [threading.Thread(target=load, args=(url, u)) for u in range(4)]
        for t in threads:
            t.start()
        upstream.wait_for(lambda: len(acked) >= 40 and len(extraction.calls) >= 4, timeout=30)
        os.kill(proc.pid, signal.SIGKILL)  # mid-load: chats in flight, jobs queued and running
        proc.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    records = records_at(data)
    with records.read() as db:
        before = {r[0]: r[1] for r in db.execute("SELECT id, status FROM jobs").fetchall()}
    assert set(acked) <= set(before)  # every answered turn's job was on disk
    assert {"queued"} <= set(before.values())  # the kill left work behind
    extraction.default = fact_from_turn
    # the restart (on Postgres the killed worker's leases run out first)
    url = make_proxy(learning={**FAST, "concurrency": 4, "lease_seconds": 2}).url
    statuses = wait_done(url, list(before), timeout=60)
    assert all(s["status"] == "done" for s in statuses.values()), statuses
    with records.read() as db:
        per_job = {
            r[0]: r[1]
            for r in db.execute(
                "SELECT request_id, COUNT(*) FROM changes GROUP BY request_id"
            ).fetchall()
        }
        keys = [r[0] for r in db.execute("SELECT key FROM facts WHERE key LIKE 'turn_%'")]
    records.close()
    assert all(per_job.get(j) == 1 for j in before), "a job applied twice or not at all"
    assert len(keys) == len(set(keys)) == len(before)  # one fact per turn, none twice
    queued = sum(s == "queued" for s in before.values())
    print(f"\nkill -9: {len(acked)} answered turns, {len(before)} jobs on disk at the kill "
          f"({queued} queued); all learned exactly once")  # fmt: skip
