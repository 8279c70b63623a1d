"""Two replicas applying one scope's index outbox at once, on one Postgres (found by
tests/test_cluster.py: a stale vector, and a vector lost).

``IndexSync``'s own lock is per process; two instances over one database are two replicas.
Replica A reads the fact and stalls while embedding it; meanwhile the fact is edited and
replica B flushes. Without a lock across replicas, B indexed the new text and consumed the
outbox rows, then A wrote the old text last (a stale vector nothing corrects), or, when A's
write failed half-way (the delete of the old vector done, the add refused: Chroma stopped),
the fact had no vector at all. The flushes of one scope now take turns (a Postgres advisory
lock): A finishes or fails first, with its rows still pending, then B applies the latest state.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, TimeoutError
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.pg_cluster import PgCluster
from proxy.config import StoreSettings
from proxy.errors import Unavailable
from proxy.models import Scope
from proxy.services.indexing import IndexSync
from proxy.store.changes import Outbox
from proxy.store.embedder import MiniLMEmbedder
from proxy.store.facts import FactRecords
from proxy.store.index import FactIndex
from proxy.store.postgres import PostgresDatabase
from tests.conftest import MODEL_CACHE

ALICE = Scope("acme", "alice")


class Gated:
    """An embedder whose first call waits for ``go`` (a slow replica)."""

    def __init__(self, inner: MiniLMEmbedder) -> None:
        self.inner = inner
        self.name, self.dim = inner.name, inner.dim
        self.waiting, self.go = threading.Event(), threading.Event()

    def embed(self, texts: list[str]) -> Any:
        self.waiting.set()
        assert self.go.wait(30)
        return self.inner.embed(texts)


class HalfWrite:
    """The index of a replica whose replacing write stops half-way: the old vector deleted,
    then the server gone (what an upsert of an existing id does: delete, then add)."""

    def __init__(self, inner: FactIndex) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def upsert(self, scope: Scope, ids: list[str], *args: Any) -> None:
        self.inner.delete(scope, ids)
        raise ConnectionError("the Chroma server went away")


@pytest.fixture
def stack(pg_cluster: PgCluster, tmp_path: Path) -> Iterator[tuple[Any, ...]]:
    name = "ix_" + uuid.uuid4().hex[:12]
    db = PostgresDatabase(pg_cluster.create_database(name), min_size=0, max_size=4)
    index = FactIndex(StoreSettings(), tmp_path / "chroma")
    yield db, FactRecords(db), Outbox(db), index, MiniLMEmbedder(MODEL_CACHE)
    index.close()
    db.close()
    pg_cluster.drop_database(name)


@pytest.mark.parametrize("a_fails", [False, True], ids=["stale", "half-written"])
def test_replicas_take_turns_applying_a_scopes_index_work(
    stack: tuple[Any, ...], a_fails: bool
) -> None:
    _, records, outbox, index, embedder = stack
    with records.transaction(ALICE, request_id="req_1", source="test") as tx:
        fact = tx.fresh("pet", "has a cat named Miso")
        tx.add(fact)

    def edit(value: str) -> None:
        with records.transaction(ALICE, request_id="req_2", source="test") as tx:
            before = tx.by_id(fact.id)
            assert before is not None
            tx.update(before, dataclasses.replace(before, value=value, updated_at=tx.now))

    b = IndexSync(records, outbox, index, embedder)
    b.flush(ALICE)
    edit("has a dog named Rex")
    gated = Gated(embedder)
    a = IndexSync(records, outbox, HalfWrite(index) if a_fails else index, gated)  # type: ignore[arg-type]
    with ThreadPoolExecutor(2) as pool:
        stalled = pool.submit(a.flush, ALICE)  # has read "dog"; embedding it
        assert gated.waiting.wait(30)
        edit("has a parrot named Kiwi")
        latest = pool.submit(b.flush, ALICE)
        try:
            latest.result(timeout=1)  # done at once without a lock across replicas
        except TimeoutError:
            pass  # waiting for A's turn to end
        gated.go.set()
        if a_fails:
            with pytest.raises(Unavailable):
                stalled.result(timeout=30)
        else:
            stalled.result(timeout=30)
        latest.result(timeout=30)
    b.flush(ALICE)  # nothing left: every row was applied or is applied now
    assert not outbox.has_pending(ALICE)
    vectors = index.vectors(ALICE, [fact.id])
    assert fact.id in vectors, "the fact lost its vector"
    want = embedder.embed(["pet: has a parrot named Kiwi"])[0]
    assert float(np.dot(vectors[fact.id], want)) > 0.999, "an older vector was written last"
