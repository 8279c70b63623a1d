"""The lexical index: SQLite FTS5 (BM25, porter stemming) over each fact's text.

It lives in the records database and is kept in step with the ``facts`` table by triggers
(migration 6 in ``proxy/store/db.py``): a fact's FTS row is written, replaced or deleted in the
same transaction as the fact itself, whatever code path writes it, so the two cannot drift.
``ensure()`` (start-up) re-creates the table and triggers when missing and rebuilds the rows
when their count differs from the facts'; ``rebuild()`` re-derives everything (``profilo index
rebuild``). FTS rows are keyed by the fact's rowid; a ``VACUUM`` may renumber rowids, so run
``profilo index rebuild`` after one.

Scopes: the scope key is an indexed column, so a query intersects the scope's rows inside the
index (no scan of other scopes' matches); every read also filters ``scope_key = ?`` in SQL, so
a lexical hit can never cross scopes even if two keys stemmed alike. BM25's statistics (IDF,
average length) are those of the whole table, so a score can move when other scopes write
rare words (a known residual, README "Security"; the Postgres index, ``lexical_pg.py``, uses
each scope's own statistics).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from proxy.models import Scope
from proxy.store.db import MIGRATIONS, Conn, Database, _split

_MIGRATION = 6
_OBJECTS = (
    "facts_fts",
    "facts_fts_counts",
    "facts_fts_insert",
    "facts_fts_delete",
    "facts_fts_update",
)
_FILL = (
    "INSERT INTO facts_fts (rowid, text, scope_key, fact_id) "
    "SELECT rowid, replace(key, '_', ' ') || ': ' || value, scope_key, id FROM facts",
    "INSERT INTO facts_fts_counts (scope_key, n) SELECT scope_key, count(*) FROM facts "
    "GROUP BY scope_key",
)
#: BM25 weights per column: the text only (the scope key and id only select rows).
_BM25 = "bm25(facts_fts, 1.0, 0.0, 0.0)"


def _quote(token: str) -> str:
    return '"' + token.replace('"', '""') + '"'


def _scoped(scope: Scope, terms: Sequence[str]) -> str:
    words = " OR ".join(_quote(t) for t in terms)
    return f"scope_key : {_quote(scope.key)} AND text : ({words})"


class LexicalIndex:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- reads -------------------------------------------------------------------------------
    def search(self, scope: Scope, terms: Sequence[str], n: int) -> list[tuple[str, float]]:
        """Up to ``n`` fact ids of the scope matching any of ``terms``, with their BM25 score
        (positive, higher is better), best first."""
        if not terms or n <= 0:
            return []
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT fact_id, -{_BM25} AS score FROM facts_fts "
                "WHERE facts_fts MATCH ? AND scope_key = ? ORDER BY score DESC LIMIT ?",
                (_scoped(scope, terms), scope.key, n),
            ).fetchall()
        return [(str(row[0]), float(row[1])) for row in rows]

    def frequency(self, scope: Scope, term: str, cap: int) -> int:
        """How many of the scope's facts contain ``term`` (counted up to ``cap``)."""
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT count(*) FROM (SELECT 1 FROM facts_fts WHERE facts_fts MATCH ? LIMIT ?)",
                (_scoped(scope, [term]), cap),
            ).fetchone()
        return int(row[0])

    def common(self, scope: Scope, terms: Sequence[str], share: float, min_facts: int) -> set[str]:
        """The terms found in at least ``share`` of the scope's facts (none when the scope
        holds fewer than ``min_facts``)."""
        total = self.count(scope)
        if not terms or total < min_facts:
            return set()
        cap = max(1, math.ceil(share * total))
        return {t for t in terms if self.frequency(scope, t, cap) >= cap}

    def count(self, scope: Scope) -> int:
        """The scope's indexed facts (a counter the triggers keep: no scan)."""
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT n FROM facts_fts_counts WHERE scope_key = ?", (scope.key,)
            ).fetchone()
        return int(row[0]) if row else 0

    # -- upkeep ------------------------------------------------------------------------------
    def ensure(self) -> bool:
        """Create what is missing and rebuild when the rows are out of count; True if rebuilt."""
        with self._db.write() as conn:
            present = {
                row[0]
                for row in conn.execute(
                    "SELECT name FROM sqlite_master WHERE name IN (?, ?, ?, ?, ?)", _OBJECTS
                )
            }
            missing = set(_OBJECTS) - present
            if missing:
                for statement in _split(MIGRATIONS[_MIGRATION]):
                    conn.execute(statement)
            facts = conn.execute("SELECT count(*) FROM facts").fetchone()[0]
            rows = conn.execute("SELECT count(*) FROM facts_fts").fetchone()[0]
            counted = conn.execute("SELECT coalesce(sum(n), 0) FROM facts_fts_counts").fetchone()
            if not missing and facts == rows == counted[0]:
                return False
            self._fill(conn)
            return True

    def rebuild(self) -> int:
        """Re-derive every row from the facts; returns how many were indexed."""
        with self._db.write() as conn:
            for statement in _split(MIGRATIONS[_MIGRATION]):
                conn.execute(statement)
            return self._fill(conn)

    @staticmethod
    def _fill(conn: Conn) -> int:
        conn.execute("DELETE FROM facts_fts")
        conn.execute("DELETE FROM facts_fts_counts")
        for statement in _FILL:
            conn.execute(statement)
        return int(conn.execute("SELECT count(*) FROM facts_fts").fetchone()[0])
