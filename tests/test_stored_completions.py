"""Stored chat completions (``store: true``) through the proxy with the openai SDK: create
(JSON and streamed), list with filters and pagination, retrieve, update metadata, delete,
messages; per account, never relayed; ``store`` absent: nothing stored."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionDeleted

from proxy.store.db import open_database
from proxy.store.keys import KeyStore
from tests.conftest import Proxy
from tests.fakes.schema import validate_error, validate_response
from tests.fakes.upstream import FakeUpstream

MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": [{"type": "text", "text": "hello there"}]},
]


def _rows(proxy: Proxy) -> int:
    with open_database(proxy.settings).read() as conn:
        return int(conn.execute("SELECT COUNT(*) FROM chat_completions").fetchone()[0])


def _keys(proxy: Proxy) -> tuple[openai.OpenAI, openai.OpenAI]:
    keys = KeyStore(open_database(proxy.settings))
    return proxy.client(keys.create("alpha")[1]), proxy.client(keys.create("beta")[1])


def test_create_retrieve_update_delete(proxy: Proxy, upstream: FakeUpstream) -> None:
    client, _ = _keys(proxy)
    made = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, store=True, metadata={"team": "red"}
    )
    assert upstream.last.json["store"] is True  # forwarded: OpenAI keeps its own copy too
    got = client.chat.completions.retrieve(made.id)
    assert isinstance(got, ChatCompletion) and got.id == made.id
    assert got.choices[0].message.content == made.choices[0].message.content
    assert got.metadata == {"team": "red"}
    validate_response(got.model_dump(exclude={"metadata"}, exclude_unset=True))

    updated = client.chat.completions.update(made.id, metadata={"team": "blue", "n": "1"})
    assert updated.metadata == {"team": "blue", "n": "1"}
    assert client.chat.completions.retrieve(made.id).metadata == {"team": "blue", "n": "1"}

    messages = client.chat.completions.messages.list(made.id)
    assert [m.id for m in messages.data] == [f"{made.id}-0", f"{made.id}-1"]
    assert messages.data[0].content == "be brief"
    assert messages.data[1].content == "hello there" and messages.data[1].content_parts

    deleted = client.chat.completions.delete(made.id)
    assert isinstance(deleted, ChatCompletionDeleted) and deleted.deleted and deleted.id == made.id
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(made.id)
    assert _rows(proxy) == 0


def test_streamed_completion_is_assembled_and_stored(proxy: Proxy) -> None:
    client, _ = _keys(proxy)
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, store=True, stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    got = client.chat.completions.retrieve(chunks[0].id)  # stored before [DONE] was relayed
    assert got.object == "chat.completion" and got.choices[0].message.content == text
    assert got.choices[0].finish_reason == "stop"


def test_not_stored_without_store(proxy: Proxy) -> None:
    client, _ = _keys(proxy)
    made = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, store=False)
    assert _rows(proxy) == 0
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(made.id)
    assert client.chat.completions.list().data == []


def test_list_filters_and_pagination(proxy: Proxy, upstream: FakeUpstream) -> None:
    client, _ = _keys(proxy)
    ids = []
    for i in range(5):
        model = "gpt-4o" if i % 2 else "gpt-4o-mini"
        made = client.chat.completions.create(
            model=model, messages=MESSAGES, store=True, metadata={"i": str(i), "odd": str(i % 2)}
        )
        ids.append(made.id)
    page = client.chat.completions.list(limit=2)
    assert [c.id for c in page.data] == ids[:2] and page.has_more
    assert [c.id for c in client.chat.completions.list()] == ids  # the SDK follows `after`
    desc = client.chat.completions.list(order="desc", limit=10)
    assert [c.id for c in desc.data] == ids[::-1] and not desc.has_more
    assert [c.id for c in client.chat.completions.list(model="gpt-4o")] == [ids[1], ids[3]]
    odd = client.chat.completions.list(metadata={"odd": "1"})
    assert [c.id for c in odd] == [ids[1], ids[3]]
    assert [c.id for c in client.chat.completions.list(metadata={"i": "4", "odd": "0"})] == [ids[4]]
    assert not [r for r in upstream.requests if r.method != "POST"]  # served here, not relayed


def test_another_accounts_ids_are_404_and_never_relayed(
    proxy: Proxy, upstream: FakeUpstream
) -> None:
    alpha, beta = _keys(proxy)
    made = alpha.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, store=True)
    before = len(upstream.requests)
    with pytest.raises(openai.NotFoundError):
        beta.chat.completions.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        beta.chat.completions.update(made.id, metadata={"x": "y"})
    with pytest.raises(openai.NotFoundError):
        beta.chat.completions.messages.list(made.id)
    with pytest.raises(openai.NotFoundError):
        beta.chat.completions.delete(made.id)
    assert beta.chat.completions.list().data == []
    assert len(upstream.requests) == before
    assert alpha.chat.completions.retrieve(made.id).metadata == {}  # untouched


@pytest.mark.parametrize(
    "body",
    [
        {"metadata": {f"k{i}": "v" for i in range(17)}},
        {"metadata": {"k": "v" * 513}},
        {"metadata": {"k" * 65: "v"}},
        {"metadata": {"k": 1}},
        {"metadata": "x"},
        {"model": "other"},
        {},
    ],
)
def test_bad_metadata_is_400_and_changes_nothing(proxy: Proxy, body: dict[str, Any]) -> None:
    client, _ = _keys(proxy)
    made = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, store=True, metadata={"keep": "me"}
    )
    token = client.api_key
    r = httpx.post(
        f"{proxy.base_url}/chat/completions/{made.id}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 400, r.text
    validate_error(r.json())
    assert client.chat.completions.retrieve(made.id).metadata == {"keep": "me"}


def test_bad_list_params_are_400(proxy: Proxy) -> None:
    client, _ = _keys(proxy)
    for params in ({"limit": "0"}, {"limit": "x"}, {"order": "up"}):
        r = httpx.get(
            proxy.base_url + "/chat/completions",
            params=params,
            headers={"Authorization": f"Bearer {client.api_key}"},
        )
        assert r.status_code == 400 and r.json()["error"]["param"] in ("limit", "order")
