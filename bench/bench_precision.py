"""``embedding.precision``: fp32 vs int8 MiniLM, speed and agreement, in one run.

    python -m bench.bench_precision [--agree 2000] [--timed 600] [--cache-dir DIR]

1. Agreement: the fixture's ten texts against their sentence-transformers reference vectors
   (tests/fixtures/minilm_reference.json), for fp32 and int8; then int8 against fp32 on
   ``--agree`` generated chat messages (bench/messages.py: realistic lengths, median 21
   tokens): cosine mean, p1, min.
2. Speed: one message per call (what a chat request embeds), fp32 and int8 at 1 and 2
   onnxruntime intra-op threads, interleaved in chunks of 10 calls so that the machine's
   noise falls on all four alike: wall p50 / p90 / p99 and CPU per call (the process's user +
   system time, every thread). Then throughput with 2 callers at once (two requests in
   flight on 2 cores): messages/s and CPU per message.

Recall on bench/eval: ``python -m bench.eval_retrieval --precision fp32 int8``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import machine, machine_line, table
from bench.messages import Messages, describe
from proxy.store.embedder import MiniLMEmbedder

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "minilm_reference.json"
VARIANTS = [("fp32", 1), ("fp32", 2), ("int8", 1), ("int8", 2)]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _stats(cos: np.ndarray) -> dict[str, float]:
    return {
        "n": int(cos.size),
        "mean": float(cos.mean()),
        "p1": float(np.percentile(cos, 1)),
        "min": float(cos.min()),
    }


def agreement(models: dict[str, MiniLMEmbedder], n: int) -> dict[str, Any]:
    data = json.loads(FIXTURE.read_text())
    texts = [item["text"] for item in data["items"]]
    ref = np.asarray([item["embedding"] for item in data["items"]], dtype=np.float32)
    out: dict[str, Any] = {}
    for name, model in models.items():
        out[f"fixture: {name} vs reference"] = _stats(np.sum(model.embed(texts) * ref, axis=1))
    messages = Messages(seed=2).take(n)
    fp32, int8 = models["fp32"].embed(messages), models["int8"].embed(messages)
    out[f"{n} messages: int8 vs fp32"] = _stats(np.sum(fp32 * int8, axis=1))
    return out


def per_call(models: dict[tuple[str, int], MiniLMEmbedder], n: int) -> dict[str, Any]:
    gen = Messages(seed=3)
    messages = gen.take(n)
    print(f"timed messages: {describe(gen.lengths)}", flush=True)
    wall: dict[tuple[str, int], list[float]] = {k: [] for k in models}
    cpu = dict.fromkeys(models, 0.0)
    for model in models.values():  # warm
        model.embed(messages[:5])
    for start in range(0, n, 10):
        for k, model in models.items():
            for text in messages[start : start + 10]:
                c0, t0 = _cpu(), time.perf_counter()
                model.embed([text])
                wall[k].append((time.perf_counter() - t0) * 1000)
                cpu[k] += (_cpu() - c0) * 1000
    out = {}
    for k, samples in wall.items():
        s = sorted(samples)
        out[f"{k[0]}, {k[1]} thread{'s' if k[1] > 1 else ''}"] = {
            "p50_ms": statistics.median(s),
            "p90_ms": s[int(len(s) * 0.9)],
            "p99_ms": s[min(len(s) - 1, int(len(s) * 0.99))],
            "cpu_ms_per_call": cpu[k] / len(s),
        }
    return out


def _embed_each(model: MiniLMEmbedder, texts: list[str]) -> None:
    for text in texts:
        model.embed([text])


def two_callers(models: dict[tuple[str, int], MiniLMEmbedder], n: int) -> dict[str, Any]:
    """Two threads embedding one message per call at once, ``n`` messages per variant, in 3
    interleaved rounds."""
    messages = Messages(seed=4).take(n)
    totals = {k: [0.0, 0.0] for k in models}  # wall, cpu
    for r in range(3):
        part = messages[r::3]
        for k, model in models.items():
            halves = [part[0::2], part[1::2]]
            threads = [threading.Thread(target=_embed_each, args=(model, h)) for h in halves]
            c0, t0 = _cpu(), time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            totals[k][0] += time.perf_counter() - t0
            totals[k][1] += _cpu() - c0
    return {
        f"{k[0]}, {k[1]} thread{'s' if k[1] > 1 else ''}": {
            "messages_per_s": n / w,
            "cpu_ms_per_message": c / n * 1000,
        }
        for k, (w, c) in totals.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agree", type=int, default=2000)
    parser.add_argument("--timed", type=int, default=600)
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "profilo-test-models"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    print(machine_line(machine()), flush=True)
    models = {
        (p, t): MiniLMEmbedder(args.cache_dir, precision=p, intra_op_threads=t) for p, t in VARIANTS
    }
    weights = models[("int8", 1)].weights
    print(f"int8 weights: {weights} (the type this CPU multiplies exactly)")
    result: dict[str, Any] = {"machine": machine(), "int8_weights": weights}
    result["agreement"] = agree = agreement(
        {p: models[(p, 1)] for p in ("fp32", "int8")}, args.agree
    )
    print("\n## agreement (cosine)")
    print(table(["texts", "n", "mean", "p1", "min"],
                [[k, v["n"], f"{v['mean']:.4f}", f"{v['p1']:.4f}", f"{v['min']:.4f}"]
                 for k, v in agree.items()]))  # fmt: skip
    result["per_call"] = calls = per_call(models, args.timed)
    base = calls["fp32, 2 threads"]
    print("\n## one message per call (wall ms, CPU ms per call; ratio: p50 / fp32 2 threads)")
    print(table(["variant", "p50", "p90", "p99", "CPU/call", "p50 ratio", "CPU ratio"],
                [[k, v["p50_ms"], v["p90_ms"], v["p99_ms"], v["cpu_ms_per_call"],
                  v["p50_ms"] / base["p50_ms"], v["cpu_ms_per_call"] / base["cpu_ms_per_call"]]
                 for k, v in calls.items()]))  # fmt: skip
    result["two_callers"] = both = two_callers(models, args.timed)
    print("\n## two callers at once")
    rows = [[k, v["messages_per_s"], v["cpu_ms_per_message"]] for k, v in both.items()]
    print(table(["variant", "messages/s", "CPU ms/message"], rows))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
