"""The account's config: validated on the way in, defaults when nothing was set.

Every chat request reads its account's feature defaults, so configs are kept in memory once
read (bounded, least recently used out) and replaced on every write through this service.
Replicas on one Postgres: a write on another replica drops the entry here (``LISTEN``/
``NOTIFY``, ``proxy/store/notify.py``); while that channel is down nothing is served from
memory. Callers treat the result as read-only."""

from __future__ import annotations

import threading
from collections import OrderedDict

from proxy.errors import Unavailable
from proxy.schemas.profile import AccountConfig
from proxy.store.account_config import TOPIC, AccountConfigStore


class AccountConfigService:
    def __init__(self, store: AccountConfigStore, cache_size: int = 4096) -> None:
        self._store = store
        self._cache: OrderedDict[str, AccountConfig] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._live = store.invalidations
        self._live.subscribe(TOPIC, self._forget)

    def _forget(self, account: str | None) -> None:
        with self._lock:
            if account is None:
                self._cache.clear()
            else:
                self._cache.pop(account, None)

    def get(self, account: str) -> AccountConfig:
        # Reads and writes of the store happen under the lock, so a read racing a write can
        # never cache the value the write replaced (a miss costs one small SQLite read).
        live = self._live.live
        with self._lock:
            if live and account in self._cache:
                self._cache.move_to_end(account)
                return self._cache[account]
            try:
                raw = self._store.get(account)
            except Unavailable:  # the records unreachable: the last value read, else defaults
                # (what the config decides -- memory, learning -- needs the records anyway)
                return self._cache.get(account) or AccountConfig()
            config = AccountConfig.model_validate(raw) if raw is not None else AccountConfig()
            if live:
                self._remember(account, config)
            return config

    def put(self, account: str, config: AccountConfig) -> AccountConfig:
        with self._lock:
            self._store.put(account, config.model_dump())
            self._remember(account, config)
        return config

    def _remember(self, account: str, config: AccountConfig) -> None:
        self._cache[account] = config
        self._cache.move_to_end(account)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
