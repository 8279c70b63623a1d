"""The ONNX graphs of all-MiniLM-L6-v2, built offline from the shipped safetensors weights.

``bert_graph``: the fp32 encoder (mean pooling and L2 normalization included) as plain
opset-17 ops, the reference the others are tested against; ``bert_graph(fused=True)``: the
same network and fp32 arithmetic in onnxruntime's fused operators, the graph that runs:
each layer's attention is one ``Attention`` (its query, key and value projections one packed
weight), the feed-forward activation one ``BiasGelu`` (0.88-0.95x the time of the plain
graph, vectors within 3e-7). ``quantize_int8``: the fused graph with per-channel dynamic
8-bit weights (int8 or uint8: ``int8_weight_type``): each ``Attention`` becomes a
``QAttention`` that quantizes its input once for the three projections, the other 18 weight
MatMuls ``MatMulInteger`` with one scale per output column, their input quantized on each call.
~30 small ops per layer became ~12: their per-op overhead outweighed the int8 arithmetic
(0.77x the time of the unfused int8 graph with ``MultiHeadAttention``, then 0.90x with
``QAttention``; the same agreement with fp32: bench/bench_precision.py).

Only per-channel weights: one scale per matrix loses too much (cosine to fp32 down to 0.78 on
chat messages, against 0.96 per channel, mean 0.993). The word-embedding table stays fp32
(onnxruntime would quantize it per tensor; the gain would be file size, not time).
"""

from __future__ import annotations

import functools
import logging
import platform
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: What int8 quantizes: the MatMuls with a constant weight (the encoder's linear layers) and
#: the ``Attention`` ops' packed query/key/value weights (``QAttention``: the input quantized
#: once for all three; the attention products themselves stay fp32).
INT8_OPS = ("MatMul", "Attention")
MS_DOMAIN = "com.microsoft"
#: onnxruntime's own fusion into SkipLayerNormalization: its CPU kernel is ~5x slower than the
#: Add + LayerNormalization it replaces (60 vs 11 us a call at 23 tokens); sessions load
#: with it disabled.
SLOW_FUSIONS = ("SkipLayerNormFusion",)


def _params(weights_path: Path, cfg: dict[str, Any]) -> dict[str, np.ndarray]:
    """The graph's initializers, named as in the plain graph: linear weights transposed, the
    query projection pre-scaled by 1/sqrt(head_dim), position + token-type-0 embeddings summed."""
    from safetensors.numpy import load_file

    w = load_file(str(weights_path))
    heads, hidden = int(cfg["num_attention_heads"]), int(cfg["hidden_size"])
    scale = 1 / np.sqrt(hidden // heads)
    out: dict[str, np.ndarray] = {
        "pos_type": w["embeddings.position_embeddings.weight"]
        + w["embeddings.token_type_embeddings.weight"][0],
        "word_emb": w["embeddings.word_embeddings.weight"],
    }
    for name, arr in w.items():
        prefix, _, kind = name.rpartition(".")
        factor = scale if prefix.endswith("attention.self.query") else 1.0
        if "LayerNorm" in prefix:
            out[f"{prefix}.{'g' if kind == 'weight' else 'b'}"] = arr
        elif kind == "weight" and arr.ndim == 2 and "embeddings" not in prefix:
            out[prefix + ".w"] = (arr.T * factor).astype(np.float32)
        elif kind == "bias":
            out[prefix + ".b"] = (arr * factor).astype(np.float32)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


class _Graph:
    """Nodes and initializers of one graph under construction."""

    def __init__(self, params: dict[str, np.ndarray]) -> None:
        self.params = params
        self.nodes: list[Any] = []
        self.used: dict[str, np.ndarray] = {}
        self.count = 0

    def const(self, name: str, arr: np.ndarray | None = None) -> str:
        self.used[name] = self.params[name] if arr is None else arr
        return name

    def op(self, kind: str, *inputs: str, domain: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        self.count += 1
        out = f"{kind.lower()}_{self.count}"
        self.nodes.append(helper.make_node(kind, list(inputs), [out], domain=domain, **attrs))
        return out

    def linear(self, x: str, prefix: str) -> str:
        weight, bias = self.const(prefix + ".w"), self.const(prefix + ".b")
        return self.op("Add", self.op("MatMul", x, weight), bias)

    def layer_norm(self, x: str, pre: str, eps: float) -> str:
        g, b = self.const(pre + ".g"), self.const(pre + ".b")
        return self.op("LayerNormalization", x, g, b, axis=-1, epsilon=eps)


Layer = Callable[[_Graph, str, str, str, int, float], str]


def _plain_layer(g: _Graph, x: str, p: str, bias: str, heads: int, eps: float) -> str:
    """One encoder layer in plain opset-17 ops (``bias``: the additive attention mask)."""
    q = g.linear(x, p + "attention.self.query")
    k, v = g.linear(x, p + "attention.self.key"), g.linear(x, p + "attention.self.value")
    q = g.op("Transpose", g.op("Reshape", q, "split_shape"), perm=[0, 2, 1, 3])
    k = g.op("Transpose", g.op("Reshape", k, "split_shape"), perm=[0, 2, 3, 1])
    v = g.op("Transpose", g.op("Reshape", v, "split_shape"), perm=[0, 2, 1, 3])
    probs = g.op("Softmax", g.op("Add", g.op("MatMul", q, k), bias), axis=-1)
    ctx = g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3])
    attn = g.linear(g.op("Reshape", ctx, "merge_shape"), p + "attention.output.dense")
    x = g.layer_norm(g.op("Add", attn, x), p + "attention.output.LayerNorm", eps)
    h = g.linear(x, p + "intermediate.dense")
    erf = g.op("Erf", g.op("Mul", h, "rsqrt2"))
    h = g.op("Mul", g.op("Mul", h, "half"), g.op("Add", erf, "one"))
    out = g.op("Add", g.linear(h, p + "output.dense"), x)
    return g.layer_norm(out, p + "output.LayerNorm", eps)


def _fused_layer(g: _Graph, x: str, p: str, mask: str, heads: int, eps: float) -> str:
    """One encoder layer in onnxruntime's contrib ops (``mask``: int32 [batch, seq], 1 = token):
    the query, key and value projections are one packed weight of an ``Attention``."""
    a = p + "attention.self."
    names = ("query", "key", "value")
    weight = np.concatenate([g.params[f"{a}{n}.w"] for n in names], axis=1)
    bias = np.concatenate([g.params[f"{a}{n}.b"] for n in names])
    ctx = g.op(
        "Attention",
        x,
        g.const(a + "qkv.w", weight),
        g.const(a + "qkv.b", bias),
        mask,
        domain=MS_DOMAIN,
        num_heads=heads,
        scale=1.0,  # the query weights carry 1/sqrt(head_dim)
    )
    x = g.layer_norm(
        g.op("Add", g.linear(ctx, p + "attention.output.dense"), x),
        p + "attention.output.LayerNorm",
        eps,
    )
    h = g.op("MatMul", x, g.const(p + "intermediate.dense.w"))
    h = g.op("BiasGelu", h, g.const(p + "intermediate.dense.b"), domain=MS_DOMAIN)
    out = g.op("Add", g.linear(h, p + "output.dense"), x)
    return g.layer_norm(out, p + "output.LayerNorm", eps)


def _network(params: dict[str, np.ndarray], heads: int, eps: float, fused: bool) -> Any:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = _Graph(params)
    i64 = functools.partial(np.array, dtype=np.int64)
    f32 = functools.partial(np.array, dtype=np.float32)
    hidden = params["pos_type"].shape[1]
    layers = 1 + max(int(m) for m in re.findall(r"encoder\.layer\.(\d+)\.", " ".join(params)))
    # Embeddings: word + position + token type 0 (every input is a single segment).
    seq_len = g.op("Shape", "input_ids", start=1, end=2)
    zero, axis0 = g.const("zero", i64([0])), g.const("axis0", i64([0]))
    pos = g.op("Slice", g.const("pos_type"), zero, seq_len, axis0)
    words = g.op("Gather", g.const("word_emb"), "input_ids")
    x = g.layer_norm(g.op("Add", words, pos), "embeddings.LayerNorm", eps)
    mask = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)
    if fused:
        attn_mask = g.op("Cast", "attention_mask", to=TensorProto.INT32)
        layer: Layer = _fused_layer
    else:  # additive mask [batch, 1, 1, seq]: 0 for tokens, -1e4 for padding
        one = g.const("one", f32(1.0))
        attn_mask = g.op("Mul", g.op("Sub", one, mask), g.const("neg", f32(-10000.0)))
        attn_mask = g.op("Unsqueeze", attn_mask, g.const("axes12", i64([1, 2])))
        g.const("split_shape", i64([0, 0, heads, hidden // heads]))
        g.const("merge_shape", i64([0, 0, hidden]))
        g.const("rsqrt2", f32(1 / np.sqrt(2.0)))
        g.const("half", f32(0.5))
        layer = _plain_layer
    for i in range(layers):
        x = layer(g, x, f"encoder.layer.{i}.", attn_mask, heads, eps)
    # Mean pooling over the mask, then L2 normalization (as sentence-transformers does).
    m3 = g.op("Unsqueeze", mask, g.const("axis2", i64([2])))
    summed = g.op("ReduceSum", g.op("Mul", x, m3), g.const("axis1", i64([1])), keepdims=0)
    counts = g.op("Max", g.op("ReduceSum", m3, "axis1", keepdims=0), g.const("tiny", f32(1e-9)))
    mean = g.op("Div", summed, counts)
    norm = g.op("Sqrt", g.op("ReduceSumSquare", mean, axes=[1], keepdims=1))
    norm = g.op("Max", norm, g.const("eps", f32(1e-12)))
    g.nodes.append(helper.make_node("Div", [mean, norm], ["sentence_embedding"]))
    graph = helper.make_graph(
        g.nodes,
        "all-MiniLM-L6-v2",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", hidden])],
        initializer=[
            numpy_helper.from_array(np.ascontiguousarray(a), n) for n, a in g.used.items()
        ],
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(MS_DOMAIN, 1)] if fused else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    if not fused:  # the checker does not know onnxruntime's contrib ops
        onnx.checker.check_model(model)
    return model


def bert_graph(weights_path: Path, cfg: dict[str, Any], *, fused: bool = False) -> Any:
    """BERT encoder: inputs input_ids / attention_mask (int64, [batch, seq]), output
    sentence_embedding (float32, [batch, hidden]); as plain opset-17 ONNX ops, or (``fused``)
    in onnxruntime's fused operators with the same fp32 arithmetic."""
    eps = float(cfg.get("layer_norm_eps", 1e-12))
    return _network(_params(weights_path, cfg), int(cfg["num_attention_heads"]), eps, fused)


class _DropPreprocessHint(logging.Filter):
    """onnxruntime logs a warning on the root logger advising pre-processing (shape inference
    and fusions: the session applies them at load) on every quantization."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def int8_weight_type(machine: str, cpuinfo: str | None) -> str:
    """``s8`` or ``u8``: the weight type a CPU multiplies exactly (``machine``: as
    ``platform.machine()`` names it; ``cpuinfo``: the text of /proc/cpuinfo, None if unread).

    onnxruntime multiplies the uint8 activations by int8 weights on x86 without VNNI with
    VPMADDUBSW, whose int16 sums of two products saturate. Measured on such a CPU (AMD EPYC,
    AVX2 only), against fp32: the reference fixture's cosine min 0.971 with int8 weights,
    0.982 with uint8; 300 chat messages p1 0.975 / 0.980, mean 0.9915 / 0.9932. uint8
    weights take a widening path with no saturation, at 1.22x the time. With VNNI (and on
    ARM) int8 weights are exact and the faster."""
    if machine.lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return "s8"
    if cpuinfo is None:
        return "u8"  # unknown: the type that is exact everywhere
    return "s8" if re.search(r"^flags\s*:.*\b(avx512_vnni|avx_vnni)\b", cpuinfo, re.M) else "u8"


def host_int8_weight_type() -> str:
    """``int8_weight_type`` of the running machine."""
    try:
        cpuinfo: str | None = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        cpuinfo = None
    return int8_weight_type(platform.machine(), cpuinfo)


def quantize_int8(fused: bytes, weights: str) -> Any:
    """The serialized fused graph ``fused`` (``bert_graph(fused=True)``) quantized to int8
    (``weights``: ``s8``) or uint8 (``u8``) weights, per channel (a ModelProto; see
    ``int8_weight_type``).

    onnxruntime writes its shape-inferred copy next to its input: the work happens in a
    private temporary directory, removed afterwards (also when it fails)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if weights not in ("s8", "u8"):
        raise ValueError(f"weights must be s8 or u8, not {weights!r}")
    hint = _DropPreprocessHint()
    root = logging.getLogger()
    with tempfile.TemporaryDirectory(prefix="profilo-int8-") as tmp:
        src, out = Path(tmp) / "fused.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fused)
        root.addFilter(hint)
        try:
            quantize_dynamic(
                src,
                out,
                op_types_to_quantize=list(INT8_OPS),
                per_channel=True,
                reduce_range=False,
                weight_type=QuantType.QInt8 if weights == "s8" else QuantType.QUInt8,
                # shape inference cannot type the contrib ops' outputs: they are all float
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        finally:
            root.removeFilter(hint)
        return onnx.load(str(out))
