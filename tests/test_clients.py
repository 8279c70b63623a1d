"""Popular clients against the proxy, each the way its README recipe ("Clients and chat UIs")
uses it: the user's fact reaches the model's system prompt (what the fake upstream received)
and the answer comes back, as JSON and streamed. Python: openai, LangChain's ChatOpenAI,
LlamaIndex's OpenAILike, litellm as a client. JavaScript (tests/clients/node, installed by
`make test` with `npm ci`): openai-node, the Vercel AI SDK with @ai-sdk/openai and
@ai-sdk/openai-compatible."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.store.db import open_database
from proxy.store.keys import KeyStore
from tests.conftest import Proxy
from tests.fakes.upstream import FakeUpstream

NODE_DIR = Path(__file__).resolve().parent / "clients" / "node"
FEATURES = {"memory": True, "user_profile": True}
ANSWER = "Hello from fake upstream"  # the fake upstream's default reply


@pytest.fixture
def key(proxy: Proxy) -> str:
    token = KeyStore(open_database(proxy.settings)).create("acme")[1]
    r = httpx.patch(
        proxy.base_url + "/profile",
        params={"collection_id": "alice"},
        json={"favorite_food": "ramen", "name": "Alice"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200, r.text
    return token


def _prompts(upstream: FakeUpstream, path: str = "/v1/chat/completions") -> list[str]:
    """The system text of every request the upstream received on ``path``."""
    out = []
    for r in upstream.requests:
        if r.path != path or not isinstance(r.json, dict):
            continue
        if path.endswith("/responses"):
            out.append(str(r.json.get("instructions") or ""))
        else:
            first = r.json["messages"][0]
            out.append(str(first["content"]) if first["role"] in ("system", "developer") else "")
    return out


def _check(upstream: FakeUpstream, calls: int, path: str = "/v1/chat/completions") -> None:
    prompts = _prompts(upstream, path)
    assert len(prompts) == calls, prompts
    assert all("ramen" in p for p in prompts), prompts


def test_openai_python(proxy: Proxy, key: str, upstream: FakeUpstream) -> None:
    client = proxy.client(key)
    reply = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "What should I cook?"}],
        user="alice",
        extra_body={"features": FEATURES},
    )
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "What should I cook?"}],
        stream=True,
        extra_headers={"X-Collection-Id": "alice"},
        extra_body={"features": FEATURES},
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert reply.choices[0].message.content == ANSWER == text
    _check(upstream, 2)


def test_langchain_chat_openai(proxy: Proxy, key: str, upstream: FakeUpstream) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        model="gpt-4o-mini",
        base_url=proxy.base_url,
        api_key=key,
        max_retries=0,
        extra_body={"features": FEATURES, "collection_id": "alice"},
    )
    assert llm.invoke("What should I cook?").content == ANSWER
    assert "".join(str(c.content) for c in llm.stream("What should I cook?")) == ANSWER
    # or: the end user as a header, for a client built once for every user
    by_header = ChatOpenAI(
        model="gpt-4o-mini", base_url=proxy.base_url, api_key=key, max_retries=0,
        default_headers={"X-Collection-Id": "alice"}, extra_body={"features": FEATURES},
    )  # fmt: skip
    assert by_header.invoke("What should I cook?").content == ANSWER
    _check(upstream, 3)


def test_llamaindex_openai_like(proxy: Proxy, key: str, upstream: FakeUpstream) -> None:
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai_like import OpenAILike

    llm = OpenAILike(
        model="gpt-4o-mini",
        api_base=proxy.base_url,
        api_key=key,
        is_chat_model=True,
        max_retries=0,
        additional_kwargs={"user": "alice", "extra_body": {"features": FEATURES}},
    )
    messages = [ChatMessage(role="user", content="What should I cook?")]
    assert llm.chat(messages).message.content == ANSWER
    assert "".join(r.delta or "" for r in llm.stream_chat(messages)) == ANSWER
    _check(upstream, 2)


def test_litellm_as_a_client(proxy: Proxy, key: str, upstream: FakeUpstream) -> None:
    import litellm

    kwargs: dict[str, Any] = {
        "model": "openai/gpt-4o-mini",
        "api_base": proxy.base_url,
        "api_key": key,
        "messages": [{"role": "user", "content": "What should I cook?"}],
        "user": "alice",
        "extra_body": {"features": FEATURES},
    }
    assert litellm.completion(**kwargs).choices[0].message.content == ANSWER
    chunks = litellm.completion(**kwargs, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ANSWER
    _check(upstream, 2)


def _node(client: str, proxy: Proxy, key: str) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules").is_dir():
        pytest.skip("node or tests/clients/node/node_modules missing (make test runs npm ci)")
    env = {**os.environ, "PROFILO_URL": proxy.url, "PROFILO_KEY": key}
    done = subprocess.run(
        [node, "run.mjs", client], cwd=NODE_DIR, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_openai_node(proxy: Proxy, key: str, upstream: FakeUpstream) -> None:
    out = _node("openai", proxy, key)
    assert out == {"json": ANSWER, "stream": ANSWER}
    _check(upstream, 2)


def test_vercel_ai_sdk_openai(proxy: Proxy, key: str, upstream: FakeUpstream) -> None:
    # zero code in the app: the account turns memory on for every request
    r = httpx.put(
        proxy.base_url + "/config",
        json={"features": FEATURES},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 200, r.text
    out = _node("ai-sdk-openai", proxy, key)
    assert out["json"] == out["stream"] == ANSWER and out["responses"]
    _check(upstream, 2)
    _check(upstream, 1, "/v1/responses")


def test_vercel_ai_sdk_openai_compatible(proxy: Proxy, key: str, upstream: FakeUpstream) -> None:
    out = _node("ai-sdk-compatible", proxy, key)
    assert out == {"json": ANSWER, "stream": ANSWER}
    _check(upstream, 2)
