"""Issue 4 / 18: what memory injection adds over the pass-through, at 1k / 10k (/ 100k) facts.

    python -m bench.bench_memory [--quick] [--sizes 1000 10000] [--with-100k]
                                 [--precision fp32 int8]

Seeds one data dir per ``embedding.precision`` (bench/memory_seed.py: one user scope per
size, written as the proxy writes), then starts the fake upstream and one proxy per
precision (``profilo serve``) and measures, interleaved round by round, chat requests with
memory off (the pass-through) and with ``features: {"memory": true, "user_profile": true,
"learning": false}`` and the scope's ``collection_id``: latency p50/p99 (streaming: TTFB),
req/s and the proxy's CPU per request, at concurrency 1 and 32.

Every request (warm-up included, every target, every proxy) carries a user message never
sent before, of a realistic length (bench/messages.py: median 21 tokens, p90 139, up to the
256-token cap), so the embedding cache never answers: the query embedding is on the measured
path, as it is for a user's new message. The run reads each proxy's embedding-cache counters
(``profilo_embed_cache_lookups_total`` on ``/metrics``) before and after, and reports the hit
rate it saw (0% expected). ``learning`` is off so that no extraction job is queued: the
figure is the injection's own.

Then the steps of ``MemoryService.build`` are timed in-process at each size
(bench/memory_steps.py), the precisions interleaved.

Goal (issue 18): memory on adds < 5 ms p50 and < 10 ms p99 over the pass-through at 10k
facts, concurrency 1, under 8 ms CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.baseline import baseline_tree
from bench.bench_proxy import running, start_proxy, start_upstream
from bench.common import (
    Target,
    chat_body,
    machine,
    machine_line,
    measure,
    use_uvloop,
)
from bench.memory_report import cache_counts, cache_report, goals, label, report
from bench.memory_seed import ACCOUNT, collection, ensure_seeded, make_facts
from bench.memory_steps import break_down, print_steps
from bench.messages import Messages, describe

__all__ = ["ACCOUNT", "collection", "make_facts", "run"]  # bench_postgres imports these

HTTP_SEED = 21  # the HTTP runs' messages (the in-process steps use another seed)
FEATURES = {"memory": True, "user_profile": True, "learning": False}


def memory_check(resp: aiohttp.ClientResponse) -> str | None:
    """Flags a memory-on answer that came without memory: failed open, or nothing injected."""
    if "X-Profilo-Memory-Error" in resp.headers:
        return "fail-open"
    if int(resp.headers.get("X-Profilo-Memory-Facts", "0")) <= 0:
        return "no facts"
    return None


@dataclass
class Plan:
    n_c1: int = 300
    n_c32: int = 640
    rounds_c1: int = 4
    rounds_c32: int = 3
    warmup: int = 16
    max_seconds: float = 20.0  # per target and scenario: slow targets get fewer requests
    iters: int = 200  # in-process step timings (each step also capped at ~2 s)

    @classmethod
    def quick(cls) -> Plan:
        return cls(n_c1=100, n_c32=320, rounds_c1=2, rounds_c32=2, max_seconds=10, iters=50)

    def messages_needed(self, targets: int) -> int:
        """An upper bound on the requests of one run (both modes, both concurrencies)."""
        c1 = self.warmup + self.n_c1 + self.rounds_c1
        c32 = self.warmup + self.n_c32 + self.rounds_c32
        return 2 * targets * (c1 + c32)


def _body(stream: bool, size: int | None, user: str) -> bytes:
    """A chat request carrying ``user``; memory on for the scope of ``size`` facts."""
    if size is None:
        return chat_body(stream, user=user)
    return chat_body(stream, user=user, features=FEATURES, collection_id=collection(size))


def _target(
    name: str, url: str, pid: int, stream: bool, size: int | None, fresh: Iterator[str]
) -> Target:
    """Every request of the target is ``_body`` with the next unseen message."""
    return Target(
        name,
        url,
        _body(stream, size, "unused"),
        stream,
        pid=pid,
        check=None if size is None else memory_check,
        make_body=lambda _i: _body(stream, size, next(fresh)),
    )


async def _measure_all(
    proxies: dict[str, Any], sizes: list[int], plan: Plan, fresh: Iterator[str]
) -> list[Any]:
    scenarios = []
    several = len(proxies) > 1
    for stream in (False, True):
        targets = []
        for precision, proxy in proxies.items():
            url, pid = f"{proxy.url}/v1/chat/completions", proxy.proc.pid
            off = label(precision, "memory off", several)
            targets.append(_target(off, url, pid, stream, None, fresh))
            for n in sizes:
                name = label(precision, f"on, {n} facts", several)
                targets.append(_target(name, url, pid, stream, n, fresh))
        for conc in (1, 32):
            n, rounds = (plan.n_c1, plan.rounds_c1) if conc == 1 else (plan.n_c32, plan.rounds_c32)
            res = await measure(
                targets,
                n=n,
                concurrency=conc,
                rounds=rounds,
                warmup=plan.warmup,
                max_seconds=plan.max_seconds,
            )
            title = f"{'streaming (TTFB)' if stream else 'non-streaming'}, concurrency {conc}"
            scenarios.append(report(title, stream, conc, rounds, res, list(proxies)))
    return scenarios


def run(
    plan: Plan,
    sizes: list[int],
    *,
    static_fraction: float = 0.05,
    fresh: bool = False,
    work: Path | None = None,
    precisions: tuple[str, ...] = ("fp32",),
    baseline: str | None = None,
    baseline_precision: str = "fp32",
) -> dict[str, Any]:
    """``baseline``: a git ref whose code serves as one more proxy (``baseline``, at
    ``baseline_precision``, on the same seeded data), measured in the same rounds; the others'
    ratios are against it."""
    use_uvloop()
    work = work or Path(tempfile.mkdtemp(prefix="profilo-bench-memory-"))
    m = machine()
    print(machine_line(m), flush=True)
    with ExitStack() as stack:
        variants: dict[str, tuple[str, Path | None]] = {p: (p, None) for p in precisions}
        if baseline is not None:
            tree = stack.enter_context(baseline_tree(baseline))
            variants = {"baseline": (baseline_precision, tree), **variants}
        data_dirs, seed_seconds, cached = {}, {}, {}
        for p in dict.fromkeys(p for p, _ in variants.values()):
            cached[p], seed_seconds[p] = ensure_seeded(sizes, static_fraction, fresh, p)
        for name, (p, _) in variants.items():
            data_dirs[name] = work / f"data-{name}"
            shutil.copytree(cached[p], data_dirs[name])  # the server writes (jobs, outbox)
        steps = break_down({p: data_dirs[p] for p in precisions}, sizes, plan.iters)
        print_steps(steps)
        gen = Messages(seed=HTTP_SEED)
        texts = gen.take(plan.messages_needed(len(variants) * (1 + len(sizes))))
        print(f"\nHTTP messages, each sent once: {describe(gen.lengths)}", flush=True)
        fresh_texts = iter(texts)
        upstream = start_upstream(work, 20)
        with running(upstream):
            proxies = {
                name: start_proxy(
                    work,
                    upstream,
                    data_dirs[name],
                    name=f"proxy-memory-{name}",
                    code=code,
                    PROFILO_EMBEDDING__PRECISION=p,
                )
                for name, (p, code) in variants.items()
            }
            with running(*proxies.values()):
                before = {p: cache_counts(s.url) for p, s in proxies.items()}
                scenarios = asyncio.run(_measure_all(proxies, sizes, plan, fresh_texts))
                after = {p: cache_counts(s.url) for p, s in proxies.items()}
    cache = cache_report(before, after)
    g = goals(scenarios, list(variants)) if 10000 in sizes else {}
    return {
        "machine": m,
        "plan": plan.__dict__,
        "sizes": sizes,
        "precisions": list(precisions),
        "baseline": baseline,
        "baseline_precision": baseline_precision,
        "variants": {name: p for name, (p, _) in variants.items()},
        "static_fraction": static_fraction,
        "features": FEATURES,
        "messages": describe(gen.lengths),
        "messages_sent": len(texts) - sum(1 for _ in fresh_texts),
        "embed_cache": cache,
        "seed_seconds": seed_seconds,
        "seed_cache": {p: str(c) for p, c in cached.items()},
        "build_steps": steps,
        "scenarios": scenarios,
        "goals": g,
        "logs": str(work),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--with-100k", action="store_true", help="add a 100k-fact scope")
    parser.add_argument("--static-fraction", type=float, default=0.05)
    parser.add_argument("--fresh", action="store_true", help="re-seed even if cached")
    parser.add_argument(
        "--precision",
        nargs="+",
        choices=["fp32", "int8"],
        default=["fp32"],
        help="embedding.precision: one proxy (and seeded data) each, measured side by side",
    )
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="a git ref (e.g. HEAD~1) whose code runs as one more proxy in the same rounds",
    )
    parser.add_argument(
        "--baseline-precision",
        choices=["fp32", "int8"],
        default="fp32",
        help="embedding.precision of the baseline proxy",
    )
    args = parser.parse_args()
    sizes = sorted(set(args.sizes + ([100000] if args.with_100k else [])))
    run(
        Plan.quick() if args.quick else Plan(),
        sizes,
        static_fraction=args.static_fraction,
        fresh=args.fresh,
        precisions=tuple(dict.fromkeys(args.precision)),
        baseline=args.baseline,
        baseline_precision=args.baseline_precision,
    )


if __name__ == "__main__":
    main()
