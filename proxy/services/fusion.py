"""Pieces of the hybrid score beyond ``cosine + lexical`` (issue 19): how the query is embedded
when it holds words common in the scope, and the small lift a candidate gets for holding them.

Common words (found in a large share of the scope's facts: a user's own name, or in a
conversation both speakers' names) say little about the topic, which is why the lexical query
leaves them out; but when a scope holds two people's facts, the name a question carries says
whose facts answer it. So:

- the query is embedded as is and without its common words, and the two vectors blended
  (``common_blend`` is the weight of the query as is: 0.5 is the plain average);
- a candidate whose text holds the query's common words gains ``common_boost`` of its gap to 1
  (the share of those words it holds): like a keyword match, it never lowers a score, and a fact
  sharing no word with the query still scores its cosine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from proxy.services.query_terms import words_of
from proxy.store.embedder import l2_normalize


def blend(vectors: Any, weight: float) -> Any:
    """The unit vector of ``weight`` * the first + (1 - weight) * the second."""
    mixed = weight * np.asarray(vectors[0]) + (1.0 - weight) * np.asarray(vectors[1])
    return l2_normalize(mixed[None, :])[0]


def lift_common(
    candidates: Sequence[tuple[str, float]],
    texts: Callable[[Sequence[str]], Mapping[str, str]],
    common: set[str],
    weight: float,
    need: int | None = None,
) -> list[tuple[str, float]]:
    """``candidates`` (id, score, best first) re-scored: score + weight * share * (1 - score),
    share = the part of ``common`` the fact's text holds; best first. With ``need``, only the
    candidates that could reach the first ``need`` with a full lift are read and lifted."""
    if weight <= 0 or not common or not candidates:
        return list(candidates)

    def lifted(score: float, share: float) -> float:
        return score + weight * share * (1.0 - score) if score < 1.0 else score

    head, tail = list(candidates), []
    if need is not None and len(candidates) > need:
        bar = candidates[need - 1][1]
        cut = next((n for n, (_, s) in enumerate(candidates) if lifted(s, 1.0) < bar), None)
        if cut is not None:
            head, tail = head[:cut], head[cut:]
    found = texts([i for i, _ in head])
    out = [(i, lifted(s, len(common & words_of(found.get(i, ""))) / len(common))) for i, s in head]
    return sorted(out, key=lambda item: item[1], reverse=True) + tail
