"""``create_app(settings)``: builds everything; nothing module-level."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from proxy.api import (
    account,
    admin,
    chat,
    collections,
    dialectic,
    facts,
    health,
    interactions,
    models,
    openai_relay,
    profile,
    responses,
    stored_completions,
    ui,
    usage_admin,
)
from proxy.api import metrics as metrics_api
from proxy.api import reflexio as reflexio_api
from proxy.api import usage as usage_api
from proxy.config import Settings
from proxy.drain import ConnectionCloseMiddleware, Drain
from proxy.errors import BadRequest, ConfigError, MethodNotAllowed, NotFound, ProxyError
from proxy.llm.completer import Completer
from proxy.llm.costs import CostMap
from proxy.llm.embeddings import build_embedder
from proxy.llm.litellm_embed import litellm_embeddings
from proxy.llm.offline import prepare_offline_env
from proxy.llm.passthrough import Passthrough
from proxy.llm.router import UpstreamRouter
from proxy.metrics import Metrics
from proxy.middleware import RequestContextMiddleware
from proxy.prompts import Prompts
from proxy.services.account_config import AccountConfigService
from proxy.services.chat import ChatService, LiteLLMChatLike
from proxy.services.container import Services
from proxy.services.dialectic import DialecticService
from proxy.services.extraction import Extractor
from proxy.services.extraction_apply import Applier
from proxy.services.indexing import IndexSync
from proxy.services.limits import Clock, Limiter
from proxy.services.memory import MemoryService
from proxy.services.metering import Metering
from proxy.services.models import ModelCatalog
from proxy.services.openai_relay import OpenAIRelay
from proxy.services.profile import ProfileService
from proxy.services.readiness import Readiness
from proxy.services.rerank import Reranker
from proxy.services.responses import ResponsesService
from proxy.services.retrieval import Retriever
from proxy.services.scope_views import ScopeViews
from proxy.services.stored_completions import StoredCompletions
from proxy.services.usage import UsageService
from proxy.services.usage_recorder import UsageRecorder
from proxy.services.windows import LocalWindows, SharedWindows
from proxy.store.account_config import AccountConfigStore
from proxy.store.changes import ChangeLog, Outbox
from proxy.store.completions import CompletionStore
from proxy.store.db import Database, open_database
from proxy.store.embed_cache import CachedEmbedder
from proxy.store.erasure import Erasure
from proxy.store.facts import FactRecords
from proxy.store.index import FactIndex, VectorIndex
from proxy.store.jobs import JobStore
from proxy.store.keys import KeyStore
from proxy.store.lexical_pg import lexical_index
from proxy.store.notify import Invalidations
from proxy.store.pgvector_index import PgVectorIndex
from proxy.store.responses import ResponseStore
from proxy.store.scope_writes import ScopeWrites
from proxy.store.sessions import SessionStore
from proxy.store.usage import UsageStore
from proxy.tokens import TokenCounter
from proxy.worker import Worker

log = logging.getLogger("profilo")


def check_bind(settings: Settings, keys: KeyStore, *, warn: bool = True) -> None:
    """A non-loopback bind with no API keys refuses to start; loopback runs a dev account."""
    if keys.any_exist():
        return
    if not settings.loopback:
        raise ConfigError(
            f"refusing to serve on {settings.host} with no API keys: anyone could use the "
            "upstream. Create one with 'profilo keys create ACCOUNT', or bind 127.0.0.1."
        )
    if warn:
        log.warning(
            "NO API KEYS CONFIGURED: every request is served as the 'dev' account "
            "(loopback only). Create a key with 'profilo keys create ACCOUNT'."
        )


def _litellm_factory(settings: Settings) -> Any:
    holder: list[LiteLLMChatLike] = []

    def get() -> LiteLLMChatLike:
        if not holder:
            from proxy.llm.litellm_client import LiteLLMChat

            holder.append(LiteLLMChat(timeout=settings.upstream.timeout))
        return holder[0]

    return get


def build_metering(
    settings: Settings,
    db: Database,
    keys: KeyStore,
    router: UpstreamRouter,
    metrics: Metrics | None,
    clock: Clock | None,
) -> tuple[UsageService, Metering]:
    """The usage recorder, the limits (counted in Postgres when the records are there) and
    the service that reads them."""
    store = UsageStore(db)
    recorder = UsageRecorder(store, CostMap(), settings.usage, metrics)
    windows = SharedWindows(store) if db.dialect == "postgres" else LocalWindows()
    limiter = Limiter(
        store,
        windows,
        recorder,
        refresh_seconds=settings.usage.limits_refresh_seconds,
        default_jobs_per_minute=settings.learning.max_jobs_per_minute_per_account,
        clock=clock,
    )
    return UsageService(store, recorder, limiter, keys), Metering(
        recorder, limiter, router, ask_stream_usage=settings.usage.ask_stream_usage
    )


def build_services(
    settings: Settings, metrics: Metrics | None = None, clock: Clock | None = None
) -> Services:
    db = open_database(settings)
    keys = KeyStore(db)
    router = UpstreamRouter(settings)
    usage, metering = build_metering(settings, db, keys, router, metrics, clock)
    meters = metering if settings.usage.enabled else None
    passthrough = Passthrough(
        timeout=settings.upstream.timeout, connect_timeout=settings.upstream.connect_timeout
    )
    embedder = CachedEmbedder(
        build_embedder(
            settings.embedding, settings.embedding.cache_dir or settings.data_dir / "models"
        )
    )
    if metrics is not None:
        metrics.watch_embed_cache(embedder.stats)
    index: VectorIndex = (
        PgVectorIndex(db, embedder.dim)
        if settings.store.vector_backend == "pgvector"
        else FactIndex(settings.store, settings.chroma_path)
    )
    records = FactRecords(db, settings.quotas)
    outbox = Outbox(db)
    sync = IndexSync(records, outbox, index, embedder)
    lexical = lexical_index(db)
    if lexical.ensure():  # filled from the facts when missing or out of count
        log.warning("lexical index rebuilt from the facts")
    views = ScopeViews(
        records,
        index,
        ScopeWrites(db),
        sync,
        embedder.dim,
        settings.retrieval,
        metrics or Metrics(),
        fts5_lengths=db.dialect == "sqlite",
    )
    reranker = (
        Reranker(settings.retrieval.reranker, metrics)
        if settings.retrieval.reranker.model
        else None
    )
    retriever = Retriever(
        records, index, embedder, sync, lexical, settings.retrieval, metrics, reranker, views
    )
    invalidations = Invalidations(db)  # other replicas' writes (Postgres LISTEN/NOTIFY)
    invalidations.start()
    account_config = AccountConfigService(AccountConfigStore(db, invalidations))
    prompts = Prompts(memory_block=settings.memory.template)
    tokens = TokenCounter()
    memory = MemoryService(records, retriever, prompts, tokens, settings.memory)
    litellm_chat = _litellm_factory(settings)
    jobs = JobStore(db)
    learn = settings.learning
    completer = Completer(
        router,
        passthrough,
        litellm_chat,
        timeout=learn.llm_timeout_seconds,
        metrics=metrics,
        metering=meters,
    )
    extractor = Extractor(
        records=records,
        retriever=retriever,
        completer=completer,
        prompts=prompts,
        account_config=account_config,
        applier=Applier(records, jobs, embedder.batching(), sync, learn, settings.profile),
        settings=learn,
        profile_rules=settings.profile,
        extraction_model=settings.models.extraction,
    )
    worker = Worker(
        jobs, extractor, learn, metrics, redaction=settings.profile.redaction, limiter=usage.limiter
    )
    stored = StoredCompletions(CompletionStore(db), settings.stored_completions.retention_days)
    chat_service = ChatService(
        router,
        passthrough,
        litellm_chat,
        memory,
        account_config,
        settings.memory.timeout_seconds,
        learning=worker,
        max_message_chars=learn.max_message_chars,
        metrics=metrics,
        store=stored.record,
        metering=meters,
    )
    started_at = time.time()
    responses_service = ResponsesService(
        chat_service,
        router,
        passthrough,
        # the bridge answers clients: the client-facing timeout, not the extraction one
        Completer(
            router, passthrough, litellm_chat, timeout=settings.upstream.timeout, metering=meters
        ),
        ResponseStore(db),
        meters,
    )

    async def embed(body: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        return await litellm_embeddings(body, params, timeout_seconds=settings.upstream.timeout)

    return Services(
        settings=settings,
        db=db,
        invalidations=invalidations,
        keys=keys,
        router=router,
        passthrough=passthrough,
        chat=chat_service,
        embedder=embedder,
        index=index,
        outbox=outbox,
        sync=sync,
        retriever=retriever,
        profile=ProfileService(records, sync, retriever, settings.profile, Erasure(db)),
        changes=ChangeLog(db),
        account_config=account_config,
        tokens=tokens,
        started_at=started_at,
        jobs=jobs,
        learning=worker,
        dialectic=DialecticService(
            memory,
            SessionStore(db, settings.dialectic.session_ttl_seconds, settings.quotas),
            prompts,
            completer,
            settings,
        ),
        responses=responses_service,
        relay=OpenAIRelay(router, passthrough, embed),
        stored_completions=stored,
        models=ModelCatalog(router, passthrough, settings.upstream, started_at),
        usage=usage,
    )


async def _replay_forever(services: Services, every: float = 30.0) -> None:
    """Deferred index work (the index was down during a write) is retried in the background."""
    while True:
        await asyncio.sleep(every)
        if services.outbox.depth():
            await asyncio.to_thread(services.sync.replay)
        await services.stored_completions.purge()  # past stored_completions.retention_days
        await services.usage.purge(services.settings.usage.retention_days)


async def _stop_usage(services: Services) -> None:
    try:
        await services.usage.recorder.stop()  # writes the usage still in memory
    except Exception:
        log.exception("usage records lost at shutdown (the records are unreachable)")


def _close_stores(services: Services) -> None:
    services.retriever.close()
    services.index.close()
    services.invalidations.stop()
    services.db.close()


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ())]
    if loc and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:]  # the location only: a body field may itself be called "query"
    param = ".".join(loc) or None
    message = first.get("msg", "invalid request")
    err = BadRequest(f"{param}: {message}" if param else message, param=param)
    return JSONResponse(err.envelope(), status_code=err.status)


def _proxy_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProxyError)
    return JSONResponse(exc.envelope(), status_code=exc.status, headers=exc.headers)


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    err: ProxyError
    if exc.status_code == 404:
        err = NotFound(f"unknown route: {request.method} {request.url.path}", code="unknown_url")
    elif exc.status_code == 405:
        err = MethodNotAllowed(f"method {request.method} not allowed on {request.url.path}")
    else:
        err = ProxyError(str(exc.detail), status=exc.status_code, type="invalid_request_error")
    return JSONResponse(err.envelope(), status_code=err.status, headers=exc.headers)


def create_app(settings: Settings, *, clock: Clock | None = None) -> FastAPI:
    """``clock``: the usage limits' (seconds since the epoch; tests pass their own)."""
    prepare_offline_env()  # before anything loads tiktoken or litellm: no downloads, ever
    app_metrics = Metrics()  # this app's own registry (never the process-global one)
    drain = Drain()  # set by `profilo serve` on SIGTERM / SIGINT (proxy/drain.py)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Each part is stopped in reverse order of start, also when a later one fails to
        # start (no pool, thread or open file left behind by a refused start-up).
        async with AsyncExitStack() as started:
            services = build_services(settings, app_metrics, clock)
            # Off the loop: closing waits for the calls other threads still have running
            # on the stores (a cancelled task's thread goes on; see store/inflight.py).
            started.push_async_callback(asyncio.to_thread, _close_stores, services)
            app_metrics.watch_queue(services.jobs.pending_counts, services.outbox.depth)
            check_bind(settings, services.keys)
            readiness = app.state.readiness = Readiness(services, drain)
            await services.passthrough.start()
            started.push_async_callback(services.passthrough.close)
            await asyncio.to_thread(services.warm)  # cold loads off the first request's path
            readiness.embedder_loaded = True
            await asyncio.to_thread(services.sync.replay)  # index work a crash left pending
            await asyncio.to_thread(services.usage.recorder.costs.price, "warm-up")
            await services.usage.recorder.start()
            started.push_async_callback(_stop_usage, services)  # writes what it still holds
            await services.learning.start()  # re-queues jobs a crash left running
            started.push_async_callback(services.learning.stop)  # hands running jobs back
            retry = asyncio.create_task(_replay_forever(services))
            started.callback(retry.cancel)  # the shutdown's first step
            drain.on_begin(services.learning.stop_claiming)  # other replicas take new jobs
            app.state.services = services
            yield

    app = FastAPI(title="profilo", version="0.1.0", lifespan=lifespan)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ProxyError, _proxy_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        metrics=app_metrics,
        cors=settings.cors,
        body_timeout_seconds=settings.server.body_timeout_seconds,
    )
    app.add_middleware(ConnectionCloseMiddleware, drain=drain)  # outermost: every answer
    app.state.metrics = app_metrics
    app.state.drain = drain
    for module in (health, chat, models, profile, facts, account, interactions, admin, dialectic):
        app.include_router(module.router)
    for module in (responses, stored_completions, openai_relay, collections, metrics_api, ui):
        app.include_router(module.router)
    app.include_router(usage_api.router)
    app.include_router(usage_admin.router)
    app.include_router(reflexio_api.router)  # Reflexio-compatible /api/... routes
    return app
