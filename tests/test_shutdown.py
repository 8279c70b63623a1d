"""Graceful shutdown of ``profilo serve`` (a rolling restart loses no request) and /readyz.

Real ``profilo serve`` processes (``tests/test_worker.py``'s ``serve``), real signals, real
HTTP on loopback, the fake upstream delaying its answers. Waits are bounded by generous
timeouts that only fail a test; nothing asserts how long a step took.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.pg_cluster import PgCluster
from proxy.models import Scope
from proxy.store.db import Database, SqliteDatabase
from proxy.store.jobs import Job, JobStore
from proxy.store.postgres import PostgresDatabase
from tests.conftest import Proxy, make_settings, wait_until
from tests.fakes.upstream import (
    FakeUpstream,
    RecordedRequest,
    Reply,
    chat_chunks,
    chat_completion,
    hang_reply,
    json_reply,
    sse_reply,
)
from tests.test_extraction import Extraction
from tests.test_worker import fact_from_turn, publish, serve, wait_done

BOUND = 60.0  # seconds: a failure bound, never an expectation
PIECES = [f"piece {i}. " for i in range(40)]


def _answers(upstream: FakeUpstream, replies: dict[str, Callable[[], Reply]]) -> None:
    """Chat calls are answered by their last message's text (``replies``; else a quick
    ``answer to TEXT``); other calls get the fake's usual replies."""
    usual = upstream._default

    def route(rec: RecordedRequest) -> Reply:
        if not rec.path.endswith("/chat/completions"):
            return usual(rec)
        text = str(rec.json["messages"][-1]["content"])
        make = replies.get(text)
        return make() if make else json_reply(chat_completion(f"answer to {text}"))

    upstream._default = route  # type: ignore[method-assign]


def _chat(text: str, *, stream: bool = False) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
    }


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _open_stream(host: str, port: int) -> tuple[http.client.HTTPConnection, Any]:
    """A streamed chat on its own keep-alive connection, its response head read."""
    conn = http.client.HTTPConnection(host, port, timeout=BOUND)
    conn.request(
        "POST", "/v1/chat/completions", json.dumps(_chat("stream", stream=True)),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    return conn, conn.getresponse()


def _refused(url: str) -> bool:
    try:
        socket.create_connection(_address(url), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def _ready(url: str) -> httpx.Response:
    return httpx.get(url + "/readyz", timeout=30)


def _get_healthz(sock: socket.socket, reader: Any) -> dict[str, str]:
    """GET /healthz on an open connection: the response's headers (its body read whole)."""
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    status = reader.readline()
    assert status.startswith(b"HTTP/1.1 200"), status
    headers: dict[str, str] = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, value = line.decode().split(":", 1)
        headers[name.strip().lower()] = value.strip().lower()
    assert json.loads(reader.read(int(headers["content-length"]))) == {"status": "ok"}
    return headers


def _sse_text(raw: bytes) -> tuple[str, bool]:
    """The content a streamed chat carried, and whether it ended with ``[DONE]``."""
    text, done = "", False
    for line in raw.decode().splitlines():
        if line == "data: [DONE]":
            done = True
        elif line.startswith("data: "):
            for choice in json.loads(line[6:]).get("choices", []):
                text += choice.get("delta", {}).get("content") or ""
    return text, done


class _Thread(threading.Thread):
    """Runs ``fn`` and keeps its result (or its exception) for ``result()``."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._fn, self._out, self._exc = fn, None, None

    def run(self) -> None:
        try:
            self._out = self._fn()
        except BaseException as exc:
            self._exc = exc  # type: ignore[assignment]

    def result(self) -> Any:
        self.join(BOUND)
        assert not self.is_alive(), "the request did not finish"
        if self._exc is not None:
            raise self._exc
        return self._out


# ------------------------------------------------------------------------------------------------


def test_sigterm_drains_then_finishes_what_is_in_flight_and_exits_0(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    _answers(
        upstream,
        {
            "stream": lambda: sse_reply(chat_chunks(PIECES), delay_between=0.25),
            "slow": lambda: hang_reply(8, then=json_reply(chat_completion("slow answer"))),
        },
    )
    env = {"PROFILO_LEARNING__RUN_WORKER": "false", "PROFILO_SERVER__DRAIN_DELAY_SECONDS": "10"}
    log = tmp_path / "serve.log"
    with serve(tmp_path / "data", upstream, env, log) as (url, proc):
        host, port = _address(url)
        # a stream under way when the signal comes (its head said keep-alive)
        streamed, stream = _open_stream(host, port)
        assert stream.status == 200
        first = stream.readline()
        assert first.startswith(b"data: "), first
        # a request waiting for the upstream's answer
        slow = _Thread(lambda: httpx.post(url + "/v1/chat/completions", json=_chat("slow"),
                                          timeout=BOUND))  # fmt: skip
        slow.start()
        upstream.wait_for(lambda: any("slow" in r.body.decode() for r in upstream.requests), 30)
        # a request whose body the client holds until the listening socket is closed
        release = threading.Event()

        def held_body() -> Iterator[bytes]:
            yield b'{"model": "gpt-4o-mini", '
            release.wait(BOUND)
            yield b'"messages": [{"role": "user", "content": "held"}]}'

        held = _Thread(lambda: httpx.post(url + "/v1/chat/completions", content=held_body(),
                                          headers={"Content-Type": "application/json"},
                                          timeout=BOUND))  # fmt: skip
        held.start()
        # a load balancer's idle keep-alive connection
        idle = socket.create_connection((host, port), timeout=BOUND)
        idle_reader = idle.makefile("rb")
        assert _get_healthz(idle, idle_reader).get("connection") != "close"
        # one more round trip: the server is past that response's end (a signal handled in
        # between its last write and its end would rightly close the connection)
        assert httpx.get(url + "/healthz").status_code == 200

        proc.send_signal(signal.SIGTERM)

        # draining: not ready, every answer closes its connection, requests still served
        wait_until(lambda: _ready(url).status_code == 503, "/readyz to answer 503")
        ready = _ready(url)
        assert ready.json()["status"] == "draining", ready.text
        assert ready.json()["checks"]["shutdown"].startswith("draining"), ready.text
        assert ready.headers["connection"] == "close"
        assert httpx.get(url + "/healthz").json() == {"status": "ok"}  # still alive
        assert _get_healthz(idle, idle_reader)["connection"] == "close"
        assert idle.recv(1) == b""  # closed by the server after that complete answer
        idle.close()
        during = httpx.post(url + "/v1/chat/completions", json=_chat("during"), timeout=BOUND)
        assert during.status_code == 200, during.text
        assert during.json()["choices"][0]["message"]["content"] == "answer to during"
        assert during.headers["connection"] == "close"

        # after the drain delay: new connections are refused ...
        wait_until(lambda: _refused(url), "the listening socket to close")
        release.set()
        # ... and everything that was in flight completes, whole
        answer = held.result()
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"] == "answer to held"
        assert answer.headers["connection"] == "close"
        answer = slow.result()
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"] == "slow answer"
        assert answer.headers["connection"] == "close"
        text, done = _sse_text(first + stream.read())
        assert text == "".join(PIECES) and done
        streamed.close()
        assert proc.wait(timeout=BOUND) == 0, log.read_text()
    assert "handed" not in log.read_text()  # no job was running: nothing to hand back


def test_a_second_signal_exits_at_once_and_a_drained_stream_closes_its_connection(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    _answers(
        upstream,
        {
            "stream": lambda: sse_reply(chat_chunks(PIECES[:20]), delay_between=0.25),
            "hang": lambda: hang_reply(600),
        },
    )
    env = {
        "PROFILO_LEARNING__RUN_WORKER": "false",
        "PROFILO_SERVER__DRAIN_DELAY_SECONDS": "600",
        "PROFILO_SERVER__KEEP_ALIVE_SECONDS": "600",  # only the drain closes idle connections
    }
    log = tmp_path / "serve.log"
    with serve(tmp_path / "data", upstream, env, log) as (url, proc):
        host, port = _address(url)
        streamed, stream = _open_stream(host, port)
        first = stream.readline()
        hanging = _Thread(lambda: httpx.post(url + "/v1/chat/completions", json=_chat("hang"),
                                             timeout=BOUND))  # fmt: skip
        hanging.start()
        upstream.wait_for(lambda: any("hang" in r.body.decode() for r in upstream.requests), 30)

        proc.send_signal(signal.SIGINT)
        wait_until(lambda: _ready(url).status_code == 503, "/readyz to answer 503")
        # the stream began before the drain (keep-alive in its head): closed once whole
        assert "connection" not in {k.lower() for k in stream.headers}
        text, done = _sse_text(first + stream.read())
        assert text == "".join(PIECES[:20]) and done
        assert streamed.sock is not None
        assert streamed.sock.recv(1) == b""
        streamed.close()

        proc.send_signal(signal.SIGTERM)  # the second signal: no more waiting
        # exits now, not after the drain delay and the hanging request (10 minutes each)
        assert proc.wait(timeout=BOUND) == 0, log.read_text()
        try:  # what was still in flight was cancelled (uvicorn answers 500 if it can)
            assert hanging.result().status_code == 500
        except httpx.TransportError:
            pass


# ------------------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def records(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[dict[str, str], Database]]:
    """(the env pointing ``profilo serve`` at the records, those records opened here)."""
    if request.param == "sqlite":
        db: Database = SqliteDatabase(tmp_path / "data" / "profilo.sqlite3")
        yield {}, db
        db.close()
        return
    wanted = os.environ.get("PROFILO_TEST_BACKENDS", "sqlite,postgres")
    if "postgres" not in wanted.split(","):
        pytest.skip("PROFILO_TEST_BACKENDS leaves Postgres out")
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    name = "s_" + uuid.uuid4().hex[:16]
    url = cluster.create_database(name)
    db = PostgresDatabase(url, min_size=0, max_size=2)
    yield {"PROFILO_STORE__DATABASE_URL": url}, db
    db.close()
    if cluster.started:
        cluster.drop_database(name)


def test_sigterm_hands_the_running_job_back_for_another_process_at_once(
    tmp_path: Path, upstream: FakeUpstream, records: tuple[dict[str, str], Database]
) -> None:
    env, db = records
    env |= {
        "PROFILO_SERVER__DRAIN_DELAY_SECONDS": "0",
        # a lease far longer than the test: only the hand-back lets another process claim it
        "PROFILO_LEARNING__LEASE_SECONDS": "3600",
    }
    jobs = JobStore(db)
    extraction = Extraction(upstream)
    extraction.default = hang_reply(600)  # the extraction call is under way at the signal
    log = tmp_path / "serve.log"
    with serve(tmp_path / "data", upstream, env, log) as (url, proc):
        rid = publish(url, "alice", "turn handed-back")
        upstream.wait_for(lambda: len(extraction.calls) == 1, timeout=BOUND)
        running = jobs.get("dev", rid)
        assert running is not None and running.status == "running" and running.attempts == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=BOUND) == 0, log.read_text()
    assert "handed 1 running extraction jobs back" in log.read_text()
    back = jobs.get("dev", rid)
    assert back is not None
    assert (back.status, back.token, back.lease_until) == ("queued", running.token, None)
    assert back.attempts == 0  # the interrupted attempt is not counted against the job

    extraction.default = fact_from_turn
    with serve(tmp_path / "data", upstream, env, log) as (url, proc):  # another process
        status = wait_done(url, [rid], timeout=BOUND)[rid]
        assert status["status"] == "done" and status["attempts"] == 1, status
    done: Job | None = jobs.get("dev", rid)
    assert done is not None and done.token == running.token + 1  # claimed once more
    assert len(extraction.calls) == 2
    with db.read() as conn:
        rows = conn.execute("SELECT key FROM facts WHERE collection_id = 'alice'").fetchall()
    assert [r[0] for r in rows] == ["turn_handed_back"]


def test_a_hand_back_leaves_a_job_taken_over_alone(
    records: tuple[dict[str, str], Database],
) -> None:
    _, db = records
    jobs = JobStore(db)
    jobs.enqueue("job-1", Scope("acme", "alice"), {}, max_attempts=5)
    [mine] = jobs.claim(1, lease=1.0)
    later = time.time() + 5
    assert jobs.expire_leases(now=later) == 1  # my lease ran out: another replica takes over
    [theirs] = jobs.claim(1, now=later, lease=600)
    assert theirs.token == mine.token + 1
    assert jobs.release({mine.id: mine.token}) == 0  # my stale token hands back nothing
    job = jobs.get("acme", "job-1")
    assert job is not None and (job.status, job.token, job.attempts) == ("running", theirs.token, 2)
    assert jobs.release({theirs.id: theirs.token}) == 1  # the holder's hand-back
    job = jobs.get("acme", "job-1")
    assert job is not None and (job.status, job.token, job.attempts) == ("queued", theirs.token, 1)
    assert job.lease_until is None
    [again] = jobs.claim(1, lease=600)  # due at once
    assert again.token == theirs.token + 1


# ------------------------------------------------------------------------------------------------


def test_readyz_is_503_while_the_records_database_is_unreachable(
    make_proxy: Callable[..., Proxy], tmp_path: Path, upstream: FakeUpstream
) -> None:
    with PgCluster() as cluster:  # its own server: this test stops it
        url = cluster.create_database("ready")
        proxy = make_proxy(make_settings(tmp_path / "a", upstream, store={"database_url": url}))
        ready = _ready(proxy.url)
        assert ready.status_code == 200, ready.text
        assert ready.json() == {
            "status": "ok",
            "checks": {"records": "ok", "index": "ok", "embedder": "ok", "shutdown": "ok"},
        }
        cluster.stop_server("fast")
        ready = _ready(proxy.url)
        assert ready.status_code == 503, ready.text
        body = ready.json()
        assert body["status"] == "unavailable"
        assert body["checks"]["records"].startswith("error"), body
        assert body["checks"]["index"] == "ok"  # embedded Chroma: still there
        assert httpx.get(proxy.url + "/healthz").status_code == 200  # alive all the same
        cluster.start_server()
        wait_until(lambda: _ready(proxy.url).status_code == 200, "/readyz to be 200 again")
