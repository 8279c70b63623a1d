"""Token counting with tiktoken, offline: only the encodings litellm bundles are ever loaded
(``proxy.llm.offline.prepare_offline_env`` points ``TIKTOKEN_CACHE_DIR`` at them)."""

from __future__ import annotations

import functools
import threading

import tiktoken

BUNDLED = frozenset({"cl100k_base", "o200k_base", "p50k_base"})
FALLBACK = "cl100k_base"


@functools.cache
def _encoding(name: str) -> tiktoken.Encoding:
    return tiktoken.get_encoding(name)


class TokenCounter:
    """Counts tokens in the target model's encoding (cl100k for models tiktoken doesn't know)."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}
        self._lock = threading.Lock()

    def encoding_name(self, model: str) -> str:
        name = self._names.get(model)
        if name is None:
            try:
                name = tiktoken.encoding_name_for_model(model.rsplit("/", 1)[-1])
            except KeyError:
                name = FALLBACK
            if name not in BUNDLED:
                name = FALLBACK
            with self._lock:
                self._names[model] = name
        return name

    def count(self, text: str, model: str) -> int:
        return len(_encoding(self.encoding_name(model)).encode(text, disallowed_special=()))

    def warm(self) -> None:
        """Load the bundled encodings now (a cold load takes ~1 s: not on a request's path)."""
        for name in sorted(BUNDLED - {"p50k_base"}):
            _encoding(name)
