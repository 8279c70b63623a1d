"""Vectors in PostgreSQL (``store.vector_backend: pgvector``): each fact's embedding in an
``embedding vector(dim)`` column of the ``facts`` table itself.

A scope is searched exactly: ``WHERE scope_key = … ORDER BY embedding <=> q LIMIT k`` through
the btree on the scope (recall 1.0). No HNSW/IVF index is created on the shared table: for one
user's rows it is the wrong tool (slow or incomplete at < 0.25% selectivity, and its mere
presence moves the per-user plan onto it). Same interface as the Chroma ``FactIndex``, fed by
the same outbox: a vector lands in the fact's row when the scope's outbox is flushed (before
the scope's next search), and goes with the row when the fact is deleted.

Needs the ``vector`` extension (pgvector) in the database: created at start-up when missing
(which takes a role allowed to create it). Costs, measured (``bench/bench_vectors.py``, README
"Scale out"): 0.15 ms p50 for a 100-fact user, 27 ms for a 10k-fact user whose rows are spread
over a 211k-row table; 168 MiB and no per-user files per 10k users.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from proxy.models import Scope
from proxy.store.db import Database

_FILTERS = ("kind", "source", "category")


def _text(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in np.asarray(vector, dtype=np.float32).ravel()) + "]"


def _conditions(where: dict[str, Any] | None) -> tuple[str, list[Any]]:
    """Chroma's ``where`` ({k: v} or {"$and": [...]}) over the facts' own columns."""
    if not where:
        return "", []
    parts = where["$and"] if "$and" in where else [where]
    sql, args = "", []
    for part in parts:
        for key, value in part.items():
            if key not in _FILTERS:
                raise ValueError(f"unsupported filter {key!r}")
            sql += f" AND {key} = ?"
            args.append(value)
    return sql, args


class PgVectorIndex:
    def __init__(self, db: Database, dim: int) -> None:
        if db.dialect != "postgres":
            raise ValueError("store.vector_backend: pgvector needs store.database_url")
        self._db = db
        with db.write() as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute(f"ALTER TABLE facts ADD COLUMN IF NOT EXISTS embedding vector({dim})")

    def upsert(
        self, scope: Scope, ids: Sequence[str], embeddings: np.ndarray, metadatas: Sequence[Any]
    ) -> None:
        rows = [(_text(v), scope.key, str(i)) for i, v in zip(ids, embeddings, strict=True)]
        if rows:
            with self._db.write() as conn:
                conn.executemany(
                    "UPDATE facts SET embedding = ?::vector WHERE scope_key = ? AND id = ?", rows
                )

    def delete(self, scope: Scope, ids: Sequence[str]) -> None:
        rows = [(scope.key, str(i)) for i in ids]
        if rows:  # a deleted fact's row (and vector) is gone already; an updated one re-embeds
            with self._db.write() as conn:
                conn.executemany(
                    "UPDATE facts SET embedding = NULL WHERE scope_key = ? AND id = ?", rows
                )

    def query(
        self, scope: Scope, embedding: np.ndarray, n: int, where: dict[str, Any] | None = None
    ) -> list[tuple[str, float]]:
        if n <= 0:
            return []
        extra, args = _conditions(where)
        vector = _text(embedding)
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT id, embedding <=> ?::vector AS d FROM facts WHERE scope_key = ? "
                f"AND embedding IS NOT NULL{extra} ORDER BY d LIMIT ?",
                (vector, scope.key, *args, n),
            ).fetchall()
        return [(str(r[0]), min(1.0, max(-1.0, 1.0 - float(r[1])))) for r in rows]

    def vectors(self, scope: Scope, ids: Sequence[str]) -> dict[str, np.ndarray]:
        ids = list(dict.fromkeys(str(i) for i in ids))
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT id, embedding::text FROM facts WHERE scope_key = ? AND id IN ({marks}) "
                "AND embedding IS NOT NULL",
                (scope.key, *ids),
            ).fetchall()
        return {str(r[0]): np.asarray(orjson.loads(r[1]), dtype=np.float32) for r in rows}

    def count(self, scope: Scope) -> int:
        with self._db.read() as conn:
            return int(
                conn.execute(
                    "SELECT count(*) FROM facts WHERE scope_key = ? AND embedding IS NOT NULL",
                    (scope.key,),
                ).fetchone()[0]
            )

    def drop_scope(self, scope: Scope) -> None:
        with self._db.write() as conn:
            conn.execute("UPDATE facts SET embedding = NULL WHERE scope_key = ?", (scope.key,))

    def heartbeat(self) -> None:
        with self._db.read() as conn:
            conn.execute("SELECT 1")

    def close(self) -> None:
        return None
