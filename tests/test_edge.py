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
from proxy.server import protocol, uvicorn_options
from proxy.store.db import open_database
from proxy.store.keys import KeyStore
from tests.conftest import Proxy, make_settings
from tests.fakes.schema import validate_error
from tests.fakes.server import ServerThread
from tests.fakes.upstream import FakeUpstream

APP = "http://127.0.0.1:5173"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def _key(proxy: Proxy, account: str = "acme") -> str:
    return KeyStore(open_database(proxy.settings)).create(account)[1]


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
        assert "Origin" in [v.strip() for v in r.headers["vary"].split(",")]


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


# -- gaps closed after the first version (each failed before its fix) ----------------------------


def test_every_profilo_header_a_response_carries_is_exposed(make_proxy: Any) -> None:
    """The exposed list follows the response (a fixed list missed X-Profilo-Learning-Reason)."""
    proxy = make_proxy(
        cors={"allow_origins": [APP]},
        learning={"run_worker": False, "max_queued_jobs_per_account": 1},
    )
    auth = {"Authorization": f"Bearer {_key(proxy)}", "Origin": APP, "X-Collection-Id": "alice"}
    body = {**CHAT, "features": {"memory": True}}
    seen: set[str] = set()
    for _ in range(2):  # the second chat's learning is skipped: a reason header
        r = httpx.post(proxy.base_url + "/chat/completions", json=body, headers=auth, timeout=30)
        assert r.status_code == 200, r.text
        exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
        ours = {name for name in r.headers if name.startswith("x-profilo-")}
        assert ours <= exposed, ours - exposed
        seen |= ours
    assert "x-profilo-learning-reason" in seen


def test_vary_origin_whenever_cors_is_configured(make_proxy: Any) -> None:
    """A cache must not hand one origin's answer (with or without CORS headers) to another."""
    proxy = make_proxy(cors={"allow_origins": [APP]})
    auth = {"Authorization": f"Bearer {_key(proxy)}"}
    for origin in ("http://evil.example", None):
        headers = {**auth, **({"Origin": origin} if origin else {})}
        r = httpx.get(proxy.base_url + "/models", headers=headers)
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        assert "origin" in r.headers.get("vary", "").lower()
    pre = httpx.options(
        proxy.url + "/v1/chat/completions",
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert pre.status_code == 204
    vary = {v.strip().lower() for v in pre.headers["vary"].split(",")}
    assert {"origin", "access-control-request-headers"} <= vary  # the allow list echoes it


def test_dev_account_refuses_a_foreign_host_on_every_route(proxy: Proxy) -> None:
    """Not only /v1 and /api: metrics, the inspector page, the OpenAPI document, health."""
    for path in ("/metrics", "/ui", "/openapi.json", "/healthz", "/v1/models"):
        r = httpx.get(proxy.url + path, headers={"Host": "attacker.example:8080"})
        assert r.status_code == 403, (path, r.status_code)
        validate_error(r.json())
        assert r.json()["error"]["code"] == "host_not_allowed"
        assert httpx.get(proxy.url + path, headers={"Host": "localhost:8080"}).status_code == 200


def test_keyed_mode_serves_public_routes_under_any_host(make_proxy: Any) -> None:
    proxy = make_proxy()
    _key(proxy)
    for path in ("/healthz", "/metrics", "/ui"):
        assert httpx.get(proxy.url + path, headers={"Host": "proxy.internal"}).status_code == 200


def test_an_anonymous_body_gets_401_and_the_connection_is_closed(make_proxy: Any) -> None:
    """The 401 says ``Connection: close`` and the server hangs up: the announced 8 MB are
    neither read nor drained (before the fix the connection stayed open for them)."""
    proxy = make_proxy()
    _key(proxy)
    host, port = proxy.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 8000000\r\n\r\n" + b"{" * 1000
        )
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)  # a socket timeout (10 s) here fails the test
            except ConnectionResetError:
                break  # closed with bytes of ours unread: a reset instead of a FIN
            if not chunk:
                break  # the server closed the connection
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 401") and b"connection: close" in head


def test_a_keyed_get_without_body_keeps_the_connection(make_proxy: Any) -> None:
    proxy = make_proxy()
    _key(proxy)
    with httpx.Client() as client:
        r = client.get(proxy.base_url + "/profile")  # no key: 401, nothing to drain
        assert r.status_code == 401 and r.headers.get("connection") != "close"


def test_a_slow_but_steady_body_is_read(make_proxy: Any, upstream: FakeUpstream) -> None:
    """``server.body_timeout_seconds`` bounds the wait for the NEXT body bytes, not the whole
    upload: a large image over a slow link takes longer than the timeout and still arrives."""
    proxy = make_proxy(server={"body_timeout_seconds": 2.0})
    body = json.dumps(CHAT).encode()
    pieces = [body[i : i + 8] for i in range(0, len(body), 8)][:8]
    pieces.append(body[8 * len(pieces) :])

    def slowly() -> Any:
        for piece in pieces:
            time.sleep(0.4)  # 9 pieces, 3.6 s in all: more than the timeout, each gap less
            yield piece

    r = httpx.post(proxy.base_url + "/chat/completions", content=slowly(), timeout=30)
    assert r.status_code == 200, r.text
    assert upstream.last.json["messages"] == CHAT["messages"]


def test_a_head_larger_than_server_max_header_bytes_is_431(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """uvicorn's httptools parser keeps every header it is sent (hundreds of MB in seconds):
    ``server.max_header_bytes`` caps the request line + headers, then 431 and close."""
    settings = make_settings(tmp_path / "d", upstream, server={"max_header_bytes": 32 * 1024})
    options = uvicorn_options(settings)
    with ServerThread(create_app(settings), http=options["http"]) as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            answer = b""
            try:
                # 104 KB of headers, in one go: read whole before the server hangs up
                sock.sendall((b"X-Pad: " + b"a" * 8000 + b"\r\n") * 13)
            except OSError:
                pass  # the server closed while we were still sending
            try:
                while chunk := sock.recv(65536):
                    answer += chunk
            except OSError:
                pass
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
        # headers under the cap (8 KB) are served as usual
        ok = httpx.get(server.url + "/healthz", headers={"X-Pad": "a" * 8000})
        assert ok.status_code == 200
