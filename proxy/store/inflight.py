"""What a store's ``close`` waits for: the operations other threads have in flight on it.

A store shared by threads (SQLite connections, the embedded Chroma client) must not be closed
under a call that is still running: ``sqlite3`` crashes the process (a segfault, seen when a
cancelled job's thread was still writing as the app shut down). Every operation runs inside
``InFlight.operation()``; ``close`` refuses new ones at once, waits for those running, and
says whether they all ended in time, so the owner closes only a resource nobody is using.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: How long ``close`` waits by default for operations in flight (a write holds SQLite's lock
#: for milliseconds; the busy timeout, its worst case, is seconds).
CLOSE_WAIT_SECONDS = 10.0


class InFlight:
    def __init__(self, closed_error: Callable[[], Exception]) -> None:
        """``closed_error``: what an operation started after ``close`` raises."""
        self._closed_error = closed_error
        self._cond = threading.Condition()
        self._running = 0
        self._closed = False

    @property
    def running(self) -> int:
        with self._cond:
            return self._running

    @contextmanager
    def operation(self) -> Iterator[None]:
        with self._cond:
            if self._closed:
                raise self._closed_error()
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                if self._running == 0:
                    self._cond.notify_all()

    def close(self, timeout: float | None = None) -> bool:
        """Refuse new operations; True once none is running, False if some still were after
        ``timeout`` seconds (default ``CLOSE_WAIT_SECONDS``; then the resource must be left
        open: the process exits anyway)."""
        wait = CLOSE_WAIT_SECONDS if timeout is None else timeout
        with self._cond:
            self._closed = True
            return self._cond.wait_for(lambda: self._running == 0, wait)
