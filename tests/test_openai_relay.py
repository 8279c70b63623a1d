"""Embeddings, legacy completions, moderations and models by id through the proxy."""

from __future__ import annotations

import base64
import struct
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from proxy.llm.litellm_embed import encode
from tests.conftest import UPSTREAM_KEY, Proxy, make_settings
from tests.fakes.upstream import DEFAULT_CONTENT, FakeUpstream, embedding_vector, error_reply


def test_embeddings_float_and_base64(proxy: Proxy, upstream: FakeUpstream) -> None:
    client = proxy.client()
    # the SDK asks for base64 by default and decodes it itself
    out = client.embeddings.create(model="text-embedding-3-small", input=["red", "blue"])
    assert upstream.last.json["encoding_format"] == "base64"
    assert upstream.last.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert [d.embedding for d in out.data] == [embedding_vector("red"), embedding_vector("blue")]
    floats = client.embeddings.create(
        model="text-embedding-3-small", input="red", encoding_format="float"
    )
    assert upstream.last.json["encoding_format"] == "float"
    assert floats.data[0].embedding == embedding_vector("red")
    raw = httpx.post(
        proxy.base_url + "/embeddings",
        json={"model": "text-embedding-3-small", "input": "red", "encoding_format": "base64"},
        timeout=30,
    ).json()
    assert isinstance(raw["data"][0]["embedding"], str)  # relayed as the upstream sent it


def test_embeddings_bad_request(proxy: Proxy, upstream: FakeUpstream) -> None:
    r = httpx.post(proxy.base_url + "/embeddings", json={"model": "m"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"
    assert not upstream.requests


def test_litellm_embedding_encoding() -> None:
    vector = [0.25, -1.5, 3.0]
    packed = base64.b64decode(str(encode(vector, "base64")))
    assert list(struct.unpack("<3f", packed)) == vector
    assert encode(vector, None) == vector


def test_models_by_id(make_proxy: Any, upstream: FakeUpstream) -> None:
    entry = {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-3-5-haiku"}}
    proxy = make_proxy(model_list=[entry])
    client = proxy.client()
    assert client.models.retrieve("claude").id == "claude"  # configured: answered here
    assert not upstream.requests
    assert client.models.retrieve("gpt-4o").owned_by == "fake"  # others: the upstream's list
    assert [r.path for r in upstream.requests] == ["/v1/models"]
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("no-such-model")
    assert info.value.code == "model_not_found"


def test_legacy_completions(proxy: Proxy, upstream: FakeUpstream) -> None:
    out = proxy.client().completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi")
    assert out.choices[0].text == DEFAULT_CONTENT
    assert upstream.last.path == "/v1/completions"
    assert upstream.last.json == {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi"}


def test_legacy_completions_stream_is_relayed(proxy: Proxy, upstream: FakeUpstream) -> None:
    from tests.fakes.upstream import sse_reply

    piece = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1,
        "model": "gpt-3.5-turbo-instruct",
        "choices": [{"index": 0, "text": "Hi", "logprobs": None, "finish_reason": None}],
    }
    upstream.script(sse_reply([piece, piece]))
    stream = proxy.client().completions.create(
        model="gpt-3.5-turbo-instruct", prompt="Say hi", stream=True
    )
    assert "".join(c.choices[0].text for c in stream) == "HiHi"


def test_moderations(proxy: Proxy, upstream: FakeUpstream) -> None:
    out = proxy.client().moderations.create(input=["hello", "I will kill it"])
    assert [r.flagged for r in out.results] == [False, True]
    assert upstream.last.json["model"] == "omni-moderation-latest"


def test_endpoints_an_upstream_lacks(make_proxy: Any, tmp_path: Path) -> None:
    entry = {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-3-5-haiku"}}
    with FakeUpstream() as up:
        up.script(error_reply(404, "Not Found", code=None), error_reply(404, "Not Found"))
        proxy = make_proxy(make_settings(tmp_path / "d", up, model_list=[entry]))
        client = proxy.client()
        with pytest.raises(openai.NotFoundError) as info:
            client.completions.create(model="gpt-4o-mini", prompt="hi")
        assert info.value.code == "unsupported_endpoint"
        assert "does not serve it" in info.value.message
        with pytest.raises(openai.NotFoundError) as info:
            client.moderations.create(input="hi", model="omni-moderation-latest")
        assert info.value.code == "unsupported_endpoint"
        seen = len(up.requests)
        with pytest.raises(openai.NotFoundError) as info:  # litellm route: said at once
            client.completions.create(model="claude", prompt="hi")
        assert "/v1/chat/completions" in info.value.message
        assert len(up.requests) == seen
