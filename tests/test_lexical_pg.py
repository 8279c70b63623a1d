"""The Postgres lexical index (``proxy/store/lexical_pg.py``) on a real cluster: BM25 computed
in SQL agrees with the Python reference over the same rows, common terms are found in one query
as one per term would, and neither score nor hit depends on another scope's facts."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator

import pytest

from bench.pg_cluster import PgCluster
from proxy.models import Scope
from proxy.store.lexical import LexicalIndex
from proxy.store.lexical_pg import PgLexicalIndex, bm25
from proxy.store.postgres import PostgresDatabase

WORDS = (
    "coffee tea hiking running marathon python rust golang berlin paris tokyo violin piano "
    "guitar vegan vegetarian allergy peanuts cats dogs parrot teacher nurse engineer sister "
    "brother daughter garden roses tulips chess football tennis swimming winter summer"
).split()

#: (id, length, lexeme, tf) of the scope's facts matching any of the terms: BM25's inputs.
_ROWS = """
WITH q AS (
    SELECT DISTINCT v.lexeme
    FROM unnest(?::text[]) AS t(term), unnest(to_tsvector('english'::regconfig, t.term)) AS v
)
SELECT f.id, length(f.fts), e.lexeme, coalesce(array_length(e.positions, 1), 1)
FROM facts AS f, unnest(f.fts) AS e
WHERE f.scope_key = ? AND e.lexeme IN (SELECT lexeme FROM q)
"""


@pytest.fixture
def db(pg_cluster: PgCluster) -> Iterator[PostgresDatabase]:
    name = "t_" + uuid.uuid4().hex[:16]
    database = PostgresDatabase(pg_cluster.create_database(name), min_size=0, max_size=2)
    try:
        yield database
    finally:
        database.close()
        pg_cluster.drop_database(name)


def _seed(db: PostgresDatabase, scope: Scope, n: int, rng: random.Random) -> None:
    rows = []
    for i in range(n):
        words = rng.sample(WORDS, rng.randint(1, 6)) + rng.choices(WORDS, k=rng.randint(0, 3))
        rows.append(
            (f"{scope.collection_id}-{i:05d}", scope.account, scope.collection_id, scope.key,
             f"note_{i}", " ".join(words), "dynamic", "general", 0.9, 1.0, 1.0, 1.0)
        )  # fmt: skip
    with db.write() as conn:
        conn.executemany(
            "INSERT INTO facts (id, account, collection_id, scope_key, key, value, kind, "
            "category, confidence, created_at, updated_at, valid_from) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def _reference(db: PostgresDatabase, scope: Scope, terms: list[str]) -> dict[str, float]:
    with db.read() as conn:
        hits = conn.execute(_ROWS, (terms, scope.key)).fetchall()
        stats = conn.execute(
            "SELECT n, total_len FROM facts_fts_counts WHERE scope_key = ?", (scope.key,)
        ).fetchone()
    rows = [(str(h[0]), int(h[1]), str(h[2]), int(h[3])) for h in hits]
    return bm25(rows, int(stats[0]), int(stats[1]))


def test_sql_bm25_matches_the_reference_and_ignores_other_scopes(db: PostgresDatabase) -> None:
    rng = random.Random(7)
    mine, other = Scope("acct", "alice"), Scope("acct", "bob")
    _seed(db, mine, 300, rng)
    index = PgLexicalIndex(db)
    queries = [rng.sample(WORDS, rng.randint(1, 4)) for _ in range(25)]
    queries += [["running", "runs"], ["nonexistentword"], ["the", "and"], ["Coffee's"]]
    before = {tuple(q): index.search(mine, q, 10) for q in queries}
    for terms in queries:
        got = before[tuple(terms)]
        want = sorted(_reference(db, mine, terms).items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        assert [i for i, _ in got] == [i for i, _ in want], terms
        assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-9), terms
        assert all(i.startswith("alice-") for i, _ in got)
    assert any(before[tuple(q)] for q in queries)
    # another scope full of the same words changes neither the hits nor the scores
    _seed(db, other, 500, rng)
    for terms in queries:
        assert index.search(mine, terms, 10) == before[tuple(terms)]


def test_common_terms_in_one_query_agree_with_one_query_per_term(db: PostgresDatabase) -> None:
    rng = random.Random(11)
    scope = Scope("acct", "carol")
    _seed(db, scope, 200, rng)
    _seed(db, Scope("acct", "dave"), 400, rng)
    index = PgLexicalIndex(db)
    terms = [*WORDS[:12], "the", "zzz", "running"]
    for share in (0.001, 0.05, 0.1, 0.3, 1.0):
        cap = max(1, math.ceil(share * 200))
        one_by_one = {t for t in terms if index.frequency(scope, t, cap) >= cap}
        assert index.common(scope, terms, share, 20) == one_by_one
        # the SQLite path's arithmetic (the base class) over the same counts
        assert LexicalIndex.common(index, scope, terms, share, 20) == one_by_one
    assert index.common(scope, terms, 0.001, 1) >= set(WORDS[:12])
    assert index.common(scope, terms, 0.001, 201) == set()  # too few facts to call any common
    assert index.common(scope, [], 0.001, 1) == set()
    assert index.common(Scope("acct", "nobody"), terms, 0.001, 0) == set()
