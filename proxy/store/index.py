"""The retrieval index: Chroma, one collection per scope (derived data, rebuildable).

A thin adapter. Every scope gets its own collection, named from ``Scope.key`` (a hash: the
raw account and collection ids never reach Chroma), created lazily on the first upsert with
cosine space, caller-supplied embeddings and no embedding function (Chroma's default one
downloads a model; it is never used). Telemetry is off. Any Chroma failure is raised as
``Unavailable``; callers keep an outbox and replay.

Memory. Every HNSW index Chroma holds in memory costs ~2.7 MiB whatever its size (measured),
so the embedded client's index pool is bounded by ``index_cache_size``. (In chromadb 1.5.9
``chroma_segment_cache_policy`` / ``chroma_memory_limit_bytes`` are read only by the legacy
Python segment manager; the Rust embedded client sizes its pool from RLIMIT_NOFILE // 5 and
ignores them, so the pool size is set on the Rust API object before it starts.)

Eviction safety. Chroma 1.5.9 writes an index to disk only once ``sync_threshold`` log
records have accumulated, and evicting an index that still holds unpersisted records
corrupts reads ("Nothing found on disk", deleted ids returned, lost vectors). So every write
here is padded with deletes of ids that never exist (no-op log records, applied before the
real write, under a per-scope lock) up to ``sync_threshold``: each write leaves the index
persisted, and eviction drops nothing that is not on disk. ``sync_threshold`` defaults to
the minimum (2), which makes the padding at most one record.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np

from proxy.config import StoreSettings
from proxy.errors import Unavailable
from proxy.models import Scope

log = logging.getLogger(__name__)

T = TypeVar("T")
Metadata = Mapping[str, str | int | float | bool]

#: Collection names are this prefix + ``Scope.key`` (already a hash).
NAME_PREFIX = "pf-"
#: Ids used only as no-op deletes; never written.
_PAD_PREFIX = "\x00pad-"
_LOCK_STRIPES = 64


def collection_name(scope: Scope) -> str:
    return NAME_PREFIX + scope.key


class FactIndex:
    """Chroma collections per scope; thread-safe; every failure is ``Unavailable``."""

    def __init__(self, settings: StoreSettings, path: Path) -> None:
        self._settings = settings
        self._path = Path(path)
        self._hnsw: dict[str, Any] = {
            "space": "cosine",
            "sync_threshold": settings.hnsw_sync_threshold,
            "batch_size": min(settings.hnsw_batch_size, settings.hnsw_sync_threshold),
        }
        self._pad = [f"{_PAD_PREFIX}{i}" for i in range(settings.hnsw_sync_threshold)]
        self._handles: OrderedDict[str, Any] = OrderedDict()
        self._handles_lock = threading.Lock()
        self._stripes = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._client_lock = threading.Lock()
        self._client: Any = None
        self._closed = False
        if settings.chroma_url is None:
            self._require_client()  # embedded: fail at start-up, not on the first request

    # -- public API ---------------------------------------------------------------------------
    def upsert(
        self,
        scope: Scope,
        ids: Sequence[str],
        embeddings: np.ndarray,
        metadatas: Sequence[Metadata],
    ) -> None:
        ids = [str(i) for i in ids]
        if not ids:
            return
        if len(set(ids)) != len(ids):
            raise ValueError("upsert ids must be unique")
        matrix = _matrix(embeddings, len(ids))
        if len(metadatas) != len(ids):
            raise ValueError(f"{len(metadatas)} metadatas for {len(ids)} ids")
        metas = [dict(m) or None for m in metadatas]

        def write(col: Any) -> None:
            self._pad_before(col, len(ids))
            col.upsert(ids=ids, embeddings=matrix, metadatas=metas)

        with self._stripe(scope):
            self._run("upsert", scope, write, None, create=True)

    def delete(self, scope: Scope, ids: Sequence[str]) -> None:
        ids = list(dict.fromkeys(str(i) for i in ids))
        if not ids:
            return

        def remove(col: Any) -> None:
            self._pad_before(col, len(ids))
            col.delete(ids=ids)

        with self._stripe(scope):
            self._run("delete", scope, remove, None, create=False)

    def query(
        self, scope: Scope, embedding: np.ndarray, n: int, where: dict[str, Any] | None = None
    ) -> list[tuple[str, float]]:
        """The ``n`` nearest ids with cosine similarity in [-1, 1], best first."""
        if n <= 0:
            return []
        vector = _matrix(np.asarray(embedding).reshape(1, -1), 1)

        def search(col: Any) -> list[tuple[str, float]]:
            res = col.query(
                query_embeddings=vector, n_results=n, where=where or None, include=["distances"]
            )
            ids, dists = res["ids"][0], (res["distances"] or [[]])[0]
            return [(i, min(1.0, max(-1.0, 1.0 - float(d)))) for i, d in zip(ids, dists)]

        return self._run("query", scope, search, [], create=False)

    def count(self, scope: Scope) -> int:
        return self._run("count", scope, lambda col: int(col.count()), 0, create=False)

    def drop_scope(self, scope: Scope) -> None:
        name = collection_name(scope)
        with self._stripe(scope):
            self._forget(name)
            try:
                self._require_client().delete_collection(name)
            except Unavailable:
                raise
            except Exception as exc:
                if not _is_not_found(exc):
                    raise _unavailable("drop_scope", exc) from exc

    def heartbeat(self) -> None:
        try:
            self._require_client().heartbeat()
        except Unavailable:
            raise
        except Exception as exc:
            raise _unavailable("heartbeat", exc) from exc

    def close(self) -> None:
        with self._client_lock:
            self._closed = True
            client, self._client = self._client, None
        with self._handles_lock:
            self._handles.clear()
        if client is not None:
            try:
                client.close()
            except Exception:  # closing is best effort
                log.warning("closing the Chroma client failed", exc_info=True)

    # -- internals ----------------------------------------------------------------------------
    def _stripe(self, scope: Scope) -> threading.Lock:
        return self._stripes[zlib.crc32(scope.key.encode()) % _LOCK_STRIPES]

    def _pad_before(self, col: Any, records: int) -> None:
        missing = self._settings.hnsw_sync_threshold - records
        if missing > 0:
            col.delete(ids=self._pad[:missing])

    def _run(
        self, op: str, scope: Scope, fn: Callable[[Any], T], default: T, *, create: bool
    ) -> T:
        name = collection_name(scope)
        try:
            for attempt in range(2):
                col = self._handle(name, create=create)
                if col is None:
                    return default
                try:
                    return fn(col)
                except Exception as exc:
                    # A cached handle to a collection dropped elsewhere: forget it, retry once.
                    if attempt or not _is_not_found(exc):
                        raise
                    self._forget(name)
            raise AssertionError("unreachable")
        except Unavailable:
            raise
        except Exception as exc:
            raise _unavailable(op, exc) from exc

    def _handle(self, name: str, *, create: bool) -> Any:
        with self._handles_lock:
            col = self._handles.get(name)
            if col is not None:
                self._handles.move_to_end(name)
                return col
        client = self._require_client()
        if create:
            col = client.get_or_create_collection(
                name, configuration={"hnsw": dict(self._hnsw)}, embedding_function=None
            )
        else:
            try:
                col = client.get_collection(name, embedding_function=None)
            except Exception as exc:
                if _is_not_found(exc):
                    return None
                raise
        with self._handles_lock:
            self._handles[name] = col
            self._handles.move_to_end(name)
            while len(self._handles) > self._settings.index_cache_size:
                self._handles.popitem(last=False)
        return col

    def _forget(self, name: str) -> None:
        with self._handles_lock:
            self._handles.pop(name, None)

    def _require_client(self) -> Any:
        with self._client_lock:
            if self._closed:
                raise Unavailable("retrieval index unavailable: the index is closed")
            if self._client is None:
                try:
                    self._client = self._connect()
                except Exception as exc:
                    raise _unavailable("connect", exc) from exc
            return self._client

    def _connect(self) -> Any:
        from chromadb.config import Settings

        if self._settings.chroma_url:
            import chromadb

            url = urlsplit(self._settings.chroma_url)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ValueError(f"chroma_url must be http(s)://host[:port], got {url.geturl()}")
            ssl = url.scheme == "https"
            port = url.port or (443 if ssl else 8000)
            return chromadb.HttpClient(
                host=url.hostname,
                port=port,
                ssl=ssl,
                settings=Settings(anonymized_telemetry=False),
            )
        return _embedded_client(self._path, self._settings.index_cache_size)


def _embedded_client(path: Path, pool_size: int) -> Any:
    """A PersistentClient whose in-memory HNSW index pool holds at most ``pool_size`` indexes."""
    from chromadb.api import ServerAPI
    from chromadb.api.client import Client
    from chromadb.api.rust import RustBindingsAPI
    from chromadb.api.shared_system_client import SharedSystemClient
    from chromadb.config import Settings, System
    from chromadb.telemetry.product import ProductTelemetryClient

    path.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        anonymized_telemetry=False,
        allow_reset=False,
        is_persistent=True,
        persist_directory=str(path),
    )
    identifier = str(path)
    if identifier in SharedSystemClient._identifier_to_system:
        raise RuntimeError(f"another Chroma client is already open on {path} in this process")
    system = System(settings)
    try:
        system.instance(ProductTelemetryClient)
        api = system.instance(ServerAPI)
        if not isinstance(api, RustBindingsAPI):
            raise RuntimeError(f"unexpected Chroma API implementation {type(api).__name__}")
        api.hnsw_cache_size = pool_size  # read by start(); default is RLIMIT_NOFILE // 5
        system.start()
        return Client.from_system(system)
    except Exception:
        SharedSystemClient._identifier_to_system.pop(identifier, None)
        try:
            system.stop()
        except Exception:
            log.debug("stopping a half-started Chroma system failed", exc_info=True)
        raise


def _matrix(embeddings: Any, rows: int) -> np.ndarray:
    matrix = np.ascontiguousarray(embeddings, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != rows or matrix.shape[1] == 0:
        raise ValueError(f"expected {rows} embedding rows, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("embeddings must be finite")
    return matrix


def _is_not_found(exc: BaseException) -> bool:
    from chromadb.errors import NotFoundError

    return isinstance(exc, NotFoundError) or "does not exist" in str(exc)


def _unavailable(op: str, exc: BaseException) -> Unavailable:
    return Unavailable(f"retrieval index unavailable: {op} failed: {type(exc).__name__}: {exc}")
