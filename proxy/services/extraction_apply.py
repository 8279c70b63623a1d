"""Applying a job's checked operations: one records transaction, exactly once.

Facts, their closed versions, the job's one change-log entry, the index outbox rows and the
job's ``done`` mark commit together. A job already ``done`` rolls back untouched (a job run
twice changes nothing). Duplicates are merged (same key and value, or a near-identical
meaning by embedding similarity); a contradiction supersedes: the fact is updated in place,
its old version closed with ``valid_to`` and kept in the change log as before → after.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections import Counter
from typing import Any

import numpy as np

from proxy.config import LearningSettings, ProfileSettings
from proxy.models import Fact, Scope
from proxy.services.extraction_ops import Checked, Operation
from proxy.services.indexing import IndexSync
from proxy.store.embed_cache import for_account
from proxy.store.embedder import Embedder
from proxy.store.facts import FactRecords, Transaction
from proxy.store.jobs import Job, JobStore
from proxy.store.quotas import QuotaExceeded

log = logging.getLogger("profilo.learning")

DEFAULT_SOURCE = "chat"
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")


class _AlreadyDone(Exception):
    pass


def _same(a: str, b: str) -> bool:
    return " ".join(a.casefold().split()) == " ".join(b.casefold().split())


def _numbers_agree(a: str, b: str) -> bool:
    """'age: 34' and 'age: 35' embed almost alike; different numbers are different facts."""
    return sorted(_NUMBER.findall(a)) == sorted(_NUMBER.findall(b))


class Applier:
    def __init__(
        self,
        records: FactRecords,
        jobs: JobStore,
        embedder: Embedder,
        sync: IndexSync,
        settings: LearningSettings,
        rules: ProfileSettings,
    ) -> None:
        self._records = records
        self._jobs = jobs
        self._embedder = embedder
        self._sync = sync
        self._settings = settings
        self._rules = rules

    def apply(
        self, job: Job, shown: dict[str, Fact], checked: Checked, mode: str
    ) -> dict[str, Any]:
        scope = job.scope
        source = str(job.payload.get("source") or DEFAULT_SOURCE)
        adds = [op for op in checked.operations if op.op == "add"]
        near = self._near_duplicates(scope, adds, list(shown.values()))
        counts: Counter[str] = Counter()
        dropped: Counter[str] = Counter(checked.dropped)
        try:
            with self._records.transaction(
                scope, request_id=job.id, source=source, always_record=True
            ) as tx:
                if JobStore.is_done(tx.conn, job.id):
                    raise _AlreadyDone
                for op in checked.operations:
                    reason = self._apply_one(tx, job, source, op, shown, near, counts)
                    if reason is not None:
                        dropped[reason] += 1
                result = {
                    "added": len(tx.added),
                    "updated": len(tx.updated),
                    "removed": len(tx.removed),
                    "merged": counts["merged"],
                    "operations": checked.total,
                    "none": checked.none,
                    "dropped": dict(dropped),
                    "change_id": tx.change_id,
                    "format": mode,
                }
                JobStore.mark_done(tx.conn, job.id, result, tx.now, job.token)
        except _AlreadyDone:
            return {"already_done": True}
        return result

    def update_index(self, job: Job) -> None:
        """After the commit: bring the scope's index up to date. In a burst of turns of one
        user, the last job does it for all (one index write instead of one per job); a
        search flushes first anyway, so nothing reads a stale index."""
        if not self._jobs.others_pending(job.scope, job.id):
            self._sync.try_flush(job.scope)

    # -- one operation -------------------------------------------------------------------------
    def _apply_one(
        self,
        tx: Transaction,
        job: Job,
        source: str,
        op: Operation,
        shown: dict[str, Fact],
        near: dict[str, str],
        counts: Counter[str],
    ) -> str | None:
        """Apply ``op``; returns a drop reason when it cannot be applied."""
        if op.op == "add":
            assert op.key is not None and op.value is not None
            existing = self._live(tx, tx.by_key(op.key))
            if existing is None and op.key in near:
                existing = self._live(tx, tx.by_id(near[op.key]))
                if existing is not None:
                    counts["merged"] += 1  # near-identical meaning under another key
                    return None
            if existing is None:
                try:
                    tx.add(self._new_fact(tx, job, source, op))
                except QuotaExceeded:
                    return "quota"  # checked before the insert: nothing half-written
                return None
            if _same(existing.value, op.value):
                counts["merged"] += 1
                return None
            tx.update(existing, self._revised(tx, job, source, existing, op, existing.key))
            return None
        assert op.target is not None
        fact = self._live(tx, tx.by_id(shown[op.target].id))
        if fact is None:
            return "gone"  # deleted (or expired) since the model saw it
        if op.op == "delete":
            tx.remove(fact)
            return None
        key = op.key or fact.key
        if key != fact.key and self._live(tx, tx.by_key(key)) is not None:
            return "key_conflict"
        after = self._revised(tx, job, source, fact, op, key)
        if (after.key, after.kind, after.category) == (fact.key, fact.kind, fact.category) and (
            _same(after.value, fact.value)
        ):
            counts["merged"] += 1
            return None
        tx.update(fact, after)
        return None

    def _live(self, tx: Transaction, fact: Fact | None) -> Fact | None:
        """The fact unless it expired (an expired fact is closed into history first)."""
        if fact is not None and fact.expires_at is not None and fact.expires_at <= tx.now:
            tx.purge_expired(fact)
            return None
        return fact

    def _expiry(self, kind: str, now: float) -> float | None:
        return now + self._rules.dynamic_ttl_seconds if kind == "dynamic" else None

    def _new_fact(self, tx: Transaction, job: Job, source: str, op: Operation) -> Fact:
        assert op.key is not None and op.value is not None
        return tx.fresh(
            op.key,
            op.value,
            kind=op.kind,
            category=op.category,
            confidence=op.confidence,
            source=source,
            expires_at=self._expiry(op.kind, tx.now),
            generated_from_request_id=job.id,
            session_id=job.payload.get("session_id"),
        )

    def _revised(
        self, tx: Transaction, job: Job, source: str, fact: Fact, op: Operation, key: str
    ) -> Fact:
        assert op.value is not None
        return dataclasses.replace(
            fact,
            key=key,
            value=op.value,
            kind=op.kind,
            category=op.category,
            confidence=op.confidence,
            source=source,
            updated_at=tx.now,
            valid_from=tx.now,
            expires_at=self._expiry(op.kind, tx.now),
            generated_from_request_id=job.id,
            session_id=job.payload.get("session_id") or fact.session_id,
        )

    # -- near-duplicates (computed before the write transaction: embedding is slow) ---------
    def _near_duplicates(
        self, scope: Scope, adds: list[Operation], known: list[Fact]
    ) -> dict[str, str]:
        """For each added key, a known fact (under another key) that means the same: cosine
        similarity of the texts at least ``dedupe_similarity``, and the same numbers. The
        known facts are those shown to the model (the nearest to the turn)."""
        threshold = self._settings.dedupe_similarity
        if not adds or not known or threshold > 1.0:
            return {}
        texts = [f"{(op.key or '').replace('_', ' ')}: {op.value}" for op in adds]
        try:
            embedder = for_account(self._embedder, scope.account)
            vectors = np.asarray(embedder.embed(texts + [f.text for f in known]))
        except Exception as exc:  # best effort: without embeddings, same-key merging only
            log.warning("near-duplicate check skipped: %s", exc)
            return {}
        similarity = vectors[: len(adds)] @ vectors[len(adds) :].T
        out: dict[str, str] = {}
        for row, (op, text) in enumerate(zip(adds, texts, strict=True)):
            for col in np.argsort(-similarity[row]):
                fact = known[int(col)]
                if similarity[row, col] < threshold:
                    break
                if fact.key != op.key and _numbers_agree(fact.text, text):
                    out[op.key or ""] = fact.id
                    break
        return out
