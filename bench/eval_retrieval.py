"""Retrieval quality on both evaluation sets: cosine, every candidate and the shipped defaults.

    python -m bench.eval_retrieval                 # both sets, one table, latency at 10k facts
    python -m bench.eval_retrieval --users 2 --latency-facts 0   # a quick subset, no latency
    python -m bench.eval_retrieval --holdout       # also the dialogue set's hold-out (at the end)
    python -m bench.eval_retrieval --only cosine defaults        # some configurations only
    python -m bench.eval_retrieval --grid          # also sweep the fusion weights (first set)
    python -m bench.eval_retrieval --precision fp32 int8   # embedding.precision side by side

Sets: ``bench/eval/retrieval_set.json`` (``make_set.py``: one user's extracted facts) and
``bench/eval/dialogue_set.json`` (``make_dialogue_set.py``: two speakers' dated observations);
both were written here. The candidates and the table: ``bench/eval_compare.py``.

In-process, on the classes the app wires together (``FactRecords``, ``Outbox``, ``FactIndex``,
``IndexSync``, ``LexicalIndex``, ``Retriever``) with the real local embedding model, in a
temporary data dir. Every user's (conversation's) facts go into their own scope (account
``eval``, collection = the user); each question is asked in its user's scope. Cosine alone is
the same ``Retriever`` with no lexical index: the path before hybrid retrieval.

Metrics per question, averaged: recall@k = share of the relevant facts in the top k; MRR =
1 / rank of the first relevant fact (0 when none in the top 10).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.eval_compare import (
    CANDIDATES,
    RERANK,
    by_type,
    latency,
    options_for,
    settings_for,
    table,
)
from bench.rerank_fake import FakeRerankServer
from proxy.config import RetrievalSettings, Settings
from proxy.llm.embeddings import build_embedder
from proxy.metrics import Metrics
from proxy.models import Fact, Scope
from proxy.services.indexing import IndexSync
from proxy.services.retrieval import Retriever, SearchOptions
from proxy.services.scope_views import ScopeViews
from proxy.store.changes import Outbox
from proxy.store.db import Database, open_database
from proxy.store.embed_cache import CachedEmbedder
from proxy.store.facts import FactRecords
from proxy.store.index import FactIndex
from proxy.store.lexical import LexicalIndex
from proxy.store.lexical_pg import lexical_index
from proxy.store.scope_writes import ScopeWrites

SET = Path(__file__).resolve().parent / "eval" / "retrieval_set.json"
DIALOGUE = SET.with_name("dialogue_set.json")
ACCOUNT = "eval"
K = 10


def load_set(path: Path = SET, users: int | None = None, holdout: bool = False) -> dict[str, Any]:
    """The set's users (``holdout``: only its hold-out ones, else only the others)."""
    data: dict[str, Any] = json.loads(path.read_text())
    picked = {u["user"] for u in data["users"] if bool(u.get("holdout")) == holdout}
    data["users"] = [u for u in data["users"] if u["user"] in picked]
    data["questions"] = [q for q in data["questions"] if q["user"] in picked]
    if users is not None:
        keep = {u["user"] for u in data["users"][:users]}
        data["users"] = [u for u in data["users"] if u["user"] in keep]
        data["questions"] = [q for q in data["questions"] if q["user"] in keep]
    return data


@dataclass
class Stack:
    records: FactRecords
    index: FactIndex
    embedder: CachedEmbedder
    sync: IndexSync
    lexical: LexicalIndex
    db: Database

    def retriever(self, settings: RetrievalSettings | None) -> Retriever:
        """Hybrid with ``settings``, on scope views as shipped (``views_mb`` 0: the indexes);
        ``None``: cosine alone (no lexical index, the vector index's search)."""
        if settings is None:
            return Retriever(self.records, self.index, self.embedder, self.sync, None, None)
        views = ScopeViews(
            self.records,
            self.index,
            ScopeWrites(self.db),
            self.sync,
            self.embedder.dim,
            settings,
            Metrics(),
            fts5_lengths=self.db.dialect == "sqlite",
        )
        return Retriever(
            self.records, self.index, self.embedder, self.sync, self.lexical, settings, views=views
        )


@contextmanager
def loaded(data: dict[str, Any], settings: Settings | None = None) -> Iterator[Stack]:
    """The eval's users and facts written into fresh stores in a temporary data dir."""
    with tempfile.TemporaryDirectory(prefix="profilo-eval-") as tmp:
        settings = settings or Settings(data_dir=Path(tmp))
        settings = settings.model_copy(update={"data_dir": Path(tmp)})
        db = open_database(settings)
        embedder = CachedEmbedder(
            build_embedder(settings.embedding, settings.embedding.cache_dir or Path(tmp) / "models")
        )
        index = FactIndex(settings.store, settings.chroma_path)
        records = FactRecords(db)
        sync = IndexSync(records, Outbox(db), index, embedder)
        lexical = lexical_index(db)
        lexical.ensure()
        now = time.time()
        for user in data["users"]:
            scope = Scope(ACCOUNT, user["user"])
            with records.transaction(scope, request_id=None, source="eval", now=now) as tx:
                for f in user["facts"]:
                    tx.add(
                        Fact(
                            id=f["id"],
                            account=ACCOUNT,
                            collection_id=user["user"],
                            key=f["key"],
                            value=f["value"],
                            created_at=now,
                            updated_at=now,
                            valid_from=now,
                            source="eval",
                        )
                    )
            sync.flush(scope)
        try:
            yield Stack(records, index, embedder, sync, lexical, db)
        finally:
            index.close()
            db.close()


def evaluate(
    retriever: Retriever, questions: Sequence[dict[str, Any]], opts: SearchOptions | None = None
) -> dict[str, Any]:
    """Recall@5, recall@10 and MRR, overall and by question type."""
    groups: dict[str, list[tuple[float, float, float]]] = {}
    opts = opts or SearchOptions(top_k=K, threshold=-1.0)
    for q in questions:
        ids = [h.fact.id for h in retriever.search(Scope(ACCOUNT, q["user"]), q["question"], opts)]
        relevant = set(q["relevant"])
        r5 = len(relevant & set(ids[:5])) / len(relevant)
        r10 = len(relevant & set(ids[:10])) / len(relevant)
        rank = next((i for i, fid in enumerate(ids, start=1) if fid in relevant), None)
        row = (r5, r10, 1.0 / rank if rank else 0.0)
        groups.setdefault("all", []).append(row)
        groups.setdefault(q["type"], []).append(row)
    return {
        name: {
            "n": len(rows),
            "recall@5": sum(r[0] for r in rows) / len(rows),
            "recall@10": sum(r[1] for r in rows) / len(rows),
            "mrr": sum(r[2] for r in rows) / len(rows),
        }
        for name, rows in groups.items()
    }


def _table(cosine: dict[str, Any], hybrid: dict[str, Any]) -> list[str]:
    head = f"{'questions':<16}{'n':>5}  {'recall@5':>17}  {'recall@10':>17}  {'MRR':>17}"
    lines = [
        head,
        f"{'':<21}  {'cosine  hybrid':>17}  {'cosine  hybrid':>17}  {'cosine  hybrid':>17}",
    ]
    order = ["all", *sorted(k for k in cosine if k != "all")]
    for name in order:
        c, h = cosine[name], hybrid[name]
        cells = "  ".join(f"{c[m]:>8.3f} {h[m]:>7.3f}" for m in ("recall@5", "recall@10", "mrr"))
        lines.append(f"{name:<16}{c['n']:>5}  {cells}")
    gain = hybrid["all"]["recall@10"] / max(cosine["all"]["recall@10"], 1e-9) - 1
    lines.append(f"recall@10: hybrid vs cosine {gain:+.1%}")
    return lines


GRID = [
    {"lexical_weight": wl, "lexical_saturation": k, "common_words": cw}
    for wl, k in ((1e-9, 10.0), (0.1, 10.0), (0.2, 10.0), (0.2, 0.0), (0.4, 10.0), (0.4, 0.0),
                  (0.7, 10.0))
    for cw in ("average", "drop", "keep")
]  # fmt: skip


def _other_precision(
    data: dict[str, Any], precision: str, hybrid_settings: RetrievalSettings
) -> dict[str, Any]:
    with loaded(data, Settings(embedding={"precision": precision})) as stack:
        print(f"\nembedding.precision: {precision}")
        cosine = evaluate(stack.retriever(None), data["questions"])
        hybrid = evaluate(stack.retriever(hybrid_settings), data["questions"])
    print("\n".join(_table(cosine, hybrid)))
    return {"cosine": cosine, "hybrid": hybrid}


def _compare(a: str, ra: dict[str, Any], b: str, rb: dict[str, Any]) -> None:
    print(f"\n{a} vs {b}, all questions:")
    for mode in ("cosine", "hybrid"):
        x, y = ra[mode]["all"], rb[mode]["all"]
        cells = "  ".join(f"{m} {x[m]:.4f} / {y[m]:.4f}" for m in ("recall@5", "recall@10", "mrr"))
        print(f"  {mode:<7} {cells}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=None, help="only the first N users")
    parser.add_argument("--grid", action="store_true", help="first set: sweep fusion settings")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument(
        "--precision",
        nargs="+",
        choices=["fp32", "int8"],
        default=["fp32"],
        help="embedding.precision of the local model; several: each evaluated, then compared",
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="first set: also run hybrid on PostgreSQL (tsvector BM25) in this run and compare",
    )
    parser.add_argument("--holdout", action="store_true", help="also the dialogue hold-out")
    parser.add_argument("--only", nargs="+", default=None, help="these configurations only")
    parser.add_argument("--sets", nargs="+", default=["retrieval", "dialogue"])
    parser.add_argument("--latency-facts", type=int, default=10_000, help="0: no latency")
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument(
        "--rerank-latency",
        action="store_true",
        help="also time the defaults with retrieval.reranker on (a local instant endpoint)",
    )
    parser.add_argument(
        "--embedding-model",
        default=None,
        help="embedding.model for every configuration (e.g. local/multilingual-e5-small-q4)",
    )
    args = parser.parse_args(argv)
    if args.grid or args.postgres or args.precision != ["fp32"]:
        return _first_set_reports(args)
    return compare(args)


def compare(args: argparse.Namespace) -> int:
    """Cosine, every candidate and the defaults on both sets (and the hold-out): one table."""
    names = args.only or [*CANDIDATES, "defaults"]
    embedding = {"model": args.embedding_model} if args.embedding_model else {}
    print(f"shipped defaults: {Settings().retrieval.model_dump()}")
    print(f"embedding model: {Settings(embedding=embedding).embedding.model}")
    sets = {
        "retrieval": lambda: load_set(SET, args.users),
        "dialogue": lambda: load_set(DIALOGUE, args.users),
        "hold-out": lambda: load_set(DIALOGUE, args.users, holdout=True),
    }
    chosen = [s for s in args.sets if s in sets] + (["hold-out"] if args.holdout else [])
    results: dict[str, dict[str, Any]] = {name: {} for name in names}
    for set_name in chosen:
        data = sets[set_name]()
        facts = sum(len(u["facts"]) for u in data["users"])
        print(f"{set_name}: {len(data['users'])} scopes, {facts} facts, "
              f"{len(data['questions'])} questions")  # fmt: skip
        opts = options_for("dialogue" if set_name == "hold-out" else set_name)
        with loaded(data, Settings(embedding=embedding)) as stack:
            for name in names:
                retriever = stack.retriever(settings_for(name))
                results[name][set_name] = evaluate(retriever, data["questions"], opts)
                retriever.close()
    lat = None
    if args.latency_facts > 0:
        questions = [q["question"] for q in load_set(DIALOGUE)["questions"]]
        picked = random.Random(5).sample(questions, min(args.latency_queries, len(questions)))
        with FakeRerankServer() as url:
            timed = [*names, RERANK] if args.rerank_latency else names
            lat = latency(timed, picked, args.latency_facts, Settings(embedding=embedding), url)
    print()
    print("\n".join(table(results, chosen, lat)))
    for set_name in chosen:
        print()
        print("\n".join(by_type(results, set_name)))
    if args.json:
        args.json.write_text(json.dumps({"results": results, "latency": lat}, indent=1))
    return 0


def _first_set_reports(args: argparse.Namespace) -> int:
    """The first set's older reports: grid, embedding precision, PostgreSQL."""
    data = load_set(users=args.users)
    hybrid_settings = Settings().retrieval  # the defaults shipped (configs/default.yaml)
    facts = sum(len(u["facts"]) for u in data["users"])
    print(
        f"eval set: {len(data['users'])} users, {facts} facts, {len(data['questions'])} questions"
    )
    print(f"hybrid settings: {hybrid_settings.model_dump()}")
    first, *others = args.precision
    with loaded(data, Settings(embedding={"precision": first})) as stack:
        print(f"embedding.precision: {first}")
        cosine = evaluate(stack.retriever(None), data["questions"])
        hybrid = evaluate(stack.retriever(hybrid_settings), data["questions"])
        print("\n".join(_table(cosine, hybrid)))
        result: dict[str, Any] = {"cosine": cosine, "hybrid": hybrid, "grid": []}
        if args.grid:
            print("\ngrid (all questions): recall@5 recall@10 MRR")
            for point in GRID:
                settings = hybrid_settings.model_copy(update=point)
                got = evaluate(stack.retriever(settings), data["questions"])["all"]
                result["grid"].append({"settings": point, **got})
                print(f"  {point}: {got['recall@5']:.3f} {got['recall@10']:.3f} {got['mrr']:.3f}")
    for precision in others:
        result[precision] = _other_precision(data, precision, hybrid_settings)
        _compare(first, {"cosine": cosine, "hybrid": hybrid}, precision, result[precision])
    if args.postgres:
        from bench.pg_cluster import PgCluster

        with PgCluster() as cluster:
            pg = Settings(store={"database_url": cluster.create_database("eval")})
            with loaded(data, pg) as stack:
                on_pg = evaluate(stack.retriever(hybrid_settings), data["questions"])
        result["hybrid_postgres"] = on_pg
        print("\nhybrid on SQLite (FTS5) vs PostgreSQL (tsvector), same run:")
        for name in ["all", *sorted(k for k in hybrid if k != "all")]:
            s, p = hybrid[name], on_pg[name]
            print(
                f"  {name:<14} recall@5 {s['recall@5']:.3f} / {p['recall@5']:.3f}  recall@10 "
                f"{s['recall@10']:.3f} / {p['recall@10']:.3f}  MRR {s['mrr']:.3f} / {p['mrr']:.3f}"
            )
        gap = on_pg["all"]["recall@10"] / max(hybrid["all"]["recall@10"], 1e-9) - 1
        print(f"recall@10 Postgres vs SQLite: {gap:+.2%}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
