"""Memory for chat: pick the user's facts for a request, fit them to the token budget and
render the block that is merged into the system message."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxy.config import MemorySettings
from proxy.messages import latest_user_text
from proxy.models import FLAT_KEYS, Fact, Features, Scope
from proxy.prompts import BlockItem, Prompts
from proxy.services.retrieval import Retriever, SearchOptions
from proxy.store.facts import FactRecords
from proxy.tokens import TokenCounter


@dataclass(slots=True)
class Chosen:
    fact: Fact
    score: float | None  # similarity for memory hits; None for profile facts
    section: str  # "profile" | "memories"


@dataclass(slots=True)
class MemoryContext:
    block: str = ""
    chosen: list[Chosen] = field(default_factory=list)
    tokens: int = 0

    def as_json(self) -> list[dict[str, Any]]:
        return [
            {
                "id": c.fact.id,
                "key": c.fact.key,
                "value": c.fact.value,
                "kind": c.fact.kind,
                "section": c.section,
                "score": None if c.score is None else round(c.score, 6),
            }
            for c in self.chosen
        ]


class MemoryService:
    def __init__(
        self,
        records: FactRecords,
        retriever: Retriever,
        prompts: Prompts,
        tokens: TokenCounter,
        settings: MemorySettings,
    ) -> None:
        self._records = records
        self._retriever = retriever
        self._prompts = prompts
        self._tokens = tokens
        self._settings = settings

    def _candidates(self, scope: Scope, features: Features, query: str) -> list[Chosen]:
        """Facts in priority order: the flat profile fields, then memory hits by similarity,
        then the other static facts by confidence. The budget drops from the end."""
        floor = None if features.include_low_confidence else self._settings.min_confidence
        limit = features.memory_limit or self._settings.top_k
        flat: list[Chosen] = []
        static: list[Chosen] = []
        if features.user_profile:
            top = self._records.static_profile(
                scope, min_confidence=floor, limit=self._settings.max_profile_facts, first=FLAT_KEYS
            )
            for fact in top:
                (flat if fact.key in FLAT_KEYS else static).append(Chosen(fact, None, "profile"))
            flat.sort(key=lambda c: FLAT_KEYS.index(c.fact.key))
            static.sort(key=lambda c: (-c.fact.confidence, c.fact.key))
            static = static[: self._settings.max_profile_facts]
        hits: list[Chosen] = []
        if features.memory and query.strip():
            opts = SearchOptions(
                top_k=limit, threshold=self._settings.threshold, min_confidence=floor
            )
            hits = [
                Chosen(h.fact, h.score, "memories")
                for h in self._retriever.search(scope, query, opts)
            ]
        seen: set[str] = set()
        ordered: list[Chosen] = []
        for item in (*flat, *hits, *static):
            if item.fact.id not in seen:
                seen.add(item.fact.id)
                ordered.append(item)
        if features.memory_limit is not None:
            ordered = ordered[: features.memory_limit]
        return ordered

    def _render(self, chosen: list[Chosen], items: list[BlockItem]) -> str:
        pairs = list(zip(chosen, items, strict=True))
        return self._prompts.memory_block(
            profile=[item for c, item in pairs if c.section == "profile"],
            memories=[item for c, item in pairs if c.section == "memories"],
        )

    def _fit(self, chosen: list[Chosen], model: str) -> tuple[list[Chosen], str, int]:
        """The largest prefix of ``chosen`` whose rendered block fits the token budget (the
        least relevant facts go first). A per-line estimate picks the first probes, so an
        exact estimate settles it in two or three counts instead of a binary search's log2(n)."""
        budget = self._settings.max_tokens
        items = [BlockItem.of(c.fact.key, c.fact.value) for c in chosen]
        rendered: dict[int, tuple[str, int]] = {}

        def fits(n: int) -> bool:
            block = self._render(chosen[:n], items[:n])
            rendered[n] = (block, self._tokens.count(block, model))
            return rendered[n][1] <= budget

        lo, hi = 0, len(items)
        if fits(hi):
            return chosen, *rendered[hi]
        hi -= 1
        lines = [self._tokens.count(f"- {i.key}: {i.value}\n", model) for i in items]
        used = rendered[len(items)][1] - sum(lines)  # the block's own text, roughly
        est = 0
        for line in lines:
            used += line
            if used > budget:
                break
            est += 1
        for mid in (est, est + 1, est - 1):
            if lo < mid <= hi:
                lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
        while lo < hi:  # the estimate was off: binary search what is left
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
        if lo == 0:
            return [], "", 0
        return chosen[:lo], *rendered[lo]

    def build(
        self, scope: Scope, features: Features, messages: list[dict[str, Any]], model: str
    ) -> MemoryContext:
        chosen = self._candidates(scope, features, latest_user_text(messages))
        if not chosen:
            return MemoryContext()
        chosen, block, tokens = self._fit(chosen, model)
        if not chosen:
            return MemoryContext()
        return MemoryContext(block=block, chosen=chosen, tokens=tokens)


def inject(messages: list[dict[str, Any]], block: str) -> list[dict[str, Any]]:
    """Append the block to the first system (or developer) message, or put a system message
    first. The client's other messages are not touched."""
    out = list(messages)
    for i, message in enumerate(out):
        if message.get("role") in ("system", "developer"):
            content = message.get("content")
            if isinstance(content, str | None):
                merged: Any = merge_text(content, block)
            elif isinstance(content, list):
                merged = [*content, {"type": "text", "text": block}]
            else:
                merged = block
            out[i] = {**message, "content": merged}
            return out
    return [{"role": "system", "content": block}, *out]


def merge_text(text: str | None, block: str) -> str:
    """The block after the client's own text (a system prompt, Responses ``instructions``),
    one blank line between them."""
    return f"{text}\n\n{block}" if text else block
