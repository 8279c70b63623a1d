"""The ONNX graphs of all-MiniLM-L6-v2, built offline from the shipped safetensors weights.

``bert_graph``: the fp32 encoder (mean pooling and L2 normalization included) as plain
opset-17 ops. ``quantize_int8``: that graph with per-channel dynamic int8 quantization
(onnxruntime's ``quantize_dynamic``: each of the 36 weight MatMuls becomes an int8
``MatMulInteger`` with one scale per output column, its input quantized on each call). Only
per-channel weights: one scale per matrix loses too much (cosine to fp32 down to 0.78 on chat
messages, against 0.96 per channel, mean 0.993). The word-embedding table stays fp32
(onnxruntime would quantize it per tensor; the gain would be file size, not time).
"""

from __future__ import annotations

import functools
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

#: What int8 quantizes: the MatMuls with a constant weight (the encoder's linear layers; the
#: activation x activation MatMuls of attention stay fp32).
INT8_OPS = ("MatMul",)


def bert_graph(weights_path: Path, cfg: dict[str, Any]) -> Any:
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


class _DropPreprocessHint(logging.Filter):
    """onnxruntime logs a warning on the root logger advising pre-processing (shape inference
    and fusions: the session applies them at load) on every quantization."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def quantize_int8(fp32: bytes) -> Any:
    """The serialized fp32 graph ``fp32`` quantized to int8 weights, per channel (a ModelProto).

    onnxruntime writes its shape-inferred copy next to its input: the work happens in a
    private temporary directory, removed afterwards (also when it fails)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    hint = _DropPreprocessHint()
    root = logging.getLogger()
    with tempfile.TemporaryDirectory(prefix="profilo-int8-") as tmp:
        src, out = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32)
        root.addFilter(hint)
        try:
            quantize_dynamic(
                src,
                out,
                op_types_to_quantize=list(INT8_OPS),
                per_channel=True,
                reduce_range=False,
                weight_type=QuantType.QInt8,
            )
        finally:
            root.removeFilter(hint)
        return onnx.load(str(out))
