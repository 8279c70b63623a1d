"""Search latency, hybrid retrieval vs cosine alone, in one scope of 10k facts (same run).

    python -m bench.bench_hybrid                       # 10k facts, 300 queries per mode
    python -m bench.bench_hybrid --facts 2000 --queries 100 --other-scopes 2   # quick look

In-process, on the classes the app wires together (records, outbox, Chroma index, lexical
index, ``Retriever``), default settings, real MiniLM model. The measured scope holds
``--facts`` generated facts (``bench/bench_search.py``'s generator), a third of them starting
with the user's name, as extracted facts often do; ``--other-scopes`` other users of 2,000
facts each share the lexical index. Queries are ``bench_search``'s plus name-led ones (which
take the common-word path: a second query embedding). Each query is timed through
``Retriever.search`` with its embedding included (queries are never cached), cosine alone
and hybrid alternating, after a warm-up. Ratios are hybrid / cosine at the same percentile.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.bench_search import CachedEmbedder, generate_facts, pct, queries
from proxy.config import Settings
from proxy.llm.embeddings import build_embedder
from proxy.models import Fact, Scope
from proxy.services.indexing import IndexSync
from proxy.services.retrieval import Retriever, SearchOptions
from proxy.store.changes import Outbox
from proxy.store.db import open_database
from proxy.store.facts import FactRecords
from proxy.store.index import FactIndex
from proxy.store.lexical_pg import lexical_index

ACCOUNT = "bench"
NAME = "Priya"


def _facts(n: int, rng: random.Random, scope: Scope, prefix: str) -> list[Fact]:
    now = time.time()
    out = []
    for key, value in generate_facts(n, rng, prefix):
        if rng.random() < 1 / 3:
            value = f"{NAME} {value[0].lower()}{value[1:]}"
        out.append(
            Fact(
                id=f"{prefix}{key}",
                account=ACCOUNT,
                collection_id=scope.collection_id,
                key=key,
                value=value,
                created_at=now,
                updated_at=now,
                valid_from=now,
            )
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--facts", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--other-scopes", type=int, default=4)
    args = parser.parse_args(argv)
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="profilo-bench-hybrid-") as tmp:
        settings = Settings(data_dir=Path(tmp))
        db = open_database(settings)
        model = build_embedder(settings.embedding, Path(tmp) / "models")
        embedder = CachedEmbedder(model)
        index = FactIndex(settings.store, settings.chroma_path)
        records = FactRecords(db)
        sync = IndexSync(records, Outbox(db), index, embedder)  # type: ignore[arg-type]
        lexical = lexical_index(db)
        lexical.ensure()
        scopes = [(Scope(ACCOUNT, "main"), args.facts)] + [
            (Scope(ACCOUNT, f"other{i}"), 2000) for i in range(args.other_scopes)
        ]
        started = time.perf_counter()
        for scope, n in scopes:
            facts = _facts(n, rng, scope, f"{scope.collection_id}_")
            for start in range(0, len(facts), 256):
                batch = facts[start : start + 256]
                vectors = model.embed([f.text for f in batch])
                embedder.table.update(zip((f.text for f in batch), vectors, strict=True))
                with records.transaction(scope, request_id=None, source=None) as tx:
                    for fact in batch:
                        tx.add(fact)
                sync.flush(scope)
        print(
            f"seeded {sum(n for _, n in scopes)} facts in {len(scopes)} scopes "
            f"({time.perf_counter() - started:.0f} s)"
        )
        cosine = Retriever(records, index, embedder, sync)  # type: ignore[arg-type]
        hybrid = Retriever(records, index, embedder, sync, lexical, settings.retrieval)  # type: ignore[arg-type]
        qs = queries(args.queries, rng)
        qs = [f"{NAME}'s {q}" if i % 3 == 0 else q for i, q in enumerate(qs)]
        main_scope = scopes[0][0]
        opts = SearchOptions(top_k=10, threshold=0.0)
        for q in qs[:20]:  # warm-up: model session, index load, SQLite pages
            cosine.search(main_scope, q, opts)
            hybrid.search(main_scope, q, opts)
        times: dict[str, list[float]] = {"cosine": [], "hybrid": []}
        for i, q in enumerate(qs):
            order = [("cosine", cosine), ("hybrid", hybrid)]
            for label, retriever in order if i % 2 == 0 else order[::-1]:
                t0 = time.perf_counter()
                retriever.search(main_scope, q, opts)
                times[label].append((time.perf_counter() - t0) * 1000)
        common = sum(1 for q in qs if NAME in q)
        print(f"scope: {args.facts} facts; {len(qs)} queries ({common} name-led), top_k 10")
        print(f"{'':10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
        for label, ms in times.items():
            print(f"{label:10}{pct(ms, 50):9.2f}{pct(ms, 95):9.2f}{pct(ms, 99):9.2f}")
        ratio50 = pct(times["hybrid"], 50) / pct(times["cosine"], 50)
        ratio95 = pct(times["hybrid"], 95) / pct(times["cosine"], 95)
        print(f"hybrid / cosine: p50 x{ratio50:.2f}, p95 x{ratio95:.2f}")
        lex = [ms for ms, q in zip(times["hybrid"], qs, strict=True) if NAME in q]
        print(f"hybrid, name-led queries only: p50 {np.median(lex):.2f} ms")
        index.close()
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
