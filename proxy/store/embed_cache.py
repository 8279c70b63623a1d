"""An embedder front: a bounded cache, partitioned by account, and batching for background work.

A fact's text is embedded when extraction checks it for near-duplicates and again when the
index is brought up to date; the facts shown to the extraction model were embedded when they
were written: the cache turns those repeats into lookups.

Every entry is keyed by (account, text), and callers reach the cache only through
``for_account(account)``: a text one account embedded is a miss for every other account, so
the cache's speed says nothing about what another tenant wrote or searched (a shared key was
a timing oracle: 2.6 ms hit vs 11 ms miss). ``embed`` without an account uses a partition of
its own (warm-up), never an account's.

``batching()`` gives a view on the same cache for background callers (the extraction
workers): texts that miss the cache while another of its calls is computing wait for it and
then go to the model together, in one call (a batch of 8 costs far less than 8 calls, and
parallel calls only fight over the CPU). Request paths (chat memory, search) use the plain
front: they never wait behind a background batch.

``stats()`` counts lookups (one per text) by caller (``request``: the plain front,
``background``: the batching view) and result (``hit``, ``miss``), for ``/metrics``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from proxy.store.embedder import Embedder

Key = tuple[str, str]  # (account partition, text)
_NO_ACCOUNT = "\x00"  # not a valid account id: never an account's partition
CALLERS = ("request", "background")


@dataclass
class _Batch:
    texts: list[str] = field(default_factory=list)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    error: BaseException | None = None
    done: bool = False


class AccountEmbedder:
    """The cache as one account sees it (an ``Embedder``)."""

    def __init__(self, cache: CachedEmbedder, account: str) -> None:
        self._cache = cache
        self._account = account

    @property
    def name(self) -> str:
        return self._cache.name

    @property
    def dim(self) -> int:
        return self._cache.dim

    @property
    def query_prefix(self) -> str:
        return self._cache.query_prefix

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self._cache.embed_for(self._account, texts)


def for_account(embedder: Embedder, account: str) -> Embedder:
    """``embedder`` as ``account`` may use it: its own cache partition when it is cached."""
    if isinstance(embedder, CachedEmbedder):
        return embedder.for_account(account)
    return embedder


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
        self._cache: OrderedDict[Key, np.ndarray] = (
            _shared._cache if _shared is not None else OrderedDict()
        )
        self._lock: threading.Lock = _shared._lock if _shared is not None else threading.Lock()
        self._batch = _shared is not None
        #: [hits, misses] by caller, shared by the views (counted under ``_lock``)
        self._counts: dict[str, list[int]] = (
            _shared._counts if _shared is not None else {c: [0, 0] for c in CALLERS}
        )
        self._mine = self._counts[CALLERS[1] if self._batch else CALLERS[0]]
        self._turn = threading.Condition()
        self._open: _Batch | None = None  # texts waiting for the next model call
        self._busy = False  # a model call is running

    def batching(self) -> CachedEmbedder:
        """A view on the same cache whose concurrent misses are embedded together."""
        return CachedEmbedder(self._inner, self._max, _shared=self)

    def for_account(self, account: str) -> AccountEmbedder:
        return AccountEmbedder(self, account)

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def dim(self) -> int:
        return self._inner.dim

    @property
    def query_prefix(self) -> str:
        """What the model wants before a search query (E5's "query: "; "" for most)."""
        return str(getattr(self._inner, "query_prefix", ""))

    def stats(self) -> dict[str, tuple[int, int]]:
        """(hits, misses) by caller since start, every view included."""
        with self._lock:
            return {caller: (hits, misses) for caller, (hits, misses) in self._counts.items()}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed_for(_NO_ACCOUNT, texts)

    def embed_for(self, account: str, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return self._inner.embed([])
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for text in texts:
                vector = self._cache.get((account, text))
                if vector is not None:
                    self._cache.move_to_end((account, text))
                    found[text] = vector
            hits = sum(1 for text in texts if text in found)
            self._mine[0] += hits
            self._mine[1] += len(texts) - hits
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing and self._batch:
            found.update(self._compute(missing))
            self._remember(account, {t: found[t] for t in missing})
        elif missing:
            vectors = dict(zip(missing, self._inner.embed(missing), strict=True))
            self._remember(account, vectors)
            found.update(vectors)
        return np.stack([found[t] for t in texts])

    def _compute(self, missing: list[str]) -> dict[str, np.ndarray]:
        """Embed ``missing`` together with the misses of concurrent calls (any account: the
        batch only shares the model call; each caller caches its results in its partition)."""
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
            except BaseException as exc:
                batch.error = exc
            with self._turn:
                batch.done = True
                self._busy = False
                self._turn.notify_all()
        if batch.error is not None:
            raise batch.error
        return {text: batch.vectors[text] for text in missing}

    def _remember(self, account: str, vectors: dict[str, np.ndarray]) -> None:
        with self._lock:
            for text, vector in vectors.items():
                self._cache[(account, text)] = vector
                self._cache.move_to_end((account, text))
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
