"""Benchmark of profile search and bulk writes: records (SQLite) + Chroma + the MiniLM embedder.

    python bench/bench_search.py                  # default: 1k and 10k facts, 2,000 scopes
    python bench/bench_search.py --full           # 1k, 10k, 100k facts, 10,000 scopes (long)
    python bench/bench_search.py --sizes 1000 --scopes 600 --queries 100   # quick look

In-process, on the classes the app wires together (``FactRecords``, ``Outbox``, ``FactIndex``,
``IndexSync``, ``Retriever``, ``ProfileService``), in a temporary data dir with default settings.
Facts are generated short sentences ("Prefers dark roast coffee on weekends"), written through
``ProfileService.patch_profile`` in batches of ``profile.max_facts_per_request`` (what a bulk
``PATCH /v1/profile`` does: records, change log, outbox, embedding, Chroma upsert).

Measured:
- the embedder alone (texts/s, batches of 256);
- bulk write throughput into one scope, with the embedding (a fresh scope, real model) and
  without it (the fact texts' vectors computed in advance: records + change log + Chroma);
- search latency p50/p95/p99 in one scope of each size, with the query embedding included
  (``Retriever.search``) and excluded (``Retriever.search_vector``), and across many scopes of
  ``--scope-facts`` facts: a warm scope (queried again and again) and cold scopes (evicted from
  the process's index cache of ``store.index_cache_size`` collections; the OS page cache may
  still hold their files);
- the baseline, in the same run on the same vectors: brute-force NumPy cosine (one matrix-vector
  product and a top-k), plus the same query embedding for the "included" rows; ratios are
  profilo / NumPy at p50; recall@k is the overlap of profilo's top k with the exact top k.

Not a test. Prints what was run and a table.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.config import Settings
from proxy.llm.embeddings import build_embedder
from proxy.models import Fact, Scope
from proxy.services.indexing import IndexSync
from proxy.services.profile import ProfileService
from proxy.services.retrieval import Hit, Retriever, SearchOptions
from proxy.store.changes import Outbox
from proxy.store.db import open_database
from proxy.store.embedder import Embedder
from proxy.store.facts import FactRecords
from proxy.store.index import FactIndex

ACCOUNT = "bench"
T = TypeVar("T")

VERBS = [
    "Prefers", "Enjoys", "Is learning", "Works with", "Avoids", "Recently bought",
    "Is planning to try", "Often asks about", "Dislikes", "Uses", "Collects", "Teaches",
    "Wants to get better at", "Grew up with", "Reads a lot about", "Is allergic to",
    "Switched to", "Recommends", "Volunteers with", "Saves money for", "Writes about",
    "Is nervous about", "Listens to", "Trains for", "Cooks", "Repairs", "Builds",
    "Compares prices of", "Gave up", "Keeps forgetting",
]  # fmt: skip
OBJECTS = [
    "dark roast coffee", "green tea", "Python", "Rust", "TypeScript", "Kubernetes",
    "trail running", "road cycling", "bouldering", "yoga", "chess", "sourdough bread",
    "vegan recipes", "Thai curry", "sushi", "jazz records", "classical piano", "K-pop",
    "podcasts about history", "science fiction novels", "mystery novels", "board games",
    "film cameras", "wide-angle lenses", "mechanical keyboards", "standing desks",
    "a Linux laptop", "a MacBook Pro", "noise-cancelling headphones", "electric cars",
    "a cargo bike", "train travel in Europe", "budget airlines", "camping gear",
    "houseplants", "a vegetable garden", "birdwatching", "watercolor painting",
    "woodworking", "3D printing", "home automation", "smart thermostats", "index funds",
    "a mortgage", "a personal budget app", "Spanish lessons", "Japanese grammar",
    "public speaking", "leadership books", "project management tools", "spreadsheets",
    "SQL databases", "machine learning courses", "data visualization", "open source projects",
    "a rescue dog", "two cats", "an aquarium", "horse riding", "marathon training plans",
    "meal prep", "intermittent fasting", "gluten-free pasta", "peanuts", "shellfish",
    "spicy food", "craft beer", "natural wine", "oat milk", "protein shakes",
    "hiking boots", "ski trips", "surfing lessons", "sailing", "scuba diving",
    "theme parks", "museum visits", "live concerts", "stand-up comedy", "anime",
    "video games", "retro consoles", "fantasy football", "basketball", "tennis",
    "golf", "swimming", "meditation apps", "sleep trackers", "journaling",
    "productivity systems", "email newsletters", "remote work", "coworking spaces",
    "night shifts", "customer support tickets", "password resets", "refund requests",
    "premium subscriptions", "the analytics dashboard", "the mobile app", "API rate limits",
    "invoices", "tax returns", "wedding planning", "a new apartment", "moving to Berlin",
    "a kitchen renovation", "child care options", "school applications",
]  # fmt: skip
CONTEXTS = [
    "on weekends", "at work", "for their startup", "with their kids", "every morning",
    "after work", "on vacation", "during the winter", "for a side project",
    "with friends", "on a tight budget", "for their team", "since last year",
    "when traveling", "at home", "for health reasons", "for an upcoming exam",
    "for their parents", "in the evenings", "before big meetings", "on long flights",
    "with their partner", "at the office", "for fun", "to save time", "to relax",
    "for a certification", "twice a week", "since moving", "this month", "lately",
    "for the holidays", "on business trips", "in the summer", "when it rains",
    "for a charity event", "as a beginner", "at an advanced level", "on their commute",
    "for client projects",
]  # fmt: skip
TOPICS = [
    "interest", "preference", "goal", "skill", "habit", "tool", "food", "travel", "music",
    "work", "health", "family", "finance", "learning", "hobby", "support", "home", "sport",
]  # fmt: skip
QUESTIONS = [
    "what does the user like to drink",
    "which programming languages do they use",
    "hobbies on weekends",
    "food allergies or things they avoid",
    "what are they saving money for",
    "what music do they listen to",
    "travel plans",
    "what laptop do they use for work",
    "customer support issues",
    "premium features usage",
    "photography interests camera landscape",
    "fitness and training goals",
    "pets at home",
    "what are they learning right now",
    "books they enjoy",
    "how do they commute",
    "home improvement projects",
    "what stresses them out",
    "which languages are they studying",
    "outdoor activities in the summer",
]


@dataclass
class Row:
    label: str
    ms: list[float]
    baseline_ms: list[float] = field(default_factory=list)
    recall: float | None = None


class CachedEmbedder:
    """The real model, except for the benchmark's own fact texts, whose vectors are computed
    once up front (so building 100k facts does not run the model 100k times again). Every
    other text, each query included, runs the model."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.table: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        missing = [i for i, t in enumerate(texts) if t not in self.table]
        if missing:
            out[missing] = self.inner.embed([texts[i] for i in missing])
        for i, t in enumerate(texts):
            vector = self.table.get(t)
            if vector is not None:
                out[i] = vector
        return out


def fact_text(key: str, value: str) -> str:
    """What the index embeds for a fact (``Fact.text``)."""
    return Fact(id="", account="", collection_id=None, key=key, value=value).text


def generate_facts(n: int, rng: random.Random, prefix: str = "") -> list[tuple[str, str]]:
    """``n`` facts with unique keys and varied, mostly unique sentences."""
    combos = len(VERBS) * len(OBJECTS) * len(CONTEXTS)
    picks = (
        rng.sample(range(combos), n) if n <= combos else [rng.randrange(combos) for _ in range(n)]
    )
    out = []
    for i, pick in enumerate(picks):
        verb, rest = divmod(pick, len(OBJECTS) * len(CONTEXTS))
        obj, ctx = divmod(rest, len(CONTEXTS))
        key = f"{prefix}{TOPICS[pick % len(TOPICS)]}_{i}"
        out.append((key, f"{VERBS[verb]} {OBJECTS[obj]} {CONTEXTS[ctx]}"))
    return out


def queries(n: int, rng: random.Random) -> list[str]:
    out = list(QUESTIONS)
    while len(out) < n:
        out.append(f"does the user {rng.choice(VERBS).lower()} {rng.choice(OBJECTS)}?")
    rng.shuffle(out)
    return out[:n]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def timed(fn: Callable[..., T], *args: Any) -> tuple[float, T]:
    """(milliseconds, result) of one call."""
    t = time.perf_counter()
    result = fn(*args)
    return (time.perf_counter() - t) * 1000.0, result


def numpy_top_k(matrix: np.ndarray, vector: np.ndarray, k: int) -> np.ndarray:
    scores = matrix @ vector
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top])]


def embed_top_k(model: Embedder, matrix: np.ndarray, query: str, k: int) -> np.ndarray:
    """The baseline with the query embedding included: the same model, then NumPy."""
    return numpy_top_k(matrix, model.embed([query])[0], k)


class Bench:
    def __init__(self, args: argparse.Namespace, data_dir: Path) -> None:
        self.args = args
        self.settings = Settings(data_dir=data_dir, embedding={"cache_dir": args.model_cache})
        self.db = open_database(self.settings)
        self.records = FactRecords(self.db)
        self.outbox = Outbox(self.db)
        self.index = FactIndex(self.settings.store, self.settings.chroma_path)
        self.model = build_embedder(self.settings.embedding, args.model_cache)
        self.embedder = CachedEmbedder(self.model)
        self.sync = IndexSync(self.records, self.outbox, self.index, self.embedder)
        self.retriever = Retriever(self.records, self.index, self.embedder, self.sync)
        self.profile = ProfileService(
            self.records, self.sync, self.retriever, self.settings.profile
        )
        self.opts = SearchOptions(top_k=args.top_k, threshold=args.threshold)
        self.batch = self.settings.profile.max_facts_per_request
        self.rng = random.Random(args.seed)

    def close(self) -> None:
        self.index.close()
        self.db.close()

    # -- building --------------------------------------------------------------------------------
    def precompute(self, facts: list[tuple[str, str]]) -> float:
        """Embed the fact texts with the model (batches of 256); returns texts/s."""
        texts = [fact_text(k, v) for k, v in facts]
        start = time.perf_counter()
        for i in range(0, len(texts), 256):
            chunk = texts[i : i + 256]
            for text, vector in zip(chunk, self.model.embed(chunk), strict=True):
                self.embedder.table[text] = vector
        return len(texts) / (time.perf_counter() - start)

    def write(self, scope: Scope, facts: list[tuple[str, str]]) -> float:
        """Write through ``patch_profile`` in API-sized batches; returns facts/s."""
        start = time.perf_counter()
        for i in range(0, len(facts), self.batch):
            body = dict(facts[i : i + self.batch])
            result = self.profile.patch_profile(scope, body, dry_run=False, request_id="bench")
            assert len(result.created) == len(body), "every fact is new"
        assert self.outbox.depth() == 0, "the index kept up with the records"
        return len(facts) / (time.perf_counter() - start)

    def matrix(self, scope: Scope) -> tuple[list[str], np.ndarray]:
        facts = self.records.select(scope)
        return [f.id for f in facts], np.stack([self.embedder.table[f.text] for f in facts])

    # -- measuring ---------------------------------------------------------------------------------
    def run(
        self, scope: Scope, matrix: np.ndarray, q: str, v: np.ndarray
    ) -> tuple[float, float, float, float, list[Hit], np.ndarray]:
        """One query four ways: profilo excl./incl. the query embedding, NumPy excl./incl."""
        k = self.opts.top_k
        excl, hits = timed(self.retriever.search_vector, scope, v, self.opts)
        incl, _ = timed(self.retriever.search, scope, q, self.opts)
        base_excl, exact = timed(numpy_top_k, matrix, v, k)
        base_incl, _ = timed(embed_top_k, self.model, matrix, q, k)
        return excl, incl, base_excl, base_incl, hits, exact

    def measure_scope(
        self, label: str, scope: Scope, qs: list[str], qvecs: np.ndarray
    ) -> tuple[Row, Row]:
        ids, matrix = self.matrix(scope)
        for q, v in zip(qs[:10], qvecs[:10], strict=True):  # warm-up
            self.run(scope, matrix, q, v)
        excl = Row(f"{label}, query embedding excluded", [])
        incl = Row(f"{label}, query embedding included", [])
        overlap = 0
        for q, v in zip(qs, qvecs, strict=True):
            t_excl, t_incl, b_excl, b_incl, hits, exact = self.run(scope, matrix, q, v)
            excl.ms.append(t_excl)
            incl.ms.append(t_incl)
            excl.baseline_ms.append(b_excl)
            incl.baseline_ms.append(b_incl)
            overlap += len({ids[i] for i in exact} & {h.fact.id for h in hits})
        excl.recall = overlap / (len(qs) * min(self.opts.top_k, len(ids)))
        return excl, incl

    def measure_scopes(self, scopes: list[Scope], qs: list[str], qvecs: np.ndarray) -> list[Row]:
        """Warm: one scope queried again and again. Cold: each query on a scope that has not
        been touched for ``index_cache_size`` other scopes (least recently used first)."""
        n, cache = len(scopes), self.settings.store.index_cache_size
        rows = [
            Row(f"{n:,} scopes, warm scope, query embedding excluded", []),
            Row(f"{n:,} scopes, warm scope, query embedding included", []),
            Row(f"{n:,} scopes, cold scope, query embedding excluded", []),
            Row(f"{n:,} scopes, cold scope, query embedding included", []),
        ]
        warm = scopes[-1]
        _, matrix = self.matrix(warm)
        for q, v in zip(qs[:10], qvecs[:10], strict=True):
            self.run(warm, matrix, q, v)
        for q, v in zip(qs, qvecs, strict=True):
            t_excl, t_incl, b_excl, b_incl, _, _ = self.run(warm, matrix, q, v)
            rows[0].ms.append(t_excl)
            rows[1].ms.append(t_incl)
            rows[0].baseline_ms.append(b_excl)
            rows[1].baseline_ms.append(b_incl)
        # cold: scopes in build order, least recently used first; each is queried once (two
        # different scopes for the two profilo calls, so the second does not find it warm)
        cold_pool = scopes[: max(0, n - cache)]
        half = min(len(qs), len(cold_pool) // 2)
        if half == 0:
            print(f"  (no cold scopes: {n} scopes fit the index cache of {cache})")
            return rows[:2]
        for i in range(half):
            scope, other, q, v = cold_pool[2 * i], cold_pool[2 * i + 1], qs[i], qvecs[i]
            _, matrix = self.matrix(scope)  # from the records only: does not touch the index
            t_excl, _ = timed(self.retriever.search_vector, scope, v, self.opts)
            t_incl, _ = timed(self.retriever.search, other, q, self.opts)
            rows[2].ms.append(t_excl)
            rows[3].ms.append(t_incl)
            rows[2].baseline_ms.append(timed(numpy_top_k, matrix, v, self.opts.top_k)[0])
            rows[3].baseline_ms.append(
                timed(embed_top_k, self.model, matrix, q, self.opts.top_k)[0]
            )
        return rows


def print_table(rows: list[Row]) -> None:
    head = (
        f"{'search latency (ms)':50} {'p50':>7} {'p95':>7} {'p99':>7}"
        f" {'numpy p50':>9} {'numpy p95':>9} {'x p50':>7} {'recall':>7}"
    )
    print(head)
    print("-" * len(head))
    for row in rows:
        ratio = pct(row.ms, 50) / pct(row.baseline_ms, 50) if row.baseline_ms else float("nan")
        recall = f"{row.recall:.3f}" if row.recall is not None else ""
        print(
            f"{row.label:50} {pct(row.ms, 50):7.2f} {pct(row.ms, 95):7.2f} {pct(row.ms, 99):7.2f}"
            f" {pct(row.baseline_ms, 50):9.3f} {pct(row.baseline_ms, 95):9.3f}"
            f" {ratio:7.1f} {recall:>7}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="1k/10k/100k facts, 10,000 scopes")
    parser.add_argument("--sizes", type=int, nargs="+", help="facts in one scope (1000 10000)")
    parser.add_argument("--scopes", type=int, help="number of scopes (2000; --full 10000)")
    parser.add_argument("--scope-facts", type=int, default=100, help="facts per scope (100)")
    parser.add_argument("--bulk", type=int, default=1000, help="facts written with the model")
    parser.add_argument("--queries", type=int, default=300, help="queries per measurement")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--threshold", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data-dir", type=Path, help="keep the data here (default: a temp dir)")
    parser.add_argument(
        "--model-cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "profilo-test-models",
        help="where the ONNX graph of the embedder is built/cached",
    )
    args = parser.parse_args()
    sizes = args.sizes or ([1000, 10_000, 100_000] if args.full else [1000, 10_000])
    n_scopes = args.scopes if args.scopes is not None else (10_000 if args.full else 2000)

    with tempfile.TemporaryDirectory(prefix="profilo-bench-") as tmp:
        bench = Bench(args, args.data_dir or Path(tmp))
        s = bench.settings
        print(
            f"profilo search benchmark: {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, python {platform.python_version()}, "
            f"embedder {bench.model.name}"
        )
        print(
            f"ran: sizes={sizes} scopes={n_scopes}x{args.scope_facts} bulk={args.bulk} "
            f"queries={args.queries} top_k={args.top_k} threshold={args.threshold} "
            f"write batch={bench.batch} store={s.store.model_dump()}"
        )
        started = time.perf_counter()
        rows: list[Row] = []
        rng = bench.rng
        qs = queries(args.queries, rng)
        qvecs = bench.model.embed(qs)

        pool = generate_facts(max([*sizes, args.scope_facts]), rng)
        rate = bench.precompute(pool)
        print(f"\nembedder alone, batches of 256: {rate:,.0f} texts/s ({len(pool):,} fact texts)")

        bulk = generate_facts(args.bulk, rng, prefix="bulk_")
        rate = bench.write(Scope(ACCOUNT, "bulk"), bulk)
        print(
            f"bulk write into one scope, batches of {bench.batch}, embedding included: "
            f"{rate:,.0f} facts/s ({args.bulk:,} facts)"
        )
        for size in sizes:
            scope = Scope(ACCOUNT, f"size-{size}")
            rate = bench.write(scope, pool[:size])
            print(
                f"bulk write into one scope, embedding excluded (records + change log + Chroma), "
                f"up to {size:,} facts: {rate:,.0f} facts/s"
            )
            rows += bench.measure_scope(f"{size:,} facts in one scope", scope, qs, qvecs)
            print(f"  measured {size:,} facts ({time.perf_counter() - started:.0f} s so far)")

        if n_scopes:
            scopes = [Scope(ACCOUNT, f"user-{i}") for i in range(n_scopes)]
            start = time.perf_counter()
            for i, scope in enumerate(scopes):
                bench.write(scope, rng.sample(pool, args.scope_facts))
                if (i + 1) % max(1, n_scopes // 10) == 0:
                    print(f"  built {i + 1:,} scopes ({time.perf_counter() - start:.0f} s)")
            elapsed = time.perf_counter() - start
            print(
                f"built {n_scopes:,} scopes of {args.scope_facts} facts: "
                f"{n_scopes / elapsed:,.1f} scopes/s, "
                f"{n_scopes * args.scope_facts / elapsed:,.0f} facts/s (embedding excluded)"
            )
            rows += bench.measure_scopes(scopes, qs, qvecs)

        print()
        print_table(rows)
        print(
            "x p50 = profilo p50 / NumPy brute-force p50 on the same vectors "
            "(NumPy holds the scope's matrix in memory and reads nothing back); "
            "recall = overlap of profilo's top k with the exact top k"
        )
        for row in rows:
            if row.label.startswith("10,000 facts") and "included" in row.label:
                p95 = pct(row.ms, 95)
                verdict = "met" if p95 < 15.0 else "NOT met"
                print(
                    f"goal: p95 < 15 ms at 10k facts, embedding included: {p95:.2f} ms, {verdict}"
                )
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS {rss:,.0f} MiB; total {time.perf_counter() - started:.0f} s")
        bench.close()


if __name__ == "__main__":
    main()
