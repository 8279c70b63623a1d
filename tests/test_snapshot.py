"""The in-memory scope snapshot against its references: FTS5's own tokenizer, the BM25 of the
Postgres backend (``lexical_pg.bm25``), brute-force cosine, the records' static profile query,
and a snapshot rebuilt from scratch after a random sequence of writes."""

from __future__ import annotations

import random
import sqlite3
from collections import Counter

import numpy as np
import pytest

from proxy.models import Fact
from proxy.store.lexical_pg import bm25
from proxy.store.snapshot import ScopeSnapshot
from proxy.store.tokenize import fact_text, tokens

WORDS = (
    "Priya loves hiking running runs ran Kraków café naïve Ångström über Straße organization "
    "generously allergies allergic restaurants sushi jazz O'Brien user's 42 3.14 e-mail "
    "mother-in-law ICU nurse Lisbon Sichuan 東京 ramen façade résumé déjà-vu co-operate"
).split()
DIM = 8


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))


def _fact(i: int, rng: random.Random, **kw: object) -> Fact:
    fields: dict[str, object] = {
        "id": f"f{i:04d}",
        "account": "a",
        "collection_id": "c",
        "key": rng.choice(["likes", "home_city", "job", "pet_name", "plans"]) + f"_{i}",
        "value": _text(rng),
        "kind": rng.choice(["static", "dynamic"]),
        "confidence": rng.choice([0.3, 0.6, 0.9, 1.0]),
        "source": rng.choice([None, "chat", "api"]),
    }
    fields.update(kw)
    return Fact(**fields)  # type: ignore[arg-type]


def _vec(rng: random.Random) -> np.ndarray:
    v = np.array([rng.gauss(0, 1) for _ in range(DIM)], dtype=np.float32)
    return v / np.linalg.norm(v)


def test_tokens_are_fts5_porter_unicode61_tokens() -> None:
    rng = random.Random(3)
    texts = [_text(rng) for _ in range(300)] + [fact_text("home_city", "Kraków, Poland")]
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(x, tokenize='porter unicode61')")
    db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
    for i, text in enumerate(texts):
        db.execute("INSERT INTO t (rowid, x) VALUES (?, ?)", (i, text))
        expected = [
            row[0] for row in db.execute("SELECT term FROM v WHERE doc = ? ORDER BY offset", (i,))
        ]
        assert tokens(text) == expected, text


def test_bm25_is_the_postgres_backends_formula() -> None:
    rng = random.Random(5)
    snap = ScopeSnapshot(DIM)
    facts = [_fact(i, rng) for i in range(120)]
    for f in facts:
        snap.put(f, _vec(rng))
    for _ in range(40):
        terms = [rng.choice(WORDS).lower() for _ in range(rng.randint(1, 4))]
        stems = {s for t in terms for s in tokens(t)}
        rows = []
        lengths = {f.id: len(tokens(fact_text(f.key, f.value))) for f in facts}
        for f in facts:
            counts = Counter(tokens(fact_text(f.key, f.value)))
            rows += [(f.id, lengths[f.id], s, counts[s]) for s in stems if counts[s]]
        expected = bm25(rows, len(facts), sum(lengths.values()))
        got = dict(snap.lexical(terms, 1000))
        assert got.keys() == expected.keys()
        for fact_id, score in expected.items():
            assert got[fact_id] == pytest.approx(score, rel=1e-9)


def test_nearest_is_exact_cosine_with_filters() -> None:
    rng = random.Random(7)
    snap = ScopeSnapshot(DIM)
    facts = [_fact(i, rng) for i in range(200)]
    vectors = {f.id: _vec(rng) for f in facts}
    for f in facts:
        snap.put(f, vectors[f.id] * 3.0)  # stored normalized whatever the input's length
    q = _vec(rng)
    for kind, source in [(None, None), ("static", None), (None, "chat"), ("dynamic", "api")]:
        pool = [
            f
            for f in facts
            if (kind is None or f.kind == kind) and (source is None or f.source == source)
        ]
        want = sorted(((f.id, float(vectors[f.id] @ q)) for f in pool), key=lambda x: -x[1])
        got = snap.nearest(q, 10, kind=kind, source=source)
        assert [i for i, _ in got] == [i for i, _ in want[:10]]
        assert [s for _, s in got] == pytest.approx([s for _, s in want[:10]], abs=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_writes_leave_it_equal_to_a_fresh_build(seed: int) -> None:
    rng = random.Random(seed)
    snap = ScopeSnapshot(DIM)
    live: dict[str, tuple[Fact, np.ndarray]] = {}
    for step in range(600):
        op = rng.random()
        if op < 0.55 or not live:
            f = _fact(step, rng)
        elif op < 0.8:  # update: same id, new text
            old = live[rng.choice(sorted(live))][0]
            f = _fact(step, rng, id=old.id)
        else:
            gone = rng.choice(sorted(live))
            snap.drop(gone)
            del live[gone]
            continue
        v = _vec(rng)
        snap.put(f, v)
        live[f.id] = (f, v)
    fresh = ScopeSnapshot(DIM)
    for f, v in live.values():
        fresh.put(f, v)
    assert len(snap) == len(fresh) == len(live)
    q = _vec(rng)
    got, want = snap.nearest(q, 25), fresh.nearest(q, 25)
    assert [i for i, _ in got] == [i for i, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want])
    for _ in range(20):
        terms = [rng.choice(WORDS).lower() for _ in range(3)]
        assert dict(snap.lexical(terms, 50)) == pytest.approx(dict(fresh.lexical(terms, 50)))
        assert snap.common(terms, 0.2, 5) == fresh.common(terms, 0.2, 5)
    ids = sorted(live)
    assert snap.facts(ids, 0.0) == {i: live[i][0] for i in ids}
    assert snap.static_profile(0.5, 10, ("name",), 0.0) == fresh.static_profile(
        0.5, 10, ("name",), 0.0
    )


def test_expired_facts_are_held_but_not_read() -> None:
    rng = random.Random(1)
    snap = ScopeSnapshot(DIM)
    snap.put(_fact(1, rng, expires_at=100.0, kind="static", confidence=1.0), _vec(rng))
    snap.put(_fact(2, rng, kind="static", confidence=1.0), _vec(rng))
    assert set(snap.facts(["f0001", "f0002"], now=50.0)) == {"f0001", "f0002"}
    assert set(snap.facts(["f0001", "f0002"], now=150.0)) == {"f0002"}
    assert [f.id for f in snap.static_profile(None, 5, (), now=150.0)] == ["f0002"]
    assert len(snap.nearest(_vec(rng), 5)) == 2  # the index holds it too until it is purged
