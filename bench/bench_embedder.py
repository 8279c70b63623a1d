"""Benchmark of the offline MiniLM embedder (onnxruntime) against a plain NumPy forward pass.

    python bench/bench_embedder.py [--rounds 15] [--cache-dir DIR] [--intra 1 2]

Prints per-call latency p50/p99 for single short sentences, a batch of 32 (and per sentence),
the throughput of 4 threads each embedding single sentences, for every onnxruntime
``intra_op_threads`` value given, and the same for a NumPy implementation of the same weights,
interleaved round by round in the same run; then the NumPy/ONNX ratios. Not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.store import embedder as emb

SHORT = [
    "The user is vegetarian and lives in Lisbon.",
    "Senior Engineer at Acme Inc",
    "timezone: America/New_York",
    "Prefers concise answers with code examples",
    "Recommend a book for me",
    "I'm a beginner photographer looking to buy my first camera",
    "Is learning Rust or Go more useful for backend work?",
    "hello world",
]
BATCH = [f"{s} (note {i})" for i, s in enumerate(SHORT * 4)][:32]


class NumpyMiniLM:
    """The same encoder in plain NumPy (float32, BLAS matmuls): the baseline."""

    def __init__(self) -> None:
        from safetensors.numpy import load_file

        d = emb.minilm_model_dir()
        self.tok = emb._load_tokenizer(str(d / "tokenizer.json"), 256)
        w = load_file(str(d / "model.safetensors"))
        cfg = json.loads((d / "config.json").read_text())
        self.heads = int(cfg["num_attention_heads"])
        self.word = w["embeddings.word_embeddings.weight"]
        self.pos = (
            w["embeddings.position_embeddings.weight"]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        self.ln0 = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = []
        for i in range(int(cfg["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            lin = {
                n: (np.ascontiguousarray(w[p + n + ".weight"].T), w[p + n + ".bias"])
                for n in (
                    "attention.self.query",
                    "attention.self.key",
                    "attention.self.value",
                    "attention.output.dense",
                    "intermediate.dense",
                    "output.dense",
                )
            }
            lns = {
                n: (w[p + n + ".weight"], w[p + n + ".bias"])
                for n in ("attention.output.LayerNorm", "output.LayerNorm")
            }
            self.layers.append((lin, lns))

    @staticmethod
    def _ln(x: np.ndarray, gb: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * gb[0] + gb[1]

    @staticmethod
    def _erf(x: np.ndarray) -> np.ndarray:  # Abramowitz-Stegun 7.1.26, |error| < 1.5e-7
        s, a = np.sign(x), np.abs(x)
        t = 1.0 / (1.0 + 0.3275911 * a)
        y = t * (
            0.254829592
            + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
        )
        return (s * (1.0 - y * np.exp(-a * a))).astype(np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        enc = [e.ids for e in self.tok.encode_batch(list(texts))]
        b, s = len(enc), max(len(e) for e in enc)
        ids, mask = np.zeros((b, s), np.int64), np.zeros((b, s), np.float32)
        for i, e in enumerate(enc):
            ids[i, : len(e)], mask[i, : len(e)] = e, 1.0
        x = self._ln(self.word[ids] + self.pos[:s], self.ln0)
        bias = ((1.0 - mask) * -10000.0)[:, None, None, :]
        h, d = self.heads, x.shape[-1] // self.heads
        for lin, lns in self.layers:

            def f(n: str, v: np.ndarray, lin: dict[str, Any] = lin) -> np.ndarray:
                return np.asarray(v @ lin[n][0] + lin[n][1])

            q = f("attention.self.query", x).reshape(b, s, h, d).transpose(0, 2, 1, 3)
            k = f("attention.self.key", x).reshape(b, s, h, d).transpose(0, 2, 3, 1)
            v = f("attention.self.value", x).reshape(b, s, h, d).transpose(0, 2, 1, 3)
            sc = q @ k / math.sqrt(d) + bias
            pr = np.exp(sc - sc.max(-1, keepdims=True))
            pr /= pr.sum(-1, keepdims=True)
            ctx = (pr @ v).transpose(0, 2, 1, 3).reshape(b, s, h * d)
            x = self._ln(f("attention.output.dense", ctx) + x, lns["attention.output.LayerNorm"])
            u = f("intermediate.dense", x)
            u = 0.5 * u * (1.0 + self._erf(u / math.sqrt(2.0)))
            x = self._ln(f("output.dense", u) + x, lns["output.LayerNorm"])
        pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        return emb.l2_normalize(pooled)


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q))


Embed = Callable[[Sequence[str]], np.ndarray]


def _threads4(embed: Embed, per_thread: int) -> float:
    def work(offset: int) -> None:
        for i in range(per_thread):
            embed([SHORT[(i + offset) % len(SHORT)]])

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return 4 * per_thread / (time.perf_counter() - t)


def measure(contenders: dict[str, tuple[Embed, int]], rounds: int) -> dict[str, dict[str, float]]:
    """Interleaved: every round runs each contender briefly, so all see the same machine load
    (this box is shared). ``contenders``: name -> (embed, single calls per round)."""
    single: dict[str, list[float]] = {n: [] for n in contenders}
    batch: dict[str, list[float]] = {n: [] for n in contenders}
    rates: dict[str, list[float]] = {n: [] for n in contenders}
    for embed, _ in contenders.values():  # warm-up
        embed(SHORT)
        embed(BATCH)
    for _ in range(rounds):
        for name, (embed, calls) in contenders.items():
            for i in range(calls):
                t = time.perf_counter()
                embed([SHORT[i % len(SHORT)]])
                single[name].append(time.perf_counter() - t)
            t = time.perf_counter()
            embed(BATCH)
            batch[name].append(time.perf_counter() - t)
            rates[name].append(_threads4(embed, max(2, calls // 2)))
    return {
        n: {
            "single_p50_ms": _pct(single[n], 50),
            "single_p99_ms": _pct(single[n], 99),
            "batch32_p50_ms": _pct(batch[n], 50),
            "batch32_p99_ms": _pct(batch[n], 99),
            "batch32_per_sentence_ms": _pct(batch[n], 50) / len(BATCH),
            "threads4_sentences_per_s": float(np.median(rates[n])),
        }
        for n in contenders
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    ap.add_argument("--cache-dir", type=Path, default=None, help="default: a fresh temp dir")
    ap.add_argument("--intra", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or Path(tmp)
        t = time.perf_counter()
        first = emb.MiniLMEmbedder(cache, intra_op_threads=args.intra[0])
        print(f"first construction (build if not cached + load): {time.perf_counter() - t:.2f} s")
        contenders: dict[str, tuple[Embed, int]] = {}
        for n in args.intra:
            e = first if n == args.intra[0] else emb.MiniLMEmbedder(cache, intra_op_threads=n)
            contenders[f"onnx intra={n}"] = (e.embed, 20)
        base = NumpyMiniLM()
        check = float(np.min(np.sum(base.embed(SHORT) * first.embed(SHORT), axis=1)))
        print(f"numpy vs onnx min cosine on the bench sentences: {check:.6f}")
        contenders["numpy baseline"] = (base.embed, 5)
        rows = measure(contenders, args.rounds)
    keys = list(next(iter(rows.values())))
    print(f"{'':18}" + "".join(f"{k:>26}" for k in keys))
    for name, r in rows.items():
        print(f"{name:18}" + "".join(f"{r[k]:>26.2f}" for k in keys))
    print("ratios numpy / onnx (>1: onnx faster; throughput inverted):")
    for name, r in rows.items():
        if name.startswith("onnx"):
            nb = rows["numpy baseline"]
            ratios = [(r[k] / nb[k]) if k.endswith("per_s") else (nb[k] / r[k]) for k in keys]
            print(f"{name:18}" + "".join(f"{x:>26.2f}" for x in ratios))


if __name__ == "__main__":
    main()
