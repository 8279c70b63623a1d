"""The proxy against a real Chroma server (``chroma run``, started here on 127.0.0.1).

``store.chroma_url`` (``PROFILO_STORE__CHROMA_URL``) switches the index from the embedded
client to ``HttpClient``: writes and searches go to the server, nothing to the local data dir.
The records stay the source of truth: a write while the server is down still commits, and the
index catches up from the outbox once the server is back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.chroma_server import ChromaServer, ChromaStartError
from proxy.models import Scope
from proxy.store.db import open_database
from proxy.store.index import collection_name
from proxy.store.keys import KeyStore
from tests.conftest import Proxy
from tests.fakes.schema import validate_error
from tests.fakes.server import free_port

HTTP = httpx.Client(timeout=60)


@pytest.fixture
def chroma_server(tmp_path: Path) -> Iterator[ChromaServer]:
    server = ChromaServer(tmp_path / "chroma-server", free_port(), tmp_path / "chroma.log")
    try:
        server.start()
    except ChromaStartError as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()


def call(proxy: Proxy, method: str, path: str, token: str = "", **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return HTTP.request(method, proxy.base_url + path, headers=headers, **kw)


def test_profile_lives_in_the_chroma_server(
    make_proxy: Callable[..., Proxy], chroma_server: ChromaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROFILO_STORE__CHROMA_URL", chroma_server.url)
    proxy = make_proxy()
    assert proxy.settings.store.chroma_url == chroma_server.url
    r = call(
        proxy,
        "PATCH",
        "/profile",
        json={"name": "Ada", "pet": "Has a cat named Miso", "editor": "Writes Python in Neovim"},
    )
    assert r.status_code == 200 and r.json()["created"] == 3, r.text
    r = call(
        proxy,
        "POST",
        "/profile/facts",
        json={"key": "laptop", "value": "Prefers a Linux laptop", "collection_id": "u1"},
    )
    assert r.status_code == 201, r.text

    hits = call(proxy, "POST", "/profile/search", json={"query": "pets", "threshold": 0.3})
    assert hits.status_code == 200, hits.text
    assert [h["key"] for h in hits.json()["facts"]] == ["pet"]
    hits = call(
        proxy, "POST", "/profile/search", json={"query": "computer", "collection_id": "u1"}
    ).json()["facts"]
    assert [h["key"] for h in hits] == ["laptop"]

    # the vectors are in the server, one collection per scope, and not in the data dir
    client = chroma_server.client()
    wide = client.get_collection(collection_name(Scope("dev", None)))
    assert wide.count() == 3
    assert client.get_collection(collection_name(Scope("dev", "u1"))).count() == 1
    assert not proxy.settings.chroma_path.exists()
    assert any(chroma_server.path.iterdir())

    # a delete reaches the server too
    pet = call(proxy, "POST", "/profile/search", json={"query": "cat"}).json()["facts"][0]
    assert pet["key"] == "pet"
    assert call(proxy, "DELETE", f"/profile/facts/{pet['id']}").status_code == 200
    assert wide.count() == 2


def test_writes_survive_a_chroma_outage(
    make_proxy: Callable[..., Proxy], chroma_server: ChromaServer
) -> None:
    proxy = make_proxy(store={"chroma_url": chroma_server.url})
    _, token = KeyStore(open_database(proxy.settings)).create("outage-co")
    r = call(proxy, "PATCH", "/profile", token, json={"pet": "Has a cat named Miso"})
    assert r.status_code == 200, r.text
    chroma_server.stop()
    try:
        # the records commit; the index work waits in the outbox
        r = call(proxy, "PATCH", "/profile", token, json={"boat": "Owns a small sailing boat"})
        assert r.status_code == 200 and r.json()["created"] == 1, r.text
        profile = call(proxy, "GET", "/profile", token).json()
        assert {f["key"] for f in profile["profile"]["static"]} == {"pet", "boat"}
        # search cannot answer without its index: a clean 503, not a wrong answer
        r = call(proxy, "POST", "/profile/search", token, json={"query": "sailing"})
        assert r.status_code == 503, r.text
        validate_error(r.json())
    finally:
        chroma_server.start()  # same path, same port

    hits = call(
        proxy, "POST", "/profile/search", token, json={"query": "sailing", "threshold": 0.3}
    )
    assert hits.status_code == 200, hits.text
    assert [h["key"] for h in hits.json()["facts"]] == ["boat"]
    wide = chroma_server.client().get_collection(collection_name(Scope("outage-co", None)))
    assert wide.count() == 2
