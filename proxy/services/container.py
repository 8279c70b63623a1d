"""The services one app holds; built by ``create_app``'s lifespan, read by ``deps``."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.config import Settings
from proxy.llm.passthrough import Passthrough
from proxy.llm.router import UpstreamRouter
from proxy.services.account_config import AccountConfigService
from proxy.services.chat import ChatService
from proxy.services.dialectic import DialecticService
from proxy.services.extraction import LearningQueue
from proxy.services.indexing import IndexSync
from proxy.services.models import ModelCatalog
from proxy.services.openai_relay import OpenAIRelay
from proxy.services.profile import ProfileService
from proxy.services.responses import ResponsesService
from proxy.services.retrieval import Retriever
from proxy.services.stored_completions import StoredCompletions
from proxy.services.usage import UsageService
from proxy.store.changes import ChangeLog, Outbox
from proxy.store.db import Database
from proxy.store.embedder import Embedder
from proxy.store.index import VectorIndex
from proxy.store.int8_scan import warm as warm_int8_scan
from proxy.store.jobs import JobStore
from proxy.store.keys import KeyStore
from proxy.store.notify import Invalidations
from proxy.tokens import TokenCounter


@dataclass
class Services:
    settings: Settings
    db: Database
    keys: KeyStore
    router: UpstreamRouter
    passthrough: Passthrough
    chat: ChatService
    embedder: Embedder
    index: VectorIndex
    outbox: Outbox
    sync: IndexSync
    retriever: Retriever
    profile: ProfileService
    changes: ChangeLog
    account_config: AccountConfigService
    tokens: TokenCounter
    started_at: float
    jobs: JobStore
    learning: LearningQueue
    dialectic: DialecticService
    responses: ResponsesService
    relay: OpenAIRelay
    models: ModelCatalog
    stored_completions: StoredCompletions
    invalidations: Invalidations
    usage: UsageService

    def warm(self) -> None:
        """Load what a first request would otherwise wait for: encodings, the embedder."""
        self.tokens.warm()
        self.embedder.embed(["warm-up"])
        if self.settings.retrieval.views_mb > 0:  # only scope views scan int8 codes
            warm_int8_scan()
