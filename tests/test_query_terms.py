"""Query words for the lexical index: stopwords out, possessives folded, long queries capped."""

from __future__ import annotations

from proxy.services.query_terms import MAX_TERMS, query_terms, without_words


def test_query_terms_drop_stopwords_and_possessives() -> None:
    assert query_terms("What's Priya's favourite café in Lisbon? Does she like it?") == [
        "priya",
        "favourite",
        "café",
        "lisbon",
    ]
    assert query_terms("what is it about?") == []
    assert without_words("What did Priya's sister say?", {"priya"}) == "What did sister say"


def test_long_queries_keep_their_first_words() -> None:
    words = [f"word{i}" for i in range(MAX_TERMS + 10)]
    assert query_terms(" ".join(words)) == words[:MAX_TERMS]
    assert query_terms("Zoë's naïve café") == ["zoë", "naïve", "café"]


def test_words_the_index_stems_to_a_function_word_are_no_keywords() -> None:
    """FTS5's porter stems "one" to "on", "ate" to "at", "others" to "other": such a word
    would match every fact holding that function word (and, found in a large share of them,
    count as the scope's common word: the query embedded twice)."""
    query = "Which one did I order? The ones I ate with others were great, Don said"
    assert query_terms(query) == ["order", "great", "don", "said"]
    assert query_terms("Donna's favourite onesie") == ["donna", "favourite", "onesie"]
