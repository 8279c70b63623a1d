"""Settings: YAML file < environment (PROFILO_*, ``__`` for nesting) < explicit overrides (flags).

Nothing here is module-level state: ``load_settings`` builds a fresh ``Settings`` each call.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from proxy.errors import ConfigError

DEFAULT_CONFIG = Path("configs/default.yaml")


class UpstreamSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    api_base: str | None = None
    api_key: str | None = None
    timeout: float = 600.0
    connect_timeout: float = 10.0
    # Whether the upstream serves POST /responses itself (else: the chat-completions bridge).
    responses_api: bool = True
    # GET /v1/models lists the upstream's own models too: cached this long, a failed fetch
    # retried after models_retry_seconds, a fetch given at most models_timeout_seconds.
    models_ttl_seconds: float = Field(default=300.0, ge=0)
    models_retry_seconds: float = Field(default=30.0, ge=0)
    models_timeout_seconds: float = Field(default=5.0, gt=0)


class LiteLLMParams(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    api_base: str | None = None
    api_key: str | None = None


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_name: str
    litellm_params: LiteLLMParams
    # OpenAI-compatible entries only: does the server have POST /responses (default: yes)?
    responses_api: bool = True


class ModelsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    extraction: str | None = None
    dialectic: str | None = None


class StoreSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    chroma_url: str | None = None
    # Per-scope HNSW indexes held in memory (~2.7 MiB each); others load from disk (~5 ms).
    index_cache_size: int = Field(default=128, ge=1)
    # Every index write is padded to sync_threshold records so it is persisted at once (see
    # proxy/store/index.py): 2, the minimum, keeps that padding to at most one no-op record.
    hnsw_sync_threshold: int = Field(default=2, ge=2)
    hnsw_batch_size: int = Field(default=2, ge=2)
    # How long a write waits for a records-database lock held by another process (then 503).
    sqlite_busy_timeout_ms: int = Field(default=5000, ge=0)
    # PostgreSQL for the records and the job queue (several replicas); absent: SQLite in the
    # data dir. e.g. postgresql://profilo@db.internal/profilo (README "Scale out").
    database_url: str | None = None
    pool_min_size: int = Field(default=2, ge=0)
    pool_max_size: int = Field(default=16, ge=1)
    pool_timeout_seconds: float = Field(default=5.0, gt=0)  # waiting for a connection: 503
    # Where the vectors live: Chroma (embedded, or chroma_url), or with store.database_url the
    # facts table itself (pgvector: exact per-scope search; README "Scale out").
    vector_backend: Literal["chroma", "pgvector"] = "chroma"

    @model_validator(mode="after")
    def _pool_sizes(self) -> StoreSettings:
        if self.vector_backend == "pgvector" and not self.database_url:
            raise ValueError("store.vector_backend: pgvector needs store.database_url")
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("store.pool_min_size must not exceed store.pool_max_size")
        return self


class EmbeddingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = "local/all-MiniLM-L6-v2"
    api_base: str | None = None
    api_key: str | None = None
    cache_dir: Path | None = None  # where the local model's ONNX graph is built; data_dir/models
    #: The local model's weights: fp32 (the reference) or int8 (per-channel dynamic
    #: quantization, built from the fp32 graph at first start; README "embedding.precision").
    precision: Literal["fp32", "int8"] = "fp32"


class RedactionSettings(BaseModel):
    """Credentials are never stored as facts (proxy/services/secrets.py)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    api_keys: bool = True
    card_numbers: bool = True
    passwords: bool = True
    patterns: list[str] = []  # more regular expressions (case-insensitive) over key: value


class ProfileSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dynamic_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=1)
    max_key_chars: int = Field(default=64, ge=1)
    max_value_chars: int = Field(default=2000, ge=1)
    max_facts_per_request: int = Field(default=200, ge=1)
    default_search_threshold: float = Field(default=0.3, ge=0.0, le=1.0)
    default_top_k: int = Field(default=10, ge=1)
    max_top_k: int = Field(default=100, ge=1)
    redaction: RedactionSettings = RedactionSettings()


class RerankerSettings(BaseModel):
    """An optional cross-encoder behind a rerank endpoint (``POST /v1/rerank``: Cohere, Jina,
    TEI, vLLM, Infinity, LiteLLM's proxy), called through litellm; off while ``model`` is unset.
    See proxy/services/rerank.py."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None  # litellm's name, e.g. "cohere/rerank-english-v3.0"
    api_base: str | None = None
    api_key: str | None = None
    top_n: int = Field(default=30, ge=1, le=1000)  # fused candidates sent to it
    timeout_seconds: float = Field(default=2.0, gt=0)


class RetrievalSettings(BaseModel):
    """Hybrid retrieval: score = cosine + lexical_weight * lexical * (1 - cosine), lexical =
    bm25 / (bm25 + lexical_saturation), or bm25 / the query's best bm25 when
    lexical_saturation is 0; see proxy/services/retrieval.py."""

    model_config = ConfigDict(extra="forbid")
    lexical_weight: float = Field(default=0.2, ge=0.0, le=1.0)
    lexical_saturation: float = Field(default=10.0, ge=0.0)
    candidates: int = Field(default=32, ge=1, le=1000)
    common_term_share: float = Field(default=0.2, gt=0.0, le=1.0)
    common_term_min_facts: int = Field(default=20, ge=1)
    # average: embed the query with and without them, average; drop: embed it without them
    common_words: Literal["average", "drop", "keep"] = "average"
    # issue 19 (proxy/services/fusion.py): in ``average``, the weight of the query as is (0.5:
    # plain average); a candidate holding the query's common words (a speaker's name) gains
    # ``common_boost`` of its gap to 1.
    common_blend: float = Field(default=0.2, ge=0.0, le=1.0)
    common_boost: float = Field(default=0.0, ge=0.0, le=1.0)
    reranker: RerankerSettings = RerankerSettings()
    # Scope views (proxy/services/scope_views.py): each user's facts, vectors and BM25 index in
    # memory at the scope's write version. views_mb bounds them (0: off, every lookup reads the
    # indexes); scopes over views_max_facts are never held; those up to views_inline_facts are
    # read on the request path when not held, larger ones in the background.
    views_mb: int = Field(default=256, ge=0)
    views_max_facts: int = Field(default=50_000, ge=0)
    views_inline_facts: int = Field(default=500, ge=0)


#: An HTTP header name (RFC 9110 token).
HeaderName = Annotated[str, Field(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")]


class MemorySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(default=0.35, ge=0.0, le=1.0)
    top_k: int = Field(default=8, ge=1, le=100)
    max_tokens: int = Field(default=800, ge=50)
    min_confidence: float = Field(default=0.5, ge=0.0, le=1.0)
    max_profile_facts: int = Field(default=50, ge=0)
    timeout_seconds: float = Field(default=1.0, gt=0)
    template: Path | None = None
    # Request headers that name the end user, first present wins (after the body's collection_id,
    # before OpenAI's user): e.g. X-OpenWebUI-User-Id for Open WebUI.
    user_headers: list[HeaderName] = ["X-Collection-Id"]


class LearningSettings(BaseModel):
    """Background fact extraction from finished turns (the durable job queue)."""

    model_config = ConfigDict(extra="forbid")
    run_worker: bool = True
    concurrency: int = Field(default=4, ge=1, le=256)
    max_attempts: int = Field(default=5, ge=1, le=100)
    backoff_base_seconds: float = Field(default=2.0, gt=0)
    backoff_cap_seconds: float = Field(default=300.0, gt=0)
    poll_interval_seconds: float = Field(default=1.0, gt=0)
    llm_timeout_seconds: float = Field(default=120.0, gt=0)
    # A claimed job is leased this long, renewed every third of it while it runs; a lease that
    # runs out (the worker paused, partitioned, killed) is taken over by any replica, and the
    # old holder's fencing token no longer applies anything.
    lease_seconds: float = Field(default=60.0, ge=1)
    nearest_facts: int = Field(default=20, ge=0, le=100)
    dedupe_similarity: float = Field(default=0.9, ge=0.0, le=1.0)
    max_message_chars: int = Field(default=8000, ge=100)
    retention_days: float = Field(default=7.0, gt=0)
    # Per account (each job is a paid upstream call); 0 = no limit. Over them: 429 on
    # /v1/interactions, and a chat skips its learning (X-Profilo-Learning: skipped).
    max_queued_jobs_per_account: int = Field(default=2000, ge=0)
    max_jobs_per_minute_per_account: int = Field(default=600, ge=0)


class DialecticSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    max_history_turns: int = Field(default=20, ge=0, le=200)


class MetricsSettings(BaseModel):
    """GET /metrics (Prometheus text format)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    # Scrapers usually send no key; the page holds aggregate counts only (no user data).
    require_key: bool = False


class CorsSettings(BaseModel):
    """Browser pages of other origins (proxy/edge.py). None by default: a page could use the
    dev account, or a key typed into it, to read users' memories from any site."""

    model_config = ConfigDict(extra="forbid")
    # e.g. ["http://localhost:3000", "https://chat.example.com"]; "*" = every origin
    allow_origins: list[str] = []
    max_age_seconds: int = Field(default=600, ge=0)


class ServerSettings(BaseModel):
    """Connection limits of ``profilo serve`` (uvicorn), the request read, graceful shutdown."""

    model_config = ConfigDict(extra="forbid")
    # A connection whose request line + headers are not complete by then is closed.
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    # A request line + headers larger than this: 431 and the connection is closed.
    max_header_bytes: int = Field(default=64 * 1024, ge=4096)
    # An authenticated body with no new bytes for this long: 408.
    body_timeout_seconds: float = Field(default=60.0, gt=0)
    # Idle keep-alive connections are closed after this many seconds.
    keep_alive_seconds: int = Field(default=5, ge=1)
    # Connections + requests in progress at once; more are answered 503 at once (0: no cap).
    limit_concurrency: int = Field(default=1000, ge=0)
    # SIGTERM / SIGINT: for this long /readyz answers 503 "draining" and every response says
    # Connection: close while requests are still served, then the listening socket closes.
    drain_delay_seconds: float = Field(default=5.0, ge=0)
    # Then requests and streams in flight get this long to finish (then they are cancelled).
    shutdown_timeout_seconds: float = Field(default=30.0, ge=0)


class StoredCompletionsSettings(BaseModel):
    """Chat completions created with ``store: true`` (GET /v1/chat/completions ...)."""

    model_config = ConfigDict(extra="forbid")
    retention_days: float = Field(default=30.0, gt=0)  # OpenAI keeps them 30 days too


class QuotaSettings(BaseModel):
    """What one account may store (0 = no limit); over it: 429 ``quota_exceeded``."""

    model_config = ConfigDict(extra="forbid")
    max_facts_per_account: int = Field(default=1_000_000, ge=0)
    max_collections_per_account: int = Field(default=100_000, ge=0)
    max_dialectic_sessions_per_account: int = Field(default=10_000, ge=0)


class UsageSettings(BaseModel):
    """Usage metering and limits (README "Usage and limits")."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    # Metered calls wait in memory and are written in one transaction this often (and at a
    # graceful shutdown); a kill -9 loses at most this interval's records.
    flush_seconds: float = Field(default=1.0, gt=0, le=60)
    # A flush is started early once this many records wait.
    flush_batch: int = Field(default=5000, ge=1)
    # Streams ask the upstream for its usage chunk (stream_options.include_usage) when the
    # client did not, and strip it; false for an upstream that rejects the option (such
    # streams are then metered without tokens).
    ask_stream_usage: bool = True
    # Usage records older than this are deleted (budgets only read the current month).
    retention_days: float = Field(default=400.0, gt=0)
    # Limits set by the operator are read again after this long (a change reaches every
    # replica within it); 0 reads them on every request.
    limits_refresh_seconds: float = Field(default=5.0, ge=0)
    # Bearer token of the operator's API (PUT /admin/limits/...); unset: no admin API.
    # ``os.environ/NAME`` reads it from the environment.
    admin_key: str | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PROFILO_", env_nested_delimiter="__", extra="forbid"
    )

    data_dir: Path = Path("./data")
    host: str = "127.0.0.1"
    port: int = 8080
    log_level: str = "info"
    log_format: Literal["json", "text"] = "json"
    # OpenAI accepts up to 50 MB of payload per request with image inputs (data URLs included).
    max_body_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    cors: CorsSettings = CorsSettings()
    server: ServerSettings = ServerSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    model_list: list[ModelEntry] = []
    models: ModelsSettings = ModelsSettings()
    store: StoreSettings = StoreSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    profile: ProfileSettings = ProfileSettings()
    memory: MemorySettings = MemorySettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    dialectic: DialecticSettings = DialecticSettings()
    learning: LearningSettings = LearningSettings()
    metrics: MetricsSettings = MetricsSettings()
    stored_completions: StoredCompletionsSettings = StoredCompletionsSettings()
    quotas: QuotaSettings = QuotaSettings()
    usage: UsageSettings = UsageSettings()

    @property
    def db_path(self) -> Path:
        return self.data_dir / "profilo.sqlite3"

    @property
    def chroma_path(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_secret(value: str | None) -> str | None:
    """LiteLLM-style ``os.environ/NAME`` references, resolved when used (never at import)."""
    if value and value.startswith("os.environ/"):
        name = value.removeprefix("os.environ/")
        resolved = os.environ.get(name)
        if resolved is None:
            raise ConfigError(f"environment variable {name} (referenced in config) is not set")
        return resolved
    return value


def _read_yaml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build Settings from the YAML file, then ``PROFILO_*`` env, then ``overrides``.

    With no ``config_file``, ``configs/default.yaml`` is used when it exists.
    Overrides whose value is None are ignored (unset flags).
    """
    path = Path(config_file) if config_file is not None else None
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    file_data = _read_yaml(path)
    flags = {k: v for k, v in overrides.items() if v is not None}

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, InitSettingsSource(settings_cls, file_data))

    try:
        loaded = _Loaded(**flags)
    except ValueError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc
    return Settings.model_validate(loaded.model_dump())
