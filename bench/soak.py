"""A bounded soak: mixed chat / profile traffic through a real ``profilo serve`` on loopback.

    python -m bench.soak --requests 20000 --duration 600 [--concurrency 8] [--users 50]
                         [--fixed-profiles] [--sample-every 30] [--warmup S]

Stops at whichever bound comes first. The upstream is ``bench.upstream`` (a fast fake); the
proxy runs as ``profilo serve`` in its own process with its own data dir. The traffic mixes
chat (JSON and SSE, with memory and user_profile, turns queued for learning), profile writes
(PATCH, POST facts, DELETE), reads (GET profile, list facts), search and dialectic, over
``--users`` collections. Reports errors (any non-2xx or transport error), latency percentiles
per kind, the proxy's RSS at start / after warm-up / end, its slope after warm-up in MiB per
10 minutes (total, anonymous and file-backed: ``bench.rss``) and a sample every
``--sample-every`` seconds. Exit status 1 when there was any error. No timing is asserted
anywhere (tests/test_soak.py runs a short form).

``--fixed-profiles`` separates data growth from leaks: every user's profile is seeded first
(each topic PATCHed, ``SEED_FACTS`` facts written), then the traffic only reads it -- chat with
memory and user_profile but ``learning: false``, profile reads, search, dialectic -- so the
data set the proxy serves is constant and any RSS trend after warm-up is the process's own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import rss
from bench.bench_proxy import start_proxy, start_upstream
from bench.common import new_session, pct

#: (kind, weight) of the traffic mix.
MIX = [
    ("chat", 30),
    ("chat_stream", 15),
    ("patch", 15),
    ("create_fact", 5),
    ("delete_fact", 5),
    ("get_profile", 10),
    ("list_facts", 5),
    ("search", 10),
    ("dialectic", 5),
]
#: The mix of ``--fixed-profiles``: nothing that writes a fact.
FIXED_MIX = [
    ("chat", 30),
    ("chat_stream", 15),
    ("get_profile", 15),
    ("list_facts", 10),
    ("search", 20),
    ("dialectic", 10),
]
#: Facts written per user before a ``--fixed-profiles`` run (besides one PATCH per topic).
SEED_FACTS = 4
TOPICS = ["jazz", "sailing", "Lisbon", "vegetarian food", "chess", "running", "Python", "cats"]


@dataclass
class Result:
    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    samples: list[rss.RssSample] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self, warmup: float | None = None, every: float = 30.0) -> dict[str, Any]:
        """RSS growth is measured after a warm-up (by default the first third of the run:
        per-user indexes load, caches fill) and scaled to 10 minutes."""
        warm = self.seconds / 3 if warmup is None else warmup
        memory = rss.trend(self.samples, warmup=warm, every=every)
        everything = [x for values in self.latencies.values() for x in values]
        return {
            "requests": self.requests,
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "seconds": round(self.seconds, 1),
            "rps": round(self.requests / self.seconds, 1) if self.seconds else 0.0,
            **{k: v for k, v in memory.items() if k != "rss_samples"},
            "rss_growth_mib_per_10min": memory.get("rss_slope_mib_per_10min", 0.0),
            "latency_ms": {
                kind: {
                    "n": len(values),
                    "p50": round(pct(values, 50) * 1000, 1),
                    "p95": round(pct(values, 95) * 1000, 1),
                    "p99": round(pct(values, 99) * 1000, 1),
                }
                for kind, values in sorted({**self.latencies, "all": everything}.items())
            },
            "rss_samples": memory.get("rss_samples", []),
        }


class Traffic:
    def __init__(self, url: str, users: int, seed: int, *, fixed: bool = False) -> None:
        self.url = url
        self.users = [f"soak-user-{i}" for i in range(users)]
        self.rng = random.Random(seed)
        self.fact_ids: dict[str, list[str]] = defaultdict(list)
        self.fixed = fixed
        self.mix = FIXED_MIX if fixed else MIX

    async def seed(self, session: aiohttp.ClientSession) -> None:
        """Every user's profile: each topic PATCHed, ``SEED_FACTS`` facts written."""
        for user in self.users:
            scoped = {"collection_id": user}
            body = {f"likes_{t.split()[0].lower()}": f"Enjoys {t}" for t in TOPICS}
            async with session.patch(self.url + "/v1/profile", params=scoped, json=body) as r:
                _ok(r.status, await r.read())
            for _ in range(SEED_FACTS):
                await self.one(session, "create_fact", user)

    def pick(self) -> tuple[str, str]:
        kinds, weights = zip(*self.mix, strict=True)
        return self.rng.choices(kinds, weights)[0], self.rng.choice(self.users)

    async def one(self, session: aiohttp.ClientSession, kind: str, user: str) -> None:
        """One request; raises on anything but a 2xx (and on a stream not ending in [DONE])."""
        topic = self.rng.choice(TOPICS)
        scoped = {"collection_id": user}
        if kind in ("chat", "chat_stream"):
            body = {
                "model": "bench-model",
                "messages": [{"role": "user", "content": f"Tell me something about {topic}"}],
                "features": {"memory": True, "user_profile": True, "learning": not self.fixed},
                "stream": kind == "chat_stream",
                **scoped,
            }
            async with session.post(self.url + "/v1/chat/completions", json=body) as r:
                data = await r.read()
                _ok(r.status, data)
                if kind == "chat_stream" and not data.rstrip().endswith(b"data: [DONE]"):
                    raise RuntimeError("stream did not end with [DONE]")
        elif kind == "patch":
            body = {f"likes_{topic.split()[0].lower()}": f"Enjoys {topic}"}
            async with session.patch(self.url + "/v1/profile", params=scoped, json=body) as r:
                _ok(r.status, await r.read())
        elif kind == "create_fact":
            key = f"note_{self.rng.randrange(10**9)}"
            body = {"key": key, "value": f"Mentioned {topic}", **scoped}
            async with session.post(self.url + "/v1/profile/facts", json=body) as r:
                data = await r.read()
                _ok(r.status, data)
                self.fact_ids[user].append(json.loads(data)["id"])
        elif kind == "delete_fact":
            if not self.fact_ids[user]:
                return await self.one(session, "create_fact", user)
            fact_id = self.fact_ids[user].pop()
            path = f"/v1/profile/facts/{fact_id}"
            async with session.delete(self.url + path, params=scoped) as r:
                _ok(r.status, await r.read())
        elif kind in ("get_profile", "list_facts"):
            path = "/v1/profile" if kind == "get_profile" else "/v1/profile/facts"
            async with session.get(self.url + path, params=scoped) as r:
                _ok(r.status, await r.read())
        elif kind == "search":
            body = {"query": topic, **scoped}
            async with session.post(self.url + "/v1/profile/search", json=body) as r:
                _ok(r.status, await r.read())
        elif kind == "dialectic":
            body = {"user_message": f"Does the user like {topic}?", **scoped}
            async with session.post(self.url + "/v1/profile/dialectic", json=body) as r:
                _ok(r.status, await r.read())
        return None


def _ok(status: int, data: bytes) -> None:
    if not 200 <= status < 300:
        raise RuntimeError(f"HTTP {status}: {data[:400]!r}")


async def drive(
    url: str,
    pid: int,
    *,
    requests: int,
    duration: float,
    concurrency: int,
    users: int,
    seed: int,
    fixed: bool = False,
) -> Result:
    traffic = Traffic(url, users, seed, fixed=fixed)
    result = Result()
    if fixed:
        async with new_session(concurrency) as session:
            await traffic.seed(session)
    started = time.monotonic()
    deadline = started + duration
    issued = 0

    async def sampler() -> None:
        while True:
            result.samples.append(rss.read(pid, time.monotonic() - started))
            await asyncio.sleep(1.0)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal issued
        while issued < requests and time.monotonic() < deadline:
            issued += 1
            kind, user = traffic.pick()
            t0 = time.perf_counter()
            try:
                await traffic.one(session, kind, user)
            except Exception as exc:
                result.errors[f"{kind}: {str(exc)[:400] or type(exc).__name__}"] += 1
            else:
                result.latencies[kind].append(time.perf_counter() - t0)
            result.requests += 1

    sampling = asyncio.create_task(sampler())
    async with new_session(concurrency) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    sampling.cancel()
    result.seconds = time.monotonic() - started
    result.samples.append(rss.read(pid, result.seconds))
    return result


def run(
    *,
    requests: int,
    duration: float,
    concurrency: int = 8,
    users: int = 50,
    seed: int = 1,
    fixed_profiles: bool = False,
    sample_every: float = 30.0,
    warmup: float | None = None,
    log_dir: Path | None = None,
) -> dict[str, Any]:
    """Start an upstream and a proxy, drive the traffic, stop them; the summary."""
    with tempfile.TemporaryDirectory(prefix="profilo-soak-") as tmp:
        logs = log_dir or Path(tmp)
        upstream = start_upstream(logs, chunks=8)
        try:
            proxy = start_proxy(
                logs,
                upstream,
                Path(tmp) / "data",
                # turns are queued for learning (the queue's write path is part of the soak);
                # bench.upstream cannot answer extraction prompts, so no worker runs them
                PROFILO_LEARNING__RUN_WORKER="false",
                PROFILO_LOG_LEVEL="warning",
            )
            try:
                result = asyncio.run(
                    drive(
                        proxy.url,
                        proxy.proc.pid,
                        requests=requests,
                        duration=duration,
                        concurrency=concurrency,
                        users=users,
                        seed=seed,
                        fixed=fixed_profiles,
                    )
                )
            finally:
                proxy.stop()
        finally:
            upstream.stop()
    return {"fixed_profiles": fixed_profiles, **result.summary(warmup, sample_every)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds, at most")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--fixed-profiles",
        action="store_true",
        help="seed every profile first, then only read it (learning off): a constant data set",
    )
    parser.add_argument("--sample-every", type=float, default=30.0, help="RSS curve, seconds")
    parser.add_argument(
        "--warmup", type=float, default=None, help="seconds before the slope (default: a third)"
    )
    args = parser.parse_args(argv)
    summary = run(
        requests=args.requests,
        duration=args.duration,
        concurrency=args.concurrency,
        users=args.users,
        seed=args.seed,
        fixed_profiles=args.fixed_profiles,
        sample_every=args.sample_every,
        warmup=args.warmup,
    )
    print(json.dumps(summary, indent=2))
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
