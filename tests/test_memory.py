"""The memory block's token budget: the largest prefix of the ranked facts that fits, for
any mix of fact lengths and budgets (checked against trying every prefix)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from proxy.config import MemorySettings
from proxy.llm.offline import prepare_offline_env
from proxy.models import Fact
from proxy.prompts import BlockItem, Prompts
from proxy.services.memory import Chosen, MemoryService
from proxy.tokens import TokenCounter

MODEL = "gpt-4o-mini"


def service(budget: int, tokens: TokenCounter) -> MemoryService:
    return MemoryService(
        records=None,  # type: ignore[arg-type]  # _fit reads neither store
        retriever=None,  # type: ignore[arg-type]
        prompts=Prompts(),
        tokens=tokens,
        settings=MemorySettings(max_tokens=budget),
    )


def ranked(rng: random.Random, n: int) -> list[Chosen]:
    words = [
        "jazz", "Lisbon", "a long story about the sea", "\n</user_memory>", "café", "42",
        "12345678", "东京の寿司", "שלום", "🎉🎉", "e\u0301", "it's", "\"quoted\"", "  ", "\t", "!?",
        "\r\n- fake: line", "https://x.org/a/b", "\u2028", "ÅÅÅ", "'s", "—", "\\",
    ]  # fmt: skip
    out = []
    for i in range(n):
        value = " ".join(rng.choice(words) for _ in range(rng.randint(1, 40)))
        fact = Fact(id=f"f{i}", account="a", collection_id="c", key=f"k_{i}", value=value)
        out.append(Chosen(fact, None, rng.choice(["profile", "memories"])))
    return out


@pytest.mark.parametrize("seed", range(12))
def test_fit_keeps_the_largest_prefix_within_budget(seed: int) -> None:
    prepare_offline_env()
    rng = random.Random(seed)
    tokens = TokenCounter()
    budget = rng.choice([60, 120, 300, 800])
    memory = service(budget, tokens)
    chosen = ranked(rng, rng.randint(1, 40))

    kept, block, count = memory._fit(chosen, MODEL)
    # Again with the block's own tokens learned (the estimate path) and cached line counts.
    memo: dict[tuple[str, str], int] = {}
    assert (
        memory._fit(chosen, MODEL, memo)
        == memory._fit(chosen, MODEL, memo)
        == (
            kept,
            block,
            count,
        )
    )

    def size(n: int) -> int:
        items = [BlockItem.of(c.fact.key, c.fact.value) for c in chosen[:n]]
        return tokens.count(memory._render(chosen[:n], items), MODEL)

    best = max((n for n in range(1, len(chosen) + 1) if size(n) <= budget), default=0)
    assert len(kept) == best
    assert kept == chosen[:best]
    if best:
        assert count == tokens.count(block, MODEL) == size(best) <= budget
    else:
        assert (block, count) == ("", 0)


def _size(memory: MemoryService, chosen: list[Chosen], model: str, count: Any) -> int:
    items = [BlockItem.of(c.fact.key, c.fact.value) for c in chosen]
    return int(count(memory._render(chosen, items), model))


@pytest.mark.parametrize("model", [MODEL, "gpt-4", "text-davinci-003"])
def test_a_confirmed_overhead_counts_exactly_without_tokenizing_the_block(model: str) -> None:
    """Once the block's own tokens agreed on three exact counts, a fit counts nothing but
    new lines, and its count is still the block's exact count (o200k, cl100k, p50k)."""
    prepare_offline_env()
    tokens = TokenCounter()
    memory = service(300, tokens)
    rng = random.Random(7)
    blocks: list[str] = []
    counted = tokens.count

    def spy(text: str, name: str) -> int:
        blocks.append(text)
        return counted(text, name)

    tokens.count = spy  # type: ignore[method-assign]
    fits = 0
    for _ in range(60):
        chosen = ranked(rng, rng.randint(1, 40))
        blocks.clear()
        kept, block, count = memory._fit(chosen, model)
        assert count == counted(block, model) <= 300  # exact, whichever path answered
        assert kept == chosen[: len(kept)]
        whole = [b for b in blocks if b.startswith("<user_memory>")]
        sizes = [_size(memory, chosen[:n], model, counted) for n in range(1, len(chosen) + 1)]
        fitting = [n for n, size in enumerate(sizes, 1) if size <= 300]
        assert len(kept) == max(fitting, default=0)  # the largest prefix that fits
        fits += not whole
    assert fits >= 40  # most fits after the first few tokenized no whole block
