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

#: The query's lexemes (each term stemmed as the facts were), then the scope's facts matching
#: any of them with each matching lexeme's term frequency and the fact's length.
_SEARCH = """
WITH q AS (
    SELECT DISTINCT v.lexeme
    FROM unnest(?::text[]) AS t(term), unnest(to_tsvector('english'::regconfig, t.term)) AS v
),
m AS (
    SELECT id, fts FROM facts
    WHERE scope_key = ? AND fts @@ (
        SELECT string_agg(quote_literal(lexeme), ' | ')::tsquery FROM q
    )
)
SELECT m.id, length(m.fts) AS dl, e.lexeme, coalesce(array_length(e.positions, 1), 1) AS tf
FROM m, unnest(m.fts) AS e
WHERE e.lexeme IN (SELECT lexeme FROM q)
"""


def bm25(
    hits: Sequence[tuple[str, int, str, int]], n_docs: int, total_len: int
) -> dict[str, float]:
    """BM25 per fact id from (id, length, lexeme, tf) rows, with the scope's statistics."""
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
            hits = conn.execute(_SEARCH, (list(terms), scope.key)).fetchall()
            if not hits:
                return []
            stats = conn.execute(
                "SELECT n, total_len FROM facts_fts_counts WHERE scope_key = ?", (scope.key,)
            ).fetchone()
        n_docs, total_len = (int(stats[0]), int(stats[1])) if stats else (0, 0)
        rows = [(str(h[0]), int(h[1]), str(h[2]), int(h[3])) for h in hits]
        scores = bm25(rows, n_docs, total_len)
        best = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
        return best[:n]

    def frequency(self, scope: Scope, term: str, cap: int) -> int:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT count(*) FROM (SELECT 1 FROM facts WHERE scope_key = ? AND "
                "fts @@ plainto_tsquery('english'::regconfig, ?) LIMIT ?) AS hits",
                (scope.key, term, cap),
            ).fetchone()
        return int(row[0])

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
