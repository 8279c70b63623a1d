"""Chat completions created with ``store: true`` through the proxy, kept per account.

Each row holds the request's messages (as the client sent them, before any memory was
injected), the completion as it was answered (a streamed one assembled from its chunks) and
its ``metadata``. A completion looked up from another account does not exist. Rows older than
the retention are purged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from proxy.store.db import Database


@dataclass(frozen=True, slots=True)
class StoredCompletion:
    id: str
    model: str
    metadata: dict[str, str]
    messages: list[dict[str, Any]]
    completion: dict[str, Any]


def _row(row: Any) -> StoredCompletion:
    return StoredCompletion(
        row["id"],
        row["model"],
        orjson.loads(row["metadata"]),
        orjson.loads(row["messages"]),
        orjson.loads(row["completion"]),
    )


class CompletionStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def put(
        self,
        account: str,
        completion: dict[str, Any],
        messages: list[dict[str, Any]],
        metadata: dict[str, str],
    ) -> None:
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO chat_completions "
                "(account, id, model, metadata, messages, completion, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (account, id) DO UPDATE SET "
                "model = excluded.model, metadata = excluded.metadata, "
                "messages = excluded.messages, completion = excluded.completion, "
                "created_at = excluded.created_at",
                (
                    account,
                    str(completion["id"]),
                    str(completion.get("model") or ""),
                    orjson.dumps(metadata).decode(),
                    orjson.dumps(messages).decode(),
                    orjson.dumps(completion).decode(),
                    time.time(),
                ),
            )

    def get(self, account: str, completion_id: str) -> StoredCompletion | None:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT * FROM chat_completions WHERE account = ? AND id = ?",
                (account, completion_id),
            ).fetchone()
        return _row(row) if row is not None else None

    def list(
        self,
        account: str,
        *,
        model: str | None,
        metadata: dict[str, str],
        after: str | None,
        limit: int,
        order: Literal["asc", "desc"],
    ) -> tuple[list[StoredCompletion], bool]:
        """One page (``limit`` rows after the row ``after``) and whether more follow."""
        sql = ["SELECT * FROM chat_completions WHERE account = ?"]
        args: list[Any] = [account]
        if model is not None:
            sql.append("AND model = ?")
            args.append(model)
        for key, value in metadata.items():
            if self._db.dialect == "postgres":
                sql.append("AND (metadata::jsonb ->> ?) = ?")
            else:
                sql.append("AND json_extract(metadata, '$.' || json_quote(?)) = ?")
            args += [key, value]
        if after is not None:
            op = ">" if order == "asc" else "<"
            sql.append(
                f"AND seq {op} COALESCE((SELECT seq FROM chat_completions "
                "WHERE account = ? AND id = ?), -1)"
            )
            args += [account, after]
        sql.append(f"ORDER BY seq {'ASC' if order == 'asc' else 'DESC'} LIMIT ?")
        args.append(limit + 1)
        with self._db.read() as conn:
            rows = conn.execute(" ".join(sql), args).fetchall()
        return [_row(r) for r in rows[:limit]], len(rows) > limit

    def update_metadata(self, account: str, completion_id: str, metadata: dict[str, str]) -> bool:
        merge = (
            "(jsonb_set(completion::jsonb, '{metadata}', ?::jsonb))::text"
            if self._db.dialect == "postgres"
            else "json_set(completion, '$.metadata', json(?))"
        )
        with self._db.write() as conn:
            cur = conn.execute(
                f"UPDATE chat_completions SET metadata = ?, completion = {merge} "
                "WHERE account = ? AND id = ?",
                (orjson.dumps(metadata).decode(), orjson.dumps(metadata).decode(), account,
                 completion_id),
            )  # fmt: skip
        return cur.rowcount > 0

    def delete(self, account: str, completion_id: str) -> bool:
        with self._db.write() as conn:
            cur = conn.execute(
                "DELETE FROM chat_completions WHERE account = ? AND id = ?",
                (account, completion_id),
            )
        return cur.rowcount > 0

    def purge(self, before: float) -> int:
        with self._db.write() as conn:
            return conn.execute(
                "DELETE FROM chat_completions WHERE created_at < ?", (before,)
            ).rowcount
