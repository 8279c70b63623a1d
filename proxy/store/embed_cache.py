"""An embedder front: a bounded cache (keyed by the exact text), and batching for background work.

A fact's text is embedded when extraction checks it for near-duplicates and again when the
index is brought up to date; the facts shown to the extraction model were embedded when they
were written: the cache turns those repeats into lookups.

``batching()`` gives a view on the same cache for background callers (the extraction
workers): texts that miss the cache while another of its calls is computing wait for it and
then go to the model together, in one call (a batch of 8 costs far less than 8 calls, and
parallel calls only fight over the CPU). Request paths (chat memory, search) use the plain
front: they never wait behind a background batch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from proxy.store.embedder import Embedder


@dataclass
class _Batch:
    texts: list[str] = field(default_factory=list)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    error: BaseException | None = None
    done: bool = False


class CachedEmbedder:
    def __init__(
        self,
        inner: Embedder,
        max_entries: int = 8192,
        *,
        _shared: CachedEmbedder | None = None,
    ) -> None:
        self._inner = inner
        self._max = max_entries
        self._cache: OrderedDict[str, np.ndarray] = (
            _shared._cache if _shared is not None else OrderedDict()
        )
        self._lock: threading.Lock = _shared._lock if _shared is not None else threading.Lock()
        self._batch = _shared is not None
        self._turn = threading.Condition()
        self._open: _Batch | None = None  # texts waiting for the next model call
        self._busy = False  # a model call is running

    def batching(self) -> CachedEmbedder:
        """A view on the same cache whose concurrent misses are embedded together."""
        return CachedEmbedder(self._inner, self._max, _shared=self)

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def dim(self) -> int:
        return self._inner.dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return self._inner.embed([])
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for text in texts:
                vector = self._cache.get(text)
                if vector is not None:
                    self._cache.move_to_end(text)
                    found[text] = vector
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing and self._batch:
            found.update(self._compute(missing))
        elif missing:
            vectors = dict(zip(missing, self._inner.embed(missing), strict=True))
            self._remember(vectors)
            found.update(vectors)
        return np.stack([found[t] for t in texts])

    def _compute(self, missing: list[str]) -> dict[str, np.ndarray]:
        with self._turn:
            batch = self._open if self._open is not None else _Batch()
            self._open = batch
            batch.texts.extend(missing)
            while not batch.done and (self._busy or self._open is not batch):
                self._turn.wait()
            lead = not batch.done
            if lead:  # nobody is computing: this call runs the batch it joined
                self._busy = True
                self._open = None
        if lead:
            try:
                texts = list(dict.fromkeys(batch.texts))
                batch.vectors = dict(zip(texts, self._inner.embed(texts), strict=True))
                self._remember(batch.vectors)
            except BaseException as exc:
                batch.error = exc
            with self._turn:
                batch.done = True
                self._busy = False
                self._turn.notify_all()
        if batch.error is not None:
            raise batch.error
        return {text: batch.vectors[text] for text in missing}

    def _remember(self, vectors: dict[str, np.ndarray]) -> None:
        with self._lock:
            for text, vector in vectors.items():
                self._cache[text] = vector
                self._cache.move_to_end(text)
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
