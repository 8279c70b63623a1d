"""Unit tests of the fact records, the outbox and the index sync (real Chroma, real embedder).

What the HTTP tests cannot reach directly: a failed write leaves nothing behind, the database
enforces key uniqueness and scopes, index work that failed stays in the outbox and is applied
later (and at start-up), retrieval never returns a fact the records no longer hold, and a scope's
index can be rebuilt from the records.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from proxy.config import ProfileSettings, StoreSettings
from proxy.errors import BadRequest, Unavailable
from proxy.models import Fact, Scope
from proxy.services.fact_rules import category_for, coerce_value, normalize_key
from proxy.services.hits import matches_feature
from proxy.services.indexing import IndexSync
from proxy.services.retrieval import Retriever, SearchOptions
from proxy.store.changes import ChangeLog, ChangeQuery, Outbox
from proxy.store.db import Database, SqliteDatabase, open_database
from proxy.store.embedder import MiniLMEmbedder
from proxy.store.facts import FactFilter, FactRecords, new_fact_id
from proxy.store.index import FactIndex
from tests.conftest import MODEL_CACHE, Proxy, make_settings

RULES = ProfileSettings()
ALICE = Scope("acme", "alice")
BOB = Scope("acme", "bob")


class FlakyIndex:
    """The real index, with an off switch: while ``down`` every call fails like Chroma would."""

    def __init__(self, inner: FactIndex) -> None:
        self.inner = inner
        self.down = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kw: Any) -> Any:
            if self.down:
                raise ConnectionError("chroma is down")
            return attr(*args, **kw)

        return call


@dataclass
class Stack:
    db: Database
    records: FactRecords
    outbox: Outbox
    index: FlakyIndex
    sync: IndexSync
    retriever: Retriever

    def add(self, scope: Scope, key: str, value: str, **fields: Any) -> Fact:
        with self.records.transaction(scope, request_id="req_test", source="test") as tx:
            fact = fact_of(scope, key, value, now=tx.now, **fields)
            tx.add(fact)
        return fact

    def keys(self, scope: Scope, query: str) -> list[str]:
        return [h.fact.key for h in self.retriever.search(scope, query, SearchOptions(top_k=10))]


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder(MODEL_CACHE)


@pytest.fixture
def stack(tmp_path: Path, embedder: MiniLMEmbedder) -> Iterator[Stack]:
    db = SqliteDatabase(tmp_path / "records.sqlite3")
    records, outbox = FactRecords(db), Outbox(db)
    index = FactIndex(StoreSettings(), tmp_path / "chroma")
    flaky = FlakyIndex(index)
    sync = IndexSync(records, outbox, flaky, embedder)  # type: ignore[arg-type]
    yield Stack(db, records, outbox, flaky, sync, Retriever(records, flaky, embedder, sync))  # type: ignore[arg-type]
    index.close()
    db.close()


def fact_of(scope: Scope, key: str, value: str, *, now: float, **fields: Any) -> Fact:
    return Fact(
        id=new_fact_id(),
        account=scope.account,
        collection_id=scope.collection_id,
        key=key,
        value=value,
        created_at=now,
        updated_at=now,
        valid_from=now,
        **fields,
    )


# -- records -----------------------------------------------------------------------------------


def test_a_failed_transaction_leaves_nothing(stack: Stack) -> None:
    with pytest.raises(RuntimeError):
        with stack.records.transaction(ALICE, request_id="req_1", source="test") as tx:
            tx.add(fact_of(ALICE, "pet", "cat", now=tx.now))
            tx.add(fact_of(ALICE, "city", "Lisbon", now=tx.now))
            raise RuntimeError("crash half-way")
    assert stack.records.select(ALICE) == []
    assert ChangeLog(stack.db).entries(ALICE, ChangeQuery()) == []
    assert stack.outbox.depth() == 0


def test_the_database_enforces_keys_and_scopes(stack: Stack) -> None:
    stack.add(ALICE, "pet", "cat")
    stack.add(BOB, "pet", "dog")  # the same key in another scope is fine
    with pytest.raises(sqlite3.IntegrityError):
        stack.add(ALICE, "pet", "hamster")
    with pytest.raises(ValueError, match="scope"):
        with stack.records.transaction(ALICE, request_id=None, source=None) as tx:
            tx.add(fact_of(BOB, "city", "Oslo", now=tx.now))
    assert [f.value for f in stack.records.select(ALICE)] == ["cat"]
    assert [f.value for f in stack.records.select(BOB)] == ["dog"]
    bob_pet = stack.records.select(BOB)[0]
    assert stack.records.get(ALICE, bob_pet.id) is None
    assert stack.records.by_ids(ALICE, [bob_pet.id]) == {}
    assert stack.records.history(ALICE, bob_pet.id) == []
    with pytest.raises(ValueError):
        ChangeLog(stack.db).entries(None, ChangeQuery())  # no read outside an account
    other_account = Scope("globex", "alice")  # same collection name, other account
    assert stack.records.select(other_account) == []
    assert ChangeLog(stack.db).entries(other_account, ChangeQuery()) == []


def test_history_change_log_and_expiry(stack: Stack) -> None:
    pet = stack.add(ALICE, "pet", "cat")
    with stack.records.transaction(ALICE, request_id="req_2", source="test") as tx:
        before = tx.by_id(pet.id)
        assert before is not None
        after = dataclasses.replace(before, value="dog", updated_at=tx.now, valid_from=tx.now)
        tx.update(before, after)
    (closed,) = stack.records.history(ALICE, pet.id)
    assert closed["value"] == "cat" and closed["valid_to"] == after.valid_from
    entries = ChangeLog(stack.db).entries(ALICE, ChangeQuery())
    assert [c.request_id for _, c in entries] == ["req_2", "req_test"]
    (upd,) = entries[0][1].updated
    assert (upd["before"]["value"], upd["after"]["value"]) == ("cat", "dog")
    assert [c.request_id for _, c in ChangeLog(stack.db).entries(ALICE, ChangeQuery("req_2"))] == [
        "req_2"
    ]
    # a fact past its expiry is invisible to every read
    mood = stack.add(ALICE, "mood", "tired", kind="dynamic", expires_at=1.0)
    assert stack.records.get(ALICE, mood.id) is None
    assert {f.key for f in stack.records.select(ALICE)} == {"pet"}
    assert stack.records.select(ALICE, FactFilter(kind="dynamic")) == []
    assert stack.records.count(ALICE) == 1


# -- index sync and retrieval ----------------------------------------------------------------


def test_index_failures_wait_in_the_outbox(stack: Stack) -> None:
    stack.add(ALICE, "pet", "Has a cat named Miso")
    assert stack.sync.flush(ALICE) == 1 and stack.outbox.depth() == 0
    stack.index.down = True
    boat = stack.add(ALICE, "boat", "Owns a small sailing boat")
    stack.sync.try_flush(ALICE)  # logged, not raised: the write stands
    assert stack.outbox.depth() == 1
    with pytest.raises(Unavailable):
        stack.keys(ALICE, "sailing")
    with pytest.raises(Unavailable):
        stack.sync.flush(ALICE)
    with stack.db.read() as conn:
        (attempts, error) = conn.execute(
            "SELECT attempts, last_error FROM index_outbox WHERE fact_id = ?", (boat.id,)
        ).fetchone()
    assert attempts >= 1 and "chroma is down" in error
    assert stack.sync.replay() == 0  # still down: deferred again, nothing lost
    stack.index.down = False
    assert stack.sync.replay() == 1 and stack.outbox.depth() == 0
    assert stack.keys(ALICE, "sailing")[0] == "boat"
    assert stack.index.count(ALICE) == 2


def test_retrieval_reads_facts_back_from_the_records(stack: Stack) -> None:
    pet = stack.add(ALICE, "pet", "Has a cat named Miso")
    stack.add(ALICE, "city", "Lives in Lisbon")
    stack.sync.flush(ALICE)
    # the records change but the index is not told (a crash right after the commit)
    with stack.db.write() as conn:
        conn.execute("UPDATE facts SET value = 'Has a dog named Rex' WHERE id = ?", (pet.id,))
    vector = stack.retriever.embed_query(ALICE, "cat")
    (hit, *_) = stack.retriever.search_vector(ALICE, vector, SearchOptions(top_k=5))
    assert hit.fact.value == "Has a dog named Rex"  # never the stale value
    with stack.db.write() as conn:
        conn.execute("DELETE FROM facts WHERE id = ?", (pet.id,))
    hits = stack.retriever.search_vector(ALICE, vector, SearchOptions(top_k=5))
    assert pet.id not in {h.fact.id for h in hits}  # nor a deleted fact
    # another scope's index never answers for this one
    assert stack.retriever.search_vector(BOB, vector, SearchOptions(top_k=5)) == []


def test_rebuild_a_scope_from_the_records(stack: Stack) -> None:
    for i, text in enumerate(["Has a cat", "Lives in Lisbon", "Plays chess", "Drinks tea"]):
        stack.add(ALICE, f"fact_{i}", text)
    stack.add(BOB, "pet", "Has a dog")
    stack.sync.flush(ALICE)
    stack.sync.flush(BOB)
    stack.index.drop_scope(ALICE)
    assert stack.index.count(ALICE) == 0
    assert stack.keys(ALICE, "board games") == []
    assert stack.sync.rebuild(ALICE) == 4
    assert stack.index.count(ALICE) == 4 and stack.index.count(BOB) == 1
    assert stack.keys(ALICE, "board games")[0] == "fact_2"


def test_outbox_left_by_a_crash_is_replayed_at_start_up(
    make_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    settings = make_settings(tmp_path / "data", None)
    db = open_database(settings)
    records = FactRecords(db)
    with records.transaction(Scope("dev", None), request_id="req_x", source="test") as tx:
        tx.add(fact_of(Scope("dev", None), "boat", "Owns a small sailing boat", now=tx.now))
    assert Outbox(db).depth() == 1  # committed, never indexed
    db.close()

    proxy = make_proxy(settings)
    assert Outbox(open_database(settings)).depth() == 0  # applied during start-up
    r = httpx.post(proxy.base_url + "/profile/search", json={"query": "sailing", "threshold": 0.3})
    assert [f["key"] for f in r.json()["facts"]] == ["boat"]


# -- rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("Favorite Color", "favorite_color"),
        ("favoriteColor", "favorite_color"),
        ("favorite-color", "favorite_color"),
        ("  favorite__color  ", "favorite_color"),
        ("HTTPServer", "httpserver"),
        ("café au lait", "caf_au_lait"),
        ("role", "role"),
        ("2fa enabled", "2fa_enabled"),
    ],
)
def test_keys_are_normalized(raw: str, key: str) -> None:
    assert normalize_key(raw, RULES) == key


@pytest.mark.parametrize("raw", ["", "   ", "!!!", "___", "dry_run", "collection_id", "User ID", 5])
def test_bad_keys(raw: Any) -> None:
    with pytest.raises(BadRequest):
        normalize_key(raw, RULES)


def test_values_and_categories() -> None:
    assert coerce_value("  teal ", RULES) == "teal"
    assert coerce_value(3.5, RULES) == "3.5"
    assert coerce_value(True, RULES) == "true"
    assert coerce_value(["a", 1, False], RULES) == "a, 1, false"
    for bad in ("", "  ", None, {"a": 1}, [["nested"]], "x" * (RULES.max_value_chars + 1)):
        with pytest.raises(BadRequest):
            coerce_value(bad, RULES)
    assert coerce_value("x" * RULES.max_value_chars, RULES)
    assert category_for("timezone") == "timezone"
    assert category_for("company") == "other"
    assert category_for("company", " Industry ") == "industry"
    with pytest.raises(BadRequest):
        category_for("company", "hobbies")


def test_custom_feature_matching() -> None:
    fact = Fact(id="f", account="a", collection_id=None, key="k", value="v")
    fact.metadata = {"tier": "gold", "seats": 5, "trial": False}
    assert matches_feature(fact, None)
    assert matches_feature(fact, "tier") and matches_feature(fact, "trial")
    assert matches_feature(fact, "tier=gold") and matches_feature(fact, "seats=5")
    assert not matches_feature(fact, "tier=silver") and not matches_feature(fact, "plan")
    assert matches_feature(fact, {"tier": "gold", "seats": 5})
    assert not matches_feature(fact, {"tier": "gold", "seats": 6})
    assert not matches_feature(fact, {"missing": None})


def test_embeddings_are_unit_vectors(embedder: MiniLMEmbedder) -> None:
    vectors = embedder.embed(["pet: Has a cat", "city: Lisbon"])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_reading_facts_back_by_id_uses_the_primary_key(stack: Stack) -> None:
    """Retrieval reads its ~32 candidates back by id: one primary-key lookup each, never a
    scan of the whole scope (which costs time linear in the scope's size)."""
    ids = [stack.add(ALICE, f"fact_{i}", f"value {i}").id for i in range(64)]
    statements: list[str] = []
    with stack.db.read() as conn:
        conn.set_trace_callback(statements.append)
        try:
            assert len(stack.records.by_ids(ALICE, ids[:32])) == 32
            assert stack.records.by_ids(BOB, ids[:32]) == {}
        finally:
            conn.set_trace_callback(None)
        for sql in (s for s in statements if " IN (" in s):
            plan = " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))
            assert "(id=?)" in plan and "scope_key=?" not in plan, plan
