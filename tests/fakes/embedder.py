"""A wrapper around the model behind a proxy's embedding cache that records every text the
model computes (and on which thread): what a cache hit saved, where the work ran."""

from __future__ import annotations

import threading
from typing import Any


class RecordingEmbedder:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.texts: list[str] = []
        self.threads: list[str] = []

    @property
    def name(self) -> str:
        return str(self.inner.name)

    @property
    def dim(self) -> int:
        return int(self.inner.dim)

    def embed(self, texts: Any) -> Any:
        self.texts.extend(texts)
        self.threads.extend(threading.current_thread().name for _ in texts)
        return self.inner.embed(texts)

    def clear(self) -> None:
        del self.texts[:], self.threads[:]


def record_model_calls(proxy: Any) -> RecordingEmbedder:
    """Put a recorder between a running proxy's embedding cache and its model."""
    services = proxy.server.app.state.services
    recorder = RecordingEmbedder(services.embedder._inner)
    services.embedder._inner = recorder
    return recorder
