"""The ``profilo`` command: serve, keys, profile, jobs. The only module that reads argv."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from proxy import cli_profile, cli_usage
from proxy.config import Settings, load_settings
from proxy.errors import ConfigError, ProxyError
from proxy.store.db import open_database
from proxy.store.keys import KeyStore


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="profilo", description=__doc__)
    parser.add_argument("--config", type=Path, default=None, help="YAML config file")
    parser.add_argument("--data-dir", type=Path, default=None, help="override data_dir")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="YAML config file")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key for ACCOUNT and print it")
    create.add_argument("account")
    keys_sub.add_parser("list", help="list keys (never their secrets)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    cli_profile.add_parsers(sub)  # profile show|search|export|import|delete, jobs
    cli_usage.add_parsers(sub)  # usage, limits show|set

    db = sub.add_parser("db", help="the records database's schema (SQLite or Postgres)")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply pending migrations (under a lock: safe with replicas)")
    db_sub.add_parser("status", help="schema version applied and pending (exit 1 if pending)")

    store = sub.add_parser("store", help="move the records between backends")
    store_sub = store.add_subparsers(dest="store_command", required=True)
    move = store_sub.add_parser(
        "migrate", help="copy this (embedded) install's records into PostgreSQL, then validate"
    )
    move.add_argument("--to", required=True, metavar="POSTGRESQL_URL")
    move.add_argument("--batch-size", type=int, default=1000)
    move.add_argument(
        "--no-index", action="store_true", help="leave the vector index to the replicas' start-up"
    )

    index = sub.add_parser("index", help="manage the retrieval indexes")
    index_sub = index.add_subparsers(dest="index_command", required=True)
    rebuild = index_sub.add_parser("rebuild", help="rebuild the lexical index from the facts")
    rebuild.add_argument(
        "--vectors",
        action="store_true",
        help="also re-embed every fact into the vector index (after changing embedding.*)",
    )
    return parser


def _keys(settings: Settings, args: argparse.Namespace) -> int:
    db = open_database(settings)
    store = KeyStore(db)
    try:
        if args.keys_command == "create":
            info, token = store.create(args.account)
            print(token)
            print(f"created {info.id} for account {info.account!r} (shown once)", file=sys.stderr)
        elif args.keys_command == "list":
            for k in store.list():
                when = dt.datetime.fromtimestamp(k.created_at, dt.UTC).isoformat(timespec="seconds")
                state = "revoked" if k.revoked_at else "active"
                print(f"{k.id}\t{k.account}\t{k.prefix}…\t{when}\t{state}")
        elif args.keys_command == "revoke":
            if not store.revoke(args.key_id):
                print(f"no active key with id {args.key_id}", file=sys.stderr)
                return 1
            print(f"revoked {args.key_id}")
    finally:
        db.close()
    return 0


def _db(settings: Settings, args: argparse.Namespace) -> int:
    db = open_database(settings, migrate=args.db_command == "upgrade")
    try:
        status = db.status()
    finally:
        db.close()
    pending = status["pending"]
    print(f"backend: {status['backend']}\ndatabase: {status['database']}")
    print(f"version: {status['version']} (latest {status['latest']})")
    print(f"pending: {', '.join(map(str, pending)) if pending else 'none'}")
    return 1 if pending else 0


def _store(settings: Settings, args: argparse.Namespace) -> int:
    from proxy.store.migrate import MigrationFailed, migrate, queue_reindex
    from proxy.store.postgres import PostgresDatabase

    target = PostgresDatabase(args.to, min_size=1, max_size=2)
    try:
        reports = migrate(settings.db_path, target, batch_size=args.batch_size)
        for r in reports:
            print(f"{r.table}: {r.rows} rows ({r.copied} copied this run)")
        print(f"validated: every table's row count and content match; "
              f"{queue_reindex(target)} facts queued for the vector index")  # fmt: skip
        if args.no_index or not settings.store.chroma_url:
            # never into the source's embedded index: each replica's start-up replays it
            print("the replicas index those facts at start-up (store.chroma_url not set here)")
        else:
            print(f"vector index rebuilt: {_reindex(settings, target)} facts")
    except MigrationFailed as exc:
        print(f"profilo: migration failed: {exc}", file=sys.stderr)
        return 1
    finally:
        target.close()
    return 0


def _reindex(settings: Settings, target: Any) -> int:
    from tqdm import tqdm

    from proxy.llm.embeddings import build_embedder
    from proxy.services.indexing import IndexSync
    from proxy.store.changes import Outbox
    from proxy.store.embed_cache import CachedEmbedder
    from proxy.store.facts import FactRecords
    from proxy.store.index import FactIndex, VectorIndex
    from proxy.store.pgvector_index import PgVectorIndex

    cache = settings.embedding.cache_dir or settings.data_dir / "models"
    embedder = CachedEmbedder(build_embedder(settings.embedding, cache))
    index: VectorIndex = (
        PgVectorIndex(target, embedder.dim)
        if settings.store.vector_backend == "pgvector"
        else FactIndex(settings.store, settings.chroma_path)
    )
    outbox = Outbox(target)
    sync = IndexSync(FactRecords(target), outbox, index, embedder)
    total = 0
    try:
        for scope in tqdm(outbox.pending_scopes(), desc="index", unit="scope", file=sys.stderr):
            total += sync.flush(scope)
    finally:
        index.close()
    return total


def _index(settings: Settings, args: argparse.Namespace) -> int:
    from proxy.store.lexical_pg import lexical_index
    from proxy.store.migrate import queue_reindex

    db = open_database(settings)
    try:
        print(f"lexical index rebuilt: {lexical_index(db).rebuild()} facts")
        if args.vectors:  # every fact queued (running replicas' views see the writes), applied
            print(f"{queue_reindex(db)} facts queued for the vector index")
            print(f"vector index rebuilt: {_reindex(settings, db)} facts")
    finally:
        db.close()
    return 0


def _serve(settings: Settings) -> int:
    import uvicorn

    from proxy.app import check_bind, create_app
    from proxy.logging_setup import configure
    from proxy.native_threads import blas_threads, limit_blas_threads
    from proxy.server import DrainingServer, uvicorn_options

    configure(settings.log_level, settings.log_format)  # JSON lines with the request id
    limit_blas_threads()  # NumPy's products on the calling thread (proxy/native_threads.py)
    logging.getLogger("profilo.server").info("BLAS threads: %d", blas_threads())

    db = open_database(settings)
    try:
        check_bind(settings, KeyStore(db), warn=False)
    finally:
        db.close()
    app = create_app(settings)
    drain = app.state.drain  # set by the first SIGTERM / SIGINT (proxy/drain.py)
    config = uvicorn.Config(
        app,
        **uvicorn_options(settings, drain),
        log_level=settings.log_level,
        proxy_headers=False,
        server_header=False,
        log_config=None,  # uvicorn's records go through the handler configured above
        access_log=False,  # the middleware logs each request (route, status, request id)
    )
    server = DrainingServer(config, drain, settings.server.drain_delay_seconds)
    server.run()  # a lifespan start-up failure exits 3 from inside (as uvicorn.run does)
    return 0 if server.started else 3


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        overrides = {"data_dir": args.data_dir}
        if args.command == "serve":
            overrides |= {"host": args.host, "port": args.port}
        settings = load_settings(args.config, **overrides)
        if args.command == "serve":
            return _serve(settings)
        if args.command == "profile":
            return cli_profile.run_profile(settings, args)
        if args.command == "jobs":
            return cli_profile.run_jobs(settings, args)
        if args.command == "usage":
            return cli_usage.run_usage(settings, args)
        if args.command == "limits":
            return cli_usage.run_limits(settings, args)
        if args.command == "index":
            return _index(settings, args)
        if args.command == "db":
            return _db(settings, args)
        if args.command == "store":
            return _store(settings, args)
        return _keys(settings, args)
    except ConfigError as exc:
        print(f"profilo: {exc}", file=sys.stderr)
        return 2
    except ProxyError as exc:  # a service refused (unknown fact, bad value, ...)
        print(f"profilo: {exc.message}", file=sys.stderr)
        return 1
