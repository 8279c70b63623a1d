"""Token counting: the target model's encoding, and a bounded memo of model names."""

from __future__ import annotations

import tiktoken

from proxy import tokens
from proxy.llm.offline import prepare_offline_env
from proxy.tokens import FALLBACK, MODEL_NAMES_KEPT, TokenCounter


def test_known_models_use_their_encoding_and_others_the_fallback() -> None:
    prepare_offline_env()  # the bundled encodings, no download
    counter = TokenCounter()
    assert counter.encoding_name("gpt-4o") == "o200k_base"
    assert counter.encoding_name("openai/gpt-4o") == "o200k_base"  # provider prefix dropped
    assert counter.encoding_name("gpt-4") == "cl100k_base"
    assert counter.encoding_name("my-local-llama") == FALLBACK
    text = "Tell me something about sailing in Lisbon"
    expected = len(tiktoken.get_encoding("o200k_base").encode(text))
    assert counter.count(text, "gpt-4o") == expected


def test_model_names_from_requests_do_not_grow_the_memo_without_bound() -> None:
    """The model name is client input: a new one per request must not grow the process."""
    counter = TokenCounter()
    for i in range(MODEL_NAMES_KEPT * 2):
        assert counter.encoding_name(f"client-model-{i}") == FALLBACK
    assert tokens._encoding_name.cache_info().currsize <= MODEL_NAMES_KEPT
    assert counter.encoding_name("gpt-4o") == "o200k_base"  # still right after evictions
