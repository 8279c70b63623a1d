"""Memory for chat: pick the user's facts for a request, fit them to the token budget and
render the block that is merged into the system message."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxy.config import MemorySettings
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


def latest_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(
                str(p.get("text", ""))
                for p in content
                if isinstance(p, dict) and p.get("type") == "text"
            )
    return ""


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

    def _render(self, chosen: list[Chosen]) -> str:
        profile = [BlockItem.of(c.fact.key, c.fact.value) for c in chosen if c.section == "profile"]
        memories = [
            BlockItem.of(c.fact.key, c.fact.value) for c in chosen if c.section == "memories"
        ]
        return self._prompts.memory_block(profile=profile, memories=memories)

    def build(
        self, scope: Scope, features: Features, messages: list[dict[str, Any]], model: str
    ) -> MemoryContext:
        chosen = self._candidates(scope, features, latest_user_text(messages))
        if not chosen:
            return MemoryContext()
        budget = self._settings.max_tokens
        # Drop the least relevant facts until the rendered block fits the budget.
        lo, hi = 0, len(chosen)
        while lo < hi:  # largest prefix that fits (block size grows with the prefix)
            mid = (lo + hi + 1) // 2
            if self._tokens.count(self._render(chosen[:mid]), model) <= budget:
                lo = mid
            else:
                hi = mid - 1
        chosen = chosen[:lo]
        if not chosen:
            return MemoryContext()
        block = self._render(chosen)
        return MemoryContext(block=block, chosen=chosen, tokens=self._tokens.count(block, model))


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
