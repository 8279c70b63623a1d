"""Responses the proxy answered on ``POST /v1/responses``, kept per account.

Two kinds: ``bridge`` (answered by translating to chat completions: the whole response and
its input items are kept here, so ``previous_response_id`` and the GET/DELETE routes work)
and ``upstream`` (answered by an upstream that serves the Responses API itself: only the id,
its owner and route are kept, so another account can neither read nor continue it).
A response looked up from another account does not exist.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from proxy.store.db import Database

Kind = Literal["bridge", "upstream"]


@dataclass(frozen=True, slots=True)
class StoredResponse:
    id: str
    account: str
    kind: Kind
    model: str
    previous_response_id: str | None
    input_items: list[dict[str, Any]]
    response: dict[str, Any]


class ResponseStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def put(
        self,
        account: str,
        kind: Kind,
        response_id: str,
        model: str,
        *,
        previous_response_id: str | None = None,
        input_items: list[dict[str, Any]] | None = None,
        response: dict[str, Any] | None = None,
    ) -> None:
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO responses (id, account, kind, model, "
                "previous_response_id, input_items, response, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "kind = excluded.kind, model = excluded.model, "
                "previous_response_id = excluded.previous_response_id, "
                "input_items = excluded.input_items, response = excluded.response, "
                "created_at = excluded.created_at WHERE responses.account = excluded.account",
                (
                    response_id,
                    account,
                    kind,
                    model,
                    previous_response_id,
                    orjson.dumps(input_items or []).decode(),
                    orjson.dumps(response or {}).decode(),
                    time.time(),
                ),
            )

    def get(self, account: str, response_id: str) -> StoredResponse | None:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT id, account, kind, model, previous_response_id, input_items, response "
                "FROM responses WHERE id = ? AND account = ?",
                (response_id, account),
            ).fetchone()
        if row is None:
            return None
        return StoredResponse(
            row[0], row[1], row[2], row[3], row[4], orjson.loads(row[5]), orjson.loads(row[6])
        )

    def chain(self, account: str, response_id: str, limit: int = 1000) -> list[StoredResponse]:
        """The response and the ones it continues, oldest first (stops at a missing link)."""
        out: list[StoredResponse] = []
        current: str | None = response_id
        while current is not None and len(out) < limit:
            found = self.get(account, current)
            if found is None:
                break
            out.append(found)
            current = found.previous_response_id
        return out[::-1]

    def delete(self, account: str, response_id: str) -> bool:
        with self._db.write() as conn:
            cur = conn.execute(
                "DELETE FROM responses WHERE id = ? AND account = ?", (response_id, account)
            )
        return cur.rowcount > 0
