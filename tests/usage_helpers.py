"""Helpers of the usage and limits tests: keys, the report, a clock the tests move."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from proxy.store.db import open_database
from proxy.store.keys import KeyStore
from tests.conftest import Proxy, make_settings
from tests.fakes.upstream import FakeUpstream

ADMIN_KEY = "admin-secret-for-tests"
#: gpt-4o-mini in litellm's cost map (USD per token): input, output
MINI_PRICE = (1.5e-07, 6e-07)


class FakeClock:
    """The limits' clock: set by the test, never read from the wall."""

    def __init__(self, now: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def limited(
    make_proxy: Callable[..., Proxy],
    upstream: FakeUpstream,
    clock: FakeClock,
    data_dir: Path,
    **overrides: Any,
) -> Proxy:
    """A proxy with the admin API on, limits read on every request and ``clock`` for its
    windows. Replicas (Postgres) share the records database, each with its own data dir (its
    embedded index)."""
    usage = {"admin_key": ADMIN_KEY, "limits_refresh_seconds": 0} | overrides.pop("usage", {})
    return make_proxy(make_settings(data_dir, upstream, usage=usage, **overrides), clock=clock)


def new_keys(proxy: Proxy, *accounts: str) -> list[tuple[str, str]]:
    """(key id, token) per account."""
    keys = KeyStore(open_database(proxy.settings))
    out = []
    for account in accounts:
        info, token = keys.create(account)
        out.append((info.id, token))
    return out


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def report(proxy: Proxy, token: str, **params: Any) -> dict[str, Any]:
    r = httpx.get(proxy.base_url + "/usage", params=params, headers=bearer(token), timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def set_limits(
    proxy: Proxy, account: str, key_id: str | None = None, token: str = ADMIN_KEY, **limits: Any
) -> httpx.Response:
    params = {"key_id": key_id} if key_id else {}
    return httpx.put(
        f"{proxy.url}/admin/limits/{account}",
        json=limits,
        params=params,
        headers=bearer(token),
        timeout=30,
    )


def chat(proxy: Proxy, token: str, content: str = "hello", **extra: Any) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}
    return httpx.post(
        proxy.base_url + "/chat/completions", json=body, headers=bearer(token), timeout=30
    )
