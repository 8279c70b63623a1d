"""Scale-out on one machine: memory-on chat through nginx at 1, 2, 3 replicas, then a soak.

    python -m bench.bench_cluster [--quick] [--seconds 20] [--soak-minutes 10]

One ``bench.cluster.Cluster`` (Postgres, ``chroma run``, 3 replicas, nginx, the learning bench's
fake upstream); ``USERS`` scopes seeded with ``FACTS`` facts each through the store classes.
1. Scaling: nginx over the first k replicas, k = 1, 2, 3, 3, 2, 1 (``--quick``: 1, 2, 3, 5 s);
   16 closed-loop clients send memory-on chat, a new ~50-word message every request. req/s,
   p50/p99, errors, req/s per replica (nginx's log), CPU per request of each process tree.
2. Soak: 3 replicas, mixed traffic at ``--soak-rate``, a SIGTERM restart every 2 min (round
   robin): errors by status (during a restart or not), RSS, Postgres connections, and the
   learning queue drained at the end. Writes ``bench/results/cluster.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import psycopg

from bench import common, rss
from bench.bench_memory import memory_check
from bench.bench_postgres import HISTORY, SEARCHES, SYSTEM, TableEmbedder, md_table, user_message
from bench.bench_proxy import EMBED_CACHE
from bench.cluster import Cluster
from bench.common import MODEL, ROOT, Samples, Target, new_session, pct, run_batch
from bench.memory_seed import make_facts

ACCOUNT = "bench"
USERS = 20
FACTS = 200
CONCURRENCY = 16
FEATURES = {"memory": True, "user_profile": True, "learning": False}
OUT = ROOT / "bench" / "results" / "cluster.md"
ENV = {
    "PROFILO_LEARNING__MAX_QUEUED_JOBS_PER_ACCOUNT": "0",
    "PROFILO_LEARNING__MAX_JOBS_PER_MINUTE_PER_ACCOUNT": "0",
}
_TICK = os.sysconf("SC_CLK_TCK")


def collection(u: int) -> str:
    return f"cluster-user-{u}"


def chat(i: int, learning: bool = False) -> bytes:
    body = {
        "model": MODEL,
        "messages": [{"role": "system", "content": SYSTEM}, *HISTORY,
                     {"role": "user", "content": user_message(i)}],
        "features": {**FEATURES, "learning": learning},
        "collection_id": collection(random.Random(i).randrange(USERS)),
    }  # fmt: skip
    return orjson.dumps(body)


def seed(cluster: Cluster) -> float:
    """``FACTS`` facts per scope, as the proxy writes them (same texts, embedded once)."""
    from proxy.config import EmbeddingSettings, Settings
    from proxy.llm.embeddings import build_embedder
    from proxy.llm.offline import prepare_offline_env
    from proxy.models import Scope
    from proxy.services.indexing import IndexSync
    from proxy.store.changes import Outbox
    from proxy.store.db import open_database
    from proxy.store.facts import FactRecords
    from proxy.store.index import FactIndex

    t0 = time.perf_counter()
    prepare_offline_env()
    embedder = TableEmbedder(build_embedder(EmbeddingSettings(), Path(EMBED_CACHE)))
    embedder.fill([f.text for f in make_facts(Scope(ACCOUNT, "x"), FACTS, 0.05)])
    settings = Settings(
        data_dir=cluster.root / "seed",
        upstream={"api_base": "http://127.0.0.1:9/v1", "api_key": "x"},
        embedding={"cache_dir": EMBED_CACHE},
        store={"database_url": cluster.database_url, "chroma_url": cluster.chroma.url},
    )
    db = open_database(settings)
    index = FactIndex(settings.store, settings.chroma_path)
    records = FactRecords(db, settings.quotas)
    sync = IndexSync(records, Outbox(db), index, embedder)
    try:
        for u in range(USERS):
            scope = Scope(ACCOUNT, collection(u))
            with records.transaction(scope, request_id=f"seed-{u}", source="bench") as tx:
                for fact in make_facts(scope, FACTS, 0.05):
                    tx.add(fact)
            sync.flush(scope)
    finally:
        index.close()
        db.close()
    with psycopg.connect(cluster.database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - t0


# -- CPU and memory of process trees -------------------------------------------------------------
def tree_cpu(roots: list[int]) -> float:
    """User + system CPU seconds of the roots, their live descendants and reaped children."""
    stats: dict[int, list[str]] = {}  # pid -> the fields of /proc/pid/stat after the name
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        with contextlib.suppress(OSError, ValueError):
            f = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
            stats[int(entry.name)] = f
            kids.setdefault(int(f[1]), []).append(int(entry.name))
    total = sum(int(stats[r][13]) + int(stats[r][14]) for r in roots if r in stats)  # reaped
    todo = list(roots)
    while todo:
        if (pid := todo.pop()) in stats:
            total += int(stats[pid][11]) + int(stats[pid][12])
            todo += kids.get(pid, [])
    return total / _TICK


def cpu(cluster: Cluster, active: int) -> dict[str, float]:
    """CPU seconds so far of each part of the cluster (process trees), and of this process."""
    assert cluster.pg is not None and cluster.nginx.proc and cluster.chroma.proc
    replicas = [r.proc.pid for r in cluster.replicas if r.proc]
    roots = {
        "replicas": replicas[:active],
        "postgres": [int((cluster.pg.data / "postmaster.pid").read_text().split()[0])],
        "chroma": [cluster.chroma.proc.pid],
        "nginx": [cluster.nginx.proc.pid],
        "upstream": [cluster.upstream.pid] if cluster.upstream else [],
        "idle replicas": replicas[active:],
    }
    return {k: tree_cpu(v) for k, v in roots.items()} | {
        "load generator": common.process_cpu(os.getpid())
    }


def route(cluster: Cluster, k: int) -> None:
    """nginx over the first ``k`` replicas only."""
    cluster.nginx.stop()
    cluster.nginx.replica_ports = [r.port for r in cluster.replicas[:k]]
    cluster.nginx.start()


# -- 1. scaling ----------------------------------------------------------------------------------
async def step(cluster: Cluster, k: int, seconds: float, token: str, offset: int) -> dict[str, Any]:
    """``seconds`` of 16 closed-loop clients through nginx over the first ``k`` replicas."""
    url = cluster.url + "/v1/chat/completions"
    headers = {"Content-Type": "application/json", **cluster.auth(token)}
    target = Target(f"k={k}", url, b"", False, headers=headers, check=memory_check,
                    make_body=lambda i: chat(offset + i))  # fmt: skip
    out = Samples()
    async with new_session() as session:
        await run_batch(session, target, 10**6, CONCURRENCY, Samples(), min(3.0, seconds))  # warm
        seen = len(cluster.nginx.lines())
        cpu0 = cpu(cluster, k)
        await run_batch(session, target, 10**6, CONCURRENCY, out, seconds)
        used = {name: v - cpu0[name] for name, v in cpu(cluster, k).items()}
    served = Counter(x.upstreams[-1] for x in cluster.nginx.lines()[seen:] if x.upstreams)
    s = out.summary()
    n = max(out.count, 1)
    return {
        "k": k, "n": out.count, "errors": out.errors, "flags": s["flags"], "rps": s["rps"],
        "p50": s["p50_ms"], "p99": s["p99_ms"], "wall": out.wall,
        "cpu_ms": {name: v / n * 1000 for name, v in used.items()},
        "cores": {name: v / out.wall for name, v in used.items()},
        "per_replica": [served.get(r.address, 0) / out.wall for r in cluster.replicas[:k]],
    }  # fmt: skip


def scaling(cluster: Cluster, token: str, order: list[int], seconds: float) -> list[dict[str, Any]]:
    rows = []
    for j, k in enumerate(order):
        route(cluster, k)
        row = asyncio.run(step(cluster, k, seconds, token, (j + 1) * 1_000_000))
        rows.append(row)
        print(f"  {k} replica(s): {row['rps']:.1f} req/s, p50 {row['p50']:.0f} ms, p99 "
              f"{row['p99']:.0f} ms, {row['errors']} errors", flush=True)  # fmt: skip
    route(cluster, len(cluster.replicas))
    return rows


# -- 2. soak -------------------------------------------------------------------------------------
MIX = {"chat": 5, "search": 3, "patch": 2}


async def soak(cluster: Cluster, token: str, minutes: float, rate: float, every: float) -> Any:
    """Open-loop mixed traffic at ``rate`` req/s; a SIGTERM restart every ``every`` seconds."""
    auth, rng, start = cluster.auth(token), random.Random(5), time.monotonic()
    end = start + minutes * 60
    res: dict[str, Any] = {"calls": [], "restarts": [], "conns": [], "start": start,
                           "rss": {r.index: [] for r in cluster.replicas}}  # fmt: skip

    async def one(session: Any, i: int) -> None:
        kind, t0 = rng.choices(list(MIX), list(MIX.values()))[0], time.monotonic()
        scope = {"collection_id": collection(rng.randrange(USERS))}
        try:
            if kind == "chat":
                headers = {**auth, "Content-Type": "application/json"}
                req = session.post(cluster.url + "/v1/chat/completions",
                                   data=chat(10**8 + i, True), headers=headers)  # fmt: skip
            elif kind == "search":
                body = {"query": f"{SEARCHES[i % len(SEARCHES)]} ({i})", "top_k": 10, **scope}
                req = session.post(cluster.url + "/v1/profile/search", json=body, headers=auth)
            else:
                req = session.patch(cluster.url + "/v1/profile", params=scope, headers=auth,
                                    json={f"soak_note_{i % 50}": f"soak note {i}"})  # fmt: skip
            async with req as r:
                await r.read()
                status = str(r.status)
        except Exception as exc:
            status = type(exc).__name__
        res["calls"].append((t0, time.monotonic(), kind, status))

    async def sampler() -> None:
        while time.monotonic() < end:
            for r in cluster.replicas:
                with contextlib.suppress(OSError, AttributeError):  # restarting
                    res["rss"][r.index].append(rss.read(r.proc.pid, 0).rss / 1024)  # type: ignore[union-attr]
            res["conns"].append(await asyncio.to_thread(pg_connections, cluster))
            await asyncio.sleep(10)

    async def restarter() -> None:
        for n in range(int((minutes * 60 - 1) // every)):  # none after the traffic
            await asyncio.sleep(max(0.0, start + (n + 1) * every - time.monotonic()))
            t0 = time.monotonic()
            await asyncio.to_thread(cluster.restart, n % len(cluster.replicas))
            res["restarts"].append((n % len(cluster.replicas), t0, time.monotonic()))

    async with new_session() as session:
        tasks, i = [asyncio.create_task(sampler()), asyncio.create_task(restarter())], 0
        while (now := time.monotonic()) < end:
            await asyncio.sleep(max(0.0, start + i / rate - now))
            tasks.append(asyncio.create_task(one(session, i)))
            i += 1
        await asyncio.gather(*tasks)
    t0 = time.monotonic()
    res["queue"] = await asyncio.to_thread(drain, cluster)
    return res | {"drain_s": time.monotonic() - t0, "traffic_s": minutes * 60}


def pg_connections(cluster: Cluster) -> int:
    with psycopg.connect(cluster.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity").fetchone()
    return int(row[0]) - 1 if row else -1  # not this one


def drain(cluster: Cluster, timeout: float = 180) -> dict[str, int]:
    """The jobs by status once none is queued or running (or at the timeout)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(cluster.database_url, autocommit=True) as conn:
        while True:
            rows = conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall()
            counts = {str(s): int(c) for s, c in rows}
            if not (counts.get("queued") or counts.get("running")) or time.monotonic() > deadline:
                return counts
            time.sleep(0.5)


# -- report --------------------------------------------------------------------------------------
PARTS = ("replicas", "postgres", "chroma", "nginx", "upstream", "load generator", "idle replicas")


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def render_scaling(rows: list[dict[str, Any]]) -> list[str]:
    headers = ["step", "replicas", "n", "req/s", "p50 ms", "p99 ms", "errors", "fail-open/no facts",
               "req/s per replica", *[f"CPU ms/req {p}" for p in PARTS], "cores busy"]  # fmt: skip
    table = [[j + 1, r["k"], r["n"], r["rps"], r["p50"], r["p99"], r["errors"],
              f"{r['flags'].get('fail-open', 0)}/{r['flags'].get('no facts', 0)}",
              " / ".join(f"{x:.1f}" for x in r["per_replica"]),
              *[r["cpu_ms"][p] for p in PARTS], sum(r["cores"].values())]
             for j, r in enumerate(rows)]  # fmt: skip
    out = [md_table(headers, table), ""]
    by_k: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_k.setdefault(r["k"], []).append(r)
    base = mean([r["rps"] for r in by_k[1]]) if 1 in by_k else float("nan")
    headers = ["replicas", "steps", "req/s (mean)", "x 1 replica", "replica CPU ms/req",
               "req/s per replica on its own core", "cores busy (all processes)"]  # fmt: skip
    table = []
    for k, rs in sorted(by_k.items()):
        rps, ms = mean([r["rps"] for r in rs]), mean([r["cpu_ms"]["replicas"] for r in rs])
        table.append([k, len(rs), rps, f"{rps / base:.2f}x", ms, 1000 / ms,
                      mean([sum(r["cores"].values()) for r in rs])])  # fmt: skip
    ms = {p: mean([r["cpu_ms"][p] for r in rows]) for p in PARTS}
    busy = mean([sum(r["cores"].values()) for r in rows])
    return [*out, md_table(headers, table), "", (
        f"What bounds the scaling here: all of it runs on {os.cpu_count()} cores. CPU per request "
        f"summed over every process is {sum(ms.values()):.1f} ms (replicas {ms['replicas']:.1f}, "
        f"Postgres {ms['postgres']:.1f}, Chroma {ms['chroma']:.1f}, nginx {ms['nginx']:.1f}, fake "
        f"upstream {ms['upstream']:.1f}, load generator {ms['load generator']:.1f}, idle "
        f"replicas {ms['idle replicas']:.1f}), and req/s x that = cores busy ({busy:.2f} on "
        "average): once the cores are saturated, another replica only shares the same CPU. "
        "Per-replica throughput a bigger machine would multiply (a core per replica, the "
        f"database, Chroma and nginx elsewhere) = 1 / replica CPU per request = "
        f"{1000 / ms['replicas']:.0f} req/s per replica.")]  # fmt: skip


def render_soak(res: dict[str, Any], rate: float, every: float) -> list[str]:
    def during(t: float) -> bool:  # from the SIGTERM to 2 s after the new process is ready
        return any(a <= t <= b + 2 for _, a, b in res["restarts"])

    statuses: Counter[tuple[str, str, bool]] = Counter()
    lat: dict[str, list[float]] = {k: [] for k in MIX}
    for t0, t1, kind, status in res["calls"]:
        statuses[(kind, status, during(t0))] += 1
        if status.startswith("2"):
            lat[kind].append(t1 - t0)
    errors = {k: v for k, v in statuses.items() if not k[1].startswith("2")}
    n = len(res["calls"])
    out = [f"{n} requests in {res['traffic_s']:.0f} s ({rate:g} req/s target, "
           f"{n / res['traffic_s']:.1f} sent), {n - sum(errors.values())} 2xx, "
           f"{sum(errors.values())} errors; {len(res['restarts'])} SIGTERM restarts, one every "
           f"{every:g} s (round robin).", ""]  # fmt: skip
    table = [[kind, sum(v for (k, _, _), v in statuses.items() if k == kind),
              pct(lat[kind], 50) * 1000, pct(lat[kind], 99) * 1000,
              ", ".join(f"{s} {'during' if d else 'outside'}: {v}"
                        for (k, s, d), v in errors.items() if k == kind) or "none"]
             for kind in MIX]  # fmt: skip
    out += [md_table(["kind", "n", "p50 ms", "p99 ms", "errors (status, restart?)"], table), ""]
    table = [[i, f"{a - res['start']:.0f}", f"{b - a:.1f}"] for i, a, b in res["restarts"]]
    out += [md_table(["replica", "SIGTERM at s", "back ready after s"], table), ""]
    table = [[i, len(v), v[0], max(v), v[-1]] for i, v in res["rss"].items() if v]
    out += [md_table(["replica", "samples", "RSS start MiB", "max MiB", "end MiB"], table), ""]
    c, q = res["conns"], res["queue"]
    left = q.get("queued", 0) + q.get("running", 0)
    return [*out,
        "RSS every 10 s of the process serving as that replica (a restart starts a new one).", "",
        f"Postgres connections (pg_stat_activity, all backends): min {min(c)}, max {max(c)}, "
        f"last {c[-1]} over {len(c)} samples.", "",
        f"Learning queue after the traffic: {q} ({res['drain_s']:.1f} s to drain): "
        f"{'drained' if not left else f'NOT drained, {left} left'}, "
        f"{q.get('failed', 0)} failed."]  # fmt: skip


# -- run -----------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="steps 1, 2, 3 of 5 s each")
    ap.add_argument("--seconds", type=float, default=None, help="per scaling step (20)")
    ap.add_argument("--soak-minutes", type=float, default=10.0, help="0 skips the soak")
    ap.add_argument("--soak-rate", type=float, default=15.0, help="requests/s in the soak")
    ap.add_argument("--restart-every", type=float, default=120.0, help="seconds")
    args = ap.parse_args()
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    order = [1, 2, 3] if args.quick else [1, 2, 3, 3, 2, 1]
    seconds = args.seconds or (5.0 if args.quick else 20.0)
    m, started, soaked = common.machine(), time.perf_counter(), None
    with Cluster(3, env=ENV) as cluster:
        token = cluster.create_key(ACCOUNT)
        seeded = seed(cluster)
        print(f"seeded {USERS} x {FACTS} facts in {seeded:.0f} s", flush=True)
        rows = scaling(cluster, token, order, seconds)
        if args.soak_minutes > 0:
            print(f"soak: {args.soak_minutes:g} min", flush=True)
            soaked = asyncio.run(
                soak(cluster, token, args.soak_minutes, args.soak_rate, args.restart_every)
            )
        errors = [ln for r in cluster.replicas for ln in r.tail(10**6).splitlines()
                  if "error" in ln.lower()]  # fmt: skip
    out = [
        "# Scale-out: replicas behind nginx on one machine", "",
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}; runtime "
        f"{time.perf_counter() - started:.0f} s; command: python -m bench.bench_cluster "
        + " ".join(sys.argv[1:]),
        f"- machine: {m['cores']} cores, {m['cpu']}, Python {m['python']}, {m['platform']}",
        "- cluster: bench/cluster.py (Postgres 16 on loopback, `chroma run`, 3 `profilo serve`, "
        "nginx from deploy/nginx.conf, the learning bench's fake upstream answering at once)",
        f"- data: {USERS} users x {FACTS} facts (5% static), seeded in {seeded:.0f} s",
        f"- scaling: {CONCURRENCY} closed-loop clients, chat with features {FEATURES}, a random "
        f"user's collection_id, a new ~50-word message every request; {seconds:g} s per step "
        "after a 3 s warm-up; nginx re-rendered over the first k replicas (the others idle)",
        f"- replica log lines with 'error': {len(errors)}"
        + (f" (first: {errors[0].strip()[:200]})" if errors else ""),
        "", "## Scaling: memory-on chat at 1, 2, 3 replicas", "", *render_scaling(rows), "",
        "CPU ms/req: user+sys CPU of each process tree over the step, per request (replicas: "
        "the active ones together; idle replicas: the others, their workers polling). Cores "
        "busy: all of them together per second of wall time.",
    ]  # fmt: skip
    if soaked is not None:
        out += ["", f"## Soak: {args.soak_minutes:g} min, 3 replicas, rolling SIGTERM restarts",
                "", f"Mix {MIX}: chat with memory and learning on, POST /v1/profile/search, "
                "PATCH /v1/profile; errors = non-2xx or no answer; 'during' = sent between a "
                "SIGTERM and 2 s after the restarted replica was ready.", "",
                *render_soak(soaked, args.soak_rate, args.restart_every)]  # fmt: skip
    text = "\n".join(out) + "\n"
    print("\n" + text)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"written to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
