"""The learning queue between accounts: turns taken fairly (one account's burst does not make
another wait behind it) and per-account limits (429 + Retry-After on the routes that enqueue;
a chat answers and skips its learning)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from proxy.store.db import open_database
from proxy.store.keys import KeyStore
from tests.conftest import Proxy
from tests.fakes.schema import validate_error
from tests.fakes.upstream import FakeUpstream, chat_completion, json_reply
from tests.test_extraction import FAST, Extraction

TURN = [{"role": "user", "content": "I live in Lisbon"}]


def _keys(proxy: Proxy, *names: str) -> list[dict[str, str]]:
    keys = KeyStore(open_database(proxy.settings))
    return [{"Authorization": "Bearer " + keys.create(n)[1]} for n in names]


def _publish(proxy: Proxy, auth: dict[str, str], user: str, **extra: Any) -> httpx.Response:
    body = {"collection_id": user, "model": "gpt-4o-mini", "messages": TURN, **extra}
    return httpx.post(proxy.base_url + "/interactions", json=body, headers=auth, timeout=30)


def _slow(extraction: Extraction) -> None:
    reply = json_reply(chat_completion(json.dumps({"operations": []})), delay=0.15)
    extraction.default = reply


def test_one_accounts_burst_does_not_starve_another(
    make_proxy: Any, upstream: FakeUpstream
) -> None:
    extraction = Extraction(upstream)
    _slow(extraction)
    proxy = make_proxy(learning={"run_worker": True, "concurrency": 1, **FAST})
    noisy, quiet = _keys(proxy, "noisy", "quiet")
    for i in range(30):  # different end users: 30 scopes, each head eligible at once
        assert _publish(proxy, noisy, f"user{i}").status_code == 202
    r = _publish(proxy, quiet, "only", wait_for_learning_seconds=20)
    assert r.status_code == 200 and r.json()["status"] == "done", r.text
    with open_database(proxy.settings).read() as conn:
        created, started = conn.execute(
            "SELECT created_at, started_at FROM jobs WHERE account = 'quiet'"
        ).fetchone()
        cut_in, after = conn.execute(
            "SELECT SUM(CASE WHEN started_at > ? AND started_at < ? THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN started_at IS NULL OR started_at > ? THEN 1 ELSE 0 END) "
            "FROM jobs "
            "WHERE account = 'noisy'",
            (created, started, started),
        ).fetchone()
    # when it arrived, many of the noisy account's jobs were still waiting (first come, first
    # served would run them all first); with turns it runs once the job in progress ends
    assert after >= 10, after
    assert cut_in <= 1, cut_in


def test_queue_limit_is_429_and_writes_nothing(make_proxy: Any) -> None:
    proxy = make_proxy(
        models={"extraction": "gpt-4o-mini"},
        learning={"run_worker": False, "max_queued_jobs_per_account": 3},
    )
    (auth, other) = _keys(proxy, "acme", "other")
    for i in range(3):
        assert _publish(proxy, auth, f"u{i}").status_code == 202
    for path in ("/v1/interactions", "/api/publish_interaction"):
        body = (
            {"collection_id": "u9", "model": "gpt-4o-mini", "messages": TURN}
            if path.startswith("/v1")
            else {"user_id": "u9", "interaction_data_list": [{"content": "I like tea",
                                                              "role": "user"}]}
        )  # fmt: skip
        r = httpx.post(proxy.url + path, json=body, headers=auth, timeout=30)
        assert r.status_code == 429, (path, r.text)
        validate_error(r.json())
        assert r.json()["error"]["code"] == "learning_queue_full"
        assert int(r.headers["retry-after"]) > 0
    with open_database(proxy.settings).read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 3
    assert _publish(proxy, other, "u1").status_code == 202  # another account is not limited


def test_rate_limit_per_minute(make_proxy: Any) -> None:
    proxy = make_proxy(learning={"run_worker": False, "max_jobs_per_minute_per_account": 2})
    (auth,) = _keys(proxy, "acme")
    assert _publish(proxy, auth, "a").status_code == 202
    assert _publish(proxy, auth, "b").status_code == 202
    r = _publish(proxy, auth, "c")
    assert r.status_code == 429 and r.json()["error"]["code"] == "learning_rate_limited"
    assert 1 <= int(r.headers["retry-after"]) <= 60


def test_chat_over_the_limit_answers_and_skips_learning(
    make_proxy: Any, upstream: FakeUpstream
) -> None:
    proxy = make_proxy(learning={"run_worker": False, "max_queued_jobs_per_account": 1})
    (auth,) = _keys(proxy, "acme")
    body = {"model": "gpt-4o-mini", "messages": TURN, "user": "alice",
            "features": {"memory": True}}  # fmt: skip
    first = httpx.post(proxy.base_url + "/chat/completions", json=body, headers=auth)
    assert first.status_code == 200 and first.headers["x-profilo-learning"] == "queued"
    for stream in (False, True):
        r = httpx.post(
            proxy.base_url + "/chat/completions", json={**body, "stream": stream}, headers=auth
        )
        assert r.status_code == 200, r.text
        assert r.headers["x-profilo-learning"] == "skipped"
        assert r.headers["x-profilo-learning-reason"] == "learning_queue_full"
    with open_database(proxy.settings).read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1
