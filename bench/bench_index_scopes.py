"""Benchmark of the per-scope Chroma layout (proxy.store.index) against Chroma's defaults.

    python bench/bench_index_scopes.py [--scopes 10000] [--baseline-scopes 1000]
                                       [--sizes 1000 10000 100000] [--threads 4] [--dir DIR]

Each part runs in its own process (clean RSS, read from /proc/self/status) and all of them
report in one table:

- ours: ``FactIndex`` with the configured settings, ``--scopes`` scopes of ``--facts`` random
  384-d unit vectors; RSS at ``--baseline-scopes`` and at ``--scopes`` scopes; query p50/p99
  on a warm scope (cached) and on cold scopes (written long ago, evicted from the handle cache
  and from Chroma's index pool, so loaded from disk).
- default: the baseline of the same run, a plain ``PersistentClient`` with Chroma's default
  HNSW settings and index pool, ``--baseline-scopes`` scopes of the same data.
- disk: single-fact write latency and cold query latency with the data dir on the real disk
  (``tempfile.gettempdir()``): the other parts use ``--dir``, by default /dev/shm (tmpfs)
  when present, so that creating 10,000 scopes stays within minutes; tmpfs changes neither
  the RSS (its pages are not the process's) nor the warm latencies.
- sizes: query latency of one collection of 1k/10k/100k vectors, and of the same collection
  filtered with ``where`` to one 100-vector group (the shared-collection layout), against a
  100-vector collection (the per-scope layout).
Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from proxy.config import StoreSettings  # noqa: E402
from proxy.models import Scope  # noqa: E402
from proxy.store.index import FactIndex  # noqa: E402

DIM = 384
RSS_KEYS = ("VmRSS", "VmHWM", "RssAnon")


def rss() -> dict[str, float]:
    status = Path("/proc/self/status").read_text()
    found = {k: re.search(rf"^{k}:\s+(\d+) kB", status, re.M) for k in RSS_KEYS}
    return {k: int(m.group(1)) / 1024 if m else float("nan") for k, m in found.items()}


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def pcts(samples: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1000
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}


def latencies(fn: Callable[[int], object], count: int) -> list[float]:
    """Seconds taken by each of ``fn(0)`` ... ``fn(count - 1)``."""
    out = []
    for k in range(count):
        start = time.perf_counter()
        fn(k)
        out.append(time.perf_counter() - start)
    return out


def scope_of(n: int) -> Scope:
    return Scope("bench-account", f"user-{n}")


def fixed(scope: Scope) -> Callable[[int], Scope]:
    return lambda _: scope


def settings_of(args: argparse.Namespace) -> StoreSettings:
    return StoreSettings(index_cache_size=args.cache) if args.cache else StoreSettings()


def fill(index: FactIndex, args: argparse.Namespace, start: int, end: int) -> None:
    ids = [f"fact-{j}" for j in range(args.facts)]
    metas = [{"kind": "static", "category": "other"}] * args.facts

    def write(n: int) -> None:
        index.upsert(scope_of(n), ids, unit(np.random.default_rng(n + 1), args.facts), metas)

    with ThreadPoolExecutor(args.threads) as pool:
        list(pool.map(write, range(start, end)))


def query_latencies(
    index: FactIndex, scopes: Callable[[int], Scope], count: int, *, groups: int = 0
) -> list[float]:
    """Top-10 queries of ``scopes(k)``; with ``groups``, each filtered to one 100-vector group."""
    rng = np.random.default_rng(12345)

    def one(k: int) -> None:
        where = {"s": int(rng.integers(groups))} if groups else None
        index.query(scopes(k), unit(rng, 1)[0], 10, where)

    return latencies(one, count)


# -- parts ------------------------------------------------------------------------------------
def part_ours(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    settings = settings_of(args)
    index = FactIndex(settings, workdir / "ours")
    fill(index, args, -1, 0)  # warm up the client
    before, marks = rss(), {}
    started = time.perf_counter()
    done = 0
    for mark in sorted({min(args.baseline_scopes, args.scopes), args.scopes}):
        fill(index, args, done, mark)
        done, marks[str(mark)] = mark, rss()
    create_s = time.perf_counter() - started
    warm = scope_of(args.scopes - 1)
    index.query(warm, unit(np.random.default_rng(0), 1)[0], 10)
    warm_lat = query_latencies(index, fixed(warm), args.queries)
    cold_n = min(args.queries, max(1, args.scopes - 2 * settings.index_cache_size))
    cold_lat = query_latencies(index, scope_of, cold_n)  # the oldest scopes
    after = rss()
    index.close()
    return {
        "settings": settings.model_dump(),
        "scopes": args.scopes,
        "create_s": create_s,
        "rss_before": before,
        "rss_marks": marks,
        "rss_after_queries": after,
        "warm": pcts(warm_lat),
        "cold": pcts(cold_lat),
        "cold_scopes": cold_n,
    }


def part_default(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(
        str(workdir / "default"), settings=Settings(anonymized_telemetry=False)
    )
    ids = [f"fact-{j}" for j in range(args.facts)]
    metas = [{"kind": "static", "category": "other"}] * args.facts

    def write(n: int) -> None:
        col = client.create_collection(
            f"scope-{n}", configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
        )
        vectors = unit(np.random.default_rng(n + 1), args.facts)
        col.upsert(ids=ids, embeddings=vectors, metadatas=cast(Any, metas))

    write(-1)
    before = rss()
    started = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as pool:
        list(pool.map(write, range(args.baseline_scopes)))
    create_s = time.perf_counter() - started
    after = rss()
    client.close()  # type: ignore[attr-defined]
    return {"scopes": args.baseline_scopes, "create_s": create_s, "before": before, "after": after}


def part_disk(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    settings = settings_of(args)
    scopes = settings.index_cache_size + args.queries
    with tempfile.TemporaryDirectory(prefix="bench-index-disk-") as tmp:
        index = FactIndex(settings, Path(tmp))
        fill(index, args, 0, scopes)
        cold = pcts(query_latencies(index, scope_of, args.queries))  # the oldest scopes
        warm = scope_of(scopes - 1)
        rng = np.random.default_rng(1)
        meta = [{"kind": "static"}]

        def write(k: int) -> None:
            index.upsert(warm, [f"new-{k}"], unit(rng, 1), meta)

        new = pcts(latencies(write, args.writes))
        update = pcts(latencies(write, args.writes))  # the same ids again
        index.close()
    return {"scopes": scopes, "cold": cold, "write_new": new, "write_update": update}


def part_sizes(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    index = FactIndex(StoreSettings(), workdir / "sizes")
    rng = np.random.default_rng(7)
    out: dict[str, Any] = {"sizes": {}}
    for size in args.sizes:
        scope = Scope("bench-sizes", f"size-{size}")
        started = time.perf_counter()
        for start in range(0, size, 5000):
            n = min(5000, size - start)
            ids = [f"f{start + j}" for j in range(n)]
            groups = [{"s": (start + j) // 100} for j in range(n)]
            index.upsert(scope, ids, unit(rng, n), groups)
        build_s = time.perf_counter() - started
        plain = query_latencies(index, fixed(scope), args.queries)
        where = query_latencies(index, fixed(scope), args.queries, groups=max(1, size // 100))
        out["sizes"][str(size)] = {"build_s": build_s, "plain": pcts(plain), "where": pcts(where)}
        index.drop_scope(scope)
    small = Scope("bench-sizes", "one-scope-100")
    index.upsert(small, [f"f{j}" for j in range(100)], unit(rng, 100), [{"s": 0}] * 100)
    out["scope100"] = pcts(query_latencies(index, fixed(small), args.queries))
    index.close()
    return out


PARTS = {"ours": part_ours, "default": part_default, "disk": part_disk, "sizes": part_sizes}


# -- driver -----------------------------------------------------------------------------------
def run_part(name: str, argv: list[str], workdir: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--workdir"]
    started = time.perf_counter()
    proc = subprocess.run([*cmd, str(workdir), *argv], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"part {name} failed:\n{proc.stdout}\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - started
    return result


def report(r: dict[str, Any]) -> None:
    ours, default, disk, sizes = r["ours"], r["default"], r["disk"], r["sizes"]
    s = ours["settings"]
    print(
        f"\nFactIndex settings: index_cache_size={s['index_cache_size']}, "
        f"hnsw_sync_threshold={s['hnsw_sync_threshold']}, hnsw_batch_size={s['hnsw_batch_size']}"
    )
    print(f"\n{'process RSS (MiB)':<36}{'total':>8}{'grown':>8}{'per scope':>11}{'anon grown':>12}")
    rows = [
        (f"ours, {int(m):,} scopes", ours["rss_before"], v, int(m))
        for m, v in ours["rss_marks"].items()
    ]
    rows.append((f"chroma defaults, {default['scopes']:,} scopes", *default_pair(default)))
    per_scope = {}
    for label, before, after, n in rows:
        grown = after["VmRSS"] - before["VmRSS"]
        per_scope[label] = grown / n
        anon = after["RssAnon"] - before["RssAnon"]
        print(f"{label:<36}{after['VmRSS']:>8.0f}{grown:>8.0f}{grown / n:>11.3f}{anon:>12.0f}")
    d_per = list(per_scope.values())[-1]
    o_n = ours["scopes"]
    o_grown = ours["rss_marks"][str(o_n)]["VmRSS"] - ours["rss_before"]["VmRSS"]
    print(
        f"chroma defaults at {o_n:,} scopes (projected): {d_per * o_n / 1024:.1f} GiB; "
        f"ours {o_grown / 1024:.2f} GiB ({d_per * o_n / max(o_grown, 1):.0f}x less); "
        f"ours peak {ours['rss_after_queries']['VmHWM']:.0f} MiB"
    )
    print(
        f"creating scopes: ours {ours['create_s']:.0f}s for {o_n:,}, "
        f"defaults {default['create_s']:.0f}s for {default['scopes']:,}"
    )
    lines = [
        ("query, warm scope (100 facts)", ours["warm"]),
        (f"query, cold scope ({ours['cold_scopes']} evicted scopes)", ours["cold"]),
        (f"query, cold scope, data on disk ({disk['scopes']} scopes)", disk["cold"]),
        ("write 1 new fact, data on disk", disk["write_new"]),
        ("write 1 changed fact, data on disk", disk["write_update"]),
        ("query, a collection of 100 vectors", sizes["scope100"]),
    ]
    for size, v in sizes["sizes"].items():
        lines.append((f"query, a collection of {int(size):,} vectors", v["plain"]))
        lines.append((f"query, {int(size):,} vectors where= one 100-group", v["where"]))
    print(f"\n{'latency (ms)':<52}{'p50':>8}{'p99':>8}")
    for label, p in lines:
        print(f"{label:<52}{p['p50']:>8.2f}{p['p99']:>8.2f}")
    print("\nshared collection + where, over a per-scope collection of 100 (p50):")
    for size, v in sizes["sizes"].items():
        ratio = v["where"]["p50"] / sizes["scope100"]["p50"]
        print(f"  {int(size):>7,} vectors: {ratio:5.1f}x   (built in {v['build_s']:.0f}s)")


def default_pair(default: dict[str, Any]) -> tuple[dict[str, float], dict[str, float], int]:
    return default["before"], default["after"], default["scopes"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scopes", type=int, default=10_000)
    ap.add_argument("--facts", type=int, default=100)
    ap.add_argument("--baseline-scopes", type=int, default=1_000)
    ap.add_argument("--sizes", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--cache", type=int, default=0, help="index_cache_size (0: the default)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--writes", type=int, default=50)
    shm = Path("/dev/shm")
    default_dir = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    ap.add_argument("--dir", type=Path, default=default_dir, help="where the data dirs go")
    ap.add_argument("--json", action="store_true", help="also print the raw results as JSON")
    ap.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    ap.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args, _ = ap.parse_known_args()
    if args.part:
        print(json.dumps(PARTS[args.part](args, args.workdir)))
        return 0

    forwarded = [a for a in sys.argv[1:] if a != "--json"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{os.cpu_count()} cores, load {load:.1f}; Python {sys.version.split()[0]}; "
        f"{args.scopes:,} scopes x {args.facts} facts; {args.threads} writer threads; "
        f"data in {args.dir or tempfile.gettempdir()}"
    )
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-index-", dir=args.dir) as tmp:
        for name in ("default", "ours", "disk", "sizes"):
            results[name] = run_part(name, forwarded, Path(tmp))
            print(f"  {name}: {results[name]['wall_s']:.0f}s", flush=True)
    report(results)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
