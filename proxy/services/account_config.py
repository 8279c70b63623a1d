"""The account's config: validated on the way in, defaults when nothing was set."""

from __future__ import annotations

from proxy.schemas.profile import AccountConfig
from proxy.store.account_config import AccountConfigStore


class AccountConfigService:
    def __init__(self, store: AccountConfigStore) -> None:
        self._store = store

    def get(self, account: str) -> AccountConfig:
        raw = self._store.get(account)
        return AccountConfig.model_validate(raw) if raw is not None else AccountConfig()

    def put(self, account: str, config: AccountConfig) -> AccountConfig:
        self._store.put(account, config.model_dump())
        return config
