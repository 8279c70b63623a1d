"""Cache invalidation across replicas: PostgreSQL ``LISTEN``/``NOTIFY``.

A store that changes a cached record calls ``publish(conn, topic, key)`` inside its write
transaction: Postgres delivers the notice to every listening replica when (and only if) the
transaction commits. Each replica's listener thread hands ``key`` to the callbacks subscribed
to ``topic``, which drop their entry. While the listener is not connected (start-up, the
server restarting) ``live`` is False and caches must not answer from memory: every read goes
to the database until the listener is back, and reconnecting clears every cache (notices sent
while it was away are lost).

SQLite: one process per data dir, so there is nothing to tell: ``live`` is always True and
``publish`` does nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from proxy.store.db import Conn, Database

log = logging.getLogger(__name__)

CHANNEL = "profilo_invalidate"
Callback = Callable[[str | None], None]  # a key, or None: drop everything


class Invalidations:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._subscribers: dict[str, list[Callback]] = {}
        self._url: str | None = getattr(db, "url", None) if db.dialect == "postgres" else None
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._raw: object | None = None

    @property
    def live(self) -> bool:
        """May a cache answer from memory now?"""
        return self._url is None or self._connected.is_set()

    def subscribe(self, topic: str, callback: Callback) -> None:
        self._subscribers.setdefault(topic, []).append(callback)

    def publish(self, conn: Conn, topic: str, key: str) -> None:
        if self._url is not None:
            conn.execute("SELECT pg_notify(?, ?)", (CHANNEL, f"{topic}:{key}"))

    def start(self) -> None:
        if self._url is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._listen, name="profilo-notify", daemon=True)
        self._thread.start()
        self._connected.wait(timeout=5)

    def stop(self) -> None:
        self._stop.set()
        raw = self._raw
        if raw is not None:
            try:
                raw.close()  # type: ignore[attr-defined]
            except Exception:
                log.debug("closing the listener failed", exc_info=True)

    def _dispatch(self, payload: str | None) -> None:
        if payload is None:
            for callbacks in self._subscribers.values():
                for callback in callbacks:
                    callback(None)
            return
        topic, _, key = payload.partition(":")
        for callback in self._subscribers.get(topic, ()):
            callback(key)

    def _listen(self) -> None:
        import psycopg

        delay = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(str(self._url), autocommit=True, connect_timeout=5) as raw:
                    self._raw = raw
                    raw.execute(f"LISTEN {CHANNEL}")
                    self._dispatch(None)  # whatever changed while away
                    self._connected.set()
                    delay = 0.1
                    while not self._stop.is_set():
                        for notice in raw.notifies(timeout=1.0):
                            self._dispatch(notice.payload)
            except Exception:
                if self._stop.is_set():
                    break
                log.warning("cache invalidation listener lost; retrying", exc_info=True)
            finally:
                self._connected.clear()
                self._raw = None
            self._stop.wait(delay)
            delay = min(delay * 2, 5.0)
