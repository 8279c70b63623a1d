"""``profilo profile ...`` and ``profilo jobs ...``: operator commands on the local data dir.

They go through the same services as the API. Writes (import, delete by id) touch only the
records database: each leaves its index work in the outbox, which the running proxy applies
(at start-up, every 30 s, and before any search of that scope), so they are safe while the
proxy runs. ``search`` and ``delete --query`` open the retrieval index itself: with the
embedded index, run them while the proxy is stopped (or use a Chroma server).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO, cast

from pydantic import ValidationError
from tqdm import tqdm

from proxy.config import Settings
from proxy.errors import BadRequest, ConfigError, Conflict, ProxyError
from proxy.identity import optional_end_user_id
from proxy.models import Scope
from proxy.schemas.profile import DeleteByQuery, FactCreate, FactUpdate, SearchRequest, fact_json
from proxy.services.fact_rules import normalize_key
from proxy.services.indexing import IndexSync
from proxy.services.profile import ProfileService
from proxy.services.retrieval import Retriever
from proxy.store.db import open_database
from proxy.store.facts import FactRecords
from proxy.store.job_admin import JobAdmin
from proxy.store.jobs import JobStore

CLI_SOURCE = "cli"
#: Fields of an exported fact that an import sets again (the rest is the new fact's own).
IMPORTED = ("key", "value", "kind", "category", "confidence", "source", "metadata", "session_id")


def _rid() -> str:
    """The request id of one CLI write (its change-log entry's ``request_id``)."""
    return f"cli_{uuid.uuid4().hex}"


class OutboxOnly(IndexSync):
    """Index sync of a process that must not open the index: writes leave their outbox rows
    for the proxy to apply."""

    def __init__(self) -> None:  # no index, no embedder
        pass

    def try_flush(self, scope: Scope) -> None:
        return None

    def flush(self, scope: Scope) -> int:
        raise ConfigError("this command does not open the retrieval index")


def add_parsers(sub: Any) -> None:
    """The ``profile`` and ``jobs`` sub-commands (called by ``proxy.cli``)."""
    profile = sub.add_parser("profile", help="inspect and edit one collection's facts")
    psub = profile.add_subparsers(dest="profile_command", required=True)
    for name, text in (
        ("show", "print the facts"),
        ("search", "semantic search (opens the index)"),
        ("export", "write the facts as JSONL"),
        ("import", "add facts from JSONL (an export)"),
        ("delete", "delete facts by id, or by --query (opens the index)"),
    ):
        p = psub.add_parser(name, help=text)
        p.add_argument("--account", required=True)
        p.add_argument("--collection", default=None, help="end user (default: account-wide)")
        if name == "show":
            p.add_argument("--json", action="store_true", help="one JSON object per fact")
        elif name == "search":
            p.add_argument("query")
            p.add_argument("--top-k", type=int, default=None)
            p.add_argument("--threshold", type=float, default=None)
        elif name == "export":
            p.add_argument("-o", "--output", type=Path, default=None, help="file (default stdout)")
        elif name == "import":
            p.add_argument("file", type=Path)
            p.add_argument("--on-conflict", choices=("skip", "replace"), default="skip")
        else:
            p.add_argument("fact_ids", nargs="*")
            p.add_argument("--query", default=None)
            p.add_argument("--dry-run", action="store_true")
    jobs = sub.add_parser("jobs", help="the learning queue: state, failed jobs, retry")
    jsub = jobs.add_subparsers(dest="jobs_command")
    jsub.add_parser("status", help="counts by account (default)").add_argument("--account")
    failed = jsub.add_parser("failed", help="an account's failed jobs")
    failed.add_argument("--account", required=True)
    failed.add_argument("--limit", type=int, default=50)
    retry = jsub.add_parser("retry", help="queue failed jobs again")
    retry.add_argument("--account", required=True)
    retry.add_argument("job_ids", nargs="*", help="default: every failed job of the account")


@contextmanager
def _profile(settings: Settings, *, index: bool) -> Iterator[ProfileService]:
    if index:
        from proxy.app import build_services

        services = build_services(settings)
        try:
            yield services.profile
        finally:
            services.index.close()
            services.db.close()
        return
    db = open_database(settings)
    try:
        records = FactRecords(db)
        # search and delete by query (the retriever's users) take the index=True path
        yield ProfileService(records, OutboxOnly(), cast(Retriever, None), settings.profile)
    finally:
        db.close()


def run_profile(settings: Settings, args: argparse.Namespace) -> int:
    if not args.account.strip():
        raise ConfigError("--account must be non-empty")
    try:  # the API's own rule for an end-user id: what the CLI writes, the API can read
        optional_end_user_id(args.collection, "--collection")
    except BadRequest as exc:
        raise ConfigError(exc.message) from exc
    try:
        return _run_profile(settings, args, Scope(args.account, args.collection))
    except ValidationError as exc:
        raise ConfigError(f"invalid arguments: {exc}") from exc


def _run_profile(settings: Settings, args: argparse.Namespace, scope: Scope) -> int:
    command = args.profile_command
    uses_index = command == "search" or (command == "delete" and args.query is not None)
    with _profile(settings, index=uses_index) as service:
        if command == "show":
            return _show(service, scope, args.json)
        if command == "search":
            req = SearchRequest(query=args.query, top_k=args.top_k, threshold=args.threshold)
            for hit in service.search(scope, req):
                print(f"{hit.score:.3f}\t{hit.fact.id}\t{hit.fact.text}")
            return 0
        if command == "export":
            return _export(service, scope, args.output)
        if command == "import":
            return _import(service, scope, args.file, args.on_conflict)
        return _delete(service, scope, args)


def _show(service: ProfileService, scope: Scope, as_json: bool) -> int:
    facts = service.facts(scope)
    for fact in facts:
        if as_json:
            print(json.dumps(fact_json(fact), ensure_ascii=False))
        else:
            print(
                f"{fact.id}\t{fact.kind}\t{fact.category}\t{fact.confidence:.2f}\t"
                f"{fact.source or '-'}\t{fact.key} = {fact.value}"
            )
    print(f"{len(facts)} facts in {_where(scope)}", file=sys.stderr)
    return 0


def _where(scope: Scope) -> str:
    who = f"collection {scope.collection_id!r}" if scope.collection_id else "the account-wide"
    return f"{who} profile of account {scope.account!r}"


def _export(service: ProfileService, scope: Scope, output: Path | None) -> int:
    facts = service.facts(scope)
    out: TextIO = output.open("w", encoding="utf-8") if output else sys.stdout
    try:
        for fact in tqdm(facts, desc="export", unit="fact", disable=output is None):
            out.write(json.dumps(fact_json(fact), ensure_ascii=False) + "\n")
    finally:
        if output:
            out.close()
    print(f"exported {len(facts)} facts from {_where(scope)}", file=sys.stderr)
    return 0


def _read_jsonl(path: Path) -> list[FactCreate]:
    """Every line validated before anything is written: a bad file imports nothing."""
    items: list[FactCreate] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                if not isinstance(raw, dict):
                    raise ValueError("not a JSON object")
                fields = {k: raw[k] for k in IMPORTED if raw.get(k) is not None}
                items.append(FactCreate.model_validate(fields))
            except (ValueError, ValidationError) as exc:
                raise ConfigError(f"{path}:{number}: not a fact: {exc}") from exc
    return items


def _import(service: ProfileService, scope: Scope, path: Path, on_conflict: str) -> int:
    items = _read_jsonl(path)
    counts = {"created": 0, "replaced": 0, "skipped": 0}
    for item in tqdm(items, desc="import", unit="fact"):
        item.source = item.source or CLI_SOURCE
        try:
            service.create_fact(scope, item, request_id=_rid())
            counts["created"] += 1
        except Conflict:
            if on_conflict == "skip":
                counts["skipped"] += 1
                continue
            key = normalize_key(item.key, service.rules)
            existing = next(f for f in service.facts(scope) if f.key == key)
            fields = item.model_dump(
                include=set(FactUpdate.model_fields) - {"key"}, exclude_unset=True
            )
            update = FactUpdate.model_validate(fields)
            service.update_fact(scope, existing.id, update, request_id=_rid())
            counts["replaced"] += 1
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    print(f"imported into {_where(scope)}: {summary}", file=sys.stderr)
    return 0


def _delete(service: ProfileService, scope: Scope, args: argparse.Namespace) -> int:
    if bool(args.fact_ids) == (args.query is not None):
        raise ConfigError("give fact ids or --query (not both)")
    if args.query is not None:
        req = DeleteByQuery(search_query=args.query, dry_run=args.dry_run)
        hits = service.delete_matching(scope, req, request_id=_rid())
        verb = "would delete" if args.dry_run else "deleted"
        for hit in hits:
            print(f"{verb}\t{hit.fact.id}\t{hit.fact.text}")
        return 0
    status = 0
    for fact_id in tqdm(args.fact_ids, desc="delete", unit="fact", disable=len(args.fact_ids) < 50):
        if args.dry_run:
            print(f"would delete\t{fact_id}\t{service.get_fact(scope, fact_id).text}")
            continue
        try:
            fact = service.delete_fact(scope, fact_id, request_id=_rid())
            print(f"deleted\t{fact.id}\t{fact.text}")
        except ProxyError as exc:
            print(f"profilo: {exc.message}", file=sys.stderr)
            status = 1
    return status


def run_jobs(settings: Settings, args: argparse.Namespace) -> int:
    db = open_database(settings)
    try:
        admin = JobAdmin(db)
        command = args.jobs_command or "status"
        if command == "status" and getattr(args, "account", None):
            print(json.dumps(JobStore(db).stats(args.account), indent=2, default=str))
        elif command == "status":
            for account, counts in admin.counts().items():
                shown = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
                print(f"{account}\t{shown}")
        elif command == "failed":
            for job in admin.failed(args.account, args.limit):
                when = dt.datetime.fromtimestamp(job["finished_at"] or 0, dt.UTC)
                print(
                    f"{job['id']}\t{job['collection_id'] or '-'}\t{job['attempts']}\t"
                    f"{when.isoformat(timespec='seconds')}\t{job['error']}"
                )
        else:
            n = admin.requeue_failed(args.account, args.job_ids or None)
            print(f"re-queued {n} failed job(s) of account {args.account!r}")
    finally:
        db.close()
    return 0
