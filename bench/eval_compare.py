"""Every retrieval candidate on both evaluation sets, with latency at 10k facts: one table.

Used by ``python -m bench.eval_retrieval`` (its default output). Sets:

- ``retrieval``: ``bench/eval/retrieval_set.json`` (one user's extracted ``key: value`` facts,
  asked with ``top_k`` 10 and no threshold, as before);
- ``dialogue``: ``bench/eval/dialogue_set.json`` (two speakers' dated observations, asked as the
  issue-19 benchmark asks: ``threshold`` 0, ``top_k`` 30, recall of the top 10); its hold-out
  conversations only with ``--holdout``.

Latency: one scope of ~10k dialogue facts (more conversations of the same two speakers, so their
names are common words there too), each configuration timed through ``Retriever.search`` on the
dialogue questions (query embedding included: the embedder's cache is bypassed), in turns.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.eval.make_dialogue_set import PEOPLE, conversation
from proxy.config import RerankerSettings, RetrievalSettings, Settings
from proxy.llm.embeddings import build_embedder
from proxy.models import Fact, Scope
from proxy.services.indexing import IndexSync
from proxy.services.rerank import Reranker
from proxy.services.retrieval import Retriever, SearchOptions
from proxy.store.changes import Outbox
from proxy.store.db import open_database
from proxy.store.facts import FactRecords
from proxy.store.index import FactIndex
from proxy.store.lexical_pg import lexical_index

#: The defaults shipped before issue 19 (the hidden benchmark's "shipped defaults" row).
BEFORE: dict[str, Any] = {
    "lexical_weight": 0.2,
    "lexical_saturation": 10.0,
    "common_words": "drop",
    "common_blend": 0.5,  # what "average" meant then
    "common_boost": 0.0,
}
#: name -> settings over RetrievalSettings' model defaults; None is cosine alone.
CANDIDATES: dict[str, dict[str, Any] | None] = {
    "cosine": None,
    "before (issue 19)": BEFORE,
    "lexical weight 0": BEFORE | {"lexical_weight": 0.0},
    "keep": BEFORE | {"common_words": "keep"},
    "average": BEFORE | {"common_words": "average"},
    "saturation 0": BEFORE | {"lexical_saturation": 0.0},
    "average, sat 0": BEFORE | {"common_words": "average", "lexical_saturation": 0.0},
    "blend .3": BEFORE | {"common_words": "average", "common_blend": 0.3},
    "drop, boost .05": BEFORE | {"common_boost": 0.05},
    "drop, boost .075": BEFORE | {"common_boost": 0.075},
    "drop, boost .1": BEFORE | {"common_boost": 0.1},
    "drop, boost .2": BEFORE | {"common_boost": 0.2},
    "drop, boost .1, sat 0": BEFORE | {"common_boost": 0.1, "lexical_saturation": 0.0},
    "average, boost .1": BEFORE | {"common_words": "average", "common_boost": 0.1},
    "blend .15, boost .05": BEFORE
    | {"common_words": "average", "common_blend": 0.15, "common_boost": 0.05},
    "blend .2": BEFORE | {"common_words": "average", "common_blend": 0.2},
    "blend .2, boost .075": BEFORE
    | {"common_words": "average", "common_blend": 0.2, "common_boost": 0.075},
    "blend .3, boost .075": BEFORE
    | {"common_words": "average", "common_blend": 0.3, "common_boost": 0.075},
    "blend .1, boost .1": BEFORE
    | {"common_words": "average", "common_blend": 0.1, "common_boost": 0.1},
    "blend .25": BEFORE | {"common_words": "average", "common_blend": 0.25},
    "blend .25, boost .05": BEFORE
    | {"common_words": "average", "common_blend": 0.25, "common_boost": 0.05},
    # issue 18: the shipped defaults answered from the indexes instead of the scope views
    # (FTS5 BM25 with the whole table's statistics, Chroma's approximate search)
    "defaults, no views": {"views_mb": 0},
}
METRICS = ("recall@5", "recall@10", "mrr")


#: Latency only: the defaults with the reranking stage on, against a local instant endpoint.
RERANK = "defaults + rerank (fake)"


def settings_for(name: str, rerank_url: str | None = None) -> RetrievalSettings | None:
    """``"defaults"``: what ships; ``RERANK``: that with ``rerank_url``; else a candidate's."""
    if name == "defaults":
        return Settings().retrieval
    if name == RERANK:
        reranker = RerankerSettings(model="rerank-fake", api_base=rerank_url, top_n=30)
        return Settings().retrieval.model_copy(update={"reranker": reranker})
    point = CANDIDATES[name]
    return None if point is None else RetrievalSettings(**point)


def options_for(set_name: str) -> SearchOptions:
    if set_name == "dialogue":
        return SearchOptions(top_k=30, threshold=0.0)
    return SearchOptions(top_k=10, threshold=-1.0)


def _latency_facts(n: int) -> list[tuple[str, str]]:
    """~``n`` dialogue observations (key, value) of one pair of speakers."""
    rng = random.Random(99)
    pair = [PEOPLE[0], PEOPLE[1]]
    out: list[tuple[str, str]] = []
    c = 0
    while len(out) < n:
        c += 1
        conv = conversation(rng, f"lat{c}", pair)
        out.extend((f"c{c}_{f['key']}", f["value"]) for f in conv["facts"])
    return out[:n]


def latency(
    names: Sequence[str],
    questions: Sequence[str],
    n_facts: int = 10_000,
    base: Settings | None = None,
    rerank_url: str | None = None,
) -> dict[str, tuple[float, float]]:
    """p50/p95 ms per query of each configuration in one scope of ``n_facts`` facts."""
    from bench.bench_search import pct

    with tempfile.TemporaryDirectory(prefix="profilo-eval-lat-") as tmp:
        settings = (base or Settings()).model_copy(update={"data_dir": Path(tmp)})
        db = open_database(settings)
        model = build_embedder(settings.embedding, settings.embedding.cache_dir or Path(tmp) / "m")
        index = FactIndex(settings.store, settings.chroma_path)
        records = FactRecords(db)
        sync = IndexSync(records, Outbox(db), index, model)
        lexical = lexical_index(db)
        lexical.ensure()
        scope = Scope("eval", "latency")
        now = time.time()
        facts = _latency_facts(n_facts)
        for start in range(0, len(facts), 500):
            with records.transaction(scope, request_id=None, source="eval", now=now) as tx:
                for key, value in facts[start : start + 500]:
                    tx.add(
                        Fact(id=key, account="eval", collection_id="latency", key=key, value=value,
                             created_at=now, updated_at=now, valid_from=now)
                    )  # fmt: skip
            sync.flush(scope)
        pair = (PEOPLE[0][0], PEOPLE[1][0])
        qs = [_rename(q, pair) for q in questions]
        retrievers = {}
        for name in names:
            rules = settings_for(name, rerank_url)
            lex = lexical if rules is not None else None
            rr = Reranker(rules.reranker) if rules is not None and rules.reranker.model else None
            retrievers[name] = Retriever(records, index, model, sync, lex, rules, reranker=rr)
        opts = options_for("dialogue")
        for q in qs[:10]:
            for r in retrievers.values():
                r.search(scope, q, opts)
        times: dict[str, list[float]] = {name: [] for name in names}
        for i, q in enumerate(qs):
            order = list(retrievers.items())
            for name, r in order[i % len(order) :] + order[: i % len(order)]:
                t0 = time.perf_counter()
                r.search(scope, q, opts)
                times[name].append((time.perf_counter() - t0) * 1000)
        for r in retrievers.values():
            r.close()
        index.close()
        db.close()
    return {name: (pct(ms, 50), pct(ms, 95)) for name, ms in times.items()}


def _rename(question: str, pair: tuple[str, str]) -> str:
    """A dialogue question asked of the latency scope's two speakers."""
    names = [p[0] for p in PEOPLE]
    words = question.split()
    seen: list[str] = []
    for w in words:
        bare = w.removesuffix("'s").strip("?,.")
        if bare in names and bare not in seen:
            seen.append(bare)
    for i, name in enumerate(seen[:2]):
        question = question.replace(name, f"\0{i}")
    for i in range(2):
        question = question.replace(f"\0{i}", pair[i])
    return question


def table(
    results: dict[str, dict[str, dict[str, Any]]],
    sets: Sequence[str],
    lat: dict[str, tuple[float, float]] | None,
) -> list[str]:
    """One row per configuration: per set recall@5, recall@10 (vs cosine), MRR; latency."""
    head = f"{'configuration':<28}"
    sub = f"{'':<28}"
    for s in sets:
        head += f"| {s:<31}"
        sub += f"| {'r@5':>6} {'r@10':>6} {'vs cos':>7} {'MRR':>6} "
    if lat is not None:
        head += "| latency @10k facts"
        sub += f"| {'p50 ms':>7} {'p95 ms':>7}"
    lines = [head, sub]
    for name, per_set in results.items():
        row = f"{name:<28}"
        for s in sets:
            got = per_set[s]["all"]
            base = results["cosine"][s]["all"]["recall@10"]
            gain = got["recall@10"] / max(base, 1e-9) - 1
            row += (
                f"| {got['recall@5']:6.3f} {got['recall@10']:6.3f} {gain:+7.1%} {got['mrr']:6.3f} "
            )
        if lat is not None and name in lat:
            row += f"| {lat[name][0]:7.1f} {lat[name][1]:7.1f}"
        lines.append(row)
    for name in [n for n in lat or {} if n not in results]:  # latency-only rows
        assert lat is not None
        cells = "".join(f"| {'(same order)':>31}" for _ in sets)
        lines.append(f"{name:<28}{cells}| {lat[name][0]:7.1f} {lat[name][1]:7.1f}")
    return lines


def by_type(results: dict[str, dict[str, dict[str, Any]]], set_name: str) -> list[str]:
    """recall@10 per question type of one set, one column per configuration."""
    names = list(results)
    types = sorted(k for k in results[names[0]][set_name] if k != "all")
    lines = [f"{set_name}: recall@10 by question type"]
    lines.append(f"{'type':<16}{'n':>5} " + " ".join(f"{n[:12]:>12}" for n in names))
    for t in types:
        n = results[names[0]][set_name][t]["n"]
        cells = " ".join(f"{results[c][set_name][t]['recall@10']:12.3f}" for c in names)
        lines.append(f"{t:<16}{n:>5} {cells}")
    return lines
