"""The Responses API for a litellm route (Anthropic, replayed offline from the hand-written
cassettes of tests/test_chat_litellm.py): the bridge's chat request is exactly what a chat
client would send, and the answer comes back as a Responses API object / typed events."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from openai.types.responses import Response

from tests.conftest import Proxy
from tests.responses_helpers import validate_event
from tests.test_chat_litellm import CLAUDE, _vcr
from tests.test_litellm_client import WEATHER_TOOL


@pytest.fixture
def claude_proxy(make_proxy: Any) -> Proxy:
    proxy: Proxy = make_proxy(model_list=[CLAUDE], upstream={"timeout": 60})
    return proxy


def test_anthropic_answer_as_a_response(claude_proxy: Proxy) -> None:
    with _vcr.use_cassette("anthropic_text.yaml") as cassette:
        out = claude_proxy.client().responses.create(
            model="claude",
            instructions="You are terse.",
            input="Say hello to Ada.",
            temperature=0.2,
            max_output_tokens=64,
            user="u-42",
        )
        assert cassette.all_played
    assert out.output_text == "Hello, Ada!" and out.model == "claude"
    assert out.usage is not None
    assert (out.usage.input_tokens, out.usage.output_tokens) == (12, 6)
    stored = httpx.get(claude_proxy.base_url + f"/responses/{out.id}", timeout=30).json()
    assert Response.model_validate(stored).output_text == "Hello, Ada!"


def test_anthropic_tool_stream_as_response_events(claude_proxy: Proxy) -> None:
    function = WEATHER_TOOL["function"]
    tool = {"type": "function", **function}
    body = {
        "model": "claude",
        "input": "What's the weather in San Francisco?",
        "tools": [tool],
        "tool_choice": "auto",
        "max_output_tokens": 256,
        "stream": True,
    }
    with _vcr.use_cassette("anthropic_tool_use_stream.yaml") as cassette:
        with httpx.stream("POST", claude_proxy.base_url + "/responses", json=body, timeout=60) as r:
            text = r.read().decode()
        assert cassette.all_played
    events = [json.loads(b.split("data: ", 1)[1]) for b in text.split("\n\n") if b.strip()]
    for event in events:
        validate_event(event)
    assert events[-1]["type"] == "response.completed"
    output = events[-1]["response"]["output"]
    assert [o["type"] for o in output] == ["message", "function_call"]
    assert output[0]["content"][0]["text"] == "Let me check."
    call = output[1]
    assert call["name"] == "get_weather" and call["call_id"] == "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
    assert json.loads(call["arguments"]) == {"location": "San Francisco, CA"}
