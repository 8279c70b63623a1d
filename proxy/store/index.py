"""The retrieval index: Chroma, one collection per scope (derived data, rebuildable).

A thin adapter. A scope's collection is named from ``Scope.key`` (a hash: raw account and
collection ids never reach Chroma) and created on its first upsert: cosine space, embeddings
given by the caller, no embedding function (Chroma's default one downloads a model). No
telemetry. Every Chroma failure is raised as ``Unavailable``; callers keep an outbox.

Memory: each HNSW index Chroma holds in memory costs ~2.7 MiB whatever its size (measured), so
the embedded client's index pool is bounded by ``index_cache_size``. chromadb 1.5.9's Rust
client ignores ``chroma_segment_cache_policy`` / ``chroma_memory_limit_bytes`` (only the legacy
Python segment manager reads them) and sizes the pool RLIMIT_NOFILE // 5, so the size is set on
the API object before it starts.

Eviction: chromadb 1.5.9 persists an index only every ``sync_threshold`` records, and an index
evicted with unpersisted records reads back wrong ("Nothing found on disk", deleted ids, lost
vectors). So each write is padded, under a per-scope lock, with deletes of ids that never
exist (no-op records) up to ``sync_threshold`` and leaves the index persisted; and an upsert
of an existing id is a delete then an add, because a vector replaced in place is not persisted.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import numpy as np

from proxy.config import StoreSettings
from proxy.errors import Unavailable
from proxy.models import Scope
from proxy.store.inflight import InFlight
from proxy.store.private import private_dir

log = logging.getLogger(__name__)

T = TypeVar("T")
Metadata = Mapping[str, str | int | float | bool]

#: Collection names are this prefix + ``Scope.key`` (already a hash).
NAME_PREFIX = "pf-"
#: Ids used only as no-op deletes; never written.
_PAD_PREFIX = "\x00pad-"
_LOCK_STRIPES = 64
#: Our index on Chroma's sqlite (see ``_index_segments_by_collection``).
SEGMENTS_INDEX = "profilo_segments_collection"


def collection_name(scope: Scope) -> str:
    return NAME_PREFIX + scope.key


class VectorIndex(Protocol):
    """What the services use of a vector index: Chroma (``FactIndex``) or pgvector
    (``proxy/store/pgvector_index.py``)."""

    def upsert(
        self, scope: Scope, ids: Sequence[str], embeddings: np.ndarray, metadatas: Sequence[Any]
    ) -> None: ...
    def delete(self, scope: Scope, ids: Sequence[str]) -> None: ...
    def query(
        self, scope: Scope, embedding: np.ndarray, n: int, where: dict[str, Any] | None = None
    ) -> list[tuple[str, float]]: ...
    def vectors(self, scope: Scope, ids: Sequence[str]) -> dict[str, np.ndarray]: ...
    def count(self, scope: Scope) -> int: ...
    def drop_scope(self, scope: Scope) -> None: ...
    def heartbeat(self) -> None: ...
    def close(self) -> None: ...


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
        self._inflight = InFlight(_closed)  # close() waits for the operations running
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
            # Replace, never update in place: 1.5.9 does not persist a vector overwritten
            # in place, so an evicted index would come back with the old one.
            existing = col.get(ids=ids, include=[])["ids"]
            if existing:
                self._pad_before(col, len(existing))
                col.delete(ids=existing)
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
            return [
                (i, min(1.0, max(-1.0, 1.0 - float(d)))) for i, d in zip(ids, dists, strict=True)
            ]

        return self._run("query", scope, search, [], create=False)

    def vectors(self, scope: Scope, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored embeddings of ``ids`` (those the index holds)."""
        ids = list(dict.fromkeys(str(i) for i in ids))
        if not ids:
            return {}

        def fetch(col: Any) -> dict[str, np.ndarray]:
            res = col.get(ids=ids, include=["embeddings"])
            found = res["embeddings"]
            if found is None:
                return {}
            return {
                i: np.asarray(v, dtype=np.float32) for i, v in zip(res["ids"], found, strict=True)
            }

        return self._run("vectors", scope, fetch, {}, create=False)

    def count(self, scope: Scope) -> int:
        return self._run("count", scope, lambda col: int(col.count()), 0, create=False)

    def drop_scope(self, scope: Scope) -> None:
        name = collection_name(scope)
        with self._inflight, self._stripe(scope), _translated("drop_scope"):
            self._forget(name)
            try:
                self._require_client().delete_collection(name)
            except Exception as exc:
                if not _is_not_found(exc):
                    raise

    def heartbeat(self) -> None:
        """Raises ``Unavailable`` when the server (or the embedded client) does not answer."""
        with self._inflight, _translated("heartbeat"):
            self._require_client().heartbeat()

    def close(self) -> None:
        """Refuses new operations, waits for those running on other threads (closing the
        embedded client under one could crash the process), then closes the client."""
        if not self._inflight.close():
            log.warning("index closed with %d operation(s) still running: the client is "
                        "left open", self._inflight.running)  # fmt: skip
            return
        with self._client_lock:
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

    def _run(self, op: str, scope: Scope, fn: Callable[[Any], T], default: T, *, create: bool) -> T:
        name = collection_name(scope)
        with self._inflight, _translated(op):
            for attempt in range(2):
                col = self._handle(name, create=create)
                if col is None:
                    return default
                try:
                    return fn(col)
                except Exception as exc:
                    if attempt:
                        raise
                    if _is_not_found(exc):
                        # A cached handle to a collection dropped elsewhere: forget it, retry.
                        self._forget(name)
                    elif not (op == "query" and _is_internal(exc)):
                        raise
                    # else: the embedded client's rare transient "Error executing plan" on a
                    # query under concurrent writes (seen 2 in ~22k soak requests): retry once
        raise AssertionError("unreachable")

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
        with self._client_lock:  # (after close, no call gets past self._inflight)
            if self._client is None:
                with _translated("connect"):
                    self._client = self._connect()
            return self._client

    def _connect(self) -> Any:
        from chromadb.config import Settings

        if self._settings.chroma_url:
            import chromadb

            url = urlsplit(self._settings.chroma_url)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ValueError(f"chroma_url must be http(s)://host[:port], got {url.geturl()}")
            ssl, port = url.scheme == "https", url.port or (443 if url.scheme == "https" else 8000)
            settings = Settings(anonymized_telemetry=False)
            return chromadb.HttpClient(host=url.hostname, port=port, ssl=ssl, settings=settings)
        return _embedded_client(self._path, self._settings.index_cache_size)


def _closed() -> Unavailable:
    return Unavailable("retrieval index unavailable: the index is closed")


def _embedded_client(path: Path, pool_size: int) -> Any:
    """A PersistentClient whose in-memory HNSW index pool holds at most ``pool_size`` indexes."""
    from chromadb.api import ServerAPI
    from chromadb.api.client import Client
    from chromadb.api.rust import RustBindingsAPI
    from chromadb.api.shared_system_client import SharedSystemClient
    from chromadb.config import Settings, System
    from chromadb.telemetry.product import ProductTelemetryClient

    private_dir(path)
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
        system.instance(ProductTelemetryClient)  # type: ignore[type-abstract]
        api = system.instance(ServerAPI)  # type: ignore[type-abstract]
        if not isinstance(api, RustBindingsAPI):
            raise RuntimeError(f"unexpected Chroma API implementation {type(api).__name__}")
        api.hnsw_cache_size = pool_size  # read by start(); default is RLIMIT_NOFILE // 5
        system.start()
        _index_segments_by_collection(path / "chroma.sqlite3")
        return Client.from_system(system)
    except Exception:
        SharedSystemClient._identifier_to_system.pop(identifier, None)
        try:
            system.stop()
        except Exception:
            log.debug("stopping a half-started Chroma system failed", exc_info=True)
        raise


def _index_segments_by_collection(db_path: Path) -> None:
    """Chroma's sqlite has no index on ``segments(collection)``, so every request scans all
    segments: query p50 grows from ~1 ms to ~8 ms at 10,000 scopes (measured). An index is
    invisible to Chroma's SQL and migrations; the name is ours, so it never clashes."""
    with closing(sqlite3.connect(db_path, timeout=30)) as db:
        db.execute(f"CREATE INDEX IF NOT EXISTS {SEGMENTS_INDEX} ON segments(collection)")
        db.commit()


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


def _is_internal(exc: BaseException) -> bool:
    from chromadb.errors import InternalError

    return isinstance(exc, InternalError)


@contextmanager
def _translated(op: str) -> Iterator[None]:
    """Any failure but ours (``Unavailable``) becomes ``Unavailable``."""
    try:
        yield
    except Unavailable:
        raise
    except Exception as exc:
        message = f"retrieval index unavailable: {op} failed: {type(exc).__name__}: {exc}"
        raise Unavailable(message) from exc
