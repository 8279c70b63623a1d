"""Group commit for new jobs: one thread writes every job waiting, in one transaction.

A chat answer waits for its job to be committed before it goes out. Many answers finishing
at once share one commit, and the event loop hands jobs over with a queue put (no task and
no executor hop per job); each caller's future is settled from the writer thread.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import defaultdict

from proxy.store.jobs import JobStore, NewJob

log = logging.getLogger("profilo.worker")

_Item = tuple[NewJob, "asyncio.Future[None]", asyncio.AbstractEventLoop]
MAX_BATCH = 256


def _settle(batch: list[tuple[asyncio.Future[None], BaseException | None]]) -> None:
    for future, error in batch:
        if future.done():
            continue  # the caller went away; the job is written all the same
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


class JobWriter:
    def __init__(self, jobs: JobStore, max_attempts: int) -> None:
        self._jobs = jobs
        self._max_attempts = max_attempts
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: NewJob) -> asyncio.Future[None]:
        """Queue ``job``; the future resolves once it is committed (or fails with the error)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="profilo-job-writer", daemon=True
                    )
                    self._thread.start()
        self._queue.put((job, future, loop))
        return future

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the thread."""
        thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._write(batch)
            if stop:
                return

    def _write(self, batch: list[_Item]) -> None:
        jobs = [job for job, _, _ in batch]
        errors: list[BaseException | None]
        try:
            self._jobs.enqueue_many(jobs, max_attempts=self._max_attempts)
            errors = [None] * len(batch)
        except Exception as exc:
            errors = [exc] * len(batch)
            if len(batch) > 1:  # find the one that failed; the others still count
                errors = [self._write_one(job) for job in jobs]
        per_loop: defaultdict[
            asyncio.AbstractEventLoop, list[tuple[asyncio.Future[None], BaseException | None]]
        ] = defaultdict(list)
        for (_, future, loop), error in zip(batch, errors, strict=True):
            per_loop[loop].append((future, error))
        for loop, settled in per_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                log.debug("job writer: loop closed before %d jobs were settled", len(settled))

    def _write_one(self, job: NewJob) -> BaseException | None:
        try:
            self._jobs.enqueue_many([job], max_attempts=self._max_attempts)
        except Exception as exc:
            return exc
        return None
