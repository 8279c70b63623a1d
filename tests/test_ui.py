"""The profile inspector (/ui) in a real headless browser: Debian's chromium driven by
Playwright, against the proxy under uvicorn. Load, edit (dry-run preview first), delete, ask,
keys, and a screenshot (``UPDATE_UI_SCREENSHOT=1`` also writes docs/ui.png).

Skips only when no chromium binary exists (``make install`` installs it with apt)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.store.db import SqliteDatabase, open_database
from proxy.store.keys import KeyStore
from proxy.store.usage import UsageEvent, UsageStore
from tests.conftest import Proxy, make_settings
from tests.fakes.png import png_pixels
from tests.fakes.upstream import FakeUpstream, chat_completion, json_reply

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Nothing but loopback resolves: the page must need no internet.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (make install installs it with apt)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, proxy: Proxy) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    p = context.new_page()
    p.set_default_timeout(15000)
    foreign: list[str] = []
    p.on("request", lambda r: None if r.url.startswith(proxy.url) else foreign.append(r.url))
    p.errors = []
    p.on("pageerror", lambda e: p.errors.append(str(e)))
    yield p
    assert not foreign, f"the page requested something outside the proxy: {foreign}"
    assert not p.errors, p.errors
    context.close()


def api(proxy: Proxy, method: str, path: str, token: str | None = None, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.request(method, proxy.base_url + path, headers=headers, timeout=30, **kw)
    assert r.status_code < 300, r.text
    return r.json()


def seed(proxy: Proxy, token: str | None = None) -> None:
    api(
        proxy,
        "PATCH",
        "/profile",
        token,
        params={"collection_id": "alice"},
        json={"favourite_food": "ramen", "city": "Lisbon"},
    )
    api(
        proxy,
        "POST",
        "/profile/facts",
        token,
        params={"collection_id": "alice"},
        json={
            "key": "current_project",
            "value": "moving house",
            "kind": "dynamic",
            "confidence": 0.7,
            "source": "chat",
        },
    )
    api(
        proxy,
        "PATCH",
        "/profile",
        token,
        params={"collection_id": "bob"},
        json={"favourite_food": "pizza"},
    )


def facts_of(proxy: Proxy, collection: str) -> dict[str, Any]:
    listed = api(proxy, "GET", "/profile/facts", params={"collection_id": collection})
    return {f["key"]: f["value"] for f in listed["facts"]}


def open_alice(page: Any, proxy: Proxy) -> None:
    page.goto(proxy.url + "/ui")
    page.locator("button.collection", has_text="alice").click()
    page.locator("#static-facts tr[data-key='favourite_food']").wait_for()


def test_load_shows_collections_facts_and_timeline(page: Any, proxy: Proxy) -> None:
    seed(proxy)
    open_alice(page, proxy)
    assert page.locator("button.collection").count() == 2
    row = page.locator("#static-facts tr[data-key='favourite_food']")
    assert "ramen" in row.inner_text()
    assert "100%" in row.inner_text()
    assert "api" in row.locator("td.prov").inner_text()  # set through PATCH /v1/profile
    dyn = page.locator("#dynamic-facts tr[data-key='current_project']")
    assert "moving house" in dyn.inner_text() and "70%" in dyn.inner_text()
    assert "chat" in dyn.locator("td.prov").inner_text()
    assert "expires" in dyn.locator("td.prov").inner_text()  # dynamic facts expire
    assert page.locator("#static-facts tr[data-key='favourite_food']").count() == 1
    assert "pizza" not in page.locator("section.profile").inner_text()  # bob's stays bob's
    timeline = page.locator("#timeline").inner_text()
    assert "+ favourite_food: ramen" in timeline and "+ current_project: moving house" in timeline
    assert page.locator("#profile-title").inner_text() == "Profile of alice"


def test_edit_shows_the_dry_run_then_applies(page: Any, proxy: Proxy) -> None:
    seed(proxy)
    open_alice(page, proxy)
    row = page.locator("#static-facts tr[data-key='favourite_food']")
    row.locator("button.edit").click()
    row.locator("input.edit-value").fill("udon")
    row.locator("button", has_text="Preview").click()
    preview = page.locator("#preview")
    preview.wait_for(state="visible")
    assert "update favourite_food: ramen → udon" in preview.inner_text()
    assert facts_of(proxy, "alice")["favourite_food"] == "ramen"  # the preview changed nothing
    page.locator("#preview-apply").click()
    page.locator("#static-facts tr[data-key='favourite_food'] td.value", has_text="udon").wait_for()
    assert facts_of(proxy, "alice")["favourite_food"] == "udon"
    assert "~ favourite_food: ramen → udon" in page.locator("#timeline").inner_text()
    assert preview.is_hidden()


def test_cancelled_edit_changes_nothing(page: Any, proxy: Proxy) -> None:
    seed(proxy)
    open_alice(page, proxy)
    row = page.locator("#static-facts tr[data-key='city']")
    row.locator("button.edit").click()
    row.locator("input.edit-value").fill("Porto")
    row.locator("button", has_text="Preview").click()
    page.locator("#preview").wait_for(state="visible")
    page.locator("#preview-cancel").click()
    assert page.locator("#preview").is_hidden()
    assert facts_of(proxy, "alice")["city"] == "Lisbon"


def test_delete_shows_the_dry_run_then_deletes(page: Any, proxy: Proxy) -> None:
    seed(proxy)
    open_alice(page, proxy)
    row = page.locator("#dynamic-facts tr[data-key='current_project']")
    fact_id = row.get_attribute("data-id")
    row.locator("button.delete").click()
    preview = page.locator("#preview")
    preview.wait_for(state="visible")
    assert "Would delete 1 profile facts" in preview.inner_text()
    assert "delete current_project: moving house" in preview.inner_text()
    assert "current_project" in facts_of(proxy, "alice")
    page.locator("#preview-apply").click()
    page.locator("#dynamic-facts tr[data-key='current_project']").wait_for(state="detached")
    assert "current_project" not in facts_of(proxy, "alice")
    r = httpx.get(f"{proxy.base_url}/profile/facts/{fact_id}", params={"collection_id": "alice"})
    assert r.status_code == 404
    assert "− current_project: moving house" in page.locator("#timeline").inner_text()
    assert "Deleted 1 profile facts" in page.locator("#status").inner_text()


def test_ask_the_dialectic_keeps_the_session(
    page: Any, proxy: Proxy, upstream: FakeUpstream
) -> None:
    seed(proxy)
    open_alice(page, proxy)
    upstream.script(
        json_reply(chat_completion("They love ramen.")),
        json_reply(chat_completion("Lisbon.")),
    )
    page.locator("#ask-input").fill("What food does this user like?")
    page.locator("#ask-form button[type=submit]").click()
    first = page.locator("#ask-log li").nth(0)
    first.locator(".a", has_text="They love ramen.").wait_for()
    prompt = "\n".join(str(m["content"]) for m in upstream.last.json["messages"])
    assert "ramen" in prompt and "pizza" not in prompt  # alice's facts, not bob's
    page.locator("#ask-input").fill("Where do they live?")
    page.locator("#ask-form button[type=submit]").click()
    second = page.locator("#ask-log li").nth(1)
    second.locator(".a", has_text="Lisbon.").wait_for()
    session = first.locator(".meta").inner_text().split()[1]
    assert session.startswith("dlg_")
    assert second.locator(".meta").inner_text().split()[1] == session
    contents = [str(m["content"]) for m in upstream.last.json["messages"]]
    assert any("What food does this user like?" in c for c in contents)  # the session's history


@pytest.fixture
def keyed(make_proxy: Callable[..., Proxy], upstream: FakeUpstream, tmp_path: Path) -> Any:
    data = tmp_path / "keyed"
    data.mkdir()
    db = SqliteDatabase(data / "profilo.sqlite3")
    try:
        tokens = KeyStore(db).create("acme")[1], KeyStore(db).create("other")[1]
    finally:
        db.close()
    return make_proxy(make_settings(data, upstream)), tokens


def test_the_page_needs_a_key_once_keys_exist(browser: Any, keyed: Any) -> None:
    proxy, (token, other) = keyed
    seed(proxy, token)
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15000)
    page.goto(proxy.url + "/ui")
    page.locator("#status.error", has_text="Enter an API key").wait_for()
    assert page.locator("button.collection").count() == 0
    page.locator("#api-key").fill(other)  # another account sees none of acme's collections
    page.locator("#key-form button[type=submit]").click()
    page.locator("#collection-list", has_text="No facts yet.").wait_for()
    page.locator("#api-key").fill(token)
    page.locator("#key-form button[type=submit]").click()
    page.locator("button.collection", has_text="alice").click()
    page.locator("#static-facts tr[data-key='favourite_food']").wait_for()
    assert token not in page.content() and other not in page.content()  # not in the DOM
    context.close()


def test_screenshot(page: Any, proxy: Proxy, upstream: FakeUpstream, tmp_path: Path) -> None:
    seed(proxy)
    open_alice(page, proxy)
    upstream.script(json_reply(chat_completion("They love ramen and live in Lisbon.")))
    page.locator("#ask-input").fill("What do we know about this user?")
    page.locator("#ask-form button[type=submit]").click()
    page.locator("#ask-log .a", has_text="They love ramen").wait_for()
    shot = tmp_path / "ui.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    width, height, rows = png_pixels(data)
    assert width == 1360 and height >= 900
    colours = {row[i : i + 3] for row in rows[::7] for i in range(0, len(row), 3 * 5)}
    assert len(colours) > 50  # text, tables, buttons: far from a blank page
    header = rows[5][:3]
    body = rows[height // 2][: 3 * 2]
    assert header != body[:3]  # the dark header bar is drawn
    if os.environ.get("UPDATE_UI_SCREENSHOT"):
        (ROOT / "docs").mkdir(exist_ok=True)
        page.set_viewport_size({"width": 1360, "height": 900})
        page.screenshot(path=str(ROOT / "docs" / "ui.png"))


def test_page_and_assets_over_http(proxy: Proxy) -> None:
    page = httpx.get(proxy.url + "/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "http" not in page.text.replace(proxy.url, "")  # nothing from another origin
    assert '<script src="/ui/static/app.js' in page.text
    js = httpx.get(proxy.url + "/ui/static/app.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in js.text  # values go in as text only
    assert httpx.get(proxy.url + "/ui/static/app.css").status_code == 200
    for name in ("index.html", "..%2Fapi%2Fui.py", "nope.js"):
        r = httpx.get(proxy.url + "/ui/static/" + name)
        assert r.status_code == 404, name
        assert r.json()["error"]["code"] == "unknown_url"


def _past_usage(proxy: Proxy) -> None:
    """Earlier days of this month, as the recorder would have written them (a fuller chart)."""
    now = time.time()
    start = datetime.fromtimestamp(now, UTC).replace(day=1, hour=12, minute=0, second=0)
    events = [
        UsageEvent("dev", None, "alice", kind, "gpt-4o-mini", route, start.timestamp() + d * 86400,
                   prompt, completion, memory)
        for d in range(datetime.fromtimestamp(now, UTC).day - 1)
        for kind, route, prompt, completion, memory in (
            ("chat", "/v1/chat/completions", 900 + 150 * (d % 4), 300, 250 + 40 * d),
            ("extraction", "worker", 400 + 60 * (d % 3), 80, 0),
        )
    ]  # fmt: skip
    db = open_database(proxy.settings)
    UsageStore(db).insert(events)
    db.close()


def test_usage_panel(page: Any, proxy: Proxy, upstream: FakeUpstream) -> None:
    seed(proxy)
    _past_usage(proxy)
    usage = {"prompt_tokens": 700, "completion_tokens": 120, "total_tokens": 820}
    upstream.script(json_reply(chat_completion("Ramen, in Lisbon.", usage=usage)))
    body = {"model": "gpt-4o-mini", "collection_id": "alice",
            "messages": [{"role": "user", "content": "what should I eat?"}],
            "features": {"memory": True, "user_profile": True, "learning": False}}  # fmt: skip
    r = httpx.post(proxy.base_url + "/chat/completions", json=body, timeout=30)
    memory = int(r.headers["x-profilo-memory-tokens"])
    assert memory > 0
    page.goto(proxy.url + "/ui")
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    bar = page.locator(f"#usage-chart g.day[data-day='{today}']")
    bar.wait_for()
    assert bar.locator("rect.kind-memory").get_attribute("data-tokens") == str(memory)
    assert bar.locator("rect.kind-chat").get_attribute("data-tokens") == str(700 - memory + 120)
    days = page.locator("#usage-chart g.day").count()
    assert days == datetime.now(UTC).day  # one bar per day with usage
    if days > 1:  # the earlier days carry extraction too
        assert page.locator("#usage-chart rect.kind-extraction").count() == days - 1
    assert page.locator("#usage-totals li[data-kind='cost'] strong").inner_text().startswith("$")
    assert "No limits" in page.locator("#usage-limits").inner_text()
    if os.environ.get("UPDATE_UI_SCREENSHOT"):
        page.locator("section.usage").screenshot(path=str(ROOT / "docs" / "usage.png"))
    page.locator("#usage-month").fill("2001-02")  # a month without usage: no bars
    page.locator("#usage-month").dispatch_event("change")
    page.locator("#usage-chart").wait_for()
    page.wait_for_function("!document.querySelector('#usage-chart g.day')")
    assert page.locator("#usage-totals li[data-kind='chat'] strong").inner_text() == "0"
