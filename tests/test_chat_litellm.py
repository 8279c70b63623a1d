"""Non-OpenAI providers through the proxy: the OpenAI SDK talks to profilo, litellm talks
Anthropic's Messages API (replayed offline from hand-written cassettes), and what the client
gets back is OpenAI's shape, validated against OpenAI's schema."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
import vcr

from tests.conftest import Proxy
from tests.fakes.schema import validate_chunk, validate_error, validate_response
from tests.test_litellm_client import CASSETTES, _anthropic_headers, _json_body

CLAUDE = {
    "model_name": "claude",
    "litellm_params": {"model": "anthropic/claude-3-5-sonnet-20241022", "api_key": "sk-ant-test"},
}

# Loopback traffic (the SDK -> the proxy) is real; only the provider call is replayed.
_vcr = vcr.VCR(
    cassette_library_dir=str(CASSETTES),
    record_mode="none",
    ignore_localhost=True,
    match_on=("method", "scheme", "host", "port", "path", "query", "headers_", "json_body"),
)
_vcr.register_matcher("json_body", _json_body)
_vcr.register_matcher("headers_", _anthropic_headers)


@pytest.fixture
def claude_proxy(make_proxy: Any) -> Proxy:
    proxy: Proxy = make_proxy(model_list=[CLAUDE], upstream={"timeout": 60})
    return proxy


def test_anthropic_answer_in_openai_shape(claude_proxy: Proxy) -> None:
    with _vcr.use_cassette("anthropic_text.yaml") as cassette:
        raw = claude_proxy.client().chat.completions.with_raw_response.create(
            model="claude",
            messages=[
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Say hello to Ada."},
            ],
            temperature=0.2,
            max_tokens=64,
            user="u-42",
            extra_body={"features": {"memory": False}},
        )
        assert cassette.all_played
    body = json.loads(raw.http_response.content)
    validate_response(body)
    assert body["model"] == "claude"  # the public name, not the provider's
    assert body["choices"][0]["message"]["content"] == "Hello, Ada!"
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
        12,
        6,
        18,
    )
    assert raw.headers["x-profilo-request-id"].startswith("req_")


def test_anthropic_stream_in_openai_chunks(claude_proxy: Proxy) -> None:
    with _vcr.use_cassette("anthropic_text_stream.yaml") as cassette:
        r = httpx.post(
            claude_proxy.base_url + "/chat/completions",
            json={
                "model": "claude",
                "messages": [{"role": "user", "content": "Say hello."}],
                "max_tokens": 64,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
            timeout=60,
        )
        assert cassette.all_played
    assert r.status_code == 200
    data = [line[6:] for line in r.text.split("\n") if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    for c in chunks:
        validate_chunk(c)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


def test_anthropic_rate_limit_keeps_status_and_retry_after(claude_proxy: Proxy) -> None:
    with _vcr.use_cassette("anthropic_rate_limit.yaml", allow_playback_repeats=True):
        with pytest.raises(openai.RateLimitError) as info:
            claude_proxy.client().chat.completions.create(
                model="claude", messages=[{"role": "user", "content": "Say hello."}], max_tokens=64
            )
    validate_error(info.value.response.json())
    assert info.value.response.headers["retry-after"] == "17"
