"""The profile service: the user's facts, read and edited through the API.

Every write is one records transaction (facts, history, one change-log entry, outbox rows),
then the index is brought up to date (deferred on failure, never lost).
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from proxy.config import ProfileSettings
from proxy.errors import BadRequest, Conflict, NotFound
from proxy.models import Fact, Scope
from proxy.schemas.profile import DeleteByQuery, FactCreate, FactUpdate, SearchRequest
from proxy.services.fact_rules import category_for, coerce_value, normalize_key
from proxy.services.indexing import IndexSync
from proxy.services.retrieval import Hit, Retriever, SearchOptions
from proxy.store.erasure import Erasure
from proxy.store.facts import FactFilter, FactRecords, Transaction

MANUAL_SOURCE = "api"


class _DryRun(Exception):
    """Raised inside a transaction to roll back a preview."""


@dataclass(slots=True)
class PatchResult:
    created: list[Fact] = field(default_factory=list)
    updated: list[tuple[Fact, Fact]] = field(default_factory=list)
    deleted: list[Fact] = field(default_factory=list)
    unchanged: list[Fact] = field(default_factory=list)
    diff: list[dict[str, Any]] = field(default_factory=list)


def encode_cursor(fact: Fact) -> str:
    return base64.urlsafe_b64encode(f"{fact.created_at!r}|{fact.id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        created, _, fact_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return float(created), fact_id
    except ValueError as exc:
        raise BadRequest("'cursor' is not a cursor this API returned", param="cursor") from exc


class ProfileService:
    def __init__(
        self,
        records: FactRecords,
        sync: IndexSync,
        retriever: Retriever,
        rules: ProfileSettings,
        erasure: Erasure | None = None,
    ) -> None:
        self.records = records
        self._sync = sync
        self._retriever = retriever
        self.rules = rules
        self._erasure = erasure

    # -- reads -------------------------------------------------------------------------------
    def facts(self, scope: Scope) -> list[Fact]:
        return self.records.select(scope)

    def get_fact(self, scope: Scope, fact_id: str) -> Fact:
        fact = self.records.get(scope, fact_id)
        if fact is None:
            raise NotFound(f"no fact with id {fact_id!r} in this profile", param="fact_id")
        return fact

    def list_facts(
        self, scope: Scope, flt: FactFilter, *, limit: int, cursor: str | None
    ) -> tuple[list[Fact], str | None]:
        after = decode_cursor(cursor) if cursor else None
        page = self.records.select(scope, flt, limit=limit + 1, after=after)
        more = len(page) > limit
        page = page[:limit]
        return page, (encode_cursor(page[-1]) if more and page else None)

    def search(self, scope: Scope, req: SearchRequest) -> list[Hit]:
        return self._retriever.search(
            scope, req.query, self._options(req.threshold, req.top_k, req)
        )

    def _options(
        self, threshold: float | None, top_k: int | None, req: Any = None
    ) -> SearchOptions:
        top_k = top_k if top_k is not None else self.rules.default_top_k
        if top_k > self.rules.max_top_k:
            raise BadRequest(f"'top_k' must be at most {self.rules.max_top_k}", param="top_k")
        return SearchOptions(
            top_k=top_k,
            threshold=threshold if threshold is not None else self.rules.default_search_threshold,
            kind=getattr(req, "kind", None),
            source=getattr(req, "source", None),
            custom_feature=getattr(req, "custom_feature", None),
        )

    # -- writes --------------------------------------------------------------------------------
    def _expiry(self, kind: str, now: float, ttl: int | None) -> float | None:
        if ttl is not None:
            return now + ttl
        return now + self.rules.dynamic_ttl_seconds if kind == "dynamic" else None

    def _current(self, tx: Transaction, key: str) -> Fact | None:
        """The scope's fact for ``key``; an expired one is closed first and counts as absent."""
        fact = tx.by_key(key)
        if fact is not None and fact.expires_at is not None and fact.expires_at <= tx.now:
            tx.purge_expired(fact)
            return None
        return fact

    def patch_profile(
        self, scope: Scope, items: dict[str, Any], *, dry_run: bool, request_id: str
    ) -> PatchResult:
        values: dict[str, str | None] = {}
        for raw_key, raw_value in items.items():
            key = normalize_key(raw_key, self.rules, param=raw_key)
            if key in values:
                raise BadRequest(
                    f"key {raw_key!r} repeats {key!r} after normalization", param=raw_key
                )
            values[key] = (
                None if raw_value is None else coerce_value(raw_value, self.rules, raw_key, key)
            )
        if not values:
            raise BadRequest("the body names no profile fields to set")
        if len(values) > self.rules.max_facts_per_request:
            raise BadRequest(f"at most {self.rules.max_facts_per_request} fields per request")
        result = PatchResult()
        try:
            with self.records.transaction(scope, request_id=request_id, source=MANUAL_SOURCE) as tx:
                for key, value in values.items():
                    self._patch_one(tx, scope, key, value, result, request_id)
                if dry_run:
                    raise _DryRun
        except _DryRun:
            return result
        self._sync.try_flush(scope)
        return result

    def _patch_one(
        self, tx: Transaction, scope: Scope, key: str, value: str | None, out: PatchResult, rid: str
    ) -> None:
        existing = self._current(tx, key)
        entry: dict[str, Any] = {
            "key": key,
            "fact_id": existing.id if existing else None,
            "before": existing.value if existing else None,
            "after": value,
        }
        if value is None:
            entry["action"] = "delete" if existing else "unchanged"
            if existing:
                tx.remove(existing)
                out.deleted.append(existing)
        elif existing is None:
            fact = tx.fresh(
                key,
                value,
                kind="static",
                category=category_for(key),
                confidence=1.0,
                source=MANUAL_SOURCE,
                generated_from_request_id=rid,
            )
            tx.add(fact)
            out.created.append(fact)
            entry |= {"action": "create", "fact_id": fact.id}
        elif existing.value == value:
            out.unchanged.append(existing)
            entry["action"] = "unchanged"
        else:
            after = dataclasses.replace(
                existing,
                value=value,
                updated_at=tx.now,
                valid_from=tx.now,
                confidence=1.0,
                source=MANUAL_SOURCE,
                generated_from_request_id=rid,
                expires_at=self._expiry(existing.kind, tx.now, None),
            )
            tx.update(existing, after)
            out.updated.append((existing, after))
            entry["action"] = "update"
        out.diff.append(entry)

    def create_fact(self, scope: Scope, req: FactCreate, *, request_id: str) -> Fact:
        key = normalize_key(req.key, self.rules)
        value = coerce_value(req.value, self.rules, key=key)
        with self.records.transaction(
            scope, request_id=request_id, source=req.source or MANUAL_SOURCE
        ) as tx:
            existing = self._current(tx, key)
            if existing is not None:
                raise Conflict(
                    f"a fact with key {key!r} already exists in this profile: {existing.id} "
                    f"(update it with PATCH /v1/profile/facts/{existing.id})",
                    param="key",
                    code="fact_exists",
                )
            fact = tx.fresh(
                key,
                value,
                kind=req.kind,
                category=category_for(key, req.category),
                confidence=req.confidence,
                source=req.source or MANUAL_SOURCE,
                expires_at=self._expiry(req.kind, tx.now, req.ttl_seconds),
                generated_from_request_id=request_id,
                session_id=req.session_id,
                metadata=dict(req.metadata),
            )
            tx.add(fact)
        self._sync.try_flush(scope)
        return fact

    def update_fact(self, scope: Scope, fact_id: str, req: FactUpdate, *, request_id: str) -> Fact:
        changes = req.model_dump(exclude_unset=True, exclude={"collection_id", "user_id"})
        if not changes:
            raise BadRequest("the body names nothing to change")
        with self.records.transaction(scope, request_id=request_id, source=MANUAL_SOURCE) as tx:
            existing = tx.by_id(fact_id)
            if existing is None or (
                existing.expires_at is not None and existing.expires_at <= tx.now
            ):
                raise NotFound(f"no fact with id {fact_id!r} in this profile", param="fact_id")
            updates: dict[str, Any] = {}
            if req.key is not None:
                updates["key"] = normalize_key(req.key, self.rules)
                other = self._current(tx, updates["key"])
                if other is not None and other.id != existing.id:
                    raise Conflict(
                        f"a fact with key {updates['key']!r} already exists: {other.id}",
                        param="key",
                        code="fact_exists",
                    )
            if "value" in changes:
                key = updates.get("key", existing.key)
                updates["value"] = coerce_value(req.value, self.rules, key=key)
            for name in ("kind", "confidence", "source", "metadata"):
                if name in changes and changes[name] is not None:
                    updates[name] = changes[name]
            if "category" in changes:
                updates["category"] = category_for(updates.get("key", existing.key), req.category)
            kind = updates.get("kind", existing.kind)
            if "kind" in updates or req.ttl_seconds is not None:
                updates["expires_at"] = self._expiry(kind, tx.now, req.ttl_seconds)
            after = dataclasses.replace(existing, **updates)
            if after == existing:
                return existing
            after = dataclasses.replace(
                after, updated_at=tx.now, valid_from=tx.now, generated_from_request_id=request_id
            )
            tx.update(existing, after)
        self._sync.try_flush(scope)
        return after

    def delete_fact(
        self, scope: Scope, fact_id: str, *, request_id: str, purge: bool = False
    ) -> Fact:
        """Delete a fact; with ``purge`` also its history, its change-log mentions and the
        turn text of the jobs that learned it (erasure, not just an end of validity)."""
        with self.records.transaction(scope, request_id=request_id, source=MANUAL_SOURCE) as tx:
            fact = tx.by_id(fact_id)
            if fact is None or (fact.expires_at is not None and fact.expires_at <= tx.now):
                raise NotFound(f"no fact with id {fact_id!r} in this profile", param="fact_id")
            tx.remove(fact)
        if purge and self._erasure is not None:
            self._erasure.purge_fact(scope, fact.id)
        self._sync.try_flush(scope)
        return fact

    def erase_collection(self, scope: Scope) -> dict[str, int]:
        """Everything stored about one end user: records first (one transaction), then the
        scope's retrieval index."""
        assert self._erasure is not None and scope.collection_id is not None
        counts = self._erasure.erase_scope(scope)
        self._sync.drop(scope)
        self._retriever.forget(scope)
        return counts

    def delete_matching(self, scope: Scope, req: DeleteByQuery, *, request_id: str) -> list[Hit]:
        """Delete by query (or by id); with ``dry_run`` list what would go and delete nothing."""
        target_id = req.fact_id or req.profile_id
        if target_id:
            hits = [Hit(self.get_fact(scope, target_id), 1.0)]
        else:
            assert req.search_query is not None
            hits = self._retriever.search(
                scope, req.search_query, self._options(req.threshold, req.top_k)
            )
        if req.dry_run or not hits:
            return hits
        with self.records.transaction(scope, request_id=request_id, source=MANUAL_SOURCE) as tx:
            gone = []
            for hit in hits:
                current = tx.by_id(hit.fact.id)
                if current is not None:
                    tx.remove(current)
                    gone.append(hit)
        self._sync.try_flush(scope)
        return gone
