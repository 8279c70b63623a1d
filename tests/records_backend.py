"""Both records backends for the tests that touch the records: SQLite and PostgreSQL.

Modules named in ``BOTH`` run every test twice (``[sqlite]`` / ``[postgres]``). On Postgres,
each test gets a database of its own in one throwaway cluster per session
(``bench/pg_cluster.py``: a real server in a temporary directory, removed at the end); every
``make_settings`` then points ``store.database_url`` at it. ``PROFILO_TEST_BACKENDS=sqlite``
runs the SQLite half only.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.pg_cluster import PgCluster
from proxy.store.db import Database, SqliteDatabase
from proxy.store.postgres import PostgresDatabase

#: Test modules run on both backends.
BOTH = frozenset(
    {
        "test_account_config_api",
        "test_auth",
        "test_dialectic",
        "test_extraction",
        "test_facts_api",
        "test_faults",
        "test_fuzz",
        "test_interactions",
        "test_memory_chat",
        "test_profile_api",
        "test_profile_isolation",
        "test_quotas",
        "test_queue_fairness",
        "test_reflexio_api",
        "test_responses",
        "test_scope_views",
        "test_stored_completions",
        "test_tenancy",
        "test_usage",
        "test_limits",
        "test_worker",
    }
)
#: Modules also run with the vectors in Postgres (``store.vector_backend: pgvector``).
WITH_PGVECTOR = frozenset(
    {"test_profile_api", "test_tenancy", "test_memory_chat", "test_facts_api", "test_scope_views"}
)
_current: list[str] = []
_vectors: list[str] = []


def current_vector_backend() -> str | None:
    return _vectors[-1] if _vectors else None


def current_database_url() -> str | None:
    """The Postgres database of the running test (None: SQLite)."""
    return _current[-1] if _current else None


def _backends() -> list[str]:
    wanted = os.environ.get("PROFILO_TEST_BACKENDS", "sqlite,postgres,pgvector")
    return [b for b in ("sqlite", "postgres", "pgvector") if b in wanted.split(",")]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if "records_backend" in metafunc.fixturenames and module in BOTH:
        backends = _backends()
        if module not in WITH_PGVECTOR:
            backends = [b for b in backends if b != "pgvector"]
        metafunc.parametrize("records_backend", backends, indirect=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    with PgCluster() as cluster:
        yield cluster


@pytest.fixture(autouse=True)
def records_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    backend = getattr(request, "param", "sqlite")
    if backend != "sqlite" and request.node.get_closest_marker("sqlite_only"):
        pytest.skip("SQLite-specific (the file, its locks)")
    if backend == "sqlite":
        yield backend
        return
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    name = "t_" + uuid.uuid4().hex[:16]
    _current.append(cluster.create_database(name))
    _vectors.append("pgvector" if backend == "pgvector" else "chroma")
    try:
        yield backend
    finally:
        _current.pop()
        _vectors.pop()
        if cluster.started:
            cluster.drop_database(name)


@pytest.fixture(autouse=True)
def close_postgres_databases(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Closes every ``PostgresDatabase`` a test opened and left open (helpers such as
    ``KeyStore(open_database(settings))``): a pool left to the garbage collector is finalized
    on one of its own threads, which cannot join itself (a warning, and threads kept alive)."""
    opened: list[PostgresDatabase] = []
    real_init = PostgresDatabase.__init__

    def init(self: PostgresDatabase, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(PostgresDatabase, "__init__", init)
    yield
    for database in opened:
        database.close()  # a no-op for those already closed


def records_at(data_dir: Path) -> Database:
    """The records database a proxy with this data dir uses in the running test."""
    url = current_database_url()
    if url is not None:
        return PostgresDatabase(url, min_size=0, max_size=2, migrate=False)
    return SqliteDatabase(data_dir / "profilo.sqlite3")
