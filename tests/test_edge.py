"""What the proxy decides from a request's head: CORS, the dev account's Host / Origin guard,
authentication before the body is read, body size and time limits, the head timeout."""

from __future__ import annotations

import base64
import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx

from proxy.app import create_app
from proxy.server import protocol
from proxy.store.db import Database
from proxy.store.keys import KeyStore
from tests.conftest import Proxy, make_settings
from tests.fakes.schema import validate_error
from tests.fakes.server import ServerThread
from tests.fakes.upstream import FakeUpstream

APP = "http://127.0.0.1:5173"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def _key(proxy: Proxy, account: str = "acme") -> str:
    return KeyStore(Database(proxy.settings.db_path)).create(account)[1]


def _raw(url: str, head: bytes, body: bytes = b"", wait: float = 20.0) -> bytes:
    """Send ``head`` (+ ``body``) on a raw socket, return what the server answers."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.find(b"\r\n\r\n") + 4:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


# -- CORS ---------------------------------------------------------------------------------------


def test_preflight_for_an_allowed_origin(make_proxy: Any) -> None:
    proxy = make_proxy(cors={"allow_origins": [APP]})
    for path in ("/v1/chat/completions", "/v1/profile", "/v1/models", "/api/search_profiles"):
        r = httpx.options(
            proxy.url + path,
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type,x-collection-id,"
                "x-stainless-os,x-stainless-lang",
            },
        )
        assert r.status_code == 204, (path, r.text)
        assert r.headers["access-control-allow-origin"] == APP
        assert "POST" in r.headers["access-control-allow-methods"]
        allowed = r.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "x-collection-id" in allowed
        assert "x-stainless-os" in allowed
        assert r.headers["vary"] == "Origin"


def test_preflight_of_another_origin_is_refused(make_proxy: Any) -> None:
    proxy = make_proxy(cors={"allow_origins": [APP]})
    r = httpx.options(
        proxy.url + "/v1/chat/completions",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    validate_error(r.json())
    assert r.json()["error"]["code"] == "origin_not_allowed"


def test_no_cors_by_default(proxy: Proxy) -> None:
    r = httpx.options(
        proxy.url + "/v1/chat/completions",
        headers={"Origin": APP, "Access-Control-Request-Method": "POST"},
    )
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers


def test_allowed_origin_reads_replies_and_profilo_headers(make_proxy: Any) -> None:
    proxy = make_proxy(cors={"allow_origins": [APP]})
    token = _key(proxy)
    auth = {"Authorization": f"Bearer {token}", "Origin": APP}
    r = httpx.post(proxy.base_url + "/chat/completions", json=CHAT, headers=auth, timeout=30)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == APP
    assert "X-Profilo-Request-Id" in r.headers["access-control-expose-headers"]
    # errors carry it too (a page can read why it failed)
    bad = httpx.post(proxy.base_url + "/chat/completions", json={}, headers=auth, timeout=30)
    assert bad.status_code == 400 and bad.headers["access-control-allow-origin"] == APP
    other = httpx.post(
        proxy.base_url + "/chat/completions",
        json=CHAT,
        headers={**auth, "Origin": "http://evil.example"},
        timeout=30,
    )
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers


def test_wildcard_origin(make_proxy: Any) -> None:
    proxy = make_proxy(cors={"allow_origins": ["*"]})
    r = httpx.get(
        proxy.base_url + "/models",
        headers={"Origin": "https://any.example", "Authorization": f"Bearer {_key(proxy)}"},
    )
    assert r.headers["access-control-allow-origin"] == "https://any.example"


# -- the dev account: loopback Host, no cross-origin page -------------------------------------


def test_dev_account_refuses_a_foreign_host(proxy: Proxy) -> None:
    """DNS rebinding: a page on attacker.example whose name now points at 127.0.0.1."""
    r = httpx.get(proxy.base_url + "/profile", headers={"Host": "attacker.example:8080"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "host_not_allowed"
    for host in ("localhost:8080", "127.0.0.1", "[::1]:9"):
        assert httpx.get(proxy.base_url + "/profile", headers={"Host": host}).status_code == 200


def test_dev_account_refuses_cross_origin_simple_requests(
    proxy: Proxy, upstream: FakeUpstream
) -> None:
    r = httpx.post(
        proxy.base_url + "/chat/completions",
        content=json.dumps(CHAT),
        headers={"Content-Type": "text/plain", "Origin": "http://evil.example"},
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "origin_not_allowed"
    assert not upstream.requests  # refused before anything was read or relayed
    same = httpx.post(
        proxy.base_url + "/chat/completions", json=CHAT, headers={"Origin": proxy.url}, timeout=30
    )
    assert same.status_code == 200  # the proxy's own pages (/ui) are same-origin


def test_keyed_accounts_are_served_under_any_host(make_proxy: Any) -> None:
    proxy = make_proxy()
    token = _key(proxy)
    r = httpx.get(
        proxy.base_url + "/profile",
        headers={"Host": "proxy.internal", "Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200


# -- authentication before the body --------------------------------------------------------------


def test_anonymous_invalid_json_is_401_not_400(make_proxy: Any) -> None:
    proxy = make_proxy()
    _key(proxy)
    r = httpx.post(proxy.base_url + "/chat/completions", content=b"{not json")
    assert r.status_code == 401


def test_anonymous_body_is_never_read(make_proxy: Any) -> None:
    """Headers announce 8 MB and no body byte is sent: the 401 comes at once (a server that
    read the body first would wait for it until the socket timeout)."""
    proxy = make_proxy()
    _key(proxy)
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 8000000\r\n\r\n"
    )
    answer = _raw(proxy.url, head)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


# -- body size and time ---------------------------------------------------------------------------


def test_a_12_mib_image_is_accepted_and_relayed_intact(
    proxy: Proxy, upstream: FakeUpstream
) -> None:
    image = base64.b64encode(bytes(range(256)) * (9 * 1024 * 1024 // 256)).decode()
    url = "data:image/png;base64," + image
    assert len(url) > 12 * 1024 * 1024
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]
    out = proxy.client().chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert out.choices[0].message.content
    assert upstream.last.json["messages"][0]["content"][1]["image_url"]["url"] == url


def test_over_the_limit_is_413_with_and_without_content_length(make_proxy: Any) -> None:
    proxy = make_proxy(max_body_bytes=64 * 1024)
    big = json.dumps({**CHAT, "pad": "x" * 100_000}).encode()
    r = httpx.post(proxy.base_url + "/chat/completions", content=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

    def chunks() -> Any:
        yield big[:50_000]
        yield big[50_000:]

    r = httpx.post(proxy.base_url + "/chat/completions", content=chunks())
    assert r.status_code == 413


def test_a_body_that_never_finishes_is_408(make_proxy: Any) -> None:
    proxy = make_proxy(server={"body_timeout_seconds": 0.5})
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    answer = _raw(proxy.url, head, b'{"model": ')
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


def test_a_head_that_never_finishes_is_closed(tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = make_settings(tmp_path / "d", upstream)
    with ServerThread(create_app(settings), http=protocol(0.5)) as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=20) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            started = time.monotonic()
            assert sock.recv(1024) == b""  # closed by the server, no answer
            assert time.monotonic() - started < 15  # not the socket's own timeout
        # a complete request on a new connection is served as usual
        assert httpx.get(server.url + "/healthz").status_code == 200
