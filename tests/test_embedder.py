"""The offline MiniLM embedder (ONNX build, cache, fixture reproduction) and LiteLLMEmbedder."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from proxy.config import EmbeddingSettings
from proxy.errors import Unavailable
from proxy.llm.embeddings import LiteLLMEmbedder, build_embedder
from proxy.store import embedder as emb
from proxy.store.embedder import Embedder, MiniLMEmbedder

FIXTURES = Path(__file__).resolve().parent / "fixtures"  # reference figures (README there)


@pytest.fixture(scope="module")
def reference() -> tuple[list[str], np.ndarray]:
    data = json.loads((FIXTURES / "minilm_reference.json").read_text())
    texts = [item["text"] for item in data["items"]]
    vectors = np.asarray([item["embedding"] for item in data["items"]], dtype=np.float32)
    return texts, vectors


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def minilm(cache_dir: Path) -> MiniLMEmbedder:
    assert importlib.util.find_spec(emb.MINILM_PACKAGE) is not None, emb.INSTALL_HINT
    return MiniLMEmbedder(cache_dir)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# --- MiniLM: numbers -------------------------------------------------------------------------


def test_reproduces_reference_fixture(minilm: MiniLMEmbedder, reference: Any) -> None:
    texts, expected = reference
    assert "" in texts and max(len(t) for t in texts) > 1000  # empty and long text covered
    batch = minilm.embed(texts)
    single = np.concatenate([minilm.embed([t]) for t in texts])
    for got in (batch, single):
        assert got.shape == (len(texts), 384) and got.dtype == np.float32
        cos = _cosines(got, expected)
        assert cos.min() > 0.999, dict(zip(texts, cos.round(5), strict=True))


def test_padding_does_not_change_results(minilm: MiniLMEmbedder, reference: Any) -> None:
    texts = reference[0] + [f"fact {i}: " + "likes hiking " * (i % 9) for i in range(40)]
    batch = minilm.embed(texts)  # > 32 texts: several batches, sorted by length
    single = np.concatenate([minilm.embed([t]) for t in texts])
    np.testing.assert_allclose(batch, single, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)


def test_runs_the_fused_network_which_equals_the_plain_graph(
    minilm: MiniLMEmbedder, reference: Any
) -> None:
    """The cached graph is onnxruntime's fused operators; it computes what the plain opset-17
    graph computes (checked on padded batches, a text past the 256-token cap included)."""
    import onnx
    import onnxruntime as ort

    from proxy.store.minilm_graph import bert_graph

    fused = onnx.load(str(minilm.onnx_path))
    kinds = {n.op_type for n in fused.graph.node}
    assert {"Attention", "BiasGelu"} <= kinds and not {"Softmax", "Erf"} & kinds
    config = json.loads((minilm.model_dir / "config.json").read_text())
    plain = bert_graph(minilm.model_dir / "model.safetensors", config)
    assert "Softmax" in {n.op_type for n in plain.graph.node}
    plain_session = ort.InferenceSession(
        plain.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    texts = reference[0] + ["a much longer sentence about the user's weekend plans " * 6]
    encoded = [minilm._tokenizer.encode(t).ids for t in texts]
    width = max(len(x) for x in encoded)
    ids = np.zeros((len(texts), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, seq in enumerate(encoded):
        ids[row, : len(seq)], mask[row, : len(seq)] = seq, 1
    feeds = {"input_ids": ids, "attention_mask": mask}
    (want,) = plain_session.run(None, feeds)
    (got,) = minilm._session.run(None, feeds)
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_empty_input_and_str_guard(minilm: MiniLMEmbedder) -> None:
    out = minilm.embed([])
    assert out.shape == (0, 384) and out.dtype == np.float32
    with pytest.raises(TypeError):
        minilm.embed("not a list")


def test_concurrent_calls_match_sequential(minilm: MiniLMEmbedder, reference: Any) -> None:
    texts = reference[0]
    expected = minilm.embed(texts)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: minilm.embed([texts[i % len(texts)]]), range(40)))
    for i, got in enumerate(results):
        np.testing.assert_allclose(got[0], expected[i % len(texts)], atol=2e-5)


def test_satisfies_protocol(minilm: MiniLMEmbedder) -> None:
    e: Embedder = minilm  # checked by mypy
    assert e.name == "local/all-MiniLM-L6-v2" and minilm.dim == 384


# --- MiniLM: the ONNX cache ------------------------------------------------------------------


def _no_build(*_: Any) -> bytes:
    raise AssertionError("the cached ONNX graph should have been reused")


def test_cached_graph_and_session_are_reused(
    minilm: MiniLMEmbedder, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = minilm.onnx_path.stat()
    monkeypatch.setattr(emb, "build_minilm_onnx", _no_build)
    again = MiniLMEmbedder(cache_dir)
    assert again.onnx_path == minilm.onnx_path
    assert again.onnx_path.stat().st_mtime_ns == before.st_mtime_ns
    assert again._session is minilm._session  # one session per process
    assert list(cache_dir.glob("*.onnx")) == [minilm.onnx_path]


@pytest.fixture(scope="module")
def built_graph(minilm: MiniLMEmbedder) -> Any:
    import onnx

    return onnx.load(str(minilm.onnx_path))


@pytest.fixture
def spy_build(built_graph: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Rebuilds cheaply: the already-built graph, re-stamped with the requested key."""
    built = built_graph
    calls: list[str] = []

    def fake_build(model_dir: Path, key: str) -> bytes:
        calls.append(key)
        for prop in built.metadata_props:
            if prop.key == emb._META_KEY:
                prop.value = key
        return bytes(built.SerializeToString())

    monkeypatch.setattr(emb, "build_minilm_onnx", fake_build)
    return calls


@pytest.mark.parametrize("damage", ["truncated", "other_key"])
def test_damaged_graph_is_rebuilt(
    damage: str, minilm: MiniLMEmbedder, spy_build: list[str], tmp_path: Path, reference: Any
) -> None:
    target = tmp_path / minilm.onnx_path.name
    original = minilm.onnx_path.read_bytes()
    if damage == "truncated":
        target.write_bytes(original[: len(original) // 2])
    else:  # a valid graph stamped for other weights / another builder
        spy_build.append("setup")
        target.write_bytes(emb.build_minilm_onnx(minilm.model_dir, "0000-b0"))
        spy_build.clear()
    rebuilt = MiniLMEmbedder(tmp_path)
    assert spy_build == [rebuilt._key]
    assert target.read_bytes() == original
    texts = reference[0][:3]
    np.testing.assert_allclose(rebuilt.embed(texts), minilm.embed(texts), atol=1e-6)
    assert not list(tmp_path.glob("*.tmp"))


def test_new_builder_version_rebuilds_and_drops_stale_file(
    minilm: MiniLMEmbedder, spy_build: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / minilm.onnx_path.name
    old.write_bytes(minilm.onnx_path.read_bytes())
    monkeypatch.setattr(emb, "BUILDER_VERSION", "test-next")
    fresh = MiniLMEmbedder(tmp_path)
    assert fresh.onnx_path != old and fresh.onnx_path.name.endswith("-btest-next.onnx")
    assert spy_build == [fresh._key]
    assert not old.exists() and fresh.onnx_path.is_file()


def test_missing_model_package_names_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        emb.importlib.util,
        "find_spec",
        lambda name, *a: None if name == emb.MINILM_PACKAGE else real(name, *a),
    )
    with pytest.raises(RuntimeError, match=re.escape(emb.INSTALL_HINT)):
        MiniLMEmbedder("/nonexistent")


# --- LiteLLMEmbedder against a fake OpenAI-compatible server ---------------------------------


class _FakeEmbeddings(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]
    fail_with: int | None = None

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        )
        if self.fail_with:
            payload: dict[str, Any] = {"error": {"message": "boom", "type": "server_error"}}
            self._send(self.fail_with, payload)
            return
        data = []
        for i, text in enumerate(body["input"]):
            vec = np.array([len(text), 1.0, 2.0, float(i)], dtype=np.float32)
            emb_value: Any = vec.tolist()
            if body.get("encoding_format") == "base64":
                emb_value = base64.b64encode(vec.tobytes()).decode()
            data.append({"object": "embedding", "index": i, "embedding": emb_value})
        data.reverse()  # the index, not the order, says which input a vector belongs to
        self._send(
            200,
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": 3, "total_tokens": 3},
            },
        )

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture
def fake_server() -> Iterator[tuple[str, type[_FakeEmbeddings]]]:
    handler = type("Handler", (_FakeEmbeddings,), {"received": [], "fail_with": None})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler
    finally:
        server.shutdown()
        server.server_close()


def _expected(texts: list[str]) -> np.ndarray:
    raw = np.array([[len(t), 1.0, 2.0, i] for i, t in enumerate(texts)], dtype=np.float32)
    return raw / np.linalg.norm(raw, axis=1, keepdims=True)


def test_litellm_embedder_against_fake_server(fake_server: Any) -> None:
    base, handler = fake_server
    e: Embedder = LiteLLMEmbedder("openai/fake-embed", api_base=base, api_key="sk-test")
    assert "sk-test" not in repr(e) and not handler.received
    out = e.embed(["hello", "", "a longer text"])
    assert out.dtype == np.float32 and out.shape == (3, 4) and e.dim == 4
    np.testing.assert_allclose(out, _expected(["hello", " ", "a longer text"]), atol=1e-6)
    (req,) = handler.received
    assert req["path"] == "/v1/embeddings" and req["auth"] == "Bearer sk-test"
    assert req["body"]["model"] == "fake-embed"
    assert req["body"]["input"] == ["hello", " ", "a longer text"]  # no empty strings sent
    assert e.embed([]).shape == (0, 4)


def test_litellm_embedder_batches_and_discovers_dim(fake_server: Any) -> None:
    base, handler = fake_server
    e = LiteLLMEmbedder("openai/fake-embed", api_base=base, api_key="k", batch_size=2)
    assert e.dim == 4  # discovered by one probe call
    texts = [f"t{i}" * (i + 1) for i in range(5)]
    out = e.embed(texts)
    sent = [r["body"]["input"] for r in handler.received[1:]]
    assert sent == [texts[0:2], texts[2:4], texts[4:5]]
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(out[2], _expected(texts[2:4])[0], atol=1e-6)


def test_litellm_embedder_wraps_failures(fake_server: Any) -> None:
    base, handler = fake_server
    handler.fail_with = 400
    e = LiteLLMEmbedder("openai/fake-embed", api_base=base, api_key="k", extra={"max_retries": 0})
    with pytest.raises(Unavailable) as info:
        e.embed(["x"])
    assert info.value.status == 503 and "fake-embed" in info.value.message


def test_build_embedder_chooses(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, minilm: MiniLMEmbedder, cache_dir: Path
) -> None:
    assert isinstance(build_embedder(EmbeddingSettings(), cache_dir), MiniLMEmbedder)
    monkeypatch.setenv("EMBED_KEY", "sk-env")
    settings = EmbeddingSettings(
        model="openai/text-embedding-3-small",
        api_base="http://x/v1",
        api_key="os.environ/EMBED_KEY",
    )
    chosen = build_embedder(settings, tmp_path)
    assert isinstance(chosen, LiteLLMEmbedder)
    assert chosen.name == "openai/text-embedding-3-small" and chosen._api_key == "sk-env"
    assert not list(tmp_path.iterdir())  # nothing built for a remote model
