"""proxy.client against the proxy under uvicorn: the async client, the Hebbrix-style methods
(profile get/patch with dry run, facts CRUD, dialectic sessions) and error mapping."""

from __future__ import annotations

import pytest

from proxy.client import AsyncProfiloClient, ProfiloClient, ProfiloError
from proxy.store.db import open_database
from proxy.store.keys import KeyStore
from tests.conftest import Proxy
from tests.fakes.upstream import FakeUpstream, chat_completion, json_reply


@pytest.fixture
def token(proxy: Proxy) -> str:
    return KeyStore(open_database(proxy.settings)).create("acme")[1]


def test_profile_patch_dry_run_then_apply(proxy: Proxy, token: str) -> None:
    client = ProfiloClient(url_endpoint=proxy.url, api_key=token)
    preview = client.patch_profile({"role": "Florist", "timezone": "UTC"}, "u1", dry_run=True)
    assert preview.status == "preview" and preview["would_create"] == 2
    assert client.get_profile("u1").fact_count == 0  # the preview wrote nothing
    done = client.patch_profile({"role": "Florist", "timezone": "UTC"}, "u1")
    assert done.status == "success" and done["created"] == 2
    profile = client.get_profile("u1")
    assert profile.timezone == "UTC" and [f.value for f in profile.profile.static] == ["Florist"]
    assert client.get_profile("u2").fact_count == 0


def test_facts_crud(proxy: Proxy, token: str) -> None:
    client = ProfiloClient(url_endpoint=proxy.url, api_key=token)
    fact = client.create_fact("favorite_food", "ramen", "u1", kind="dynamic", metadata={"a": 1})
    assert fact.kind == "dynamic" and fact.content == "favorite food: ramen"
    updated = client.update_fact(fact.id, "u1", value="udon")
    assert updated.value == "udon" and client.get_fact(fact.id, "u1").value == "udon"
    page = client.list_facts("u1", kind="dynamic")
    assert [f.id for f in page.facts] == [fact.id] and not page.has_more
    with pytest.raises(ProfiloError) as err:
        client.get_fact(fact.id, "u2")  # another user's fact
    assert err.value.status == 404 and err.value.param == "fact_id"
    with pytest.raises(ProfiloError) as err:
        client.create_fact("favorite_food", "soba", "u1")
    assert err.value.status == 409 and err.value.code == "fact_exists"
    assert client.delete_fact(fact.id, "u1").deleted
    assert client.list_facts("u1").facts == []


def test_dialectic_session_continuity(proxy: Proxy, token: str, upstream: FakeUpstream) -> None:
    client = ProfiloClient(url_endpoint=proxy.url, api_key=token)
    client.patch_profile({"expertise": "distributed databases"}, "u1")
    upstream.script(
        json_reply(chat_completion("They work on databases.")),
        json_reply(chat_completion("Mostly consensus protocols.")),
    )
    session = client.dialectic_session("u1")
    first = session.ask("What does this user work on?")
    assert first.assistant_message == "They work on databases."
    second = session.ask("Which part of it?")
    assert second.session_id == first.session_id == session.session_id
    sent = upstream.last.json["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[1]["content"] == "What does this user work on?"
    assert sent[2]["content"] == "They work on databases."


async def test_async_client_reflexio_methods(proxy: Proxy, token: str) -> None:
    async with AsyncProfiloClient(url_endpoint=proxy.url, api_key=token) as client:
        fact = await client.create_fact("laptop", "lightweight, for programming", "alice")
        found = await client.search_user_profiles(user_id="alice", query="laptop", threshold=0.3)
        assert [p.profile_id for p in found.user_profiles] == [fact.id]
        log = await client.get_profile_change_log()
        assert log.profile_change_logs[-1].added_profiles[0].profile_id == fact.id
        config = await client.get_config()
        config.profile_extractor_config = {"context_prompt": "support chats"}
        assert (await client.set_config(config))["success"]
        assert (
            await client.get_config()
        ).profile_extractor_config.context_prompt == "support chats"
        gone = await client.delete_profile(user_id="alice", profile_id=fact.id)
        assert gone.success and (await client.get_profiles(user_id="alice")).user_profiles == []
        missing = await client.delete_profile(user_id="alice", profile_id=fact.id)
        assert not missing.success and fact.id in missing.message
        session = client.dialectic_session("alice")
        answer = await session.ask("Anything known?")
        assert answer.session_id == session.session_id


def test_errors_and_typed_config(proxy: Proxy, token: str) -> None:
    client = ProfiloClient(url_endpoint=proxy.url, api_key=token)
    with pytest.raises(ProfiloError) as err:
        client.search_user_profiles(user_id="u", query="x", threshold=3)
    assert err.value.status == 400 and err.value.type == "invalid_request_error"
    config = client.get_config()
    with pytest.raises(ValueError):
        config.profile_extractor_config = {"context_prompt": 5}  # validated on assignment
    bad = ProfiloClient(url_endpoint=proxy.url, api_key="pk-nope")
    with pytest.raises(ProfiloError) as err:
        bad.get_config()
    assert err.value.status == 401
