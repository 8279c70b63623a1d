"""``python -m bench``: every benchmark, bounded (< ~10 min on 2 cores), one command.

    python -m bench [--quick] [--only proxy|memory] [--with-100k] [--profile]
                    [--precision fp32 int8]

1. ``bench.bench_proxy`` (issue 2): the proxy vs the upstream called directly, a bare
   FastAPI + aiohttp relay and a bare litellm app; then where the proxy's time goes.
2. ``bench.bench_memory`` (issue 4): memory on (1k / 10k facts; 100k with ``--with-100k``,
   which adds ~15 min of seeding) vs memory off, through the same proxy; one proxy per
   ``--precision`` (embedding.precision), measured side by side.

Prints a table per scenario with absolute numbers and ratios measured in the same run, and
writes everything to ``bench/results/latest.json`` (gitignored).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench import bench_memory, bench_proxy
from bench.common import machine, machine_line

RESULTS = Path(__file__).resolve().parent / "results"


def summary(result: dict[str, Any]) -> list[str]:
    lines = [machine_line(result["machine"])]
    proxy = result.get("proxy")
    if proxy:
        for s in proxy["scenarios"]:
            t, a = s["targets"], s["added_ms"]
            lines.append(
                f"proxy, {s['name']}: added p50 {a['proxy']['p50']:.2f} ms "
                f"(bare relay {a['bare']['p50']:.2f}, litellm {a['litellm']['p50']:.2f}); "
                f"req/s {t['proxy']['rps']:.0f} = {s['rps_ratio_proxy_over_litellm']:.1f}x "
                f"litellm, {t['proxy']['rps'] / t['bare']['rps']:.2f}x bare; CPU/req "
                f"{t['proxy']['server_cpu_ms_per_req']:.2f} ms vs litellm "
                f"{t['litellm']['server_cpu_ms_per_req']:.2f} ms"
            )
    memory = result.get("memory")
    if memory:
        for s in memory["scenarios"]:
            parts = [
                f"{name}: +{v['p50']:.1f} p50 / +{v['p99']:.1f} p99 ms"
                for name, v in s["added_ms"].items()
            ]
            lines.append(f"memory, {s['name']}: " + "; ".join(parts))
    return lines


def _clean(obj: Any) -> Any:
    """NaN/inf are not JSON: written as null."""
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (~4 min)")
    parser.add_argument("--only", choices=["proxy", "memory"])
    parser.add_argument("--with-100k", action="store_true", help="add a 100k-fact scope")
    parser.add_argument("--profile", action="store_true", help="cProfile the proxy app too")
    parser.add_argument("--static-fraction", type=float, default=0.05)
    parser.add_argument(
        "--precision", nargs="+", choices=["fp32", "int8"], default=["fp32"],
        help="embedding.precision of the memory section's proxies (several: side by side)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args()

    started = time.time()
    result: dict[str, Any] = {"machine": machine(), "started_at": started}
    if args.only in (None, "proxy"):
        plan = bench_proxy.Plan.quick() if args.quick else bench_proxy.Plan()
        result["proxy"] = bench_proxy.run(plan, profile=args.profile)
    if args.only in (None, "memory"):
        mplan = bench_memory.Plan.quick() if args.quick else bench_memory.Plan()
        sizes = [1000, 10000] + ([100000] if args.with_100k else [])
        result["memory"] = bench_memory.run(
            mplan,
            sizes,
            static_fraction=args.static_fraction,
            precisions=tuple(dict.fromkeys(args.precision)),
        )
    result["seconds"] = time.time() - started

    print("\n# summary")
    for line in summary(result):
        print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_clean(result), indent=2, default=str))
    print(f"\nresults: {args.out} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
