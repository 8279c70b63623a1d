"""Per-account configuration (extractor prompts, feature defaults), stored as JSON."""

from __future__ import annotations

import time
from typing import Any

import orjson

from proxy.store.db import Database
from proxy.store.notify import Invalidations

TOPIC = "account_config"


class AccountConfigStore:
    def __init__(self, db: Database, invalidations: Invalidations | None = None) -> None:
        self._db = db
        self.invalidations = invalidations or Invalidations(db)

    def get(self, account: str) -> dict[str, Any] | None:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT config FROM account_config WHERE account = ?", (account,)
            ).fetchone()
        return orjson.loads(row[0]) if row else None

    def put(self, account: str, config: dict[str, Any]) -> None:
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO account_config (account, config, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(account) DO UPDATE SET config = excluded.config, "
                "updated_at = excluded.updated_at",
                (account, orjson.dumps(config).decode(), time.time()),
            )
            self.invalidations.publish(conn, TOPIC, account)  # other replicas, on commit
