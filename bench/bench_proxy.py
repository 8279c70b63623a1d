"""Issue 2: the pass-through proxy against the upstream called directly and a bare litellm app.

    python -m bench.bench_proxy [--quick] [--profile]

Starts four processes -- the lean fake upstream (``bench.upstream``), the proxy exactly as
``profilo serve`` runs it (``bench.serve``), the litellm baseline (``bench.litellm_app``) and
the floor of any FastAPI + aiohttp relay (``bench.bare_app``) -- then, for non-streaming and
streaming requests at concurrency 1 and 32, measures the four targets interleaved round by
round: latency p50/p99 (streaming: time to the first body bytes,
TTFB, and to ``[DONE]``), requests/s, the latency each adds over the upstream called directly,
the proxy's requests/s over litellm's, and the CPU time each server process spent per request.
Then ``bench.breakdown`` times the steps of the proxy's chat path in-process.

Goals (issue 2): added p50 < 1.5 ms at concurrency 1; >= 3x the litellm baseline's requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.breakdown import run as run_breakdown
from bench.common import (
    Samples,
    Server,
    Target,
    chat_body,
    free_port,
    machine,
    machine_line,
    measure,
    spawn,
    table,
    use_uvloop,
)
from bench.serve import STUB_NOTE

GOAL_ADDED_P50_MS = 1.5
GOAL_RPS_RATIO = 3.0
EMBED_CACHE = "/tmp/profilo-test-models"


@dataclass
class Plan:
    """Request counts per target and scenario (pooled over ``rounds`` interleaved rounds)."""

    n_c1: int = 600
    n_c32: int = 1200
    rounds_c1: int = 6
    rounds_c32: int = 4
    warmup: int = 64
    chunks: int = 20
    litellm_weight: float = 0.25  # litellm is 10-30x slower: a quarter of the requests

    @classmethod
    def quick(cls) -> Plan:
        return cls(n_c1=120, n_c32=320, rounds_c1=3, rounds_c32=2, warmup=32)


def proxy_env(upstream: Server, **extra: str) -> dict[str, str]:
    return {
        "PROFILO_UPSTREAM__API_BASE": f"{upstream.url}/v1",
        "PROFILO_UPSTREAM__API_KEY": "x",
        "PROFILO_EMBEDDING__CACHE_DIR": EMBED_CACHE,
        **extra,
    }


def start_upstream(log_dir: Path, chunks: int) -> Server:
    port = free_port()
    return spawn(
        "upstream",
        ["-m", "bench.upstream", "--port", str(port), "--chunks", str(chunks)],
        port,
        log_dir,
    )


def start_proxy(
    log_dir: Path,
    upstream: Server,
    data_dir: Path,
    name: str = "proxy",
    code: Path | None = None,
    **env: str,
) -> Server:
    """``profilo serve`` on ``data_dir``; ``code``: another checkout's (bench/baseline.py)."""
    port = free_port()
    return spawn(
        name,
        ["-m", "bench.serve", "--data-dir", str(data_dir), "serve", "--port", str(port)],
        port,
        log_dir,
        env=proxy_env(upstream, **env),
        ready_path="/readyz",
        ready_timeout=300,
        cwd=code,
    )


def start_app(name: str, module: str, log_dir: Path, upstream: Server) -> Server:
    port = free_port()
    return spawn(
        name,
        ["-m", module, "--port", str(port), "--upstream", f"{upstream.url}/v1"],
        port,
        log_dir,
        ready_path="/healthz",
    )


@contextlib.contextmanager
def running(*servers: Server) -> Iterator[None]:
    try:
        yield
    finally:
        for s in reversed(servers):
            s.stop()


def scenario_rows(
    res: dict[str, Samples], stream: bool, base: str = "direct"
) -> tuple[list[list[Any]], dict[str, Any]]:
    s = {name: r.summary() for name, r in res.items()}
    b = s[base]
    rows = []
    out: dict[str, Any] = {"targets": s, "added_ms": {}}
    for name, m in s.items():
        added50 = m["p50_ms"] - b["p50_ms"]
        added99 = m["p99_ms"] - b["p99_ms"]
        if name != base:
            out["added_ms"][name] = {"p50": added50, "p99": added99}
        row: list[Any] = [name, m["n"], m["p50_ms"], m["p99_ms"]]
        if stream:
            row += [m["total_p50_ms"]]
        row += [
            added50 if name != base else float("nan"),
            added99 if name != base else float("nan"),
            m["rps"],
            m["rps"] / b["rps"] if b["rps"] else float("nan"),
            m["server_cpu_ms_per_req"],
            m["errors"],
        ]
        rows.append(row)
    return rows, out


def headers_for(stream: bool) -> list[str]:
    lat = "TTFB" if stream else "latency"
    h = ["target", "n", f"{lat} p50 ms", f"{lat} p99 ms"]
    if stream:
        h += ["[DONE] p50 ms"]
    return [*h, "added p50 ms", "added p99 ms", "req/s", "req/s ÷ direct", "CPU ms/req", "errors"]


async def _measure_all(servers: dict[str, Server], plan: Plan) -> list[dict[str, Any]]:
    """``servers``: direct (the upstream), proxy, bare, litellm."""
    scenarios = []
    for stream in (False, True):
        body = chat_body(stream)
        targets = [
            Target(
                name,
                f"{s.url}/v1/chat/completions",
                body,
                stream,
                pid=s.proc.pid,
                weight=plan.litellm_weight if name == "litellm" else 1.0,
            )
            for name, s in servers.items()
        ]
        for conc in (1, 32):
            n, rounds = (plan.n_c1, plan.rounds_c1) if conc == 1 else (plan.n_c32, plan.rounds_c32)
            res = await measure(targets, n=n, concurrency=conc, rounds=rounds, warmup=plan.warmup)
            rows, out = scenario_rows(res, stream)
            title = f"{'streaming (TTFB)' if stream else 'non-streaming'}, concurrency {conc}"
            t = out["targets"]
            out |= {
                "name": title,
                "stream": stream,
                "concurrency": conc,
                "rps_ratio_proxy_over_litellm": t["proxy"]["rps"] / t["litellm"]["rps"],
                "added_p50_ratio_litellm_over_proxy": (
                    out["added_ms"]["litellm"]["p50"] / out["added_ms"]["proxy"]["p50"]
                    if out["added_ms"]["proxy"]["p50"] > 0
                    else float("nan")
                ),
            }
            print(f"\n## {title}  ({rounds} interleaved rounds)")
            print(table(headers_for(stream), rows))
            a = out["added_ms"]
            print(
                f"proxy req/s ÷ litellm req/s = {out['rps_ratio_proxy_over_litellm']:.2f}x; "
                f"litellm added p50 ÷ proxy added p50 = "
                f"{out['added_p50_ratio_litellm_over_proxy']:.1f}x; proxy added p50 - bare "
                f"added p50 = {a['proxy']['p50'] - a['bare']['p50']:.2f} ms",
                flush=True,
            )
            scenarios.append(out)
    return scenarios


def goals(scenarios: list[dict[str, Any]]) -> dict[str, Any]:
    c1 = [s for s in scenarios if s["concurrency"] == 1]
    c32 = [s for s in scenarios if s["concurrency"] == 32]
    added = {s["name"]: s["added_ms"]["proxy"]["p50"] for s in c1}
    ratio = {s["name"]: s["rps_ratio_proxy_over_litellm"] for s in c32}
    return {
        "added_p50_ms_at_c1": added,
        "added_p50_goal_ms": GOAL_ADDED_P50_MS,
        "added_p50_met": all(v < GOAL_ADDED_P50_MS for v in added.values()),
        "rps_ratio_at_c32": ratio,
        "rps_ratio_goal": GOAL_RPS_RATIO,
        "rps_ratio_met": all(v >= GOAL_RPS_RATIO for v in ratio.values()),
    }


def print_goals(g: dict[str, Any]) -> None:
    print("\n## issue 2 goals")
    for name, v in g["added_p50_ms_at_c1"].items():
        ok = "met" if v < GOAL_ADDED_P50_MS else "MISSED"
        print(f"  added p50, {name}: {v:.2f} ms (goal < {GOAL_ADDED_P50_MS} ms) {ok}")
    for name, v in g["rps_ratio_at_c32"].items():
        ok = "met" if v >= GOAL_RPS_RATIO else "MISSED"
        print(f"  req/s proxy ÷ litellm, {name}: {v:.2f}x (goal >= {GOAL_RPS_RATIO}x) {ok}")


def run(
    plan: Plan, *, breakdown: bool = True, profile: bool = False, work: Path | None = None
) -> dict[str, Any]:
    use_uvloop()
    work = work or Path(tempfile.mkdtemp(prefix="profilo-bench-proxy-"))
    m = machine()
    print(machine_line(m), flush=True)
    upstream = start_upstream(work, plan.chunks)
    with running(upstream):
        proxy = start_proxy(work, upstream, work / "data")
        bare = start_app("bare", "bench.bare_app", work, upstream)
        litellm = start_app("litellm", "bench.litellm_app", work, upstream)
        with running(proxy, bare, litellm):
            stub = STUB_NOTE in proxy.log.read_text()
            if stub:
                print(f"NOTE: {STUB_NOTE}")
            servers = {"direct": upstream, "proxy": proxy, "bare": bare, "litellm": litellm}
            scenarios = asyncio.run(_measure_all(servers, plan))
        g = goals(scenarios)
        print_goals(g)
        result: dict[str, Any] = {
            "machine": m,
            "plan": plan.__dict__,
            "stream_chunks": plan.chunks,
            "index_stub": stub,
            "scenarios": scenarios,
            "goals": g,
            "logs": str(work),
        }
        if breakdown:
            result["breakdown"] = run_breakdown(f"{upstream.url}/v1", work, profile=profile)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    parser.add_argument("--profile", action="store_true", help="also cProfile the proxy app")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the in-process part")
    args = parser.parse_args()
    run(
        Plan.quick() if args.quick else Plan(),
        breakdown=not args.no_breakdown,
        profile=args.profile,
    )


if __name__ == "__main__":
    main()
