"""One scope's facts held in memory for retrieval: rows, normalized vectors, a BM25 index.

A ``ScopeSnapshot`` answers what a memory lookup asks of the records, the vector index and the
lexical index, without a round trip: the nearest vectors (exact, where Chroma's HNSW is
approximate: a matrix product, from 2,048 facts over the rows an int8 scan shortlists with a
proven bound, ``int8_scan.py``), BM25 over the facts' words with the scope's own statistics
(the Postgres backend's formula, ``lexical_pg.py``: FTS5's BM25, k1 1.2, b 0.75, so a score
never depends on another tenant's facts), the terms common in the scope, the static profile,
facts by id. Every fact of the scope is in it, expired ones too (as in the indexes); reads
filter expiry by ``now`` as the records do.

It holds no scope of its own: ``proxy/services/scope_views.py`` keys each one by account and
scope, keeps it at the scope's write version and serializes access with ``lock``.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from proxy.models import Fact
from proxy.store.int8_scan import Int8Rows
from proxy.store.tokenize import fact_text, tokens

K1 = 1.2
B = 0.75
_ROW_BYTES = 900  # a fact's row, its id and bookkeeping (estimate, for the cache's bound)
_POSTING_BYTES = 120


class ScopeSnapshot:
    def __init__(self, dim: int, version: int = 0, *, row_text: str | None = None) -> None:
        """``row_text``: the scope key, when lengths are counted as FTS5 counts them (every
        indexed column of the row: the text and the scope key), so that a scope alone in its
        database scores exactly as FTS5 scores it; None: the text's tokens only."""
        self.version = version
        self._row_extra = None if row_text is None else len(tokens(row_text))
        self.lock = threading.Lock()
        self.memo: dict[tuple[str, str], Any] = {}  # memory's rendered lines and their tokens
        self._dim = dim
        self._facts: list[Fact | None] = []
        self._row: dict[str, int] = {}
        self._free: list[int] = []
        self._matrix = np.zeros((0, dim), dtype=np.float32)
        self._codes = Int8Rows(dim)  # the shortlist of nearest()
        self._live = np.zeros(0, dtype=bool)
        self._terms: list[Counter[str] | None] = []
        self._postings: dict[str, dict[int, int]] = {}
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # postings as arrays
        self._doclen = np.zeros(0, dtype=np.float64)
        self._total_len = 0
        self._text_bytes = 0
        self._static: set[int] = set()
        self._profile: dict[tuple[float, int, tuple[str, ...]], list[Fact]] = {}

    # -- upkeep ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._row)

    @property
    def nbytes(self) -> int:
        postings = sum(len(p) for p in self._postings.values())
        return (
            self._matrix.nbytes
            + self._codes.nbytes
            + self._text_bytes
            + _ROW_BYTES * len(self._facts)
            + _POSTING_BYTES * postings
        )

    def put(self, fact: Fact, vector: np.ndarray) -> None:
        """Add the fact, or replace the one with its id."""
        if fact.id in self._row:
            self.drop(fact.id)
        row = self._free.pop() if self._free else self._grow()
        self._row[fact.id] = row
        self._facts[row] = fact
        norm = float(np.linalg.norm(vector))
        self._matrix[row] = vector / norm if norm > 0 else vector
        self._codes.set(row, self._matrix[row])
        self._live[row] = True
        counts = Counter(tokens(fact_text(fact.key, fact.value)))
        self._terms[row] = counts
        for term, tf in counts.items():
            self._postings.setdefault(term, {})[row] = tf
            self._arrays.pop(term, None)
        self._doclen[row] = sum(counts.values())
        if self._row_extra is not None:
            self._doclen[row] += self._row_extra
        self._total_len += int(self._doclen[row])
        self._text_bytes += len(fact.key) + len(fact.value)
        if fact.kind == "static":
            self._static.add(row)
        self._profile.clear()

    def drop(self, fact_id: str) -> None:
        row = self._row.pop(fact_id, None)
        if row is None:
            return
        fact = self._facts[row]
        counts = self._terms[row] or Counter()
        for term in counts:
            posting = self._postings.get(term)
            self._arrays.pop(term, None)
            if posting is not None:
                posting.pop(row, None)
                if not posting:
                    del self._postings[term]
        self._total_len -= int(self._doclen[row])
        if fact is not None:
            self._text_bytes -= len(fact.key) + len(fact.value)
        self._facts[row] = None
        self._terms[row] = None
        self._doclen[row] = 0
        self._live[row] = False
        self._codes.clear(row)
        self._static.discard(row)
        self._free.append(row)
        self._profile.clear()

    def _grow(self) -> int:
        row = len(self._facts)
        if row == self._matrix.shape[0]:
            capacity = max(16, 2 * row)
            matrix = np.zeros((capacity, self._dim), dtype=np.float32)
            matrix[:row] = self._matrix[:row]
            live = np.zeros(capacity, dtype=bool)
            live[:row] = self._live[:row]
            doclen = np.zeros(capacity, dtype=np.float64)
            doclen[:row] = self._doclen[:row]
            self._matrix, self._live, self._doclen = matrix, live, doclen
            self._codes.resize(capacity)
        self._facts.append(None)
        self._terms.append(None)
        return row

    # -- reads -------------------------------------------------------------------------------
    def nearest(
        self, vector: np.ndarray, n: int, *, kind: str | None = None, source: str | None = None
    ) -> list[tuple[str, float]]:
        """The ``n`` facts most similar to ``vector`` (cosine), best first; ``kind`` and
        ``source`` select facts before ranking, as the index's metadata filter does."""
        rows = len(self._facts)
        if n <= 0 or not self._row:
            return []
        query = np.asarray(vector, dtype=np.float32)
        if kind is None and source is None:
            live = self._live[:rows]
            shortlist = self._codes.shortlist(query, live, n)
            if shortlist is not None:  # exact cosines of the rows that can rank (int8_scan)
                return self._rank(shortlist, self._matrix[shortlist] @ query, n)
            sims = _similarities(self._matrix[:rows], query)
            return self._best(np.flatnonzero(live), sims, n)
        sims = _similarities(self._matrix[:rows], query)
        mask = self._live[:rows].copy()
        for row in np.flatnonzero(mask):
            fact = self._facts[row]
            if fact is None or (kind is not None and fact.kind != kind):
                mask[row] = False
            elif source is not None and fact.source != source:
                mask[row] = False
        return self._best(np.flatnonzero(mask), sims, n)

    def lexical(self, terms: Sequence[str], n: int) -> list[tuple[str, float]]:
        """Up to ``n`` facts matching any of ``terms`` with their BM25 score, best first."""
        stems = _stems(terms)
        if not stems or n <= 0:
            return []
        postings = [self._posting(s) for s in stems if s in self._postings]
        if not postings:
            return []
        docs = max(len(self._row), max(len(rows) for rows, _ in postings))
        avgdl = self._total_len / docs if docs and self._total_len > 0 else 1.0
        scores = np.zeros(len(self._facts), dtype=np.float64)
        for rows, tf in postings:
            df = len(rows)
            idf = math.log((docs - df + 0.5) / (df + 0.5))
            idf = idf if idf > 0 else 1e-6
            norm = K1 * (1 - B + B * np.maximum(self._doclen[rows], 1.0) / avgdl)
            scores[rows] += idf * tf * (K1 + 1) / (tf + norm)
        return self._best(np.flatnonzero(scores), scores, n)

    def _best(self, rows: np.ndarray, scores: np.ndarray, n: int) -> list[tuple[str, float]]:
        """The ``n`` best of ``rows`` by ``scores`` (indexed by row), ties by fact id."""
        return self._rank(rows, scores[rows], n)

    def _rank(self, rows: np.ndarray, sub: np.ndarray, n: int) -> list[tuple[str, float]]:
        """The ``n`` best of ``rows`` whose scores are ``sub``, ties by fact id (as the
        Postgres index)."""
        if sub.size > n:
            kth = np.partition(sub, sub.size - n)[sub.size - n]
            keep = np.flatnonzero(sub >= kth)  # the n best and any tied with the last
            rows, sub = rows[keep], sub[keep]
        ids = [self._id(r) for r in rows.tolist()]
        best = sorted(zip((-sub).tolist(), ids, strict=True))[:n]
        return [(fact_id, -score) for score, fact_id in best]

    def _posting(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        """A term's postings as (rows, term frequencies) arrays, kept until it changes."""
        arrays = self._arrays.get(term)
        if arrays is None:
            posting = self._postings[term]
            rows = np.fromiter(posting.keys(), dtype=np.int64, count=len(posting))
            tf = np.fromiter(posting.values(), dtype=np.float64, count=len(posting))
            arrays = self._arrays[term] = (rows, tf)
        return arrays

    def common(self, terms: Sequence[str], share: float, min_facts: int) -> set[str]:
        """The terms found in at least ``share`` of the scope's facts (none below
        ``min_facts`` facts)."""
        total = len(self._row)
        if not terms or total < min_facts:
            return set()
        cap = max(1, math.ceil(share * total))
        out = set()
        for term in terms:
            stems = _stems([term])
            if stems and min(len(self._postings.get(s, ())) for s in stems) >= cap:
                out.add(term)
        return out

    def vectors(self, ids: Iterable[str]) -> dict[str, np.ndarray]:
        return {i: self._matrix[self._row[i]] for i in ids if i in self._row}

    def facts(self, ids: Iterable[str], now: float) -> dict[str, Fact]:
        """The live facts among ``ids`` (expired ones left out, as the records read them)."""
        out: dict[str, Fact] = {}
        for fact_id in ids:
            row = self._row.get(fact_id)
            fact = self._facts[row] if row is not None else None
            if fact is not None and _live(fact, now):
                out[fact_id] = fact
        return out

    def static_profile(
        self, min_confidence: float | None, limit: int, first: Sequence[str], now: float
    ) -> list[Fact]:
        """``FactRecords.static_profile`` on the held rows: the ``first`` keys, then the most
        confident others, by key on ties."""
        key = (min_confidence or 0.0, limit, tuple(first))
        chosen = self._profile.get(key)
        if chosen is None:
            floor, firsts = key[0], set(first)
            rows = [self._facts[r] for r in self._static]
            eligible = [f for f in rows if f is not None and f.confidence >= floor]
            eligible.sort(key=lambda f: (f.key not in firsts, -f.confidence, f.key))
            chosen = self._profile[key] = eligible
        live = [f for f in chosen if _live(f, now)]
        return live[: limit + len(first)]

    def _id(self, row: int) -> str:
        fact = self._facts[row]
        assert fact is not None
        return fact.id


def _live(fact: Fact, now: float) -> bool:
    return fact.expires_at is None or fact.expires_at > now


#: Rows per matrix-vector product: larger products make OpenBLAS start threads, which costs
#: several times the product itself on a busy 2-core machine (0.55 vs 2-5 ms at 10k rows).
_CHUNK = 1024


def _similarities(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    out = np.empty(matrix.shape[0], dtype=np.float32)
    for start in range(0, matrix.shape[0], _CHUNK):
        np.dot(matrix[start : start + _CHUNK], vector, out=out[start : start + _CHUNK])
    return out


def _stems(terms: Sequence[str]) -> list[str]:
    out: dict[str, None] = {}
    for term in terms:
        for stem in tokens(term):
            out[stem] = None
    return list(out)
