"""A page on another loopback origin calls the proxy with ``fetch`` from headless Chromium:
CORS preflights, a JSON chat and a streamed one, an exposed X-Profilo-* header; the same page
is refused where its origin is not allowed. Skips only when no chromium binary exists."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from proxy.store.db import open_database
from proxy.store.keys import KeyStore
from tests.conftest import Proxy
from tests.fakes.upstream import FakeUpstream
from tests.test_ui import ARGS, CHROMIUM

SCRIPT = """async ([base, key]) => {
  // what openai-node sends from a page (dangerouslyAllowBrowser): its x-stainless-* headers
  const headers = {"Authorization": "Bearer " + key, "Content-Type": "application/json",
                   "X-Collection-Id": "alice", "X-Stainless-Lang": "js",
                   "X-Stainless-Package-Version": "6.0.0", "X-Stainless-OS": "Unknown",
                   "X-Stainless-Arch": "unknown", "X-Stainless-Runtime": "browser:chrome",
                   "X-Stainless-Runtime-Version": "140", "X-Stainless-Retry-Count": "0",
                   "X-Stainless-Timeout": "600", "OpenAI-Organization": "org-x"};
  const body = {model: "gpt-4o-mini", messages: [{role: "user", content: "what do I like?"}],
                features: {memory: true, user_profile: true}};
  const r = await fetch(base + "/v1/chat/completions",
                        {method: "POST", headers, body: JSON.stringify(body)});
  const json = await r.json();
  const s = await fetch(base + "/v1/chat/completions",
      {method: "POST", headers, body: JSON.stringify({...body, stream: true})});
  const text = await s.text();
  return {status: r.status, content: json.choices[0].message.content,
          facts: r.headers.get("X-Profilo-Memory-Facts"),
          requestId: r.headers.get("X-Profilo-Request-Id"),
          streamStatus: s.status, streamDone: text.includes("data: [DONE]"),
          streamFacts: s.headers.get("X-Profilo-Memory-Facts")};
}"""


#: openai-node as installed by ``make install`` (tests/test_clients.py uses it too); the page
#: imports it from its own origin, as an SPA bundling it would run it.
OPENAI_NODE = Path(__file__).resolve().parent / "clients" / "node" / "node_modules" / "openai"

SDK_SCRIPT = """async ([base, key]) => {
  const {OpenAI} = await import("/openai/index.mjs");
  const client = new OpenAI({baseURL: base + "/v1", apiKey: key, dangerouslyAllowBrowser: true,
                             maxRetries: 0, defaultHeaders: {"X-Collection-Id": "alice"}});
  const {data, response} = await client.chat.completions.create(
      {model: "gpt-4o-mini", messages: [{role: "user", content: "what do I like?"}],
       features: {memory: true, user_profile: true}}).withResponse();
  const stream = await client.chat.completions.create(
      {model: "gpt-4o-mini", messages: [{role: "user", content: "hi"}], stream: true});
  let pieces = 0;
  for await (const chunk of stream) pieces += 1;
  return {content: data.choices[0].message.content, pieces,
          facts: response.headers.get("X-Profilo-Memory-Facts")};
}"""


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>app</title><p>another origin"
        kind = "text/html"
        if self.path.startswith("/openai/"):
            file = (OPENAI_NODE / self.path.removeprefix("/openai/")).resolve()
            if not file.is_relative_to(OPENAI_NODE) or not file.is_file():
                self.send_error(404)
                return
            body, kind = file.read_bytes(), "text/javascript"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def app_origin() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def chromium() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (make install installs it with apt)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


def _setup(proxy: Proxy) -> str:
    token = KeyStore(open_database(proxy.settings)).create("acme")[1]
    import httpx

    r = httpx.patch(
        proxy.base_url + "/profile",
        params={"collection_id": "alice"},
        json={"favorite_food": "ramen"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return token


def test_a_page_on_another_origin_chats_through_the_proxy(
    make_proxy: Any, upstream: FakeUpstream, app_origin: str, chromium: Any
) -> None:
    proxy = make_proxy(cors={"allow_origins": [app_origin]})
    token = _setup(proxy)
    page = chromium.new_page()
    page.goto(app_origin + "/")
    out = page.evaluate(SCRIPT, [proxy.url, token])
    assert out["status"] == 200 and out["content"]
    assert out["facts"] == "1" and out["requestId"].startswith("req_")
    assert out["streamStatus"] == 200 and out["streamDone"] and out["streamFacts"] == "1"
    chats = [r for r in upstream.requests if r.path.endswith("/chat/completions")]
    assert len(chats) == 2 and "ramen" in chats[0].json["messages"][0]["content"]
    page.close()


def test_a_page_on_an_origin_not_allowed_is_blocked(
    make_proxy: Any, upstream: FakeUpstream, app_origin: str, chromium: Any
) -> None:
    proxy = make_proxy(cors={"allow_origins": ["http://127.0.0.1:1"]})
    token = _setup(proxy)
    page = chromium.new_page()
    page.goto(app_origin + "/")
    with pytest.raises(Exception, match="Failed to fetch"):
        page.evaluate(SCRIPT, [proxy.url, token])
    assert not [r for r in upstream.requests if r.path.endswith("/chat/completions")]
    page.close()


def test_openai_node_in_a_page_on_another_origin(
    make_proxy: Any, upstream: FakeUpstream, app_origin: str, chromium: Any
) -> None:
    """The real openai-node (``dangerouslyAllowBrowser``) with its own x-stainless-* headers."""
    if not (OPENAI_NODE / "index.mjs").exists():
        pytest.skip("openai-node is not installed (make install runs npm ci)")
    proxy = make_proxy(cors={"allow_origins": [app_origin]})
    token = _setup(proxy)
    page = chromium.new_page()
    page.goto(app_origin + "/")
    out = page.evaluate(SDK_SCRIPT, [proxy.url, token])
    assert out["content"] and out["pieces"] > 1 and out["facts"] == "1"
    chats = [r for r in upstream.requests if r.path.endswith("/chat/completions")]
    assert len(chats) == 2 and "ramen" in chats[0].json["messages"][0]["content"]
    page.close()
