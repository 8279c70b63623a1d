"""The memory benchmark's in-process part: each step of ``MemoryService.build`` timed alone.

Every step that embeds gets a message never embedded before (bench/messages.py: realistic
lengths), drawn from a list generated up front (generation stays off the timed path). With
several ``embedding.precision`` variants, each has its own services (its own data dir and
cache), all are loaded at once, and every step alternates between them in chunks of 10 calls
over the same messages: the machine's noise falls on all of them alike.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import orjson

from bench.common import MODEL, chat_body, table
from bench.memory_seed import ACCOUNT, collection, settings_for
from bench.messages import Messages

STEP_SEED = 11  # the in-process messages (the HTTP runs use another seed)
CHUNK = 10


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def build_steps(
    services: Any, memory: Any, scope: Any, fresh: Iterator[str]
) -> dict[str, Callable[[], Any]]:
    """The steps of one memory lookup, each callable on its own. Every call that embeds takes
    the next text of ``fresh`` (the embedder's cache would answer a repeated one)."""
    from proxy.models import Features
    from proxy.services.retrieval import SearchOptions
    from proxy.store.facts import FactFilter

    static = FactFilter(kind="static")
    retriever = services.retriever
    cfg = services.settings.memory
    vec = retriever.embed_query(scope, next(fresh))
    opts = SearchOptions(
        top_k=cfg.top_k, threshold=cfg.threshold, min_confidence=cfg.min_confidence
    )

    def msgs() -> list[dict[str, Any]]:
        return [{"role": "user", "content": next(fresh)}]

    memory_only = Features(memory=True)
    profile_only = Features(user_profile=True)
    both = Features(memory=True, user_profile=True)
    return {
        "embed query (MiniLM, uncached)": lambda: retriever.embed_query(scope, next(fresh)),
        "index.query (Chroma, n=32)": lambda: services.index.query(scope, vec, 32),
        "outbox flush check (sync.flush)": lambda: services.sync.flush(scope),
        "records.select(scope) (every live fact)": lambda: services.profile.records.select(scope),
        "  what-if: select(scope, kind=static)": lambda: services.profile.records.select(
            scope, static
        ),
        "  what-if: select(scope, kind=static, limit=56)": lambda: services.profile.records.select(
            scope, static, limit=56
        ),
        "retriever.search (embed+flush+query+by_ids)": lambda: retriever.search(
            scope, next(fresh), opts
        ),
        "build, memory only": lambda: memory.build(scope, memory_only, msgs(), MODEL),
        "build, user_profile only": lambda: memory.build(scope, profile_only, msgs(), MODEL),
        "build, memory + user_profile": lambda: memory.build(scope, both, msgs(), MODEL),
    }


def _time(fns: dict[str, Callable[[], Any]], n: int, budget_s: float) -> dict[str, Any]:
    """``n`` timed calls of each of ``fns`` (fewer, at least 10, past ``budget_s`` in all),
    alternating in chunks; wall p50/p99 and CPU per call (the whole process: helper threads
    and onnxruntime's included)."""
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu = dict.fromkeys(fns, 0.0)
    stop = time.perf_counter() + budget_s * len(fns)
    while min(len(v) for v in wall.values()) < n:
        if min(len(v) for v in wall.values()) >= CHUNK and time.perf_counter() > stop:
            break
        for k, fn in fns.items():
            for _ in range(CHUNK):
                c0, t0 = _cpu(), time.perf_counter()
                fn()
                wall[k].append((time.perf_counter() - t0) * 1000)
                cpu[k] += (_cpu() - c0) * 1000
    out = {}
    for k, samples in wall.items():
        s = sorted(samples)
        out[k] = {
            "n": len(s),
            "p50_ms": statistics.median(s),
            "p99_ms": s[min(len(s) - 1, int(len(s) * 0.99))],
            "cpu_ms": cpu[k] / len(s),
        }
    return out


@contextmanager
def _services(data_dir: Path, precision: str) -> Iterator[Any]:
    from proxy.app import build_services

    services = build_services(settings_for(data_dir, precision))
    try:
        services.warm()
        yield services
    finally:
        services.index.close()
        services.db.close()


def break_down(
    data_dirs: dict[str, Path], sizes: list[int], iters: int, budget_s: float = 2.0
) -> dict[str, Any]:
    """Time each step of ``MemoryService.build`` at each size, for each precision (``data_dirs``:
    precision -> its seeded data dir), the precisions interleaved."""
    from proxy.llm.offline import prepare_offline_env
    from proxy.models import Features, Scope
    from proxy.native_threads import limit_blas_threads

    prepare_offline_env()
    limit_blas_threads()  # as `profilo serve` does: else OpenBLAS's spinning thread is counted
    per_call = 5 * (iters + 2 * CHUNK) + 8  # texts one size's steps may embed, warm-up included
    texts = Messages(seed=STEP_SEED).take(per_call * len(sizes))
    out: dict[str, Any] = {}
    with ExitStack() as stack:
        loaded = {p: stack.enter_context(_services(d, p)) for p, d in data_dirs.items()}
        fresh = {p: iter(texts) for p in loaded}  # the same messages for every precision
        for n in sizes:
            scope = Scope(ACCOUNT, collection(n))
            steps = {p: build_steps(s, s.chat._memory, scope, fresh[p]) for p, s in loaded.items()}
            for fns in steps.values():  # warm
                for fn in fns.values():
                    fn()
            msgs = orjson.loads(chat_body(False))["messages"]
            timed = {
                name: _time({p: steps[p][name] for p in loaded}, iters, budget_s)
                for name in next(iter(steps.values()))
            }
            for p, s in loaded.items():
                ctx = s.chat._memory.build(
                    scope, Features(memory=True, user_profile=True), msgs, MODEL
                )
                out.setdefault(p, {})[str(n)] = {
                    "steps": {name: timed[name][p] for name in timed},
                    "injected_facts": len(ctx.chosen),
                    "injected_memories": sum(1 for c in ctx.chosen if c.section == "memories"),
                    "block_tokens": ctx.tokens,
                }
    return out


def print_steps(result: dict[str, Any]) -> None:
    precisions = list(result)
    sizes = list(result[precisions[0]])
    names = list(result[precisions[0]][sizes[0]]["steps"])
    print("\n## MemoryService.build, step by step (in-process, ms; CPU: the process's per call)")
    cols = [(p, s) for s in sizes for p in precisions]
    label = (lambda p, s: f"{s}") if len(precisions) == 1 else (lambda p, s: f"{p} {s}")
    headers = ["step"]
    for p, s in cols:
        headers += [f"{label(p, s)} p50", f"{label(p, s)} p99", f"{label(p, s)} CPU"]
    rows = []
    for name in names:
        row: list[Any] = [name]
        for p, s in cols:
            d = result[p][s]["steps"][name]
            row += [d["p50_ms"], d["p99_ms"], d["cpu_ms"]]
        rows.append(row)
    print(table(headers, rows))
    for p, s in cols:
        d = result[p][s]
        print(
            f"  {label(p, s)} facts: {d['injected_facts']} facts injected "
            f"({d['injected_memories']} from memory search), {d['block_tokens']} tokens"
        )
