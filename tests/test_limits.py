"""Usage limits over real HTTP, windows driven by a clock the test moves: requests/min,
tokens/min, the monthly budget, per key vs per account, learning over its own limit, two
replicas sharing counters (Postgres), the admin API and its bad input."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Proxy
from tests.fakes.schema import validate_error
from tests.fakes.upstream import FakeUpstream, chat_completion, json_reply
from tests.records_backend import current_database_url
from tests.usage_helpers import ADMIN_KEY, FakeClock, bearer, chat, limited, new_keys, set_limits


def _start(
    make_proxy: Any, upstream: FakeUpstream, tmp_path: Path, *accounts: str
) -> tuple[Proxy, FakeClock, list[tuple[str, str]]]:
    """A limited proxy, its clock, and one key per account."""
    clock = FakeClock()
    proxy = limited(make_proxy, upstream, clock, tmp_path / "data")
    return proxy, clock, new_keys(proxy, *accounts)


USAGE = {"prompt_tokens": 60, "completion_tokens": 20, "total_tokens": 80}


def _answers(upstream: FakeUpstream, n: int) -> None:
    for _ in range(n):
        upstream.script(json_reply(chat_completion("ok", usage=USAGE)))


def test_requests_per_minute(make_proxy: Any, upstream: FakeUpstream, tmp_path: Path) -> None:
    proxy, clock, ((_, token),) = _start(make_proxy, upstream, tmp_path, "acme")
    assert set_limits(proxy, "acme", requests_per_minute=2).status_code == 200
    _answers(upstream, 3)
    first = chat(proxy, token)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    assert chat(proxy, token).status_code == 200
    clock.advance(30)
    refused = chat(proxy, token)
    assert refused.status_code == 429, refused.text
    validate_error(refused.json())
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.json()["error"]["type"] == "requests"
    assert refused.headers["retry-after"] == "30"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"] == "30s"
    assert upstream.pending == 1  # the refused request never reached the upstream
    clock.advance(30)  # the first two leave the window
    assert chat(proxy, token).status_code == 200


def test_tokens_per_minute(make_proxy: Any, upstream: FakeUpstream, tmp_path: Path) -> None:
    proxy, clock, ((_, token),) = _start(make_proxy, upstream, tmp_path, "acme")
    assert set_limits(proxy, "acme", tokens_per_minute=100).status_code == 200
    _answers(upstream, 3)
    assert chat(proxy, token).status_code == 200  # 80 tokens used
    second = chat(proxy, token)
    assert second.status_code == 200  # 80 < 100: admitted (then 160)
    assert second.headers["x-ratelimit-remaining-tokens"] == "20"
    refused = chat(proxy, token)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.json()["error"]["type"] == "tokens"  # OpenAI's type for a tokens limit
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert refused.headers["x-ratelimit-limit-tokens"] == "100"
    assert int(refused.headers["retry-after"]) == 60
    clock.advance(60)
    assert chat(proxy, token).status_code == 200


def test_monthly_budget(make_proxy: Any, upstream: FakeUpstream, tmp_path: Path) -> None:
    proxy, clock, ((_, token),) = _start(make_proxy, upstream, tmp_path, "acme")
    # one call costs 60 * 1.5e-7 + 20 * 6e-7 = 2.1e-5 USD
    assert set_limits(proxy, "acme", monthly_budget=3e-5).status_code == 200
    _answers(upstream, 3)
    assert chat(proxy, token).status_code == 200
    assert chat(proxy, token).status_code == 200  # 2.1e-5 < 3e-5: admitted
    spent = chat(proxy, token)
    assert spent.status_code == 429, spent.text
    validate_error(spent.json())
    assert spent.json()["error"]["code"] == "insufficient_quota"
    assert spent.json()["error"]["type"] == "insufficient_quota"
    assert int(spent.headers["retry-after"]) > 0
    clock.advance(40 * 86400)  # next month
    assert chat(proxy, token).status_code == 200


def test_per_key_and_per_account(make_proxy: Any, upstream: FakeUpstream, tmp_path: Path) -> None:
    proxy, _, [(k1, t1), (_, t2), (_, other)] = _start(
        make_proxy, upstream, tmp_path, "acme", "acme", "globex"
    )
    assert set_limits(proxy, "acme", key_id=k1, requests_per_minute=1).status_code == 200
    assert set_limits(proxy, "acme", requests_per_minute=3).status_code == 200
    _answers(upstream, 10)
    assert chat(proxy, t1).status_code == 200
    refused = chat(proxy, t1)
    assert refused.status_code == 429 and "API key" in refused.json()["error"]["message"]
    assert chat(proxy, t2).status_code == 200  # the other key has its own room
    assert chat(proxy, t2).status_code == 200  # the account's third request
    refused = chat(proxy, t2)
    assert refused.status_code == 429 and "account" in refused.json()["error"]["message"]
    assert chat(proxy, other).status_code == 200  # another account: not limited
    # a key of another account cannot be limited through this one
    missing = set_limits(proxy, "globex", key_id=k1, requests_per_minute=1)
    assert missing.status_code == 404


def test_an_account_reads_its_limits_and_cannot_raise_them(
    make_proxy: Any, upstream: FakeUpstream, tmp_path: Path
) -> None:
    proxy, _, [(k1, token), (_, other)] = _start(make_proxy, upstream, tmp_path, "acme", "globex")
    assert set_limits(proxy, "acme", requests_per_minute=5, monthly_budget=10).status_code == 200
    assert set_limits(proxy, "acme", key_id=k1, tokens_per_minute=1000).status_code == 200
    r = httpx.get(proxy.base_url + "/usage/limits", headers=bearer(token), timeout=30)
    assert r.status_code == 200
    got = r.json()
    assert got["limits"]["requests_per_minute"] == 5 and got["limits"]["monthly_budget"] == 10
    assert got["keys"][k1]["tokens_per_minute"] == 1000
    theirs = httpx.get(proxy.base_url + "/usage/limits", headers=bearer(other), timeout=30)
    assert theirs.json()["limits"]["requests_per_minute"] is None and theirs.json()["keys"] == {}
    for key in (token, other, "wrong"):  # an account's key is not the admin key
        r = set_limits(proxy, "acme", token=key, requests_per_minute=10**6)
        assert r.status_code == 401, r.text
        validate_error(r.json())
    r = httpx.get(proxy.base_url + "/usage/limits", headers=bearer(token), timeout=30)
    assert r.json()["limits"]["requests_per_minute"] == 5
    admin = httpx.get(f"{proxy.url}/admin/limits/acme", headers=bearer(ADMIN_KEY), timeout=30)
    assert admin.status_code == 200 and admin.json()["keys"][k1]["tokens_per_minute"] == 1000
    refused = httpx.get(f"{proxy.url}/admin/limits/acme", headers=bearer(token), timeout=30)
    assert refused.status_code == 401


def test_no_admin_key_no_admin_api(make_proxy: Any) -> None:
    proxy = make_proxy()
    ((_, token),) = new_keys(proxy, "acme")
    r = set_limits(proxy, "acme", token=token, requests_per_minute=1)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"


BAD_VALUES: list[Any] = [-1, 1.5, "10", True, [], {}, 10**13, "NaN", -(10**20)]


def _fuzzed(rng: random.Random) -> dict[str, Any]:
    field = rng.choice(["requests_per_minute", "tokens_per_minute", "extraction_jobs_per_minute",
                        "monthly_budget", "surprise"])  # fmt: skip
    bad = BAD_VALUES
    if field == "monthly_budget":
        bad = [-1, -0.01, "10", True, [], {}, 1e13, "inf"]
    elif field == "surprise":
        bad = [1]
    return {field: rng.choice(bad)}


def test_fuzzed_limit_values_are_400_and_change_nothing(
    make_proxy: Any, upstream: FakeUpstream, tmp_path: Path
) -> None:
    proxy, _, ((_, token),) = _start(make_proxy, upstream, tmp_path, "acme")
    assert set_limits(proxy, "acme", requests_per_minute=7).status_code == 200
    rng = random.Random(20)
    for _ in range(60):
        body = _fuzzed(rng)
        r = httpx.put(f"{proxy.url}/admin/limits/acme", json=body,
                      headers=bearer("admin-secret-for-tests"), timeout=30)  # fmt: skip
        assert r.status_code == 400, (body, r.text)
        validate_error(r.json())
    for raw in (b"not json", b"[1, 2]", b'{"requests_per_minute": 1e999}'):
        headers = bearer("admin-secret-for-tests") | {"content-type": "application/json"}
        r = httpx.put(f"{proxy.url}/admin/limits/acme", content=raw, headers=headers, timeout=30)
        assert r.status_code == 400, r.text
    r = httpx.get(proxy.base_url + "/usage/limits", headers=bearer(token), timeout=30)
    assert r.json()["limits"]["requests_per_minute"] == 7


def test_learning_over_its_limit_is_skipped_not_an_error(
    make_proxy: Any, upstream: FakeUpstream, tmp_path: Path
) -> None:
    proxy, clock, ((_, token),) = _start(make_proxy, upstream, tmp_path, "acme")
    assert set_limits(proxy, "acme", extraction_jobs_per_minute=1).status_code == 200
    _answers(upstream, 3)
    turn = {"collection_id": "alice", "features": {"memory": True}}
    assert chat(proxy, token, "I like tea", **turn).headers["x-profilo-learning"] == "queued"
    second = chat(proxy, token, "I like coffee", **turn)
    assert second.status_code == 200
    assert second.headers["x-profilo-learning"] == "skipped"
    assert second.headers["x-profilo-learning-reason"] == "learning_rate_limited"
    clock.advance(61)
    assert chat(proxy, token, "I like cocoa", **turn).headers["x-profilo-learning"] == "queued"


def test_two_replicas_share_the_counters(
    make_proxy: Any, upstream: FakeUpstream, tmp_path: Path
) -> None:
    clock = FakeClock()
    if current_database_url() is None:
        pytest.skip("embedded mode counts in process (one replica)")
    a = limited(make_proxy, upstream, clock, tmp_path / "a")
    b = limited(make_proxy, upstream, clock, tmp_path / "b")
    ((_, token),) = new_keys(a, "acme")
    assert set_limits(a, "acme", requests_per_minute=3).status_code == 200
    _answers(upstream, 4)
    assert [chat(p, token).status_code for p in (a, b, a)] == [200, 200, 200]
    refused = chat(b, token)
    assert refused.status_code == 429 and refused.headers["x-ratelimit-remaining-requests"] == "0"
    clock.advance(60)
    assert chat(b, token).status_code == 200
