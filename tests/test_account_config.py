"""The account config service keeps configs in memory: a write is seen by the next read,
defaults need no row, and the memo stays bounded however many accounts ask."""

from __future__ import annotations

from pathlib import Path

from proxy.schemas.profile import AccountConfig
from proxy.services.account_config import AccountConfigService
from proxy.store.account_config import AccountConfigStore
from proxy.store.db import SqliteDatabase


def test_writes_are_read_back_and_the_memo_is_bounded(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "p.sqlite3")
    service = AccountConfigService(AccountConfigStore(db), cache_size=8)
    assert service.get("acme").features.memory is False  # defaults, nothing stored
    on = AccountConfig.model_validate({"features": {"memory": True}})
    service.put("acme", on)
    assert service.get("acme").features.memory is True
    for i in range(100):
        service.get(f"acct-{i}")
    assert len(service._cache) == 8
    assert service.get("acme").features.memory is True  # evicted, read back from SQLite
    fresh = AccountConfigService(AccountConfigStore(db))  # a restart sees the stored value
    assert fresh.get("acme").features.memory is True
    db.close()
