"""The int8 shortlist of a scope view's nearest-neighbour search: it must hold every row of
the exact top n (brute force in float64) on embedding-like data, with dead rows, ties and
degenerate inputs, and the view's answers must not change when it is used."""

from __future__ import annotations

import numpy as np
import pytest

from proxy.models import Fact
from proxy.store import int8_scan
from proxy.store.int8_scan import MIN_ROWS, Int8Rows
from proxy.store.snapshot import ScopeSnapshot

DIM = 384


def _unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)


def _embedding_like(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit vectors around a few topics and a shared direction, as sentence embeddings are
    (pairwise cosines mostly 0.1-0.6, a dense band near the top of any ranking)."""
    shared = rng.standard_normal(DIM)
    topics = rng.standard_normal((24, DIM))
    which = rng.integers(0, len(topics), n)
    raw = 0.6 * shared + topics[which] + 0.9 * rng.standard_normal((n, DIM))
    return _unit(raw)


def _rows(vectors: np.ndarray) -> Int8Rows:
    rows = Int8Rows(DIM)
    rows.resize(len(vectors))
    for i, v in enumerate(vectors):
        rows.set(i, v)
    return rows


@pytest.mark.parametrize("n", [1, 8, 32, 64])
def test_shortlist_holds_the_exact_top_n(n: int) -> None:
    rng = np.random.default_rng(n)
    vectors = _embedding_like(rng, 6000)
    vectors[100:110] = vectors[99]  # exact ties
    rows = _rows(vectors)
    live = np.ones(len(vectors), dtype=bool)
    live[rng.choice(len(vectors), 600, replace=False)] = False
    for i in np.flatnonzero(~live)[:300]:
        rows.clear(i)  # dropped rows (the others only masked)
    queries = np.concatenate([_embedding_like(rng, 60), vectors[[99, 5, 7]]])
    used = 0
    for q in queries:
        exact = vectors.astype(np.float64) @ q.astype(np.float64)
        exact[~live] = -np.inf
        kth = np.sort(exact)[-n]
        must = set(np.flatnonzero(exact >= kth - 1e-6).tolist())  # the top n, ties included
        got = rows.shortlist(q, live, n)
        if got is None:
            continue
        used += 1
        assert must <= set(got.tolist())
        assert live[got].all() and np.all(np.diff(got) > 0)
    assert used >= len(queries) * 0.9  # the shortlist really served these queries


def test_shortlist_declines_when_it_cannot_pay() -> None:
    rng = np.random.default_rng(1)
    few = _embedding_like(rng, MIN_ROWS - 1)
    assert _rows(few).shortlist(few[0], np.ones(len(few), dtype=bool), 8) is None
    same = np.repeat(_embedding_like(rng, 1), 3000, axis=0)  # everything ties
    assert _rows(same).shortlist(same[0], np.ones(3000, dtype=bool), 8) is None
    many = _embedding_like(rng, 3000)
    rows = _rows(many)
    assert rows.shortlist(np.zeros(DIM, dtype=np.float32), np.ones(3000, dtype=bool), 8) is None
    broken = np.full(DIM, np.nan, dtype=np.float32)
    assert rows.shortlist(broken, np.ones(3000, dtype=bool), 8) is None  # never an empty list
    live = np.zeros(3000, dtype=bool)
    live[:5] = True  # fewer live rows than asked for
    assert rows.shortlist(many[0], live, 8) is None


def test_zero_rows_and_resizes_keep_codes() -> None:
    rng = np.random.default_rng(2)
    vectors = _embedding_like(rng, 3000)
    vectors[17] = 0.0
    rows = Int8Rows(DIM)
    rows.resize(1000)
    for i, v in enumerate(vectors[:1000]):
        rows.set(i, v)
    rows.resize(3000)  # grows: the first rows kept
    for i, v in enumerate(vectors[1000:], start=1000):
        rows.set(i, v)
    live = np.ones(3000, dtype=bool)
    q = vectors[42]
    got = rows.shortlist(q, live, 5)
    assert got is not None and 42 in got.tolist()
    assert rows.nbytes >= 3000 * DIM


def _fact(i: int) -> Fact:
    return Fact(id=f"f{i:05d}", account="a", collection_id="c", key=f"k{i}", value=f"v {i}")


def test_view_answers_equal_the_full_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """The view's nearest() with the shortlist against the same view scanning everything:
    same ids in the same order, same scores, after updates and deletes."""
    rng = np.random.default_rng(3)
    vectors = _embedding_like(rng, 5000)
    snap = ScopeSnapshot(DIM)
    for i, v in enumerate(vectors):
        snap.put(_fact(i), v)
    for i in range(0, 5000, 7):
        snap.drop(f"f{i:05d}")
    for i in range(1, 5000, 11):
        snap.put(_fact(i), vectors[(i * 31) % 5000])  # updated in place
    calls: list[bool] = []
    real = Int8Rows.shortlist

    def spy(self: Int8Rows, query: np.ndarray, live: np.ndarray, n: int) -> np.ndarray | None:
        out = real(self, query, live, n)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(Int8Rows, "shortlist", spy)
    queries = _embedding_like(rng, 40)
    fast = [snap.nearest(q, 32) for q in queries]
    assert sum(calls) >= 36
    monkeypatch.setattr(int8_scan, "MIN_ROWS", 10**9)
    full = [snap.nearest(q, 32) for q in queries]
    for a, b in zip(fast, full, strict=True):
        assert [i for i, _ in a] == [i for i, _ in b]
        assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=1e-6)
