"""Embeddings through any litellm embedding model, and the choice of the configured embedder."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from proxy.config import EmbeddingSettings, resolve_secret
from proxy.errors import Unavailable
from proxy.store.e5_embedder import E5_NAME, E5Embedder
from proxy.store.embedder import MINILM_NAME, Embedder, MiniLMEmbedder, l2_normalize


class LiteLLMEmbedder:
    """An embedding model served through ``litellm.embedding`` (OpenAI, Azure, Cohere, ...).

    Vectors come back L2-normalized float32. ``dim`` is the one given, else what the first call
    returned (reading it before any call makes one probe call). Empty strings are sent as a
    single space (OpenAI rejects empty inputs). Any failure raises ``proxy.errors.Unavailable``.
    """

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        dim: int | None = None,
        batch_size: int = 256,
        timeout: float = 30.0,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.name = model
        self.api_base = api_base
        self._api_key = api_key
        self._dim = dim
        self.batch_size = max(1, batch_size)
        self.timeout = timeout
        self.extra = dict(extra or {})
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never shows the key
        return f"LiteLLMEmbedder(model={self.name!r}, api_base={self.api_base!r})"

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.embed(["dimension probe"])
        assert self._dim is not None
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a str")
        if not texts:
            return np.empty((0, self._dim or 0), dtype=np.float32)
        inputs = [t if t else " " for t in texts]
        parts = [
            self._call(inputs[i : i + self.batch_size])
            for i in range(0, len(inputs), self.batch_size)
        ]
        out = l2_normalize(np.concatenate(parts, axis=0))
        with self._lock:
            if self._dim is None:
                self._dim = int(out.shape[1])
        if out.shape[1] != self._dim:
            raise Unavailable(
                f"embedding model {self.name} returned {out.shape[1]}-d vectors, "
                f"expected {self._dim}"
            )
        return out

    def _call(self, inputs: list[str]) -> np.ndarray:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        try:
            response = litellm.embedding(
                model=self.name,
                input=inputs,
                api_base=self.api_base,
                api_key=self._api_key,
                timeout=self.timeout,
                **self.extra,
            )
            data = sorted(_items(response), key=lambda d: int(_get(d, "index", 0)))
            vectors = np.asarray([_get(d, "embedding") for d in data], dtype=np.float32)
        except Unavailable:
            raise
        except Exception as exc:
            raise Unavailable(
                f"embedding model {self.name} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if vectors.ndim != 2 or vectors.shape[0] != len(inputs) or vectors.shape[1] == 0:
            raise Unavailable(
                f"embedding model {self.name} returned {vectors.shape[0]} vectors "
                f"for {len(inputs)} inputs"
            )
        return vectors


def _items(response: Any) -> list[Any]:
    data = _get(response, "data")
    if not isinstance(data, list):
        raise TypeError(f"unexpected embedding response: {type(response).__name__}")
    return data


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def build_embedder(settings: EmbeddingSettings, cache_dir: Path) -> Embedder:
    """The configured embedder: the bundled MiniLM (ONNX cached under ``cache_dir``, at
    ``settings.precision``) or litellm (``precision`` does not apply)."""
    if settings.model == MINILM_NAME:
        return MiniLMEmbedder(cache_dir, precision=settings.precision)
    if settings.model == E5_NAME:
        return E5Embedder()
    return LiteLLMEmbedder(
        settings.model,
        api_base=resolve_secret(settings.api_base),
        api_key=resolve_secret(settings.api_key),
    )
