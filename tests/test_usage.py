"""Usage metering over real HTTP: the tokens the fake upstream reports (JSON and streamed),
memory tokens, cost from the local cost map, the proxy's own calls, the report's groupings,
tenancy, the Prometheus counters, bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.pg_cluster import PgCluster
from proxy.store.usage import UsageEvent, UsageStore
from tests.conftest import Proxy, make_settings
from tests.fakes.schema import validate_error
from tests.fakes.upstream import FakeUpstream, chat_completion, json_reply
from tests.records_backend import records_at
from tests.test_chat_litellm import CLAUDE, _vcr
from tests.usage_helpers import MINI_PRICE, bearer, chat, new_keys, report

USAGE = {"prompt_tokens": 1200, "completion_tokens": 30, "total_tokens": 1230}


def _patch(proxy: Proxy, token: str, collection: str, facts: dict[str, Any]) -> None:
    body = {**facts, "collection_id": collection}
    r = httpx.patch(proxy.base_url + "/profile", json=body, headers=bearer(token), timeout=30)
    assert r.status_code == 200, r.text


def test_json_chat_tokens_and_cost(proxy: Proxy, upstream: FakeUpstream) -> None:
    (_, token), (_, other) = new_keys(proxy, "acme", "globex")
    upstream.script(json_reply(chat_completion("ok", usage=USAGE)))
    answer = proxy.client(token).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], user="alice"
    )
    assert answer.usage is not None and answer.usage.prompt_tokens == 1200  # relayed as is
    got = report(proxy, token, group_by="model")
    (row,) = got["data"]
    assert row["model"] == "gpt-4o-mini" and row["requests"] == 1
    assert (row["prompt_tokens"], row["completion_tokens"], row["memory_tokens"]) == (1200, 30, 0)
    assert row["cost"] == pytest.approx(1200 * MINI_PRICE[0] + 30 * MINI_PRICE[1])
    assert got["total"]["total_tokens"] == 1230 and got["currency"] == "USD"
    # the end user is the OpenAI user; another account sees none of it
    assert [r["end_user"] for r in report(proxy, token, group_by="end_user")["data"]] == ["alice"]
    assert report(proxy, other)["data"] == [] and report(proxy, other)["total"]["requests"] == 0


def test_unknown_model_is_metered_in_tokens_only(proxy: Proxy, upstream: FakeUpstream) -> None:
    ((_, token),) = new_keys(proxy, "acme")
    upstream.script(json_reply(chat_completion("ok", model="my-own-llm", usage=USAGE)))
    assert chat(proxy, token, model="my-own-llm").status_code == 200
    (row,) = report(proxy, token, group_by="model")["data"]
    assert row["model"] == "my-own-llm" and row["total_tokens"] == 1230
    assert row["cost"] is None and row["unpriced_requests"] == 1


def test_stream_the_client_did_not_ask_usage_for(proxy: Proxy, upstream: FakeUpstream) -> None:
    ((_, token),) = new_keys(proxy, "acme")
    client = proxy.client(token)
    messages = [{"role": "user", "content": "tell me three words"}]
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=messages,
                                                 stream=True))  # fmt: skip
    assert upstream.last.json["stream_options"] == {"include_usage": True}  # asked upstream
    assert chunks and all(c.usage is None for c in chunks)  # ... and none reached the client
    assert all(c.choices for c in chunks)  # no usage-only chunk
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "Hello from fake upstream"
    # the same request, asking: the client gets the usage chunk, and the proxy meters both
    asked = list(client.chat.completions.create(model="gpt-4o-mini", messages=messages,
                 stream=True, stream_options={"include_usage": True}))  # fmt: skip
    usage = asked[-1].usage
    assert usage is not None and asked[-1].choices == []
    got = report(proxy, token)["total"]
    assert got["requests"] == 2
    assert got["prompt_tokens"] == 2 * usage.prompt_tokens > 0
    assert got["completion_tokens"] == 2 * usage.completion_tokens > 0


def test_memory_tokens_are_metered_json_and_stream(proxy: Proxy, upstream: FakeUpstream) -> None:
    ((_, token),) = new_keys(proxy, "acme")
    _patch(proxy, token, "alice", {"name": "Alice", "city": "Lyon", "diet": "vegetarian"})
    upstream.script(json_reply(chat_completion("ok", usage=USAGE)))
    r = chat(proxy, token, "what should I cook tonight?", collection_id="alice",
             features={"memory": True, "user_profile": True, "learning": False})  # fmt: skip
    assert r.status_code == 200, r.text
    memory = int(r.headers["x-profilo-memory-tokens"])
    assert memory > 0
    events = chat(proxy, token, "and tomorrow?", collection_id="alice", stream=True,
                  features={"memory": True, "user_profile": True, "learning": False})  # fmt: skip
    assert events.status_code == 200
    data = [ln[6:] for ln in events.text.splitlines() if ln.startswith("data: ")]
    assert data[-1] == "[DONE]"
    assert all(json.loads(d).get("usage") is None for d in data[:-1])
    streamed_memory = int(events.headers["x-profilo-memory-tokens"])
    by_kind = {row["kind"]: row for row in report(proxy, token, group_by="kind")["data"]}
    assert by_kind["memory"]["prompt_tokens"] == memory + streamed_memory
    assert by_kind["memory"]["cost"] == pytest.approx(
        (memory + streamed_memory) * MINI_PRICE[0], rel=1e-6
    )
    (alice,) = report(proxy, token, group_by="end_user")["data"]
    assert alice["end_user"] == "alice" and alice["memory_tokens"] == memory + streamed_memory
    assert alice["tokens_by_kind"]["memory"] == memory + streamed_memory
    assert alice["requests"] == 2


def test_dialectic_is_metered_for_its_end_user(proxy: Proxy, upstream: FakeUpstream) -> None:
    ((_, token),) = new_keys(proxy, "acme")
    _patch(proxy, token, "bob", {"job": "baker"})
    upstream.script(json_reply(chat_completion("A baker.", usage=USAGE)))
    r = httpx.post(proxy.base_url + "/profile/dialectic", headers=bearer(token), timeout=30,
                   json={"user_message": "What does bob do?", "collection_id": "bob",
                         "model": "gpt-4o-mini"})  # fmt: skip
    assert r.status_code == 200, r.text
    (row,) = report(proxy, token, group_by="kind")["data"]
    assert row["kind"] == "dialectic" and row["total_tokens"] == 1230
    (user,) = report(proxy, token, group_by="end_user")["data"]
    assert user["end_user"] == "bob" and user["tokens_by_kind"]["dialectic"] == 1230
    # streamed: the proxy asks for the usage chunk, meters it, and does not relay it
    r = httpx.post(proxy.base_url + "/profile/dialectic", headers=bearer(token), timeout=30,
                   json={"user_message": "And his hobby?", "collection_id": "bob",
                         "model": "gpt-4o-mini", "stream": True})  # fmt: skip
    assert r.status_code == 200, r.text
    assert upstream.last.json["stream_options"] == {"include_usage": True}
    data = [json.loads(ln[6:]) for ln in r.text.splitlines() if ln.startswith("data: {")]
    assert data and all(d["choices"] for d in data)
    (row,) = report(proxy, token, group_by="kind")["data"]
    assert row["requests"] == 2 and row["total_tokens"] > 1230


def test_extraction_is_metered_for_the_scope_it_served(
    make_proxy: Any, upstream: FakeUpstream
) -> None:
    proxy = make_proxy(learning={"run_worker": True, "poll_interval_seconds": 0.05})
    ((_, token),) = new_keys(proxy, "acme")
    upstream.script(json_reply(chat_completion('{"operations": []}', usage=USAGE)))
    body = {"collection_id": "carol", "model": "gpt-4o-mini", "wait_for_learning_seconds": 20,
            "messages": [{"role": "user", "content": "I live in Oslo"},
                         {"role": "assistant", "content": "Nice!"}]}  # fmt: skip
    r = httpx.post(proxy.base_url + "/interactions", json=body, headers=bearer(token), timeout=30)
    assert r.status_code in (200, 202), r.text
    assert r.json()["status"] == "done", r.text
    (row,) = report(proxy, token, group_by="kind")["data"]
    assert row["kind"] == "extraction" and row["requests"] == 1 and row["total_tokens"] == 1230
    (user,) = report(proxy, token, group_by="end_user")["data"]
    assert user["end_user"] == "carol" and user["tokens_by_kind"]["extraction"] == 1230


def test_group_by_day_and_key(proxy: Proxy, upstream: FakeUpstream) -> None:
    (k1, t1), (k2, t2) = new_keys(proxy, "acme", "acme")
    for token in (t1, t1, t2):
        upstream.script(json_reply(chat_completion("ok", usage=USAGE)))
        assert chat(proxy, token).status_code == 200
    keys = {row["key_id"]: row["requests"] for row in report(proxy, t1, group_by="key")["data"]}
    assert keys == {k1: 2, k2: 1}
    (day,) = report(proxy, t2, group_by="day")["data"]
    assert day["requests"] == 3 and day["tokens_by_kind"]["chat"] == 3 * 1230
    # a window without the calls is empty
    assert report(proxy, t1, **{"from": "2001-01-01", "to": "2001-02-01"})["data"] == []


@pytest.mark.parametrize(
    "params",
    [{"group_by": "user"}, {"from": "yesterday"}, {"to": "2025-13-45"},
     {"from": "2025-02-01", "to": "2025-01-01"}, {"from": "x" * 100}, {"to": "nan"},
     {"from": "-inf"}],
)  # fmt: skip
def test_bad_report_parameters_are_400(proxy: Proxy, params: dict[str, str]) -> None:
    ((_, token),) = new_keys(proxy, "acme")
    r = httpx.get(proxy.base_url + "/usage", params=params, headers=bearer(token), timeout=30)
    assert r.status_code == 400, r.text
    validate_error(r.json())


def test_prometheus_counts_by_model_and_kind_without_end_users(
    proxy: Proxy, upstream: FakeUpstream
) -> None:
    ((_, token),) = new_keys(proxy, "acme")
    upstream.script(json_reply(chat_completion("ok", usage=USAGE)))
    assert chat(proxy, token, user="secret-user-42").status_code == 200
    report(proxy, token)  # a report writes this process's records: counted with each batch
    text = httpx.get(proxy.url + "/metrics", timeout=30).text
    prompt = 'profilo_usage_tokens_total{kind="chat",model="gpt-4o-mini",type="prompt"} 1200.0'
    assert prompt in text
    assert 'profilo_usage_requests_total{kind="chat",model="gpt-4o-mini"} 1.0' in text
    assert "profilo_usage_cost_total" in text
    assert "secret-user-42" not in text and "acme" not in text


def test_usage_is_written_at_shutdown(make_proxy: Any, upstream: FakeUpstream) -> None:
    proxy = make_proxy(usage={"flush_seconds": 60})
    ((_, token),) = new_keys(proxy, "acme")
    upstream.script(json_reply(chat_completion("ok", usage=USAGE)))
    assert chat(proxy, token).status_code == 200
    proxy.server.__exit__(None, None, None)  # graceful stop: the recorder writes what it holds
    from proxy.store.db import open_database

    with open_database(proxy.settings).read() as conn:
        row = conn.execute("SELECT prompt_tokens, account FROM usage_events").fetchone()
    assert tuple(row) == (1200, "acme")


def test_an_alias_is_priced_as_the_model_it_routes_to(
    make_proxy: Any, upstream: FakeUpstream
) -> None:
    routed = {"model": "openai/gpt-4o-mini", "api_base": upstream.url}
    smart = {"model_name": "smart", "litellm_params": routed}
    proxy = make_proxy(model_list=[smart])
    ((_, token),) = new_keys(proxy, "acme")
    upstream.script(json_reply(chat_completion("ok", model="gpt-4o-mini", usage=USAGE)))
    assert chat(proxy, token, model="smart").status_code == 200
    (row,) = report(proxy, token, group_by="model")["data"]
    assert row["model"] == "smart"  # the name the client used ...
    assert row["cost"] == pytest.approx(1200 * MINI_PRICE[0] + 30 * MINI_PRICE[1])  # ... priced


def test_litellm_route_json_and_stream_are_metered(make_proxy: Any) -> None:
    proxy = make_proxy(model_list=[CLAUDE], upstream={"timeout": 60})
    ((_, token),) = new_keys(proxy, "acme")
    with _vcr.use_cassette("anthropic_text.yaml"):
        answer = proxy.client(token).chat.completions.create(
            model="claude", temperature=0.2, max_tokens=64, user="u-42",
            messages=[{"role": "system", "content": "You are terse."},
                      {"role": "user", "content": "Say hello to Ada."}],
            extra_body={"features": {"memory": False}},
        )  # fmt: skip
    assert answer.usage is not None and answer.usage.total_tokens == 18
    with _vcr.use_cassette("anthropic_text_stream.yaml"):
        r = chat(proxy, token, "Say hello.", model="claude", max_tokens=64, stream=True)
    assert r.status_code == 200
    chunks = [json.loads(ln[6:]) for ln in r.text.splitlines() if ln.startswith("data: {")]
    assert chunks and all(c["choices"] and c.get("usage") is None for c in chunks)  # not asked
    (row,) = report(proxy, token, group_by="model")["data"]
    assert row["model"] == "claude" and row["requests"] == 2
    assert row["prompt_tokens"] > 12 and row["completion_tokens"] > 6  # both calls' usage


@pytest.mark.sqlite_only  # one run: this test brings a Postgres server of its own down and up
def test_records_wait_through_a_database_outage(
    make_proxy: Any, upstream: FakeUpstream, tmp_path: Path
) -> None:
    with PgCluster() as cluster:
        url = cluster.create_database("usage_outage")
        settings = make_settings(tmp_path / "data", upstream, store={"database_url": url},
                                 usage={"flush_seconds": 0.2})  # fmt: skip
        proxy = make_proxy(settings)  # the dev account: no key to read while the server is down
        upstream.script(json_reply(chat_completion("ok", usage=USAGE)))
        assert chat(proxy, "unused").status_code == 200
        cluster.stop_server("fast")
        upstream.script(json_reply(chat_completion("ok", usage=USAGE)))
        r = chat(proxy, "unused")
        assert r.status_code == 200, r.text  # metering never fails a chat
        cluster.start_server()
        deadline = time.monotonic() + 60
        while True:  # the held records are written once the database answers again
            got = httpx.get(proxy.base_url + "/usage", timeout=30)
            if got.status_code == 200 and got.json()["total"]["requests"] == 2:
                break
            assert time.monotonic() < deadline, got.text
            time.sleep(0.2)
        assert got.json()["total"]["prompt_tokens"] == 2400


def test_responses_api_is_metered_and_limited(proxy: Proxy, upstream: FakeUpstream) -> None:
    ((_, token),) = new_keys(proxy, "acme")
    client = proxy.client(token)
    answer = client.responses.create(model="gpt-4o-mini", input="hi there", user="dora")
    assert answer.usage is not None
    events = list(client.responses.create(model="gpt-4o-mini", input="again", stream=True))
    done = [e for e in events if e.type == "response.completed"]
    assert done and done[0].response.usage is not None
    (row,) = report(proxy, token, group_by="model")["data"]
    assert row["requests"] == 2
    assert row["prompt_tokens"] == answer.usage.input_tokens + done[0].response.usage.input_tokens
    assert row["completion_tokens"] == (
        answer.usage.output_tokens + done[0].response.usage.output_tokens
    )
    by_user = report(proxy, token, group_by="end_user")["data"]
    users = {r["end_user"]: r["requests"] for r in by_user}
    assert users == {"dora": 1, None: 1}  # the second named no end user: the account's


def test_responses_bridge_is_metered(make_proxy: Any, tmp_path: Path) -> None:
    with FakeUpstream(responses_api=False) as chat_only:
        proxy = make_proxy(make_settings(tmp_path / "chat-only", chat_only))
        ((_, token),) = new_keys(proxy, "acme")
        chat_only.script(json_reply(chat_completion("ok", usage=USAGE)))
        assert proxy.client(token).responses.create(model="gpt-4o-mini", input="hi").usage
        events = list(proxy.client(token).responses.create(model="gpt-4o-mini", input="more",
                                                           stream=True))  # fmt: skip
        final = next(e for e in events if e.type == "response.completed").response
        assert final.usage is not None and final.usage.input_tokens > 0  # the chunk still served
        got = report(proxy, token)["total"]
        assert got["requests"] == 2
        assert got["prompt_tokens"] == 1200 + final.usage.input_tokens


def test_streams_can_be_left_unasked(make_proxy: Any, upstream: FakeUpstream) -> None:
    proxy = make_proxy(usage={"ask_stream_usage": False})
    ((_, token),) = new_keys(proxy, "acme")
    assert chat(proxy, token, stream=True).status_code == 200
    assert "stream_options" not in upstream.last.json  # the body went as the client sent it
    got = report(proxy, token)["total"]
    assert got["requests"] == 1 and got["total_tokens"] == 0  # counted, without tokens


def test_old_records_are_purged_and_reports_stay_scoped(proxy: Proxy) -> None:
    """The retention purge (run every 30 s by each replica) deletes by age only."""
    db = records_at(proxy.settings.data_dir)
    store = UsageStore(db)
    now = time.time()
    store.insert([
        UsageEvent("acme", None, "u", "chat", "gpt-4o-mini", "/v1/chat/completions", t, 10, 5)
        for t in (now - 500 * 86400, now - 450 * 86400, now - 10)
    ])  # fmt: skip
    assert store.purge(now - 400 * 86400, batch=1) == 2
    assert store.summary("acme", 0, now + 1, "model")[0]["requests"] == 1
    assert store.summary("globex", 0, now + 1, "model") == []
    db.close()
