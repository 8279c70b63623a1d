"""The durable job runner: retries, failures, scope order, exactly-once, crash and restart."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.services.extraction_ops import check_operations, parse_answer
from tests.conftest import MODEL_CACHE
from tests.fakes.server import free_port
from tests.fakes.upstream import (
    FakeUpstream,
    RecordedRequest,
    Reply,
    chat_completion,
    error_reply,
    hang_reply,
    json_reply,
)
from tests.records_backend import current_database_url, records_at
from tests.test_extraction import (
    FAST,
    Extraction,
    chat,
    facts,
    job,
    op,
    ops_reply,
    prompt_of,
)


@pytest.fixture
def extraction(upstream: FakeUpstream) -> Extraction:
    return Extraction(upstream)


ROOT = Path(__file__).resolve().parents[1]


def first_user_text(rec: RecordedRequest) -> str:
    found = re.search(r'^\[\d+\] user: "(.*)"$', prompt_of(rec), re.MULTILINE)
    assert found
    return found.group(1)


def fact_from_turn(rec: RecordedRequest) -> Reply:
    """Answers 'turn NAME' with the fact ``turn_NAME = seen``."""
    name = first_user_text(rec).removeprefix("turn ").replace("-", "_")
    return ops_reply(op("add", f"turn_{name}", "seen"))


def publish(proxy_url: str, collection: str, text: str, wait: float = 0) -> str:
    r = httpx.post(
        proxy_url + "/v1/interactions",
        json={
            "collection_id": collection,
            "messages": [{"role": "user", "content": text}],
            "model": "gpt-4o-mini",
            "wait_for_learning_seconds": wait,
        },
        timeout=30,
    )
    assert r.status_code in (200, 202), r.text
    return str(r.json()["request_id"])


def wait_done(proxy_url: str, ids: list[str], timeout: float = 30) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        out = {i: httpx.get(proxy_url + f"/v1/interactions/{i}").json() for i in ids}
        if all(j["status"] in ("done", "failed") for j in out.values()):
            return out
        assert time.monotonic() < deadline, out
        time.sleep(0.05)


# ------------------------------------------------------------------------------------------------


def test_malformed_answers_are_retried_then_failed(make_proxy: Any, extraction: Extraction) -> None:
    proxy = make_proxy(learning={**FAST, "max_attempts": 3})
    extraction.default = json_reply(chat_completion("Sure! The user likes jazz."))
    r = chat(proxy, "I like jazz")
    assert r.headers["x-profilo-learning"] == "failed"  # the chat itself succeeded
    status = job(proxy, r.headers["x-profilo-request-id"])
    assert status["status"] == "failed" and status["attempts"] == 3
    assert "unparseable model answer" in status["error"] and "not JSON" in status["error"]
    assert len(extraction.calls) == 3 and facts(proxy) == {}
    queue = httpx.get(proxy.base_url + "/admin/queue").json()
    assert queue["counts"]["failed"] == 1
    assert queue["failures"][0]["request_id"] == status["request_id"]
    # a wrong shape is a failure too, never an empty success
    extraction.default = json_reply(chat_completion('{"facts": []}'))
    status = job(proxy, chat(proxy, "I like jazz").headers["x-profilo-request-id"])
    assert status["status"] == "failed" and "operations" in status["error"]


def test_upstream_500_and_429_are_retried(make_proxy: Any, extraction: Extraction) -> None:
    proxy = make_proxy(learning=FAST)
    extraction.script(
        error_reply(500, "upstream exploded", type="server_error"),
        error_reply(429, "slow down", type="rate_limit_error", headers={"Retry-After": "0"}),
        ops_reply(op("add", "likes", "jazz")),
    )
    r = chat(proxy, "I like jazz")
    status = job(proxy, r.headers["x-profilo-request-id"])
    assert status["status"] == "done" and status["attempts"] == 3 and status["error"] is None
    assert facts(proxy)["likes"]["value"] == "jazz"


def test_other_4xx_fail_at_once(make_proxy: Any, extraction: Extraction) -> None:
    proxy = make_proxy(learning=FAST)
    extraction.script(error_reply(401, "invalid upstream key", code="invalid_api_key"))
    status = job(proxy, chat(proxy, "I like jazz").headers["x-profilo-request-id"])
    assert status["status"] == "failed" and status["attempts"] == 1
    assert "HTTP 401" in status["error"] and "invalid upstream key" in status["error"]


def test_jobs_of_one_scope_run_in_order(make_proxy: Any, extraction: Extraction) -> None:
    proxy = make_proxy(learning={**FAST, "concurrency": 8})
    extraction.default = lambda rec: hang_reply(0.05, then=fact_from_turn(rec))
    ids = []
    for i in range(5):  # interleaved: u1's queue must not hold u2 back
        ids.append(publish(proxy.url, "u1", f"turn a-{i}"))
        if i < 3:
            ids.append(publish(proxy.url, "u2", f"turn b-{i}"))
    statuses = wait_done(proxy.url, ids)
    assert all(s["status"] == "done" for s in statuses.values())
    order = [first_user_text(c) for c in extraction.calls]
    assert [t for t in order if "a-" in t] == [f"turn a-{i}" for i in range(5)]
    assert [t for t in order if "b-" in t] == [f"turn b-{i}" for i in range(3)]
    # each job of a scope saw the facts its predecessors wrote (it ran after them)
    last_a = next(c for c in extraction.calls if first_user_text(c) == "turn a-4")
    assert all(f"turn_a_{i} = " in prompt_of(last_a) for i in range(4))
    # other scopes are not held back: u2 started before u1 was through
    assert order.index("turn b-0") < order.index("turn a-4")
    assert len(facts(proxy, "u1")) == 5 and len(facts(proxy, "u2")) == 3


def test_a_job_applied_twice_changes_nothing(make_proxy: Any, extraction: Extraction) -> None:
    proxy = make_proxy(learning=FAST)
    answer = json.dumps({"operations": [op("add", "likes", "jazz")]})
    extraction.script(json_reply(chat_completion(answer)))
    rid = chat(proxy, "I like jazz").headers["x-profilo-request-id"]
    services = proxy.server.app.state.services
    done = services.jobs.get("dev", rid)
    checked = check_operations(
        parse_answer(answer),
        shown={},
        user_messages={1},
        assistant_messages={2},
        rules=services.settings.profile,
    )
    applier = services.learning._extractor._applier
    assert applier.apply(done, {}, checked, "json_schema") == {"already_done": True}
    assert list(facts(proxy)) == ["likes"]
    r = httpx.get(proxy.base_url + "/profile/changes", params={"collection_id": "alice"})
    assert [c["request_id"] for c in r.json()["changes"]] == [rid]
    assert job(proxy, rid)["attempts"] == 1


@contextmanager
def serve(
    data_dir: Path,
    upstream: FakeUpstream,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``profilo serve`` in a child process, once ready; ``env`` adds to (or overrides) its
    PROFILO_* settings, ``log`` receives its output (else discarded)."""
    port = free_port()
    child = {
        **os.environ,
        "PROFILO_UPSTREAM__API_BASE": upstream.url,
        "PROFILO_UPSTREAM__API_KEY": "sk-upstream",
        "PROFILO_EMBEDDING__CACHE_DIR": str(MODEL_CACHE),
        "PROFILO_LEARNING__CONCURRENCY": "4",
        "PROFILO_LEARNING__POLL_INTERVAL_SECONDS": "0.05",
        "PROFILO_LEARNING__BACKOFF_BASE_SECONDS": "0.01",
        "PROFILO_LOG_LEVEL": "warning",
        "PROFILO_LEARNING__LEASE_SECONDS": "2",
    }
    if current_database_url():  # the Postgres run: the child serves from the same database
        child["PROFILO_STORE__DATABASE_URL"] = str(current_database_url())
    child |= env or {}
    cmd = [sys.executable, "-m", "proxy", "--data-dir", str(data_dir), "serve"]
    with log.open("a") if log is not None else open(os.devnull, "w") as out:
        proc = subprocess.Popen(
            [*cmd, "--port", str(port)],
            cwd=ROOT,
            env=child,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, "profilo serve exited"
            assert time.monotonic() < deadline, "profilo serve did not become ready"
            time.sleep(0.1)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()  # graceful: drains server.drain_delay_seconds first
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


def test_a_killed_process_loses_no_job_and_repeats_none(
    tmp_path: Path, make_proxy: Any, upstream: FakeUpstream, extraction: Extraction
) -> None:
    data = tmp_path / "data"  # what make_proxy uses: the restart below reads the same records
    # before the crash: 'quick' turns are answered, every other extraction call hangs
    extraction.default = lambda rec: (
        fact_from_turn(rec) if "quick" in first_user_text(rec) else hang_reply(60)
    )
    with serve(data, upstream) as (url, proc):
        quick = publish(url, "u3", "turn quick", wait=10)
        ids = [publish(url, "u1", f"turn a-{i}") for i in range(3)]
        ids += [publish(url, "u2", f"turn b-{i}") for i in range(2)]
        upstream.wait_for(lambda: len(extraction.calls) == 3, timeout=10)
        os.kill(proc.pid, signal.SIGKILL)  # mid-LLM-call: two jobs running, three queued
        proc.wait(timeout=10)
    db = records_at(data)
    with db.read() as conn:
        rows = {row[0]: row[1] for row in conn.execute("SELECT id, status FROM jobs").fetchall()}
    db.close()
    assert rows[quick] == "done"
    assert sorted(rows[i] for i in ids) == ["queued", "queued", "queued", "running", "running"]
    calls_before = len(extraction.calls)
    extraction.default = fact_from_turn
    # the restart, same records (on Postgres the killed worker's leases run out first)
    url = make_proxy(learning={**FAST, "concurrency": 4, "lease_seconds": 2}).url
    statuses = wait_done(url, [quick, *ids])
    assert all(s["status"] == "done" for s in statuses.values())
    attempts = sorted(statuses[i]["attempts"] for i in ids)
    assert attempts == [1, 1, 1, 2, 2]  # the interrupted ones ran once more, nothing else
    assert len(extraction.calls) - calls_before == 5  # the done job was not run again
    for collection, expected in (("u1", 3), ("u2", 2), ("u3", 1)):
        body = httpx.get(url + "/v1/profile", params={"collection_id": collection}).json()
        keys = [f["key"] for f in body["profile"]["static"]]
        assert len(keys) == len(set(keys)) == expected
        log = httpx.get(url + "/v1/profile/changes", params={"collection_id": collection})
        entries = log.json()["changes"]
        assert len(entries) == expected  # one change-log entry per job
        assert len({c["request_id"] for c in entries}) == expected
