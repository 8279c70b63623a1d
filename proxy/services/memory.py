"""Memory for chat: pick the user's facts for a request, fit them to the token budget and
render the block that is merged into the system message."""

from __future__ import annotations

import itertools
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from proxy.config import MemorySettings
from proxy.messages import latest_user_text
from proxy.models import FLAT_KEYS, Fact, Features, Scope
from proxy.prompts import BlockItem, Prompts
from proxy.services.retrieval import Retriever, SearchOptions
from proxy.store.facts import FactRecords
from proxy.store.snapshot import ScopeSnapshot
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


#: Tokens by which a next line's predicted block may exceed the budget and still be tried
#: (the line sum is exact for the shipped template; a custom one may merge tokens across lines).
_SLACK = 2
#: Exact counts in a row that must find the same block overhead (for an encoding and the
#: sections present) before the line sum is taken as the count.
_CONFIRM = 3


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
        #: A block's own tokens (beyond its lines') by encoding and sections present, and how
        #: many exact counts in a row found them (template text only: nothing of any tenant's
        #: facts).
        self._overhead: dict[tuple[str, bool, bool], tuple[int, int]] = {}

    def _candidates(
        self,
        scope: Scope,
        features: Features,
        query: str,
        view: ScopeSnapshot | None,
        started: Future[Any] | None = None,
    ) -> list[Chosen]:
        """Facts in priority order: the flat profile fields, then memory hits by similarity,
        then the other static facts by confidence. The budget drops from the end."""
        floor = None if features.include_low_confidence else self._settings.min_confidence
        limit = features.memory_limit or self._settings.top_k
        flat: list[Chosen] = []
        static: list[Chosen] = []
        if features.user_profile:
            top = self._static_profile(scope, view, floor)
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
                for h in self._retriever.search(scope, query, opts, view, started)
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

    def _static_profile(
        self, scope: Scope, view: ScopeSnapshot | None, floor: float | None
    ) -> list[Fact]:
        limit = self._settings.max_profile_facts
        if view is None:
            return self._records.static_profile(
                scope, min_confidence=floor, limit=limit, first=FLAT_KEYS
            )
        with view.lock:
            return view.static_profile(floor, limit, FLAT_KEYS, time.time())

    def _render(self, chosen: list[Chosen], items: list[BlockItem]) -> str:
        pairs = list(zip(chosen, items, strict=True))
        return self._prompts.memory_block(
            profile=[item for c, item in pairs if c.section == "profile"],
            memories=[item for c, item in pairs if c.section == "memories"],
        )

    def _fit(
        self, chosen: list[Chosen], model: str, memo: dict[tuple[str, str], Any] | None = None
    ) -> tuple[list[Chosen], str, int]:
        """The largest prefix of ``chosen`` whose rendered block fits the token budget (the
        least relevant facts go first), and the block's exact token count.

        A block's tokens are its own text's plus the sum of its lines' (line counts cached per
        scope in ``memo``): every line is ``- key: value`` with JSON string literals, so no
        token of the encodings' pre-tokenizers spans a line break followed by a line. The
        block's own tokens are learned per encoding and sections present from exact counts;
        once ``_CONFIRM`` counts in a row agreed, the sum is the count and a fit renders once
        and counts nothing (a custom template that merges tokens across lines never agrees)."""
        budget = self._settings.max_tokens
        memo = {} if memo is None else memo
        items = [self._item(memo, c.fact) for c in chosen]
        encoding = self._tokens.encoding_name(model)
        lines = [self._line(memo, encoding, item, model) for item in items]
        sums = list(itertools.accumulate(lines, initial=0))
        profile = list(itertools.accumulate((c.section == "profile" for c in chosen), initial=0))
        memories = list(itertools.accumulate((c.section != "profile" for c in chosen), initial=0))
        rendered: dict[int, tuple[str, int]] = {}

        def shape(n: int) -> tuple[str, bool, bool]:
            return encoding, profile[n] > 0, memories[n] > 0

        def exact(n: int) -> int | None:
            own, agreed = self._overhead.get(shape(n), (0, 0))
            return own + sums[n] if agreed >= _CONFIRM else None

        def fits(n: int) -> bool:
            count = exact(n)
            if count is not None:
                return count <= budget
            if n not in rendered:
                block = self._render(chosen[:n], items[:n])
                rendered[n] = (block, self._tokens.count(block, model))
                seen, before = rendered[n][1] - sums[n], self._overhead.get(shape(n))
                agreed = before[1] + 1 if before is not None and before[0] == seen else 1
                self._overhead[shape(n)] = (seen, agreed)
            return rendered[n][1] <= budget

        def predicted(n: int) -> int | None:
            own = self._overhead.get(shape(n))
            return None if own is None else own[0] + sums[n]

        def guess(lo: int, hi: int) -> int:
            """The longest prefix in (lo, hi] predicted to fit; the middle when unknown."""
            for m in range(hi, lo, -1):
                tokens = predicted(m)
                if tokens is None:
                    return (lo + hi + 1) // 2
                if tokens <= budget:
                    return m
            return lo + 1

        lo, hi = 0, len(items)  # the answer is in [lo, hi]; lo always fits
        n = guess(lo, hi)
        while lo < hi:
            if fits(n):
                lo = n
            else:
                hi = n - 1
            if lo >= hi:
                break
            if lo == n:  # it fitted: one more line, unless that surely cannot fit
                nxt = predicted(n + 1)
                if nxt is not None and nxt > budget + _SLACK:
                    break
                n += 1
            else:
                n = guess(lo, hi)
        n = lo
        if n == 0:
            return [], "", 0
        if n in rendered:
            return chosen[:n], *rendered[n]
        block = self._render(chosen[:n], items[:n])
        count = exact(n)
        if count is None:  # a count during this fit disagreed (a custom template): count
            count = self._tokens.count(block, model)
        return chosen[:n], block, count

    @staticmethod
    def _item(memo: dict[tuple[str, str], Any], fact: Fact) -> BlockItem:
        key = ("", f"{fact.key}\x00{fact.value}")
        item = memo.get(key)
        if item is None:
            item = memo[key] = BlockItem.of(fact.key, fact.value)
        return item

    def _line(
        self, memo: dict[tuple[str, str], Any], encoding: str, item: BlockItem, model: str
    ) -> int:
        key = (encoding, f"{item.key}\x00{item.value}")
        count = memo.get(key)
        if count is None:
            count = memo[key] = self._tokens.count(f"- {item.key}: {item.value}\n", model)
        return count

    def build(
        self, scope: Scope, features: Features, messages: list[dict[str, Any]], model: str
    ) -> MemoryContext:
        query = latest_user_text(messages)
        # The query's embedding (most of the build) starts first, on a helper thread, while
        # this one reads the scope's view, its profile and its keyword matches.
        started = self._retriever.start(scope, query) if features.memory else None
        view = self._retriever.open(scope)
        chosen = self._candidates(scope, features, query, view, started)
        if not chosen:
            return MemoryContext()
        memo = view.memo if view is not None else {}
        if view is not None and len(memo) > 8 * len(view) + 512:
            memo.clear()  # lines of facts since changed
        chosen, block, tokens = self._fit(chosen, model, memo)
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
