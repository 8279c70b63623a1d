"""Scope views through real HTTP: the answers of the in-memory path equal the indexes' path,
writes (through the API, by another replica, erasure, a burst past a delta) are seen by the
next search, a scope too large to read on the request path is answered from the indexes while
its view is built, and views never cross accounts."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.models import Scope
from proxy.services.retrieval import SearchOptions
from proxy.services.scope_views import DELTA_MAX
from proxy.store import int8_scan
from tests.conftest import Proxy, make_settings
from tests.fakes.upstream import FakeUpstream
from tests.records_backend import current_database_url, current_vector_backend

HTTP = httpx.Client(timeout=60)
FACTS = {
    "name": "Priya",
    "home_city": "Lisbon",
    "pet": "a beagle called Biscuit",
    "favorite_food": "Sichuan hotpot with extra chili",
    "job": "ICU nurse at Santa Maria hospital",
    "hobby": "bouldering on weekends",
    "trip_plan": "Priya plans a trip to the Dolomites in July",
    "allergy": "Priya is allergic to peanuts",
    "sister": "Priya's sister Ana lives in Porto",
    "car": "drives an old Volvo estate",
}
SCOPE = Scope("dev", "priya")  # the loopback dev account (no API key created)
QUERIES = [
    "where does Priya live?",
    "what should I cook for her, any allergies?",
    "Tell me about Biscuit",
    "Priya's travel plans for the summer",
    "who is Ana?",
    "what does Priya do for a living",
]


def _patch(proxy: Proxy, facts: dict[str, str], collection: str, key: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = HTTP.patch(
        proxy.base_url + "/profile", json={**facts, "collection_id": collection}, headers=headers
    )
    assert r.status_code == 200, r.text


def _search(proxy: Proxy, query: str, collection: str = "priya", **kw: Any) -> list[Any]:
    body = {"query": query, "collection_id": collection, "top_k": 10, "threshold": 0, **kw}
    r = HTTP.post(proxy.base_url + "/profile/search", json=body, headers=kw.pop("headers", {}))
    assert r.status_code == 200, r.text
    return [(f["key"], f["value"], f["score"]) for f in r.json()["facts"]]


def _same(got: list[Any], want: list[Any]) -> None:
    """The same facts in the same order, scores equal but for float rounding."""
    assert [h[:2] for h in got] == [h[:2] for h in want]
    assert [h[2] for h in got] == pytest.approx([h[2] for h in want], abs=2e-4)


def _lookups(proxy: Proxy) -> dict[str, float]:
    text = HTTP.get(proxy.base_url.removesuffix("/v1") + "/metrics").text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("profilo_scope_view_lookups_total{"):
            result = line.split('result="')[1].split('"')[0]
            out[result] = float(line.rsplit(" ", 1)[1])
    return out


def _indexes(proxy: Proxy, query: str, **kw: Any) -> list[Any]:
    """The same search on the indexes' path (Chroma or pgvector, FTS5 or tsvector), in-process."""
    retriever = proxy.server.app.state.services.retriever
    opts = SearchOptions(top_k=10, threshold=0, **kw)
    return [(h.fact.key, h.fact.value, h.score) for h in retriever._search(SCOPE, query, opts)]


def _lexical() -> dict[str, Any]:
    """Postgres' lexical index scores English lexemes; views score FTS5's tokens everywhere:
    there, the cosine path is compared (README "Scope views")."""
    return {} if current_database_url() is None else {"lexical_weight": 0}


def test_the_view_answers_as_the_indexes_do(
    make_proxy: Callable[..., Proxy], tmp_path: Path, upstream: FakeUpstream
) -> None:
    views = make_proxy(make_settings(tmp_path / "views", upstream, retrieval=_lexical()))
    _patch(views, FACTS, "priya")
    for query in QUERIES:
        _same(_search(views, query), _indexes(views, query))
        _same(_search(views, query, kind="static"), _indexes(views, query, kind="static"))
    assert _lookups(views).get("hit", 0) >= len(QUERIES)
    plain = make_proxy(make_settings(tmp_path / "plain", upstream, retrieval={"views_mb": 0}))
    _search(plain, QUERIES[0])
    assert _lookups(plain) == {}  # off: no view is ever read


def test_the_int8_shortlist_answers_as_the_indexes_do(
    make_proxy: Callable[..., Proxy],
    tmp_path: Path,
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scope's view read through its int8 shortlist (from 2,048 facts in production; here
    from the first, so that a small scope takes that path over HTTP) answers as the indexes."""
    monkeypatch.setattr(int8_scan, "MIN_ROWS", 1)
    monkeypatch.setattr(int8_scan, "MAX_SHARE", 1.0)
    served: list[int] = []
    real = int8_scan.Int8Rows.shortlist

    def spy(self: Any, query: Any, live: Any, n: int) -> Any:
        out = real(self, query, live, n)
        served.append(-1 if out is None else len(out))
        return out

    monkeypatch.setattr(int8_scan.Int8Rows, "shortlist", spy)
    proxy = make_proxy(make_settings(tmp_path / "d", upstream, retrieval=_lexical()))
    topics = ["sushi", "jazz", "Porto", "hiking", "nursing"] * 9
    notes = {f"note_{i}": f"Priya noted idea number {i} about {w}" for i, w in enumerate(topics)}
    many = {**FACTS, **notes}
    _patch(proxy, many, "priya")
    for query in QUERIES:
        _same(_search(proxy, query), _indexes(proxy, query))
    assert served and all(size > 0 for size in served)  # every search took the shortlist


def test_writes_are_seen_by_the_next_search(proxy: Proxy) -> None:
    _patch(proxy, FACTS, "priya")
    assert ("home_city", "Lisbon") in [h[:2] for h in _search(proxy, "where does Priya live?")]
    _patch(proxy, {"home_city": "Kraków"}, "priya")
    assert ("home_city", "Kraków") in [h[:2] for h in _search(proxy, "where does Priya live?")]
    assert "Lisbon" not in str(_search(proxy, "where does Priya live?"))
    body = {"query": "home city", "collection_id": "priya", "top_k": 30, "threshold": 0}
    found = HTTP.post(proxy.base_url + "/profile/search", json=body).json()["facts"]
    fact_id = next(f["id"] for f in found if f["key"] == "home_city")
    r = HTTP.post(
        proxy.base_url + "/profile/delete", json={"fact_id": fact_id, "collection_id": "priya"}
    )
    assert r.status_code == 200, r.text
    assert "home_city" not in [h[0] for h in _search(proxy, "where does Priya live?")]
    # a burst of writes larger than a delta: the view is read again, nothing is missed
    burst = {f"note_{i}": f"Priya collected stamp number {i} from Tallinn" for i in range(300)}
    assert len(burst) > DELTA_MAX
    notes = sorted(burst)
    _patch(proxy, {k: burst[k] for k in notes[:150]}, "priya")
    _patch(proxy, {k: burst[k] for k in notes[150:]}, "priya")
    hits = _search(proxy, "stamps from Tallinn")
    assert len([h for h in hits if h[0].startswith("note_")]) >= 8


def test_erasure_empties_the_view(proxy: Proxy) -> None:
    _patch(proxy, FACTS, "priya")
    assert _search(proxy, "who is Ana?")
    r = HTTP.delete(proxy.base_url + "/collections/priya")
    assert r.status_code in (200, 204), r.text
    assert _search(proxy, "who is Ana?") == []
    _patch(proxy, {"hobby": "sailing"}, "priya")
    assert [h[0] for h in _search(proxy, "who is Ana?")] == ["hobby"]


def test_a_large_scope_is_answered_from_the_indexes_while_its_view_is_built(
    make_proxy: Callable[..., Proxy], tmp_path: Path, upstream: FakeUpstream
) -> None:
    retrieval = {**_lexical(), "views_inline_facts": 3}
    lazy = make_proxy(make_settings(tmp_path / "lazy", upstream, retrieval=retrieval))
    _patch(lazy, FACTS, "priya")
    first = _search(lazy, QUERIES[0])
    assert _lookups(lazy).get("building") == 1  # answered from the indexes meanwhile
    _same(first, _indexes(lazy, QUERIES[0]))
    deadline = time.monotonic() + 30
    while _lookups(lazy).get("hit", 0) == 0 and time.monotonic() < deadline:
        _search(lazy, QUERIES[1])
        time.sleep(0.05)
    assert _lookups(lazy).get("hit", 0) >= 1
    for query in QUERIES:
        _same(_search(lazy, query), _indexes(lazy, query))


def test_a_tiny_bound_still_answers_every_scope(
    make_proxy: Callable[..., Proxy], tmp_path: Path, upstream: FakeUpstream
) -> None:
    """More users than 1 MiB of views holds (~40 KiB each): views are evicted and read again,
    and every answer is still right."""
    users = 40
    proxy = make_proxy(make_settings(tmp_path / "d", upstream, retrieval={"views_mb": 1}))
    for i in range(users):
        _patch(proxy, {**FACTS, "name": f"User{i}"}, f"u{i}")
    for _ in range(2):
        for i in range(users):
            assert (
                "name",
                f"User{i}",
            ) in [h[:2] for h in _search(proxy, f"User{i}", collection=f"u{i}")]
    assert _lookups(proxy).get("loaded", 0) > users  # evicted ones were read again


def test_another_replica_writes_are_seen(
    make_proxy: Callable[..., Proxy], tmp_path: Path, upstream: FakeUpstream
) -> None:
    """Two replicas on one Postgres holding the records and the vectors: a write through one
    is in the next search of the other, whose view was current before it."""
    if current_vector_backend() != "pgvector":
        pytest.skip("replicas share a vector index: Postgres with pgvector")
    a = make_proxy(make_settings(tmp_path / "a", upstream))
    b = make_proxy(make_settings(tmp_path / "b", upstream))
    _patch(a, FACTS, "priya")
    assert _search(b, "who is Ana?")[0][0] == "sister"
    _patch(a, {"sister": "Priya's sister Ana moved to Osaka"}, "priya")
    assert ("sister", "Priya's sister Ana moved to Osaka") in [
        h[:2] for h in _search(b, "who is Ana?")
    ]
    assert _lookups(b).get("patched", 0) >= 1


@pytest.mark.parametrize("same_collection", [True, False])
def test_views_never_cross_accounts(
    make_proxy: Callable[..., Proxy],
    tmp_path: Path,
    upstream: FakeUpstream,
    same_collection: bool,
) -> None:
    proxy = make_proxy(make_settings(tmp_path / "d", upstream, retrieval={"views_mb": 64}))
    keys = [proxy.server.app.state.services.keys.create(a)[1] for a in ("acme", "globex")]
    other = "priya" if same_collection else "someone"
    _patch(proxy, FACTS, "priya", key=keys[0])
    _patch(proxy, {"project": "globex launch party is on pier Zyxwq"}, other, key=keys[1])
    for query in ["globex launch party", *QUERIES]:
        for key, collection, forbidden in ((keys[0], "priya", "Zyxwq"), (keys[1], other, "Lisbon")):
            body = {"query": query, "collection_id": collection, "top_k": 30, "threshold": 0}
            r = HTTP.post(
                proxy.base_url + "/profile/search",
                json=body,
                headers={"Authorization": f"Bearer {key}"},
            )
            assert r.status_code == 200, r.text
            assert forbidden not in r.text
