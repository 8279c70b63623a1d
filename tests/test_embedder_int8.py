"""``embedding.precision: int8``: the per-channel int8 MiniLM against the fp32 reference vectors,
its graph built once from the shipped weights and cached next to the fp32 one, rebuilt when
damaged, a failed build leaving nothing behind; through the real settings path
(``build_embedder``) and a proxy running int8."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydantic
import pytest

from proxy.config import EmbeddingSettings
from proxy.llm.embeddings import build_embedder
from proxy.store import embedder as emb
from proxy.store.embed_cache import CachedEmbedder
from proxy.store.embedder import MiniLMEmbedder
from proxy.store.minilm_graph import host_int8_weight_type, int8_weight_type, quantize_int8
from tests.conftest import MODEL_CACHE, Proxy

FIXTURES = Path(__file__).resolve().parent / "fixtures"
#: Measured (bench/bench_precision.py, each text alone as the embedder runs it): over the
#: fixture's ten texts, cosine to the reference min 0.9801 (the empty string), mean 0.9916;
#: over 2,000 generated chat messages, to our fp32, min 0.965, p1 0.985, mean 0.9932. The
#: floors sit just under the fixture's figures.
COSINE_FLOOR = 0.975
COSINE_MEAN_FLOOR = 0.99


@pytest.fixture(scope="module")
def reference() -> tuple[list[str], np.ndarray]:
    data = json.loads((FIXTURES / "minilm_reference.json").read_text())
    texts = [item["text"] for item in data["items"]]
    return texts, np.asarray([item["embedding"] for item in data["items"]], dtype=np.float32)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("int8-cache")


@pytest.fixture(scope="module")
def int8(cache_dir: Path) -> MiniLMEmbedder:
    """Built from nothing: the fp32 graph first, then its int8 copy (both cached)."""
    built = build_embedder(EmbeddingSettings(precision="int8"), cache_dir)
    assert isinstance(built, MiniLMEmbedder)
    return built


def _graphs(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.onnx"))


def _no_build(*_: Any) -> bytes:
    raise AssertionError("the cached graph should have been reused")


def test_agrees_with_the_fp32_reference(int8: MiniLMEmbedder, reference: Any) -> None:
    texts, expected = reference
    assert int8.precision == "int8" and int8.intra_op_threads == 1 and int8.batch_size == 1
    assert int8.name == "local/all-MiniLM-L6-v2-int8" and int8.dim == 384
    batch = int8.embed(texts)
    single = np.concatenate([int8.embed([t]) for t in texts])
    np.testing.assert_array_equal(batch, single)  # each text alone: no batch effects
    for got in (batch, single):
        assert got.dtype == np.float32 and got.shape == (len(texts), 384)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        cos = np.sum(got * expected, axis=1)
        assert cos.min() >= COSINE_FLOOR, dict(zip(texts, cos.round(4), strict=True))
        assert cos.mean() >= COSINE_MEAN_FLOOR
        assert cos.max() < 0.9999  # really the quantized graph, not the fp32 one


def test_every_weight_is_8_bit_of_the_type_this_cpu_multiplies_exactly(
    int8: MiniLMEmbedder,
) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(int8.onnx_path))
    ops = [n.op_type for n in model.graph.node]
    # 18 linear layers, 6 packed query/key/value projections
    assert ops.count("MatMulInteger") == 18 and ops.count("QAttention") == 6
    assert not {"MatMul", "Attention"} & set(ops)
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weights = [
        consts[n.input[1]]
        for n in model.graph.node
        if n.op_type in ("MatMulInteger", "QAttention") and n.input[1] in consts
    ]
    assert len(weights) == 24
    assert int8.weights == host_int8_weight_type()
    want = np.int8 if int8.weights == "s8" else np.uint8
    assert {w.dtype for w in weights} == {np.dtype(want)}
    assert int8._key.endswith(f"-{int8.weights}")


X86_NO_VNNI = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw\n"
X86_VNNI = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni\n"
X86_AVX_VNNI = "flags\t\t: fpu avx2 avx_vnni\nbugs\t\t: spectre_v1\n"


@pytest.mark.parametrize(
    ("machine", "cpuinfo", "want"),
    [
        ("x86_64", X86_NO_VNNI, "u8"),  # VPMADDUBSW would saturate: uint8 weights
        ("x86_64", X86_VNNI, "s8"),
        ("AMD64", X86_AVX_VNNI, "s8"),
        ("x86_64", "model name\t: avx_vnni in a name, not a flag\nflags\t\t: avx2\n", "u8"),
        ("x86_64", None, "u8"),  # unreadable: the type that is exact everywhere
        ("aarch64", None, "s8"),
        ("arm64", X86_NO_VNNI, "s8"),
    ],
)
def test_weight_type_follows_the_cpu(machine: str, cpuinfo: str | None, want: str) -> None:
    assert int8_weight_type(machine, cpuinfo) == want


def test_quantize_rejects_an_unknown_weight_type() -> None:
    with pytest.raises(ValueError, match="s8 or u8"):
        quantize_int8(b"", "s4")


def test_graph_is_cached_next_to_fp32_and_reused(
    int8: MiniLMEmbedder, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fp32_name = f"all-MiniLM-L6-v2-{int8._fp32_key}.onnx"
    assert _graphs(cache_dir) == [fp32_name, int8.onnx_path.name]
    assert int8.onnx_path.name.startswith("all-MiniLM-L6-v2.int8-")
    assert int8.onnx_path.stat().st_size < (cache_dir / fp32_name).stat().st_size * 0.7
    before = {name: (cache_dir / name).stat().st_mtime_ns for name in _graphs(cache_dir)}
    monkeypatch.setattr(emb, "build_minilm_int8", _no_build)
    monkeypatch.setattr(emb, "build_minilm_onnx", _no_build)
    again = build_embedder(EmbeddingSettings(precision="int8"), cache_dir)
    fp32 = build_embedder(EmbeddingSettings(precision="fp32"), cache_dir)
    assert isinstance(again, MiniLMEmbedder) and isinstance(fp32, MiniLMEmbedder)
    assert again._session is int8._session  # one session per file per process
    assert fp32.onnx_path.name == fp32_name and fp32.name == emb.MINILM_NAME
    after = {name: (cache_dir / name).stat().st_mtime_ns for name in _graphs(cache_dir)}
    assert after == before  # nothing rebuilt, neither precision removed the other's file


@pytest.fixture
def with_fp32(int8: MiniLMEmbedder, cache_dir: Path, tmp_path: Path) -> Path:
    """A cache dir holding the fp32 graph only (int8 is quantized from it, no rebuild)."""
    name = f"all-MiniLM-L6-v2-{int8._fp32_key}.onnx"
    shutil.copy2(cache_dir / name, tmp_path / name)
    return tmp_path


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other_key"])
def test_damaged_int8_graph_is_rebuilt(
    damage: str,
    int8: MiniLMEmbedder,
    with_fp32: Path,
    monkeypatch: pytest.MonkeyPatch,
    reference: Any,
) -> None:
    good = int8.onnx_path.read_bytes()
    target = with_fp32 / int8.onnx_path.name
    if damage == "truncated":  # a crash mid-copy, or a full disk
        target.write_bytes(good[: len(good) // 3])
    elif damage == "garbage":
        target.write_bytes(b"\x00not an onnx graph" * 100)
    else:  # a valid graph stamped for other weights or another recipe
        target.write_bytes(emb._stamped(_parse(good), "0000-b0-q0"))
    real_build = emb.build_minilm_int8
    calls: list[str] = []

    def spy(fp32: bytes, key: str, weights: str) -> bytes:
        calls.append(key)  # one real rebuild (it must be deterministic); the others reuse it
        return real_build(fp32, key, weights) if damage == "truncated" else good

    monkeypatch.setattr(emb, "build_minilm_int8", spy)
    monkeypatch.setattr(emb, "build_minilm_onnx", _no_build)  # the fp32 graph is intact
    rebuilt = MiniLMEmbedder(with_fp32, precision="int8")
    assert calls == [rebuilt._key]
    assert target.read_bytes() == good
    texts = reference[0][:4]
    np.testing.assert_allclose(rebuilt.embed(texts), int8.embed(texts), atol=1e-6)
    assert not list(with_fp32.glob("*.tmp"))


def _parse(data: bytes) -> Any:
    import onnx

    return onnx.load_from_string(data)


def test_failed_build_leaves_nothing_and_next_start_builds(
    int8: MiniLMEmbedder, with_fp32: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(fp32: bytes, key: str, weights: str) -> bytes:
        raise KeyboardInterrupt  # the process dies mid-quantization

    monkeypatch.setattr(emb, "build_minilm_int8", crash)
    with pytest.raises(KeyboardInterrupt):
        MiniLMEmbedder(with_fp32, precision="int8")
    only_fp32 = [f"all-MiniLM-L6-v2-{int8._fp32_key}.onnx"]
    assert sorted(p.name for p in with_fp32.iterdir()) == only_fp32  # no temporary file either
    monkeypatch.undo()
    again = MiniLMEmbedder(with_fp32, precision="int8")
    assert again.onnx_path.read_bytes() == int8.onnx_path.read_bytes()


def test_corrupt_fp32_source_is_rebuilt_too(
    int8: MiniLMEmbedder, with_fp32: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fp32 = with_fp32 / f"all-MiniLM-L6-v2-{int8._fp32_key}.onnx"
    good = fp32.read_bytes()
    fp32.write_bytes(good[: len(good) // 2])  # no metadata: the key is serialized last
    built: list[str] = []
    real = emb.build_minilm_onnx

    def spy(model_dir: Path, key: str) -> bytes:
        built.append(key)
        return real(model_dir, key)

    monkeypatch.setattr(emb, "build_minilm_onnx", spy)
    again = MiniLMEmbedder(with_fp32, precision="int8")
    assert built == [int8._fp32_key]
    assert fp32.read_bytes() == good
    assert again.onnx_path.read_bytes() == int8.onnx_path.read_bytes()


def test_precision_setting_is_validated() -> None:
    assert EmbeddingSettings().precision == "fp32"  # the default, for now
    with pytest.raises(pydantic.ValidationError):
        EmbeddingSettings(precision="fp16")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="precision"):
        MiniLMEmbedder("/nonexistent", precision="int4")


def test_cache_counts_hits_and_misses_by_caller(int8: MiniLMEmbedder) -> None:
    cache = CachedEmbedder(int8)
    alice = cache.for_account("alice")
    alice.embed(["one", "two"])
    alice.embed(["one", "three", "one"])
    cache.for_account("bob").embed(["one"])  # another account's partition: a miss
    cache.batching().for_account("alice").embed(["two", "four"])
    assert cache.stats() == {"request": (2, 4), "background": (1, 1)}


def test_proxy_on_int8_searches_and_counts_cache_hits(make_proxy: Any) -> None:
    proxy: Proxy = make_proxy(embedding={"cache_dir": str(MODEL_CACHE), "precision": "int8"})
    r = httpx.patch(
        f"{proxy.base_url}/profile",
        params={"collection_id": "u1"},
        json={"pet": "has a cat named Miso", "job": "works as a pastry chef in Porto"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    query = {"query": "what animal do they own?", "collection_id": "u1", "threshold": 0}
    for _ in range(2):  # the second time, the query's vector comes from the cache
        r = httpx.post(f"{proxy.base_url}/profile/search", json=query, timeout=30)
        assert r.json()["facts"][0]["key"] == "pet"
    series = 'profilo_embed_cache_lookups_total{caller="request",result="hit"} '
    metrics = httpx.get(proxy.url + "/metrics", timeout=10).text
    (line,) = [x for x in metrics.splitlines() if x.startswith(series)]
    assert float(line.removeprefix(series)) >= 1
