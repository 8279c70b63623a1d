"""Per-account quotas on what is stored (``quotas.*``; 0 = no limit): facts, collections (end
users with facts), dialectic sessions. Checked inside the write's own transaction, before the
row is written, so a refused write leaves nothing behind (429 ``quota_exceeded``; a learned
fact over quota is dropped and counted)."""

from __future__ import annotations

import time

from proxy.config import QuotaSettings
from proxy.errors import TooManyRequests
from proxy.models import Scope
from proxy.store.db import Conn


class QuotaExceeded(TooManyRequests):
    code = "quota_exceeded"


def check_new_fact(conn: Conn, scope: Scope, quotas: QuotaSettings) -> None:
    """Raises ``QuotaExceeded`` when one more fact in ``scope`` would pass a quota."""
    if not (quotas.max_facts_per_account or quotas.max_collections_per_account):
        return
    row = conn.execute(  # one row per account on SQLite, one per stripe on Postgres
        "SELECT coalesce(sum(facts), 0), coalesce(sum(collections), 0) FROM account_usage "
        "WHERE account = ?",
        (scope.account,),
    ).fetchone()
    facts, collections = int(row[0]), int(row[1])
    cap = quotas.max_facts_per_account
    if cap and facts >= cap:
        raise QuotaExceeded(
            f"this account holds {facts} facts, its quota (quotas.max_facts_per_account is "
            f"{cap}); delete some first"
        )
    cap = quotas.max_collections_per_account
    if cap and scope.collection_id is not None and collections >= cap:
        new = conn.execute(
            "SELECT NOT EXISTS (SELECT 1 FROM facts WHERE scope_key = ?)", (scope.key,)
        ).fetchone()[0]
        if new:
            raise QuotaExceeded(
                f"this account has facts in {collections} collections, its quota "
                f"(quotas.max_collections_per_account is {cap}); erase one first"
            )


def check_new_session(conn: Conn, account: str, quotas: QuotaSettings) -> None:
    cap = quotas.max_dialectic_sessions_per_account
    if not cap:
        return
    live = conn.execute(
        "SELECT COUNT(*) FROM dialectic_sessions WHERE account = ? AND expires_at > ?",
        (account, time.time()),
    ).fetchone()[0]
    if live >= cap:
        raise QuotaExceeded(
            f"this account has {live} open dialectic sessions, its quota "
            f"(quotas.max_dialectic_sessions_per_account is {cap}); continue one of them"
        )
