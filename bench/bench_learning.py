"""Issue 5: what learning (background fact extraction) costs the chat, and how fast it learns.

    python -m bench.bench_learning [--quick] [--turns 600] [--workers 4]

A fake upstream (this module's ``upstream`` command, its own process) answers chats at once
and the proxy's extraction calls with two facts per turn after a settable delay; the proxy is
``profilo serve`` in its own process. Measured in the same run:

1. chat latency at concurrency 16 with learning on vs off (``features.learning``; memory
   injection off in both, so the difference is learning's own cost on the answer's path:
   building the turn and committing its job before the answer goes out), while the fake
   extraction model takes 2 s per call, so the queue grows behind the answers. The targets
   are interleaved round by round (``bench.common.measure``). Non-streaming and streaming
   (to ``[DONE]``, which is sent after the job is written). Goals: p50 difference < 0.5 ms,
   p99 difference < 2 ms.
2. pipeline throughput with a 0 ms extraction model: turns published through
   ``POST /v1/interactions`` (50 users) until every job is done: turns/s, facts/s, proxy CPU
   per turn. Goal: > 50 turns/s.
3. time from a finished chat turn to its fact being readable through ``GET /v1/profile``,
   and the chat latency with ``wait_for_learning_seconds`` (read-your-writes).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_proxy import running, start_proxy
from bench.common import (
    MODEL,
    Samples,
    Server,
    Target,
    chat_body,
    free_port,
    machine,
    machine_line,
    measure,
    new_session,
    pct,
    process_cpu,
    spawn,
    use_uvloop,
)

MARKER = "# profilo: fact extraction"
CONCURRENCY = 16
CHAT_MS = 50  # the third latency scenario: an upstream answering in 50 ms (not CPU-bound)
USERS = 50
GOAL_P50_MS, GOAL_P99_MS, GOAL_TURNS_S = 0.5, 2.0, 50.0


# -- the fake upstream ---------------------------------------------------------------------------
def _op(key: str, value: str) -> dict[str, Any]:
    return {
        "op": "add",
        "id": None,
        "key": key,
        "value": value,
        "kind": "static",
        "category": "other",
        "confidence": 0.9,
        "source_message": 1,
    }


def _completion(content: str) -> bytes:
    message = {"role": "assistant", "content": content, "refusal": None}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": MODEL,
            "choices": [choice],
            "usage": {"prompt_tokens": 40, "completion_tokens": 20, "total_tokens": 60},
        }
    )


def upstream_app() -> web.Application:
    state = {"delay": 0.0, "chat_delay": 0.0}
    answer = _completion("Try the little Thai place on the corner: the curry is excellent.")

    async def chat(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        system = str(body["messages"][0].get("content", "")) if body.get("messages") else ""
        if MARKER not in system:
            if state["chat_delay"]:
                await asyncio.sleep(state["chat_delay"])
            if not body.get("stream"):
                return web.Response(body=answer, content_type="application/json")
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for piece in ("Try the Thai", " place on", " the corner."):
                delta = {"content": piece}
                chunk = {
                    "id": "chatcmpl-bench",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": MODEL,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                }
                await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        if state["delay"]:
            await asyncio.sleep(state["delay"])
        found = re.search(r"\bnumber (\d+)", system.split("The new turn")[-1])
        n = found.group(1) if found else "x"
        ops = [_op(f"lucky_number_{n}", f"number {n}"), _op(f"pick_{n}", f"thing {n}")]
        content = orjson.dumps({"operations": ops}).decode()
        return web.Response(body=_completion(content), content_type="application/json")

    async def set_delay(request: web.Request) -> web.Response:
        state.update({k: float(v) for k, v in (await request.json()).items()})
        return web.json_response(state)

    async def other(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/bench/delay", set_delay)
    app.router.add_route("*", "/{tail:.*}", other)
    return app


def start_upstream(log_dir: Path) -> Server:
    port = free_port()
    args = ["-m", "bench.bench_learning", "upstream", "--port", str(port)]
    return spawn("learning-upstream", args, port, log_dir)


async def set_delay(upstream: Server, extraction: float, chat: float = 0.0) -> None:
    async with aiohttp.ClientSession() as s:
        await s.post(upstream.url + "/bench/delay", json={"delay": extraction, "chat_delay": chat})


# -- 1. chat latency -----------------------------------------------------------------------------
def latency_targets(proxy: Server, stream: bool) -> list[Target]:
    url = proxy.url + "/v1/chat/completions"
    return [
        Target(
            f"learning {mode}",
            url,
            chat_body(stream, collection_id="bench-user", features={"learning": mode == "on"}),
            stream,
            pid=proxy.proc.pid,
        )
        for mode in ("off", "on")
    ]


def latency_rows(res: dict[str, Samples], stream: bool) -> list[str]:
    key = "total" if stream else "latency"
    off, on = getattr(res["learning off"], key), getattr(res["learning on"], key)
    head = f"{'':20}{'n':>6}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'mean ms':>9}"
    lines = [head + f"{'CPU ms/req':>12}"]
    for name, xs in (("learning off (base)", off), ("learning on", on)):
        row = [pct(xs, 50), pct(xs, 90), pct(xs, 99), sum(xs) / len(xs)]
        cpu = res[name.removesuffix(" (base)")].summary()["server_cpu_ms_per_req"]
        lines.append(
            f"{name:20}{len(xs):>6}" + "".join(f"{v * 1000:>9.2f}" for v in row) + f"{cpu:>12.3f}"
        )
    d50, d99 = (pct(on, 50) - pct(off, 50)) * 1000, (pct(on, 99) - pct(off, 99)) * 1000
    lines.append(
        f"{'on - off':20}{'':>6}{d50:>9.2f}{'':>9}{d99:>9.2f}"
        f"   goals < {GOAL_P50_MS} / < {GOAL_P99_MS} ms: "
        f"{'met' if d50 < GOAL_P50_MS and d99 < GOAL_P99_MS else 'NOT met'}"
    )
    ratios = [pct(on, q) / pct(off, q) for q in (50, 90, 99)] + [sum(on) / sum(off)]
    lines.append(f"{'ratio on / off':20}{'':>6}" + "".join(f"{r:>9.3f}" for r in ratios))
    return lines


async def queue_depth(session: aiohttp.ClientSession, proxy: Server) -> int:
    async with session.get(proxy.url + "/v1/admin/queue") as r:
        return int((await r.json())["depth"])


def inprocess_cost(cache_dir: str, n: int = 2000) -> dict[str, float]:
    """What learning adds to one answer, in this process and without contention: building the
    turn and committing its job (alone, and 16 at once: group commit), and reading one
    streamed chunk's text."""
    from proxy.app import build_services
    from proxy.config import Settings
    from proxy.models import Scope
    from proxy.services.chat import _choice0_delta
    from proxy.services.extraction import chat_turn

    messages = orjson.loads(chat_body(False))["messages"]
    reply = "Try the little Thai place on the corner: the curry is excellent."
    chunk = orjson.dumps({"choices": [{"index": 0, "delta": {"content": " the corner"}}]})
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            embedding={"cache_dir": Path(cache_dir)},
            learning={"run_worker": False},
        )
        services = build_services(settings)
        worker = services.learning

        async def one(i: int) -> None:
            turn = chat_turn(messages, reply, 8000)
            payload = {"messages": turn, "source": "chat", "model": MODEL}
            await worker.enqueue(f"req_bench_{i}", Scope("dev", "bench-user"), payload)

        async def go() -> tuple[float, float, float, float]:
            for i in range(100):
                await one(-i - 1)  # warm-up
            c0, t0 = time.process_time(), time.perf_counter()
            for i in range(n):
                await one(i)
            alone = (time.perf_counter() - t0) / n, (time.process_time() - c0) / n
            c0, t0 = time.process_time(), time.perf_counter()
            for k in range(n // 16):
                await asyncio.gather(*(one(n + k * 16 + j) for j in range(16)))
            grouped = (time.perf_counter() - t0) / n, (time.process_time() - c0) / n
            return (*alone, *grouped)

        wall, cpu, wall16, cpu16 = asyncio.run(go())
        t0 = time.perf_counter()
        for _ in range(n * 10):
            _choice0_delta(chunk)
        per_chunk = (time.perf_counter() - t0) / (n * 10)
        services.db.close()
    return {
        "turn_us": wall * 1e6,
        "turn_cpu_us": cpu * 1e6,
        "turn16_us": wall16 * 1e6,
        "turn16_cpu_us": cpu16 * 1e6,
        "chunk_us": per_chunk * 1e6,
    }


# -- 2. pipeline throughput ----------------------------------------------------------------------
async def throughput(proxy: Server, turns: int) -> dict[str, float]:
    async with new_session() as session:
        counter = iter(range(turns))
        cpu0, start = process_cpu(proxy.proc.pid), time.perf_counter()

        async def publisher() -> None:
            for i in counter:
                body = {
                    "collection_id": f"tp-user-{i % USERS}",
                    "messages": [{"role": "user", "content": f"I pick number {i}"}],
                    "model": MODEL,
                }
                async with session.post(proxy.url + "/v1/interactions", json=body) as r:
                    assert r.status == 202, await r.text()

        await asyncio.gather(*(publisher() for _ in range(CONCURRENCY)))
        published = time.perf_counter() - start
        while True:
            async with session.get(proxy.url + "/v1/admin/queue") as r:
                counts = (await r.json())["counts"]
            if counts["done"] + counts["failed"] >= turns:
                break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - start
        cpu = process_cpu(proxy.proc.pid) - cpu0
        facts = 0
        for u in range(USERS):
            params = {"collection_id": f"tp-user-{u}"}
            async with session.get(proxy.url + "/v1/profile", params=params) as r:
                facts += int((await r.json())["fact_count"])
    return {
        "turns_per_s": turns / elapsed,
        "facts_per_s": facts / elapsed,
        "elapsed_s": elapsed,
        "publish_s": published,
        "failed": counts["failed"],
        "cpu_ms_per_turn": cpu / turns * 1000,
    }


# -- 3. turn to queryable fact ---------------------------------------------------------------------
async def freshness(proxy: Server, samples: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"visible": [], "chat": [], "chat_waiting": []}
    async with new_session() as session:
        for i in range(samples):
            for wait in (0, 10):
                user = f"fresh-{wait}-{i}"
                body = {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": f"Remember number {1000 + i}"}],
                    "collection_id": user,
                    "features": {"memory": True},
                    "wait_for_learning_seconds": wait,
                }
                t0 = time.perf_counter()
                async with session.post(proxy.url + "/v1/chat/completions", json=body) as r:
                    assert r.status == 200, await r.text()
                t1 = time.perf_counter()
                out["chat_waiting" if wait else "chat"].append(t1 - t0)
                if wait:
                    continue
                while True:
                    params = {"collection_id": user}
                    async with session.get(proxy.url + "/v1/profile", params=params) as r:
                        if (await r.json())["fact_count"]:
                            break
                    await asyncio.sleep(0.001)
                out["visible"].append(time.perf_counter() - t1)
    return out


def run_latency(logs: Path, upstream: Server, env: dict[str, str], quick: bool) -> None:
    n, rounds, warmup = (320, 2, 32) if quick else (1600, 4, 64)
    proxy = start_proxy(logs, upstream, logs / "a", **env)
    with running(proxy):
        for chat_ms, stream in ((0, False), (0, True), (CHAT_MS, False)):
            asyncio.run(set_delay(upstream, 2.0, chat_ms / 1000))
            targets = latency_targets(proxy, stream)
            res = asyncio.run(
                measure(targets, n=n, concurrency=CONCURRENCY, rounds=rounds, warmup=warmup)
            )
            kind = "streaming, to [DONE]" if stream else "non-streaming"
            print(f"\nchat latency ({kind}), concurrency {CONCURRENCY}, upstream answers in "
                  f"{chat_ms} ms, extraction model 2 s per call")  # fmt: skip
            print("\n".join(latency_rows(res, stream)))

        async def depth() -> int:
            async with new_session() as s:
                return await queue_depth(s, proxy)

        print(f"learning queue depth after the latency runs: {asyncio.run(depth())}")


def run_pipeline(logs: Path, upstream: Server, env: dict[str, str], args: Any) -> None:
    asyncio.run(set_delay(upstream, 0.0))
    proxy = start_proxy(logs, upstream, logs / "b", name="proxy-b", **env)
    with running(proxy):
        tp = asyncio.run(throughput(proxy, args.turns))
        fresh = asyncio.run(freshness(proxy, 10 if args.quick else 30))
    print(f"\npipeline, 0 ms extraction model, {args.turns} turns of {USERS} users, "
          f"learning.concurrency {args.workers}")  # fmt: skip
    print(
        f"  {tp['turns_per_s']:.1f} turns/s, {tp['facts_per_s']:.1f} facts/s "
        f"({tp['elapsed_s']:.2f} s, publishing {tp['publish_s']:.2f} s, {tp['failed']:.0f} "
        f"failed), proxy CPU {tp['cpu_ms_per_turn']:.1f} ms/turn; goal > {GOAL_TURNS_S:.0f} "
        f"turns/s: {'met' if tp['turns_per_s'] > GOAL_TURNS_S else 'NOT met'}"
    )
    vis, chat, waiting = fresh["visible"], fresh["chat"], fresh["chat_waiting"]
    print(f"  turn -> fact readable: p50 {pct(vis, 50) * 1000:.1f} ms, p95 "
          f"{pct(vis, 95) * 1000:.1f} ms ({len(vis)} turns; after the chat answered)")  # fmt: skip
    print(f"  chat p50 {pct(chat, 50) * 1000:.1f} ms; with wait_for_learning_seconds "
          f"{pct(waiting, 50) * 1000:.1f} ms (the fact is readable when it answers)")  # fmt: skip


def run(args: argparse.Namespace) -> None:
    use_uvloop()
    print(machine_line(machine()))
    if args.only in (None, "latency"):
        c = inprocess_cost(str(args.cache_dir))
        print(f"work learning adds to an answer (in-process, no contention): {c['turn_us']:.0f} "
              f"us per turn (CPU {c['turn_cpu_us']:.0f} us); 16 at once: {c['turn16_us']:.0f} "
              f"us per turn (CPU {c['turn16_cpu_us']:.0f} us, group commit); streaming: "
              f"{c['chunk_us']:.1f} us per chunk read")  # fmt: skip
    env = {"PROFILO_LEARNING__CONCURRENCY": str(args.workers), "PROFILO_LOG_LEVEL": "warning"}
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        upstream = start_upstream(logs)
        with running(upstream):
            if args.only in (None, "latency"):
                run_latency(logs, upstream, env, args.quick)
            if args.only in (None, "pipeline"):
                run_pipeline(logs, upstream, env, args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="command")
    up = sub.add_parser("upstream", help="run the fake upstream (used by the benchmark)")
    up.add_argument("--port", type=int, required=True)
    ap.add_argument("--quick", action="store_true", help="fewer requests (~1 min)")
    ap.add_argument("--turns", type=int, default=600, help="turns of the throughput run")
    ap.add_argument("--workers", type=int, default=4, help="learning.concurrency")
    ap.add_argument("--cache-dir", default="/tmp/profilo-test-models", help="embedding model")
    ap.add_argument("--only", choices=("latency", "pipeline"), default=None)
    args = ap.parse_args()
    if args.command == "upstream":
        use_uvloop()
        web.run_app(upstream_app(), host="127.0.0.1", port=args.port, access_log=None, print=None)
        return
    run(args)


if __name__ == "__main__":
    main()
