"""The Chroma retrieval index: one hashed collection per scope, eviction-safe, never online."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from proxy.config import StoreSettings
from proxy.errors import Unavailable
from proxy.models import Scope
from proxy.store.index import NAME_PREFIX, SEGMENTS_INDEX, FactIndex, collection_name

DIM = 384
CHROMA_CLI = Path(sys.executable).parent / "chroma"

MakeIndex = Callable[..., FactIndex]


def unit(seed: int, n: int = 1) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def meta(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [dict(extra) for _ in range(n)]


@pytest.fixture
def make_index(tmp_path: Path) -> Iterator[MakeIndex]:
    opened: list[FactIndex] = []

    def make(path: Path | None = None, **settings: Any) -> FactIndex:
        index = FactIndex(StoreSettings(**settings), path or tmp_path / "chroma")
        opened.append(index)
        return index

    yield make
    for index in opened:
        index.close()


class Truth:
    """What each scope should hold; checks the index against it by exact-vector queries."""

    def __init__(self, index: FactIndex) -> None:
        self.index = index
        self.data: dict[Scope, dict[str, np.ndarray]] = {}

    def upsert(self, scope: Scope, ids: list[str], seed: int) -> None:
        vectors = unit(seed, len(ids))
        self.index.upsert(scope, ids, vectors, meta(len(ids), kind="static"))
        self.data.setdefault(scope, {}).update(zip(ids, vectors, strict=True))

    def delete(self, scope: Scope, ids: list[str]) -> None:
        self.index.delete(scope, ids)
        for i in ids:
            self.data[scope].pop(i, None)

    def check(self, index: FactIndex | None = None) -> None:
        index = index or self.index
        for scope, facts in self.data.items():
            assert index.count(scope) == len(facts)
            for fact_id, vector in facts.items():
                hits = index.query(scope, vector, max(len(facts), 1))
                assert hits[0][0] == fact_id and hits[0][1] == pytest.approx(1.0, abs=1e-4)
                assert {i for i, _ in hits} == set(facts)


# -- basics -----------------------------------------------------------------------------------
def test_upsert_query_delete_count(make_index: MakeIndex) -> None:
    index = make_index()
    scope = Scope("acct", "user-1")
    v = unit(1, 3)
    index.upsert(scope, ["a", "b", "c"], v, meta(3, kind="static"))
    assert index.count(scope) == 3
    hits = index.query(scope, v[1], 10)
    assert hits[0][0] == "b" and hits[0][1] == pytest.approx(1.0, abs=1e-5)
    assert len(hits) == 3 and all(-1.0 <= s <= 1.0 for _, s in hits)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    assert len(index.query(scope, v[1], 2)) == 2 and index.query(scope, v[1], 0) == []

    index.delete(scope, ["b", "never-there"])
    assert index.count(scope) == 2
    assert "b" not in {i for i, _ in index.query(scope, v[1], 10)}

    new = unit(2)  # upsert of an existing id replaces its vector
    index.upsert(scope, ["a"], new, [{}])
    assert index.query(scope, new[0], 1)[0] == ("a", pytest.approx(1.0, abs=1e-5))
    assert index.count(scope) == 2


def test_similarity_is_cosine(make_index: MakeIndex) -> None:
    index = make_index()
    scope = Scope("acct")
    e = np.eye(2, DIM, dtype=np.float32)
    index.upsert(scope, ["x", "y", "neg"], np.stack([e[0] * 3, e[1], -e[0]]), meta(3))
    scores = dict(index.query(scope, e[0], 3))
    assert scores["x"] == pytest.approx(1.0, abs=1e-5)  # magnitude does not matter
    assert scores["y"] == pytest.approx(0.0, abs=1e-5)
    assert scores["neg"] == pytest.approx(-1.0, abs=1e-5)


def test_unknown_scope_is_empty_and_creates_nothing(make_index: MakeIndex) -> None:
    index = make_index()
    scope = Scope("acct", "nobody")
    assert index.query(scope, unit(1)[0], 5) == []
    assert index.count(scope) == 0
    index.delete(scope, ["x"])
    index.drop_scope(scope)
    assert index._require_client().list_collections() == []


def test_where_filter(make_index: MakeIndex) -> None:
    index = make_index()
    scope = Scope("acct", "u")
    v = unit(3, 4)
    metas = [
        {"kind": "static", "source": "chat"},
        {"kind": "dynamic", "source": "chat"},
        {"kind": "static", "source": "api"},
        {},
    ]
    index.upsert(scope, ["s1", "d1", "s2", "bare"], v, metas)
    assert {i for i, _ in index.query(scope, v[0], 10, {"kind": "static"})} == {"s1", "s2"}
    both = {"$and": [{"kind": "static"}, {"source": "chat"}]}
    assert [i for i, _ in index.query(scope, v[2], 10, both)] == ["s1"]
    assert index.query(scope, v[0], 10, {"kind": "nope"}) == []
    assert len(index.query(scope, v[0], 10, {})) == 4  # an empty filter is no filter


def test_validation_errors_are_value_errors(make_index: MakeIndex) -> None:
    index = make_index()
    scope = Scope("acct")
    with pytest.raises(ValueError):
        index.upsert(scope, ["a", "b"], unit(1), meta(2))
    with pytest.raises(ValueError):
        index.upsert(scope, ["a"], unit(1), meta(2))
    with pytest.raises(ValueError):
        index.upsert(scope, ["a", "a"], unit(1, 2), meta(2))
    with pytest.raises(ValueError):
        index.upsert(scope, ["a"], np.full((1, DIM), np.nan, dtype=np.float32), meta(1))
    index.upsert(scope, [], np.zeros((0, DIM), dtype=np.float32), [])  # nothing to do


def test_chroma_failures_are_unavailable(make_index: MakeIndex) -> None:
    index = make_index()
    scope = Scope("acct")
    index.upsert(scope, ["a"], unit(1), meta(1))
    with pytest.raises(Unavailable, match="retrieval index unavailable"):
        index.query(scope, np.ones(10, dtype=np.float32), 3)  # wrong dimension
    with pytest.raises(Unavailable):
        index.upsert(scope, ["b"], np.ones((1, 10), dtype=np.float32), meta(1))
    index.close()
    for call in (
        lambda: index.query(scope, unit(1)[0], 1),
        lambda: index.count(scope),
        index.heartbeat,
    ):
        with pytest.raises(Unavailable):
            call()


def test_a_transient_internal_error_on_a_query_is_retried_once(make_index: MakeIndex) -> None:
    """The embedded client rarely fails a query under concurrent writes ("Error executing
    plan", seen twice in a 22k-request soak): one retry; a lasting failure is Unavailable."""
    from chromadb.errors import InternalError

    index = make_index()
    scope = Scope("acct")
    index.upsert(scope, ["a"], unit(1), meta(1))
    col = index._handle(collection_name(scope), create=False)
    real = col.query
    failures = [InternalError("Error executing plan: Internal error")]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return real(*args, **kwargs)

    col.query = flaky
    assert [i for i, _ in index.query(scope, unit(1)[0], 1)] == ["a"]
    assert failures == []  # it did fail once

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise InternalError("Error executing plan: Internal error")

    col.query = broken
    with pytest.raises(Unavailable, match="Error executing plan"):
        index.query(scope, unit(1)[0], 1)


def test_close_waits_for_a_query_in_flight_then_refuses_new_ones(make_index: MakeIndex) -> None:
    """Closing the embedded client under a running call could crash the process: close()
    waits for the call another thread has in flight, and later calls are Unavailable."""
    index = make_index()
    scope = Scope("acct")
    index.upsert(scope, ["a"], unit(1), meta(1))
    col = index._handle(collection_name(scope), create=False)
    real, inside, proceed = col.query, threading.Event(), threading.Event()
    steps: list[str] = []

    def slow(*args: Any, **kwargs: Any) -> Any:
        inside.set()
        proceed.wait(10)
        return real(*args, **kwargs)

    col.query = slow
    with ThreadPoolExecutor(2) as pool:
        hits = pool.submit(index.query, scope, unit(1)[0], 1)
        inside.wait(10)
        closed = pool.submit(lambda: (index.close(), steps.append("closed")))
        time.sleep(0.2)
        assert not closed.done()  # waiting for the query
        proceed.set()
        assert [i for i, _ in hits.result(10)] == ["a"]
        closed.result(10)
    assert steps == ["closed"]
    with pytest.raises(Unavailable, match="the index is closed"):
        index.count(scope)


def test_segments_are_indexed_by_collection(make_index: MakeIndex, tmp_path: Path) -> None:
    """Without it every Chroma request scans all segments (slower with every scope)."""
    import sqlite3

    make_index().close()
    with sqlite3.connect(tmp_path / "chroma" / "chroma.sqlite3") as db:
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM segments WHERE collection = 'x'"
        ).fetchall()
    assert any(SEGMENTS_INDEX in str(row) for row in plan), plan


def test_one_client_per_path(make_index: MakeIndex, tmp_path: Path) -> None:
    first = make_index()
    with pytest.raises(Unavailable):
        make_index()
    first.close()
    make_index().heartbeat()  # a closed index releases its path


# -- isolation --------------------------------------------------------------------------------
def test_scopes_never_see_each_other(make_index: MakeIndex) -> None:
    index = make_index()
    scopes = [
        Scope("acct-a", "user-1"),
        Scope("acct-a", "user-2"),
        Scope("acct-a"),  # account-wide
        Scope("acct-b", "user-1"),  # same collection id, other account
        Scope("acct-b"),
    ]
    query = unit(99)[0]
    for n, scope in enumerate(scopes):
        ids = [f"{n}-{j}" for j in range(3)] + ["same-id"]
        index.upsert(scope, ids, unit(n, 4), meta(4, owner=str(n)))
    for n, scope in enumerate(scopes):
        hits = index.query(scope, query, 100)
        assert {i for i, _ in hits} == {f"{n}-{j}" for j in range(3)} | {"same-id"}
        assert index.count(scope) == 4
        assert index.query(scope, query, 100, {"owner": str((n + 1) % 5)}) == []
    index.delete(scopes[0], ["same-id"])
    index.drop_scope(scopes[1])
    assert index.count(scopes[0]) == 3 and index.count(scopes[1]) == 0
    for scope in scopes[2:]:
        assert index.count(scope) == 4
        assert "same-id" in {i for i, _ in index.query(scope, query, 100)}


def test_collection_names_are_hashed(make_index: MakeIndex) -> None:
    index = make_index()
    account, user = "Acme-Corp-7731", "alice@example.com"
    scopes = [Scope(account, user), Scope(account)]
    for scope in scopes:
        index.upsert(scope, ["a"], unit(1), meta(1))
    names = {c.name for c in index._require_client().list_collections()}
    assert names == {collection_name(s) for s in scopes} and len(names) == 2
    for name in names:
        assert name.startswith(NAME_PREFIX)
        for raw in (account, user, "alice", "acme", "7731"):
            assert raw.lower() not in name.lower()
    assert collection_name(Scope(account, user)) == collection_name(Scope(account, user))


def test_drop_scope_then_reuse(make_index: MakeIndex) -> None:
    index = make_index()
    scope = Scope("acct", "u")
    index.upsert(scope, ["a", "b"], unit(1, 2), meta(2))
    index.drop_scope(scope)
    assert index.count(scope) == 0 and index.query(scope, unit(1)[0], 5) == []
    index.upsert(scope, ["c"], unit(2), meta(1))
    assert [i for i, _ in index.query(scope, unit(2)[0], 5)] == ["c"]


# -- eviction and persistence -----------------------------------------------------------------
def test_eviction_and_reopen(make_index: MakeIndex, tmp_path: Path) -> None:
    """Five scopes through a cache of two, with the single-record writes that, unpadded, leave
    Chroma 1.5.9 indexes unpersisted when evicted ('Nothing found on disk', ghost ids)."""
    index = make_index(index_cache_size=2)
    truth = Truth(index)
    scopes = [Scope("acct", f"user-{n}") for n in range(5)]
    for n, scope in enumerate(scopes):
        truth.upsert(scope, [f"{n}-{j}" for j in range(10)], seed=n)
    truth.check()
    for n, scope in enumerate(scopes):  # one record per write: add, update, delete
        truth.upsert(scope, [f"{n}-new"], seed=100 + n)
        truth.upsert(scope, [f"{n}-0"], seed=200 + n)
        truth.delete(scope, [f"{n}-1"])
    truth.check()
    for n, scope in enumerate(scopes):
        truth.delete(scope, [f"{n}-{j}" for j in range(2, 10)])  # most of the scope
        truth.upsert(scope, [f"{n}-last"], seed=300 + n)
    truth.check()

    index.close()
    reopened = make_index(index_cache_size=2)
    truth.check(reopened)


def test_random_writes_through_small_cache(make_index: MakeIndex) -> None:
    import random

    rnd = random.Random(7)
    index = make_index(index_cache_size=2)
    truth = Truth(index)
    scopes = [Scope("acct", f"u{n}") for n in range(6)]
    next_id = 0
    for step in range(240):
        scope = rnd.choice(scopes)
        held = list(truth.data.get(scope, {}))
        if held and (len(held) > 12 or rnd.random() < 0.3):
            truth.delete(scope, rnd.sample(held, rnd.randint(1, min(3, len(held)))))
        else:
            ids = [f"f{next_id + j}" for j in range(rnd.randint(1, 3))]
            next_id += len(ids)
            if held and rnd.random() < 0.5:
                ids[0] = rnd.choice(held)  # an update
            truth.upsert(scope, ids, seed=1000 + step)
        if step % 40 == 39:
            truth.check()
    truth.check()


# -- concurrency ------------------------------------------------------------------------------
def test_concurrent_use(make_index: MakeIndex) -> None:
    index = make_index(index_cache_size=3)
    scopes = [Scope("acct", f"u{n}") for n in range(8)]

    def work(n: int) -> None:
        scope = scopes[n % len(scopes)]
        ids = [f"{n}-{j}" for j in range(3)]
        index.upsert(scope, ids, unit(n, 3), meta(3))
        index.query(scope, unit(n)[0], 5)
        index.delete(scope, [ids[2]])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(64)))
    for s, scope in enumerate(scopes):
        expected = {f"{n}-{j}" for n in range(s, 64, len(scopes)) for j in range(2)}
        assert index.count(scope) == len(expected)
        for n in range(s, 64, len(scopes)):
            assert index.query(scope, unit(n)[0], 1)[0][0] == f"{n}-0"


# -- nothing leaves the machine ---------------------------------------------------------------
@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every address any Python socket connects to during the test (on top of no_egress)."""
    seen: list[Any] = []
    for name in ("connect", "connect_ex"):
        real = getattr(socket.socket, name)

        def record(self: socket.socket, address: Any, _real: Any = real) -> Any:
            seen.append(address)
            return _real(self, address)

        monkeypatch.setattr(socket.socket, name, record)
    return seen


def _loopback(address: Any) -> bool:
    if not isinstance(address, tuple):
        return True  # unix socket
    host = str(address[0])
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


def _remote_peers_of_open_sockets() -> list[str]:
    """Remote addresses of this process's open TCP sockets (catches native, non-Python ones)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    peers = []
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[9] in inodes:
                peers.append(fields[2])
    return peers


def _peer_is_local(peer: str) -> bool:
    host = peer.split(":")[0]
    if set(host) == {"0"}:
        return True  # listening / unconnected
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        address = ipaddress.ip_address(raw[::-1])
    else:
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        address = ipaddress.ip_address(words)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
    return address.is_loopback


def test_embedded_never_connects_out_nor_loads_default_embedding(
    make_index: MakeIndex, connections: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from chromadb.api import types as chroma_types
    from chromadb.utils.embedding_functions import onnx_mini_lm_l6_v2

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Chroma's default embedding function was used")

    monkeypatch.setattr(onnx_mini_lm_l6_v2.ONNXMiniLM_L6_V2, "__init__", forbidden)
    monkeypatch.setattr(onnx_mini_lm_l6_v2.ONNXMiniLM_L6_V2, "__call__", forbidden)
    monkeypatch.setattr(chroma_types.DefaultEmbeddingFunction, "__call__", forbidden)
    monkeypatch.setattr(chroma_types.DefaultEmbeddingFunction, "__init__", forbidden)

    index = make_index(index_cache_size=1)
    scopes = [Scope("acct", "a"), Scope("acct", "b")]
    for n, scope in enumerate(scopes * 2):  # handles evicted and fetched again
        index.upsert(scope, [f"x{n}"], unit(n), meta(1))
        index.query(scope, unit(n)[0], 3, {"kind": "none"})
        index.count(scope)
    index.heartbeat()
    index.close()
    reopened = make_index(index_cache_size=1)
    assert reopened.count(scopes[0]) == 2
    assert all(_loopback(a) for a in connections), connections
    assert all(_peer_is_local(p) for p in _remote_peers_of_open_sockets())


# -- HTTP client against a real `chroma run` --------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def chroma_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    if not CHROMA_CLI.exists():
        pytest.skip(f"the chroma CLI is not installed next to {sys.executable}")
    port = _free_port()
    log = (tmp_path / "chroma-server.log").open("wb")
    # What the CLI script runs, minus its import of all of chromadb (seconds per start).
    cli = "import sys, chromadb_rust_bindings; chromadb_rust_bindings.cli(sys.argv[1:])"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            cli,
            "chroma",
            "run",
            "--path",
            str(tmp_path / "server"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"chroma server did not start: {(tmp_path / 'chroma-server.log')}")
                time.sleep(0.1)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def test_http_client(
    chroma_server: tuple[str, subprocess.Popen[bytes]],
    make_index: MakeIndex,
    connections: list[Any],
) -> None:
    url, proc = chroma_server
    index = make_index(chroma_url=url, index_cache_size=2)
    index.heartbeat()
    truth = Truth(index)
    scopes = [Scope("acct-a", "u1"), Scope("acct-a"), Scope("acct-b", "u1")]
    for n, scope in enumerate(scopes):
        truth.upsert(scope, [f"{n}-{j}" for j in range(4)], seed=n)
        truth.upsert(scope, [f"{n}-solo"], seed=10 + n)
        truth.delete(scope, [f"{n}-0"])
    truth.check()
    assert index.query(scopes[0], unit(0, 4)[1], 5, {"kind": "static"})[0][0] == "0-1"
    names = {c.name for c in index._require_client().list_collections()}
    assert names == {collection_name(s) for s in scopes}

    other = make_index(chroma_url=url)  # another replica drops a scope: cached handles recover
    other.drop_scope(scopes[0])
    assert index.count(scopes[0]) == 0 and index.query(scopes[0], unit(1)[0], 3) == []
    index.upsert(scopes[0], ["again"], unit(5), meta(1))
    assert other.count(scopes[0]) == 1

    assert connections and all(_loopback(a) for a in connections), connections

    proc.terminate()
    proc.wait(timeout=10)
    with pytest.raises(Unavailable):
        index.heartbeat()
    with pytest.raises(Unavailable):
        index.query(scopes[1], unit(1)[0], 3)


def test_http_client_connects_lazily(make_index: MakeIndex) -> None:
    index = make_index(chroma_url=f"http://127.0.0.1:{_free_port()}")  # nothing listens
    with pytest.raises(Unavailable):
        index.heartbeat()
    with pytest.raises(Unavailable):
        index.count(Scope("acct"))
    bad = make_index(chroma_url="ftp://example")
    with pytest.raises(Unavailable):
        bad.heartbeat()
