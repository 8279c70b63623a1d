"""What a store's ``close`` waits for: the operations other threads have in flight on it.

A store shared by threads (SQLite connections, the embedded Chroma client) must not be closed
under a call that is still running: ``sqlite3`` crashes the process (a segfault, seen when a
cancelled job's thread was still writing as the app shut down). Every operation runs inside
``with inflight:``; ``close`` refuses new ones at once, waits for those running, and
says whether they all ended in time, so the owner closes only a resource nobody is using.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: How long ``close`` waits by default for operations in flight (a write holds SQLite's lock
#: for milliseconds; the busy timeout, its worst case, is seconds).
CLOSE_WAIT_SECONDS = 10.0


class InFlight:
    """``with inflight:`` around each operation (a plain lock and a counter: ~1 us here, it is on
    every read and write); ``close`` polls the counter, it runs once."""

    def __init__(self, closed_error: Callable[[], Exception]) -> None:
        """``closed_error``: what an operation started after ``close`` raises."""
        self._closed_error = closed_error
        self._lock = threading.Lock()
        self._running = 0
        self._closed = False

    @property
    def running(self) -> int:
        return self._running

    def __enter__(self) -> None:
        with self._lock:
            if self._closed:
                raise self._closed_error()
            self._running += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._running -= 1

    def close(self, timeout: float | None = None) -> bool:
        """Refuse new operations; True once none is running, False if some still were after
        ``timeout`` seconds (default ``CLOSE_WAIT_SECONDS``; then the resource must be left
        open: the process exits anyway)."""
        deadline = time.monotonic() + (CLOSE_WAIT_SECONDS if timeout is None else timeout)
        with self._lock:
            self._closed = True
        while self._running:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True
