"""The memory benchmark's data: synthetic facts written as the proxy writes them, cached.

One data dir holds one user scope per size (account ``dev``, collection ``bench-user-N``),
written through the records transaction + outbox and indexed with the real embedder (at the
given ``embedding.precision``) and Chroma. It is cached under ``/tmp/profilo-bench-cache``
(``PROFILO_BENCH_CACHE``), keyed by the sizes, the static share, the precision and the store
code, and copied for each run (the server writes: the cache stays clean).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.common import ROOT
from bench.messages import BOOKS, FOOD, HOBBIES, MONTHS, NAMES, PEOPLE, PLACES, TECH

ACCOUNT = "dev"  # the loopback dev account (no API key created)
SEED_VERSION = 1
SEED_CACHE = Path(os.environ.get("PROFILO_BENCH_CACHE", "/tmp/profilo-bench-cache"))
EMBED_CACHE = "/tmp/profilo-test-models"  # the ONNX graphs (built once per machine)
#: Seeded data is rebuilt when any of these change (schema, index layout, embeddings).
STORE_FILES = (
    "proxy/store/db.py",
    "proxy/store/facts.py",
    "proxy/store/changes.py",
    "proxy/store/index.py",
    "proxy/store/embedder.py",
    "proxy/store/minilm_graph.py",
    "proxy/services/indexing.py",
    "proxy/models.py",
)


def _one(words: str) -> Callable[[random.Random], str]:
    options = words.split("|")
    return lambda r: r.choice(options)


_FOOD, _PLACE, _HOBBY, _TECH = _one(FOOD), _one(PLACES), _one(HOBBIES), _one(TECH)
_PERSON, _NAME, _BOOKS, _MONTH = _one(PEOPLE), _one(NAMES), _one(BOOKS), _one(MONTHS)

TEMPLATES: list[tuple[str, str, Callable[[random.Random], str]]] = [
    ("food", "preferences", lambda r: f"loves {_FOOD(r)}, "
     f"especially from small family places in {_PLACE(r)}"),
    ("dislikes", "preferences", lambda r: f"cannot stand {_FOOD(r)} "
     f"since a bad experience in {_MONTH(r)}"),
    ("trip", "goals", lambda r: f"is planning a trip to {_PLACE(r)} in "
     f"{_MONTH(r)} with their {_PERSON(r)}"),
    ("hobby", "interests", lambda r: f"has been doing {_HOBBY(r)} "
     f"for {r.randint(1, 20)} years and goes every {r.choice(['weekend', 'Tuesday', 'morning'])}"),
    ("work", "expertise", lambda r: f"works on a {_TECH(r)} service and is "
     f"learning {_TECH(r)} on the side"),
    ("family", "other", lambda r: f"their {_PERSON(r)} {_NAME(r)} lives in {_PLACE(r)}"),
    ("reading", "interests", lambda r: f"is reading {_BOOKS(r)} and wants "
     f"recommendations similar to the last {r.randint(2, 9)} books"),
    ("event", "other", lambda r: f"mentioned a {r.choice(['concert', 'wedding', 'conference'])} "
     f"in {_PLACE(r)} on {r.randint(1, 28)} {_MONTH(r)}"),
]  # fmt: skip

PROFILE = [
    ("name", "name", "Alex Morgan"),
    ("timezone", "timezone", "Europe/Lisbon"),
    ("language", "language", "English"),
    ("diet", "preferences", "vegetarian, no mushrooms"),
    ("role", "role", "Senior backend engineer"),
    ("communication_style", "communication_style", "concise answers with code examples"),
]


def collection(n: int) -> str:
    return f"bench-user-{n}"


def make_facts(scope: Any, n: int, static_fraction: float, seed: int = 7) -> list[Any]:
    """``n`` facts: a few flat profile fields, ``static_fraction`` static facts, the rest
    dynamic (1-year TTL), confidences spread over 0.3..1.0, every key distinct."""
    from proxy.models import Fact
    from proxy.store.facts import new_fact_id

    rng = random.Random(seed)
    now = time.time()
    facts = []
    n_static = max(len(PROFILE), int(n * static_fraction))
    for i in range(n):
        if i < len(PROFILE):
            key, category, value = PROFILE[i]
        else:
            topic, category, make = TEMPLATES[i % len(TEMPLATES)]
            key, value = f"{topic}_{i:06d}", make(rng)
        static = i < n_static
        facts.append(
            Fact(
                id=new_fact_id(),
                account=scope.account,
                collection_id=scope.collection_id,
                key=key,
                value=value,
                kind="static" if static else "dynamic",
                category=category,
                confidence=1.0 if i < len(PROFILE) else round(rng.uniform(0.3, 1.0), 2),
                source="bench",
                created_at=now + i * 1e-6,
                updated_at=now,
                valid_from=now,
                expires_at=None if static else now + 365 * 86400,  # outlives the cache
            )
        )
    return facts


def settings_for(data_dir: Path, precision: str = "fp32") -> Any:
    from proxy.config import Settings

    return Settings(
        data_dir=data_dir,
        upstream={"api_base": "http://127.0.0.1:9/v1", "api_key": "x"},
        embedding={"cache_dir": EMBED_CACHE, "precision": precision},
    )


def _seed_key(sizes: list[int], static_fraction: float, precision: str) -> str:
    """Seeded data is reused while the generator and the store code are unchanged."""
    h = hashlib.sha256(f"{SEED_VERSION}|{sorted(sizes)}|{static_fraction}|{precision}".encode())
    for rel in STORE_FILES:
        path = ROOT / rel
        h.update(path.read_bytes() if path.is_file() else b"-")
    return h.hexdigest()[:16]


def ensure_seeded(
    sizes: list[int], static_fraction: float, fresh: bool, precision: str = "fp32"
) -> tuple[Path, dict]:
    """A data dir holding one scope per size (cached under ``SEED_CACHE``); returns it and
    the seconds each size took to write when it was built."""
    target = SEED_CACHE / _seed_key(sizes, static_fraction, precision)
    meta = target / "seed.json"
    if meta.is_file() and not fresh:
        print(f"using seeded {precision} data from {target} (--fresh to rebuild)", flush=True)
        return target / "data", orjson.loads(meta.read_bytes())
    if target.exists():
        shutil.rmtree(target)
    seconds = seed(target / "data", sizes, static_fraction, precision)
    meta.write_bytes(orjson.dumps(seconds))
    return target / "data", seconds


def seed(data_dir: Path, sizes: list[int], static_fraction: float, precision: str) -> dict:
    """Write the facts as the proxy does (records + outbox in one transaction per 1000, then
    the index flush: embeddings and Chroma upserts)."""
    from proxy.app import build_services
    from proxy.llm.offline import prepare_offline_env
    from proxy.models import Scope

    prepare_offline_env()  # as create_app does: tiktoken from litellm's bundle, no download
    out: dict[str, float] = {}
    services = build_services(settings_for(data_dir, precision))
    try:
        for n in sizes:
            scope = Scope(ACCOUNT, collection(n))
            t0 = time.perf_counter()
            facts = make_facts(scope, n, static_fraction)
            for start in range(0, n, 1000):
                with services.profile.records.transaction(
                    scope, request_id=f"bench-seed-{start}", source="bench"
                ) as tx:
                    for fact in facts[start : start + 1000]:
                        tx.add(fact)
                services.sync.flush(scope)
            out[str(n)] = time.perf_counter() - t0
            print(
                f"seeded {n} facts ({precision}) in {out[str(n)]:.1f} s "
                f"(index count {services.index.count(scope)})",
                flush=True,
            )
    finally:
        services.index.close()
        services.db.close()
    return out
