"""Issue 20: what usage metering costs a request, and how many records the recorder writes.

    python -m bench.bench_usage [--quick] [--postgres]

1. Added latency. Two proxies in this process, the same settings but ``usage.enabled`` on
   and off, called through their ASGI apps (no client socket, no uvicorn: the noise of the
   network is left out, the upstream call is in) against the lean fake upstream
   (``bench.upstream``, which reports ``usage`` and, when asked, a usage chunk). Four paths:
   pass-through JSON and SSE, memory on (``features.memory`` + ``user_profile``, 20 facts in
   the user's scope) JSON and SSE, and pass-through SSE whose client asks for the usage chunk
   itself (so both sides stream the same events: metering's own cost, without the upstream's
   extra chunk). The targets take turns request by request (the order reversed every other
   turn), so the machine's load drifts hit them alike; the p50 of every
   request of a target is compared with its pair's: the difference is metering's added p50.
   No limit is set (the common case: no counter is touched); a second pass-through pair with
   requests/min and tokens/min set on the account (counted in process) shows that cost too.
2. The work metering adds, timed alone in-process (µs per call): admitting a request (no
   limit / limits set), reading ``usage`` from a JSON answer and recording it.
3. Writes: ``UsageRecorder.record`` per second (in memory), and ``UsageStore.insert`` rows per
   second in batches of ``usage.flush_batch`` (SQLite; with ``--postgres`` also a throwaway
   PostgreSQL), i.e. the rate the background flusher sustains.

Goal (issue 20): added p50 < 0.1 ms on the pass-through and memory paths.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.breakdown import AsgiDriver
from bench.common import Server, chat_body, free_port, machine, machine_line, spawn, table
from bench.serve import index_available, install_index_stub

GOAL_ADDED_P50_MS = 0.1
EMBED_CACHE = "/tmp/profilo-test-models"
USER = "bench-user"
MEMORY = {"features": {"memory": True, "user_profile": True, "learning": False},
          "collection_id": USER}  # fmt: skip
DAYS = ["Mon", "Tues", "Wednes", "Thurs"] * 5
FACTS = {f"fact_{i}": f"likes thing number {i} on {day}day" for i, day in enumerate(DAYS)}


def _settings(data_dir: Path, upstream: str, metering: bool) -> Any:
    from proxy.config import Settings

    return Settings(
        data_dir=data_dir,
        upstream={"api_base": upstream, "api_key": "x"},
        embedding={"cache_dir": EMBED_CACHE},
        learning={"run_worker": False},
        usage={"enabled": metering},
    )


async def _timed(drive: AsgiDriver, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await drive()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


async def latency(upstream: str, work: Path, n: int) -> list[dict[str, Any]]:
    """Added p50 per path: metering on vs off, one request of each target in turn."""
    from proxy.app import create_app
    from proxy.models import Limits, Scope

    if not index_available():
        install_index_stub()
    apps = {
        name: create_app(_settings(work / name, upstream, name != "off"))
        for name in ("on", "off", "limits")
    }
    paths = [(p, s) for p in ("pass-through", "memory") for s in (False, True)]
    paths.append(("pass-through, client asks usage,", True))
    samples: dict[tuple[str, str, bool], list[float]] = {}
    async with contextlib.AsyncExitStack() as stack:
        for app in apps.values():
            await stack.enter_async_context(app.router.lifespan_context(app))
            services = app.state.services
            await asyncio.to_thread(services.profile.patch_profile, Scope("dev", USER), FACTS,
                                    dry_run=False, request_id="seed")  # fmt: skip
        limits = Limits(requests_per_minute=10**9, tokens_per_minute=10**12)
        apps["limits"].state.services.usage.set_limits("dev", None, limits)
        drivers = {}
        for path, stream in paths:
            extra: dict[str, Any] = MEMORY if path == "memory" else {}
            if "asks usage" in path:
                extra = {"stream_options": {"include_usage": True}}
            body = chat_body(stream, **extra)
            for name, app in apps.items():
                if name == "limits" and path != "pass-through":
                    continue
                drivers[(name, path, stream)] = AsgiDriver(app, "/v1/chat/completions", body)
        for drive in drivers.values():
            await _timed(drive, 50)  # warm-up
        order = list(drivers.items())
        for i in range(n):  # one request per target in turn: load drifts hit every target alike
            for key, drive in order if i % 2 else reversed(order):
                t0 = time.perf_counter()
                await drive()
                samples.setdefault(key, []).append((time.perf_counter() - t0) * 1e3)
        written = sum(a.state.services.usage.recorder.written for a in apps.values())
        pending = sum(a.state.services.usage.recorder.pending for a in apps.values())
    rows = []
    for path, stream in paths:
        off = statistics.median(samples[("off", path, stream)])
        for name in ("on", "limits"):
            if (name, path, stream) not in samples:
                continue
            on = statistics.median(samples[(name, path, stream)])
            rows.append({"path": path + (" SSE" if stream else " JSON"),
                         "metering": "on" if name == "on" else "on, RPM+TPM limits",
                         "n": len(samples[(name, path, stream)]), "off_p50_ms": off,
                         "on_p50_ms": on, "added_p50_ms": on - off, "ratio": on / off})  # fmt: skip
    print(f"(usage records written by the flusher during the run: {written + pending})")
    return rows


def work_per_call(upstream: str, work: Path, n: int) -> list[tuple[str, float]]:
    """µs per call of what metering adds to one request, timed alone."""
    from proxy.app import build_services
    from proxy.models import Account, Limits

    services = build_services(_settings(work / "steps", upstream, True))
    usage = services.usage
    metering = services.chat._metering
    assert metering is not None
    answer = b'{"id": "x", "choices": [], "usage": {"prompt_tokens": 42, "completion_tokens": 20}}'
    plain, limited = Account("plain", "key_a"), Account("limited", "key_b")
    usage.set_limits("limited", None, Limits(requests_per_minute=10**9, tokens_per_minute=10**12))
    from proxy.services.metering import Meter

    async def measure() -> list[tuple[str, float]]:
        async def per_call(fn: Any) -> float:
            """Median of batches of 500 calls; between batches the records are let go, as
            the flusher does every second (a list growing for ever would time the GC)."""
            batches = []
            for _ in range(max(1, n // 500)):
                t0 = time.perf_counter()
                for _ in range(500):
                    await fn()
                batches.append((time.perf_counter() - t0) / 500 * 1e6)
                usage.recorder._pending.clear()
            return statistics.median(batches)

        from bench.upstream import stream_events

        events = stream_events("gpt-4o-mini", 20, include_usage=True)

        async def upstream_events() -> Any:
            for event in events:
                yield event

        async def drain(stream: Any) -> None:
            async for _ in stream:
                pass

        def meter() -> Meter:
            return Meter(plain, USER, "gpt-4o-mini", "/v1/chat/completions", strip_usage=True)

        await usage.limiter.admit_request(limited)  # limits read once (then cached)
        bare = await per_call(lambda: drain(upstream_events()))
        metered = await per_call(lambda: drain(metering.stream(meter(), upstream_events())))
        out = [
            ("admit a request, no limit set", await per_call(
                lambda: usage.limiter.admit_request(plain))),
            ("admit a request, RPM + TPM set (in-process window)", await per_call(
                lambda: usage.limiter.admit_request(limited))),
            ("read usage from a JSON answer + record it", await per_call(
                lambda: metering.json(Meter(plain, USER, "gpt-4o-mini", "/v1/chat/completions"),
                                      answer))),
            ("a 20-chunk stream through the meter (usage chunk read, dropped, recorded), "
             "over relaying it as is", metered - bare),
        ]  # fmt: skip
        usage.recorder._pending.clear()
        return out

    try:
        return asyncio.run(measure())
    finally:
        services.db.close()


def writes(work: Path, n: int, pg_url: str | None) -> list[tuple[str, float]]:
    """Records per second: recorded in memory, and inserted in flush-sized batches."""
    from proxy.config import Settings, UsageSettings
    from proxy.llm.costs import CostMap
    from proxy.services.usage_recorder import UsageRecorder
    from proxy.store.db import open_database
    from proxy.store.usage import UsageEvent, UsageStore

    batch = UsageSettings().flush_batch
    now = time.time()

    def events(count: int) -> list[UsageEvent]:
        return [UsageEvent(f"acct{i % 50}", f"key_{i % 200}", f"user{i % 5000}", "chat",
                           "gpt-4o-mini", "/v1/chat/completions", now + i * 1e-3, 800, 60, 200)
                for i in range(count)]  # fmt: skip

    out = []
    db = open_database(Settings(data_dir=work / "writes-sqlite"))
    recorder = UsageRecorder(UsageStore(db), CostMap(), UsageSettings(flush_batch=10**9))
    sample = events(n)
    t0 = time.perf_counter()
    for e in sample:
        recorder.record(e)
    out.append(
        ("UsageRecorder.record (price, count, queue), per second", n / (time.perf_counter() - t0))
    )
    targets = [("SQLite", db)]
    if pg_url:
        targets.append(
            (
                "PostgreSQL",
                open_database(Settings(data_dir=work / "w-pg", store={"database_url": pg_url})),
            )
        )
    for name, database in targets:
        store = UsageStore(database)
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            store.insert(sample[i : i + batch])
        rate = n / (time.perf_counter() - t0)
        out.append((f"UsageStore.insert, {name}, batches of {batch}: rows per second", rate))
        database.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--postgres", action="store_true", help="also time writes to Postgres")
    args = parser.parse_args()
    n = 300 if args.quick else 3000
    print(machine_line(machine()))
    with tempfile.TemporaryDirectory(prefix="profilo-bench-usage-") as tmp:
        work = Path(tmp)
        port = free_port()
        up: Server = spawn("upstream", ["-m", "bench.upstream", "--port", str(port)], port, work)
        try:
            url = f"{up.url}/v1"
            rows = asyncio.run(latency(url, work, n))
            print(f"\n## Added latency of metering (p50 of {n} requests per target, taking "
                  "turns request by request, in-process ASGI)")  # fmt: skip
            print(table(["path", "metering", "n", "off p50 ms", "on p50 ms", "added p50 ms",
                         "on ÷ off"], [list(r.values()) for r in rows]))  # fmt: skip
            worst = max(r["added_p50_ms"] for r in rows if r["metering"] == "on")
            print(f"goal: added p50 < {GOAL_ADDED_P50_MS} ms -> worst {worst:.3f} ms: "
                  f"{'met' if worst < GOAL_ADDED_P50_MS else 'NOT met'}")  # fmt: skip
            print("\n## Metering work per request, timed alone")
            steps = work_per_call(url, work, 2000 if args.quick else 20000)
            print(table(["step", "µs per call"], [list(s) for s in steps]))
        finally:
            up.stop()
        pg = contextlib.ExitStack()
        url_pg = None
        if args.postgres:
            from bench.pg_cluster import PgCluster

            cluster = pg.enter_context(PgCluster())
            url_pg = cluster.create_database("bench_usage")
        with pg:
            print("\n## Writes")
            rates = writes(work, 20000 if args.quick else 200000, url_pg)
            print(table(["what", "per second"], [list(r) for r in rates]))


if __name__ == "__main__":
    main()
