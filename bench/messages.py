"""Chat user messages as users write them: natural sentences, realistic lengths, never repeated.

    from bench.messages import Messages
    gen = Messages(seed=1)
    gen.next()              # a new message every call (deterministic for a seed)

Lengths follow a lognormal over MiniLM WordPiece tokens fitted to real chat messages: median
21, p90 139, capped at the embedder's 256 (254 + [CLS]/[SEP]; ~5% of messages reach the cap).
A message is sentences from the templates below joined until its drawn length, then cut at a
word boundary. Every text a ``Messages`` returns is distinct (a repeat is drawn again), so a
cache keyed by text never answers for it. ``python -m bench.messages`` prints a sample and the
length distribution.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Callable
from typing import Any

MEDIAN_TOKENS = 21
P90_TOKENS = 139
CAP_TOKENS = 254  # content tokens: + [CLS] and [SEP] = MiniLM's max_seq_length 256
_Z90 = 1.2815515655446004  # the standard normal's 90th percentile
SIGMA = math.log(P90_TOKENS / MEDIAN_TOKENS) / _Z90

FOOD = "Thai curry|sushi|ramen|tacos|Neapolitan pizza|dim sum|falafel|pho|paella|bibimbap|\
croissants|Ethiopian injera|Georgian khachapuri|Peruvian ceviche|vegan burgers|dark chocolate"
PLACES = "Lisbon|Kyoto|Oaxaca|Tbilisi|Reykjavik|Montreal|Hanoi|Porto|Seville|Tallinn|Cusco|\
Marrakesh|Busan|Edinburgh|Ljubljana|Valparaiso"
HOBBIES = "bouldering|sourdough baking|film photography|trail running|chess|pottery|birding|\
sailing|woodworking|salsa dancing|astronomy|fly fishing|knitting|urban sketching|kayaking|yoga"
TECH = "Rust|Go|Kubernetes|PostgreSQL|React|Django|Terraform|Kafka|TypeScript|Elixir|\
PyTorch|Swift|Flutter|Redis|GraphQL|Haskell"
PEOPLE = "sister|brother|partner|daughter|son|best friend|manager|neighbour|cousin|mentor"
NAMES = "Ana|Ben|Chloe|Dmitri|Elif|Farah|Goran|Hana|Ivan|Jun|Kofi|Lena|Mateo|Nia|Omar|Priya"
BOOKS = "science fiction|Russian classics|graphic novels|history of science|poetry|\
detective novels|philosophy|travel writing|biographies|fantasy epics"
MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_TASKS = "a cover letter|an apology email|a birthday toast|a product description|a README|\
a bug report|a grant proposal|a wedding speech|a LinkedIn summary|meeting notes"
_ERRORS = "a timeout|a null pointer exception|a memory leak|a deadlock|a race condition|\
a segfault|a flaky test|a 502 from the load balancer|a slow query|an encoding error"
_TIMES = "tonight|this weekend|next week|tomorrow morning|on Friday|before the holidays|\
in the summer|after work|next month|this evening"
_MOODS = "a bit stressed|really excited|quite tired|curious|unsure|overwhelmed|happy|nervous"


def _pick(words: str) -> Callable[[random.Random], str]:
    options = words.split("|")
    return lambda r: r.choice(options)


_SLOTS: dict[str, Callable[[random.Random], str]] = {
    "food": _pick(FOOD),
    "place": _pick(PLACES),
    "hobby": _pick(HOBBIES),
    "tech": _pick(TECH),
    "person": _pick(PEOPLE),
    "name": _pick(NAMES),
    "books": _pick(BOOKS),
    "month": _pick(MONTHS),
    "task": _pick(_TASKS),
    "error": _pick(_ERRORS),
    "time": _pick(_TIMES),
    "mood": _pick(_MOODS),
    "n": lambda r: str(r.randint(2, 40)),
    "year": lambda r: str(r.randint(1990, 2025)),
}

#: Short replies and follow-ups (what most chat turns are).
SHORT = (
    "thanks!",
    "why?",
    "go on",
    "yes please",
    "{place}?",
    "{food}, maybe?",
    "why {tech}?",
    "and {name}?",
    "{n} people",
    "in {month}?",
    "ok, and {place}?",
    "what about {food}?",
    "make it shorter",
    "can you explain that again?",
    "perfect, thank you",
    "hmm, not quite",
    "and for {n} people?",
    "any other ideas?",
    "sounds good, {time} then",
    "is {place} safe in {month}?",
    "how long does {hobby} take to learn?",
    "same for {tech} please",
    "{name} says hi",
    "not {food} again",
    "try {place} instead",
    "{hobby} sounds fun",
    "shorter, {n} lines max",
    "my {person} too",
    "what year, {year}?",
    "I'm {mood}",
)

SENTENCES = (
    "Can you suggest a good place to eat {time}?",
    "I'm craving {food}, any ideas for a quick recipe?",
    "Where should I travel in {month}?",
    "Recommend a few {books} for my next flight to {place}.",
    "What hobby could I pick up this winter, something like {hobby}?",
    "Help me plan a birthday dinner for my {person} {name}.",
    "Which programming language should I learn after {tech}?",
    "What should I pack for {n} days in {place}?",
    "I've been doing {hobby} for {n} years and I want to get better at it.",
    "My {person} {name} is visiting {time} and loves {food}.",
    "Could you write {task} for me?",
    "Please keep it friendly but professional, around {n} lines.",
    "Our {tech} service keeps hitting {error} under load.",
    "Here is the stack trace from the worker that crashed at startup.",
    "We deploy with {tech} and store everything in {tech}.",
    "How do I migrate a {tech} app from version {n} without downtime?",
    "I'm feeling {mood} about my trip to {place} in {month}.",
    "Is it worth visiting {place} if I only have {n} hours?",
    "Last time I was in {place} I tried {food} and it was amazing.",
    "I don't eat meat, so please skip anything with it.",
    "Can you compare {tech} and {tech} for a small team?",
    "My manager asked me to summarize the meeting from {time}.",
    "The budget is about {n} hundred euros per person.",
    "I started reading {books} in {year} and never stopped.",
    "Explain it like I'm new to {tech}, with a short example.",
    "What's a good gift for someone who likes {hobby} and {books}?",
    "We are {n} people, two of them vegetarian and one allergic to nuts.",
    "I need to get up early {time}, so nothing too late please.",
    "Write a short message to {name} saying I'll be late.",
    "Can you fix the grammar in this paragraph and keep my tone?",
    "The weather in {place} looked terrible on the forecast for {month}.",
    "I tried {hobby} once in {place} but the class was too crowded.",
    "Give me three options and tell me which one you'd pick.",
    "Also, remember that I prefer trains to planes when possible.",
    "What did we decide about the dinner with my {person}?",
    "Could you turn these notes into a checklist?",
    "Why does my {tech} query get slower every week?",
    "I'm {mood} because the deadline moved to {time}.",
    "Please answer in a few bullet points, not a long essay.",
    "My {person} says {food} in {place} is overrated, is that true?",
    "Draft a plan for learning {tech} in {n} weeks, an hour a day.",
    "The logs show {error} right after the cache warms up.",
    "Translate the last paragraph into plain English for a customer.",
    "I moved to {place} in {year} and still don't know the good spots.",
)


def _fill(template: str, rng: random.Random) -> str:
    out, rest = [], template
    while "{" in rest:
        head, _, tail = rest.partition("{")
        slot, _, rest = tail.partition("}")
        out += [head, _SLOTS[slot](rng)]
    return "".join(out) + rest


def _tokenizer() -> Any:
    from proxy.store.embedder import _load_tokenizer, minilm_model_dir

    return _load_tokenizer(str(minilm_model_dir() / "tokenizer.json"), 100_000)


class Messages:
    """An endless, deterministic stream of distinct user messages of realistic lengths."""

    def __init__(self, seed: int = 1, *, cap: int = CAP_TOKENS) -> None:
        self._rng = random.Random(seed)
        self._cap = cap
        self._seen: set[str] = set()
        self._tok = _tokenizer()
        self.lengths: list[int] = []  # content tokens of every message returned

    def draw_length(self) -> int:
        z = self._rng.gauss(0.0, 1.0)
        return max(1, min(self._cap, round(MEDIAN_TOKENS * math.exp(SIGMA * z))))

    def _count(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def _short(self, target: int) -> str | None:
        """An unseen short reply of ``target`` tokens, else the closest unseen one."""
        best: tuple[int, str] | None = None
        for _ in range(40):
            text = _fill(self._rng.choice(SHORT), self._rng)
            if text in self._seen:
                continue
            gap = abs(self._count(text) - target)
            if best is None or gap < best[0]:
                best = (gap, text)
            if gap == 0:
                break
        return None if best is None else best[1]

    def _compose(self, target: int) -> str:
        """Whole sentences while one fits in what is left, then the start of one more."""
        if target <= 6 and (short := self._short(target)) is not None:
            return short
        parts: list[str] = []
        left = target
        while left > 0:
            for _ in range(8):
                sentence = _fill(self._rng.choice(SENTENCES), self._rng)
                n = self._count(sentence)  # WordPiece counts add over whitespace joins
                if n <= left:
                    break
            if n > left:
                sentence = self._cut(sentence, left)
                n = left
            parts.append(sentence)
            left -= n
        return " ".join(parts)

    def _cut(self, text: str, tokens: int) -> str:
        """The first ``tokens`` tokens of ``text``, ending on a whole word."""
        enc = self._tok.encode(text, add_special_tokens=False)
        words, cut = enc.word_ids, tokens
        while cut > 1 and words[cut] == words[cut - 1]:
            cut -= 1
        return text[: enc.offsets[cut - 1][1]]

    def next(self) -> str:
        target = self.draw_length()
        for attempt in itertools.count(1):  # a repeat is drawn again, at the same length
            text = self._compose(min(self._cap, target + attempt // 4))  # (or a little longer)
            if text not in self._seen:
                self._seen.add(text)
                self.lengths.append(self._count(text))
                return text

    def take(self, n: int) -> list[str]:
        return [self.next() for _ in range(n)]


def describe(lengths: list[int]) -> str:
    s = sorted(lengths)

    def q(p: float) -> int:
        return s[min(len(s) - 1, int(len(s) * p))]

    at_cap = sum(1 for n in s if n >= CAP_TOKENS) / len(s)
    return (
        f"{len(s)} messages, tokens: median {statistics.median(s):.0f}, p90 {q(0.9)}, "
        f"p99 {q(0.99)}, mean {statistics.fmean(s):.1f}, at the cap {at_cap:.1%}"
    )


if __name__ == "__main__":
    gen = Messages(seed=1)
    sample = gen.take(2000)
    for text in sample[:12]:
        print(repr(text[:160]))
    print(describe(gen.lengths))
