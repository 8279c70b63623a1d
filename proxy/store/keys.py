"""API keys: created by the CLI, stored hashed, checked on every request (no restart needed).

The database unreachable (Postgres down or restarting): a key this process checked within
``STALE_IF_ERROR`` seconds is answered as it was then, so chat keeps working without memory
instead of failing with the records (a key revoked during the outage is refused once the
database answers again). A key never seen, or seen too long ago: 503."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from proxy.errors import Unavailable
from proxy.models import Account
from proxy.store.db import Database

STALE_IF_ERROR = 600.0
_REMEMBERED = 10_000

KEY_PREFIX = "pk-"


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    account: str
    prefix: str
    created_at: float
    revoked_at: float | None


def _hash(token: str) -> str:
    # Keys are 256-bit random tokens, so a plain SHA-256 is a sound verifier (no salt needed).
    return hashlib.sha256(token.encode()).hexdigest()


class KeyStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._seen: OrderedDict[str, tuple[Account | None, float]] = OrderedDict()
        self._seen_lock = threading.Lock()

    def create(self, account: str) -> tuple[KeyInfo, str]:
        """Create a key for ``account``; returns its info and the plaintext (shown once)."""
        account = account.strip()
        if not account:
            raise ValueError("account name must not be empty")
        token = KEY_PREFIX + secrets.token_urlsafe(32)
        info = KeyInfo(
            id="key_" + secrets.token_hex(8),
            account=account,
            prefix=token[:10],
            created_at=time.time(),
            revoked_at=None,
        )
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO api_keys(id, account, key_hash, prefix, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (info.id, info.account, _hash(token), info.prefix, info.created_at),
            )
        return info, token

    def list(self) -> list[KeyInfo]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT id, account, prefix, created_at, revoked_at FROM api_keys "
                "ORDER BY created_at"
            ).fetchall()
        return [KeyInfo(**dict(row)) for row in rows]

    def revoke(self, key_id: str) -> bool:
        with self._db.write() as conn:
            cur = conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (time.time(), key_id),
            )
        return cur.rowcount == 1

    def authenticate(self, token: str) -> Account | None:
        digest = _hash(token)
        try:
            with self._db.read() as conn:
                row = conn.execute(
                    "SELECT id, account FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
                    (digest,),
                ).fetchone()
        except Unavailable:
            return self._stale(digest)
        account = Account(id=row["account"], key_id=row["id"]) if row else None
        self._remember(digest, account)
        return account

    def any_exist(self) -> bool:
        """True once any key was ever created (revoked ones included): then keys are required.
        Rows are never deleted, so a True is final and answered from memory from then on."""
        if self._any:
            return True
        try:
            with self._db.read() as conn:
                found = conn.execute("SELECT EXISTS(SELECT 1 FROM api_keys)").fetchone()[0] == 1
        except Unavailable:
            if self._any is None:
                raise
            return self._any
        self._any = found
        return found

    # -- the last answers, for when the database is unreachable -------------------------------
    _any: bool | None = None

    def _remember(self, digest: str, account: Account | None) -> None:
        with self._seen_lock:
            self._seen[digest] = (account, time.monotonic())
            self._seen.move_to_end(digest)
            while len(self._seen) > _REMEMBERED:
                self._seen.popitem(last=False)

    def _stale(self, digest: str) -> Account | None:
        with self._seen_lock:
            seen = self._seen.get(digest)
        if seen is None or time.monotonic() - seen[1] > STALE_IF_ERROR:
            raise Unavailable(
                "the records database is unreachable; retry shortly",
                code="database_unavailable",
                headers={"Retry-After": "1"},
            )
        return seen[0]
