"""Token counting with tiktoken, offline: only the encodings litellm bundles are ever loaded
(``proxy.llm.offline.prepare_offline_env`` points ``TIKTOKEN_CACHE_DIR`` at them)."""

from __future__ import annotations

import functools

import tiktoken

BUNDLED = frozenset({"cl100k_base", "o200k_base", "p50k_base"})
FALLBACK = "cl100k_base"


@functools.cache
def _encoding(name: str) -> tiktoken.Encoding:
    return tiktoken.get_encoding(name)


#: Model names whose encoding is remembered: the name comes from the request body, so the
#: memo is bounded (a client sending a new name per request must not grow the process).
MODEL_NAMES_KEPT = 1024


@functools.lru_cache(maxsize=MODEL_NAMES_KEPT)
def _encoding_name(model: str) -> str:
    try:
        name = tiktoken.encoding_name_for_model(model.rsplit("/", 1)[-1])
    except KeyError:
        return FALLBACK
    return name if name in BUNDLED else FALLBACK


class TokenCounter:
    """Counts tokens in the target model's encoding (cl100k for models tiktoken doesn't know)."""

    def encoding_name(self, model: str) -> str:
        return _encoding_name(model)

    def count(self, text: str, model: str) -> int:
        return len(_encoding(self.encoding_name(model)).encode(text, disallowed_special=()))

    def warm(self) -> None:
        """Load the bundled encodings now (a cold load takes ~1 s: not on a request's path)."""
        for name in sorted(BUNDLED - {"p50k_base"}):
            _encoding(name)
