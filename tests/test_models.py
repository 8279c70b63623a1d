"""GET /v1/models and /v1/models/{id}: model_list entries + the upstream's own list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import make_settings
from tests.fakes.upstream import FakeUpstream, error_reply, json_reply

CLAUDE = {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-3-5-haiku"}}


def _ids(proxy: Any) -> list[str]:
    return [m.id for m in proxy.client().models.list().data]


def test_upstream_models_listed_without_model_list(make_proxy: Any, upstream: FakeUpstream) -> None:
    proxy = make_proxy()  # only upstream.api_base set: the upstream's models, not []
    listed = proxy.client().models.list()
    assert [m.id for m in listed.data] == ["gpt-4o-mini", "gpt-4o"]
    assert all(m.owned_by == "fake" and m.object == "model" for m in listed.data)
    assert upstream.last.path == "/v1/models"
    assert upstream.last.headers["authorization"] == "Bearer sk-upstream-secret"
    # the SDK's retrieve agrees with the list, answered from it
    assert proxy.client().models.retrieve("gpt-4o").id == "gpt-4o"
    assert [r.path for r in upstream.requests] == ["/v1/models"]  # cached: one fetch


def test_union_each_id_once_configured_name_wins(make_proxy: Any, upstream: FakeUpstream) -> None:
    same_name = {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o-2024-08-06"}}
    proxy = make_proxy(model_list=[CLAUDE, same_name])
    data = proxy.client().models.list().data
    assert [m.id for m in data] == ["claude", "gpt-4o", "gpt-4o-mini"]
    assert {m.id: m.owned_by for m in data}["gpt-4o"] == "profilo"  # the configured entry


def test_list_is_cached_for_the_ttl(make_proxy: Any, upstream: FakeUpstream) -> None:
    proxy = make_proxy()
    for _ in range(3):
        assert _ids(proxy) == ["gpt-4o-mini", "gpt-4o"]
    assert [r.path for r in upstream.requests] == ["/v1/models"]

    upstream.clear()
    upstream.models.append("gpt-5")
    fresh = make_proxy(
        make_settings(
            Path(proxy.settings.data_dir).parent / "d2",
            upstream,
            upstream={"api_base": upstream.url, "models_ttl_seconds": 0},
        )
    )
    assert _ids(fresh)[-1] == "gpt-5"
    assert _ids(fresh)[-1] == "gpt-5"
    assert [r.path for r in upstream.requests] == ["/v1/models", "/v1/models"]  # TTL 0: refetch


def test_upstream_down_keeps_configured_entries(make_proxy: Any, tmp_path: Path) -> None:
    down = {"api_base": "http://127.0.0.1:9/v1", "connect_timeout": 2}
    proxy = make_proxy(make_settings(tmp_path / "d", None, model_list=[CLAUDE], upstream=down))
    assert _ids(proxy) == ["claude"]  # no 5xx: what is configured is still listed
    assert proxy.client().models.retrieve("claude").id == "claude"


@pytest.mark.parametrize(
    "reply",
    [
        error_reply(500, "boom"),
        json_reply({"unexpected": True}),
        json_reply({"object": "list", "data": [{"no_id": 1}, "x", {"id": "ok-model"}]}),
    ],
    ids=["500", "no-data", "junk-items"],
)
def test_bad_upstream_list_answers(make_proxy: Any, upstream: FakeUpstream, reply: Any) -> None:
    upstream.script(reply)
    proxy = make_proxy(model_list=[CLAUDE])
    ids = _ids(proxy)
    assert ids[0] == "claude" and set(ids) <= {"claude", "ok-model"}


def test_failed_fetch_is_retried_after_the_retry_delay(
    make_proxy: Any, upstream: FakeUpstream
) -> None:
    upstream.script(error_reply(503, "warming up"))
    proxy = make_proxy(upstream={"api_base": upstream.url, "models_retry_seconds": 0})
    assert _ids(proxy) == []
    assert _ids(proxy) == ["gpt-4o-mini", "gpt-4o"]  # the next list asks again


def test_retrieve_unknown_and_not_listed(make_proxy: Any, upstream: FakeUpstream) -> None:
    proxy = make_proxy(model_list=[CLAUDE])
    client = proxy.client()
    assert client.models.retrieve("claude").owned_by == "profilo"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("no-such-model")
    assert info.value.code == "model_not_found"
    # an id with a slash is answered from the list, never relayed as a path
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("org/some-model")
    assert all(r.path in ("/v1/models", "/v1/models/no-such-model") for r in upstream.requests)


def test_model_list_names_with_a_slash(make_proxy: Any, upstream: FakeUpstream) -> None:
    entry = {"model_name": "meta-llama/Llama-3-8b", "litellm_params": {"model": "openai/llama"}}
    proxy = make_proxy(model_list=[entry])
    assert proxy.client().models.retrieve("meta-llama/Llama-3-8b").id == "meta-llama/Llama-3-8b"
