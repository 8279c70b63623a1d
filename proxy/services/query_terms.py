"""Words of a search query for the lexical index, without an LLM.

Lower-cased word tokens (letters and digits, any script), without stopwords and the filler
words of questions to an assistant ("what", "tell", "remember"): what is left is what a fact
would share with the question (names, places, products, activities). Stemming is the index's
job (FTS5 ``porter``), with one consequence handled here: a word whose stem is a function
word's ("one" and "ones" stem to "on", "ate" to "at", "others" to "other") matches that
function word in every fact, so it is no keyword either.
"""

from __future__ import annotations

import functools
import re

from proxy.store.tokenize import tokens

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)

#: English function words: found in most facts, they say nothing about which one answers.
FUNCTION_WORDS = frozenset(
    """
    a about above after again against all am an and any are aren't as at be because been
    before being below between both but by can can't cannot could couldn't did didn't do does
    doesn't doing don't down during each few for from further had hadn't has hasn't have
    haven't having he he'd he'll he's her here here's hers herself him himself his how how's
    i i'd i'll i'm i've if in into is isn't it it's its itself let's me more most mustn't my
    myself no nor not of off on once only or other ought our ours ourselves out over own same
    shan't she she'd she'll she's should shouldn't so some such than that that's the their
    theirs them themselves then there there's these they they'd they'll they're they've this
    those through to too under until up very was wasn't we we'd we'll we're we've were weren't
    what what's when when's where where's which while who who's whom why why's will with won't
    would wouldn't you you'd you'll you're you've your yours yourself yourselves
    """.split()
)

#: Function words and the filler words of questions to an assistant.
STOPWORDS = FUNCTION_WORDS | frozenset(
    """
    tell know remember please anything something everything thing things also just like
    get got go going want wants user user's users person someone s t
    """.split()
)


#: Most words taken from one query (a long text, e.g. a whole turn, keeps its first ones).
MAX_TERMS = 32


def query_terms(query: str) -> list[str]:
    """The query's informative words, lower-cased, in order, each once (at most MAX_TERMS)."""
    out: dict[str, None] = {}
    for match in _WORD.finditer(query.lower()):
        if len(out) == MAX_TERMS:
            break
        word = match.group(0)
        if word in STOPWORDS:
            continue
        stem = word.removesuffix("'s")
        if stem and stem not in STOPWORDS and not _function_word_stem(stem):
            out[stem] = None
    return list(out)


@functools.cache
def _function_stems() -> frozenset[str]:
    """The index's stems of the function words (those without an apostrophe: "don't" is
    indexed as "don" and "t", and "Don" is a name)."""
    return frozenset(s for w in FUNCTION_WORDS if "'" not in w for s in tokens(w))


def _function_word_stem(word: str) -> bool:
    """True when the index cannot tell ``word`` from a function word (same stems)."""
    stems = tokens(word)
    return bool(stems) and _function_stems().issuperset(stems)


def without_words(query: str, words: set[str]) -> str:
    """The query with ``words`` (lower-cased terms, possessives included) taken out."""
    kept = [
        m.group(0)
        for m in _WORD.finditer(query)
        if m.group(0).lower().removesuffix("'s") not in words
    ]
    return " ".join(kept)


def words_of(text: str) -> set[str]:
    """Every word of ``text``, lower-cased, possessives stripped (no stopword removal, no cap)."""
    return {m.group(0).lower().removesuffix("'s") for m in _WORD.finditer(text)}
