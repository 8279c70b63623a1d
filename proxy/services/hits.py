"""What a search asks for and what it answers: the options, the hits, and picking the hits from
ranked candidates and their facts (the same on the indexes' path and on a scope view)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.models import Fact


@dataclass(slots=True)
class Hit:
    fact: Fact
    score: float


@dataclass(slots=True)
class SearchOptions:
    top_k: int = 10
    threshold: float = 0.0
    kind: str | None = None
    source: str | None = None
    custom_feature: str | dict[str, Any] | None = None
    min_confidence: float | None = None


def matches_feature(fact: Fact, feature: str | dict[str, Any] | None) -> bool:
    """Reflexio's ``custom_feature``: a metadata key the fact must have (``"tier"``), a
    ``"key=value"`` pair, or a mapping of key/value pairs that must all match."""
    if feature is None:
        return True
    if isinstance(feature, dict):
        return all(k in fact.metadata and fact.metadata[k] == v for k, v in feature.items())
    key, sep, value = feature.partition("=")
    if not sep:
        return key in fact.metadata
    return key in fact.metadata and str(fact.metadata[key]) == value


def post_filtered(opts: SearchOptions) -> bool:
    """Options checked on the fact rows (not in the index): more candidates are needed."""
    return opts.custom_feature is not None or opts.min_confidence is not None


def select(
    candidates: list[tuple[str, float]], facts: dict[str, Fact], opts: SearchOptions
) -> list[Hit]:
    hits: list[Hit] = []
    for fact_id, score in candidates:
        fact = facts.get(fact_id)
        if fact is None or not matches_feature(fact, opts.custom_feature):
            continue
        if opts.kind is not None and fact.kind != opts.kind:
            continue
        if opts.source is not None and fact.source != opts.source:
            continue
        if opts.min_confidence is not None and fact.confidence < opts.min_confidence:
            continue
        hits.append(Hit(fact, score))
        if len(hits) == opts.top_k:
            break
    return hits
