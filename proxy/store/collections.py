"""The collections (end users) of one account that hold live facts: the inspector's picker."""

from __future__ import annotations

import time
from dataclasses import dataclass

from proxy.store.db import Database


@dataclass(slots=True, frozen=True)
class CollectionSummary:
    collection_id: str | None  # None: the account-wide profile
    fact_count: int
    updated_at: float


class Collections:
    def __init__(self, db: Database) -> None:
        self._db = db

    def of_account(self, account: str, *, limit: int = 1000) -> list[CollectionSummary]:
        """Most recently changed first; only the given account's rows are read."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT collection_id, COUNT(*), MAX(updated_at) FROM facts "
                "WHERE account = ? AND (expires_at IS NULL OR expires_at > ?) "
                "GROUP BY collection_id ORDER BY MAX(updated_at) DESC LIMIT ?",
                (account, time.time(), limit),
            ).fetchall()
        return [CollectionSummary(r[0], int(r[1]), float(r[2])) for r in rows]
