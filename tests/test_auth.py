"""Auth modes: the loopback dev account, keys taking effect at once, refusal to start open."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from proxy.app import create_app
from proxy.config import Settings
from proxy.store.db import open_database
from proxy.store.keys import KeyStore
from tests.conftest import Proxy, open_handles
from tests.fakes.server import ServerStartError, ServerThread
from tests.fakes.upstream import FakeUpstream

MESSAGES = [{"role": "user", "content": "hi"}]


def _keys(proxy: Proxy) -> KeyStore:
    return KeyStore(open_database(proxy.settings))


def test_dev_account_serves_without_keys_on_loopback(proxy: Proxy) -> None:
    out = proxy.client(api_key="anything").chat.completions.create(model="m", messages=MESSAGES)
    assert out.choices[0].message.content
    r = httpx.post(proxy.base_url + "/chat/completions", json={"model": "m", "messages": MESSAGES})
    assert r.status_code == 200  # no Authorization header at all


def test_keys_take_effect_on_a_running_server(proxy: Proxy, upstream: FakeUpstream) -> None:
    keys = _keys(proxy)
    info, token = keys.create("acme")
    # once a key exists, no key / a wrong key is 401 -- without a restart
    for api_key in ("", "sk-wrong"):
        r = httpx.post(
            proxy.base_url + "/chat/completions",
            json={"model": "m", "messages": MESSAGES},
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
        )
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        proxy.client(api_key="sk-wrong").chat.completions.create(model="m", messages=MESSAGES)
    before = len(upstream.requests)
    assert proxy.client(api_key=token).chat.completions.create(model="m", messages=MESSAGES)
    assert len(upstream.requests) == before + 1
    assert keys.revoke(info.id)
    with pytest.raises(openai.AuthenticationError):
        proxy.client(api_key=token).chat.completions.create(model="m", messages=MESSAGES)
    assert len(upstream.requests) == before + 1


def test_health_needs_no_key(proxy: Proxy) -> None:
    _keys(proxy).create("acme")
    assert httpx.get(proxy.url + "/healthz").status_code == 200
    assert httpx.get(proxy.url + "/v1/models").status_code == 401


def test_non_loopback_bind_without_keys_refuses_to_start(tmp_path: Any) -> None:
    settings = Settings(data_dir=tmp_path, host="0.0.0.0")
    with pytest.raises(ServerStartError) as info:
        with ServerThread(create_app(settings)):
            pass
    assert "no API keys" in str(info.value) or "no API keys" in str(info.value.__cause__)
    assert open_handles(settings.db_path) == 0  # the refused start-up closed what it opened


def test_non_loopback_bind_with_a_key_starts(tmp_path: Any, upstream: FakeUpstream) -> None:
    settings = Settings(data_dir=tmp_path, host="0.0.0.0", upstream={"api_base": upstream.url})
    _, token = KeyStore(open_database(settings)).create("acme")
    with ServerThread(create_app(settings)) as server:
        r = httpx.post(
            server.url + "/v1/chat/completions",
            json={"model": "m", "messages": MESSAGES},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200
        r = httpx.post(
            server.url + "/v1/chat/completions", json={"model": "m", "messages": MESSAGES}
        )
        assert r.status_code == 401
