"""The OpenAI Agents SDK's ``Runner`` against the proxy (the Responses API), with a tool."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)

from proxy.store.db import open_database
from tests.conftest import Proxy
from tests.fakes.upstream import (
    DEFAULT_CONTENT,
    FakeUpstream,
    chat_completion,
    json_reply,
    tool_call,
)
from tests.test_memory_chat import ALICE, patch


@pytest.fixture(autouse=True)
def no_tracing() -> Iterator[None]:
    set_tracing_disabled(True)  # the SDK would otherwise export traces to api.openai.com
    yield


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def test_runner_through_the_pass_through(proxy: Proxy, upstream: FakeUpstream) -> None:
    model = OpenAIResponsesModel(model="gpt-4o-mini", openai_client=proxy.async_client())
    result = Runner.run_sync(Agent(name="a", instructions="Be brief.", model=model), "Say hello")
    assert result.final_output == DEFAULT_CONTENT
    assert upstream.last.path == "/v1/responses"
    assert upstream.last.json["instructions"] == "Be brief."


def test_runner_with_a_tool_through_the_bridge_with_memory(
    make_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    proxy = make_proxy(upstream={"api_base": upstream.url, "responses_api": False})
    patch(proxy, ALICE, "alice")
    upstream.script(
        json_reply(chat_completion(None, tool_calls=[tool_call("get_weather", {"city": "Paris"})])),
        json_reply(chat_completion("It is sunny in Paris.")),
    )
    # zero code change in the agent: a header on the client, features in extra_body
    client = proxy.async_client(default_headers={"X-Collection-Id": "alice"})
    helper = Agent(
        name="helper",
        instructions="Be brief.",
        model=OpenAIResponsesModel(model="gpt-4o-mini", openai_client=client),
        model_settings=ModelSettings(extra_body={"features": {"user_profile": True}}),
        tools=[get_weather],
    )
    result = Runner.run_sync(helper, "What's the weather where I live?")
    assert result.final_output == "It is sunny in Paris."
    first, second = upstream.requests
    assert first.json["tools"][0]["function"]["name"] == "get_weather"
    for sent in (first, second):
        system = sent.json["messages"][0]
        assert system["role"] == "system"
        assert system["content"].startswith("Be brief.\n\n<user_memory>")
        assert "Alice Martin" in system["content"]
    messages = second.json["messages"]
    assert messages[-1] == {
        "role": "tool",
        "tool_call_id": messages[-2]["tool_calls"][0]["id"],
        "content": "sunny in Paris",
    }
    assert messages[1] == {"role": "user", "content": "What's the weather where I live?"}
    # one learning job: the turn with the user's words (the tool-result turn adds none)
    with open_database(proxy.settings).read() as conn:
        rows = conn.execute("SELECT collection_id, payload FROM jobs WHERE account = 'dev'")
        jobs = [(r[0], json.loads(r[1])) for r in rows]
    assert len(jobs) == 1 and jobs[0][0] == "alice"
    assert jobs[0][1]["messages"][0] == {
        "role": "user",
        "content": "What's the weather where I live?",
    }
