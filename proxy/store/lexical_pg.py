"""The lexical index on PostgreSQL: a generated ``tsvector`` column of ``facts`` (English
stemming, the same text as FTS5's: ``key`` with ``_`` as spaces, ``: ``, ``value``) with a GIN
index, so it is written in the fact's own transaction and cannot drift.

Scores are BM25 as FTS5 computes it (k1 = 1.2, b = 0.75, idf = ln((N - n + 0.5) / (n + 0.5)),
floored at 1e-6), so ``retrieval.lexical_*`` and a search's ``threshold`` keep their meaning
on both backends. The statistics are the scope's own: N and the average length come from
``facts_fts_counts`` (kept by the facts trigger), n from the scope's matching rows. A score
therefore never depends on another tenant's facts. Lengths are counted in lexemes (stop
words dropped) where FTS5 counts tokens; both sides of the length ratio use the same measure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from proxy.models import Scope
from proxy.store.db import Database
from proxy.store.lexical import LexicalIndex

K1 = 1.2
B = 0.75

#: The scope's ``n`` best facts for the query's lexemes (each term stemmed as the facts were),
#: scored in the database: the matching facts' (lexeme, tf) pairs (the query's lexemes kept by
#: marking them weight A and filtering on it: no unnest of whole vectors), each lexeme's document
#: frequency among them, the scope's N and total length from ``facts_fts_counts``, then BM25
#: summed per fact. One round trip; only ``n`` rows come back.
_SEARCH = f"""
WITH q AS (
    SELECT DISTINCT v.lexeme
    FROM unnest(?::text[]) AS t(term), unnest(to_tsvector('english'::regconfig, t.term)) AS v
),
m AS (
    SELECT id, fts FROM facts
    WHERE scope_key = ? AND fts @@ (
        SELECT string_agg(quote_literal(lexeme), ' | ')::tsquery FROM q
    )
),
h AS (
    SELECT m.id, greatest(length(m.fts), 1) AS dl, e.lexeme,
           coalesce(array_length(e.positions, 1), 1) AS tf
    FROM m, unnest(ts_filter(
        setweight(m.fts, 'A', (SELECT array_agg(lexeme) FROM q)), '{{a}}'
    )) AS e
),
df AS (SELECT lexeme, count(*) AS n FROM h GROUP BY lexeme),
st AS (
    SELECT greatest(coalesce(c.n, 0), (SELECT max(n) FROM df))::float8 AS docs,
           coalesce(c.total_len, 0)::float8 AS total
    FROM (SELECT 1) AS one LEFT JOIN facts_fts_counts AS c ON c.scope_key = ?
),
w AS (
    SELECT df.lexeme,
           ln((st.docs - df.n + 0.5) / (df.n + 0.5)) AS idf,
           CASE WHEN st.docs > 0 AND st.total > 0 THEN st.total / st.docs ELSE 1.0 END AS avgdl
    FROM df, st
)
SELECT h.id, sum(
    (CASE WHEN w.idf > 0 THEN w.idf ELSE 1e-6 END) * h.tf * {K1 + 1}
    / (h.tf + {K1} * (1 - {B} + {B} * h.dl / w.avgdl))
) AS score
FROM h JOIN w USING (lexeme)
GROUP BY h.id
ORDER BY score DESC, h.id COLLATE "C"
LIMIT ?
"""

#: The terms found in at least ``share`` of the scope's facts (none below ``min_facts`` facts):
#: the scope's count and every term's, capped, in one round trip.
_COMMON = """
WITH c AS (
    SELECT greatest(1, ceil(?::float8 * n))::bigint AS cap
    FROM (SELECT coalesce((SELECT n FROM facts_fts_counts WHERE scope_key = ?), 0) AS n) AS s
    WHERE n >= ?
)
SELECT t.term FROM unnest(?::text[]) AS t(term), c
WHERE (
    SELECT count(*) FROM (
        SELECT 1 FROM facts
        WHERE scope_key = ? AND fts @@ plainto_tsquery('english'::regconfig, t.term) LIMIT c.cap
    ) AS hits
) >= c.cap
"""


def bm25(
    hits: Sequence[tuple[str, int, str, int]], n_docs: int, total_len: int
) -> dict[str, float]:
    """BM25 per fact id from (id, length, lexeme, tf) rows, with the scope's statistics: the
    reference ``_SEARCH`` computes in SQL (the tests hold the two to each other)."""
    if not hits:
        return {}
    df: dict[str, set[str]] = {}
    for fact_id, _, lexeme, _ in hits:
        df.setdefault(lexeme, set()).add(fact_id)
    n_docs = max(n_docs, max(len(ids) for ids in df.values()))
    avgdl = (total_len / n_docs) if n_docs and total_len > 0 else 1.0
    idf = {}
    for lexeme, ids in df.items():
        value = math.log((n_docs - len(ids) + 0.5) / (len(ids) + 0.5))
        idf[lexeme] = value if value > 0 else 1e-6
    scores: dict[str, float] = {}
    for fact_id, length, lexeme, tf in hits:
        norm = K1 * (1 - B + B * max(length, 1) / avgdl)
        scores[fact_id] = scores.get(fact_id, 0.0) + idf[lexeme] * tf * (K1 + 1) / (tf + norm)
    return scores


class PgLexicalIndex(LexicalIndex):
    def __init__(self, db: Database) -> None:
        super().__init__(db)

    def search(self, scope: Scope, terms: Sequence[str], n: int) -> list[tuple[str, float]]:
        if not terms or n <= 0:
            return []
        with self._db.read() as conn:
            rows = conn.execute(_SEARCH, (list(terms), scope.key, scope.key, n)).fetchall()
        return [(str(row[0]), float(row[1])) for row in rows]

    def frequency(self, scope: Scope, term: str, cap: int) -> int:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT count(*) FROM (SELECT 1 FROM facts WHERE scope_key = ? AND "
                "fts @@ plainto_tsquery('english'::regconfig, ?) LIMIT ?) AS hits",
                (scope.key, term, cap),
            ).fetchone()
        return int(row[0])

    def common(self, scope: Scope, terms: Sequence[str], share: float, min_facts: int) -> set[str]:
        if not terms:
            return set()
        with self._db.read() as conn:
            rows = conn.execute(
                _COMMON, (share, scope.key, min_facts, list(terms), scope.key)
            ).fetchall()
        return {str(row[0]) for row in rows}

    def ensure(self) -> bool:
        """The tsvector column cannot drift; the per-scope counts are re-derived when their
        total differs from the facts'."""
        with self._db.read() as conn:
            facts = conn.execute("SELECT count(*) FROM facts").fetchone()[0]
            counted = conn.execute("SELECT coalesce(sum(n), 0) FROM facts_fts_counts").fetchone()
        if int(facts) == int(counted[0]):
            return False
        self.rebuild()
        return True

    def rebuild(self) -> int:
        with self._db.write() as conn:
            conn.execute("LOCK TABLE facts IN SHARE MODE")  # no write between delete and fill
            conn.execute("DELETE FROM facts_fts_counts")
            conn.execute(
                "INSERT INTO facts_fts_counts (scope_key, n, total_len) "
                "SELECT scope_key, count(*), coalesce(sum(length(fts)), 0) FROM facts "
                "GROUP BY scope_key"
            )
            return int(conn.execute("SELECT count(*) FROM facts").fetchone()[0])


def lexical_index(db: Database) -> LexicalIndex:
    """The lexical index of the records database's backend."""
    return PgLexicalIndex(db) if db.dialect == "postgres" else LexicalIndex(db)
