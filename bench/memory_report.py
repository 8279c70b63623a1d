"""The memory benchmark's report: tables of one scenario (each memory-on target against the
memory-off target of the same proxy), int8 ÷ fp32 ratios, the embedding cache's hit rate read
from each proxy's ``/metrics``, and the issue's goal.
"""

from __future__ import annotations

from typing import Any

import httpx

from bench.common import Samples, table

GOAL_P50_MS = 5.0
GOAL_P99_MS = 10.0
GOAL_CPU_MS = 8.0
CACHE_METRIC = "profilo_embed_cache_lookups_total"


def label(precision: str, what: str, several: bool) -> str:
    return f"{precision}: {what}" if several else what


def _baseline(name: str, precisions: list[str]) -> str:
    prefix = name.split(": ", 1)[0] if len(precisions) > 1 else None
    return label(prefix or precisions[0], "memory off", len(precisions) > 1)


def report(
    title: str,
    stream: bool,
    conc: int,
    rounds: int,
    res: dict[str, Samples],
    precisions: list[str],
) -> dict[str, Any]:
    s = {name: r.summary() for name, r in res.items()}
    lat = "TTFB" if stream else "latency"
    headers = [
        "target", "n", f"{lat} p50 ms", f"{lat} p99 ms", "added p50 ms", "added p99 ms",
        "p50 ÷ off", "req/s", "req/s ÷ off", "CPU ms/req", "added CPU ms", "fail-open", "errors",
    ]  # fmt: skip
    rows, added = [], {}
    for name, m in s.items():
        base = s[_baseline(name, precisions)]
        off = name == _baseline(name, precisions)
        a50, a99 = m["p50_ms"] - base["p50_ms"], m["p99_ms"] - base["p99_ms"]
        cpu = m["server_cpu_ms_per_req"] - base["server_cpu_ms_per_req"]
        if not off:
            added[name] = {"p50": a50, "p99": a99, "cpu_ms": cpu, "rps": m["rps"]}
        nan = float("nan")
        rows.append([
            name, m["n"], m["p50_ms"], m["p99_ms"], nan if off else a50, nan if off else a99,
            m["p50_ms"] / base["p50_ms"], m["rps"], m["rps"] / base["rps"],
            m["server_cpu_ms_per_req"], nan if off else cpu, m["flags"].get("fail-open", 0),
            m["errors"],
        ])  # fmt: skip
    print(f"\n## memory: {title}  ({rounds} interleaved rounds, n: requests measured)")
    print(table(headers, rows), flush=True)
    if len(precisions) > 1:
        _print_ratios(added, precisions)
    return {"name": title, "stream": stream, "concurrency": conc, "targets": s, "added_ms": added}


def _print_ratios(added: dict[str, Any], precisions: list[str]) -> None:
    first, *others = precisions
    for other in others:
        rows = []
        for name, a in added.items():
            if not name.startswith(f"{first}: "):
                continue
            b = added.get(name.replace(f"{first}: ", f"{other}: ", 1))
            if b is None:
                continue
            what = name.split(": ", 1)[1]
            rows.append([
                what, b["p50"] / a["p50"], b["p99"] / a["p99"], b["cpu_ms"] / a["cpu_ms"],
                b["rps"] / a["rps"],
            ])  # fmt: skip
        heads = ["memory on", "added p50", "added p99", "added CPU", "req/s"]
        print(f"  {other} ÷ {first}:")
        print("  " + table(heads, rows).replace("\n", "\n  "))


def cache_counts(url: str) -> dict[str, float] | None:
    """The request path's embedding-cache hits and misses so far (None: no such metric)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(CACHE_METRIC + "{") and 'caller="request"' in line:
            result = "hit" if 'result="hit"' in line else "miss"
            found[result] = float(line.rsplit(" ", 1)[1])
    return found or None


def cache_report(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    print("\n## embedding cache during the HTTP runs (request path, from /metrics)")
    for p in after:
        if before[p] is None or after[p] is None:
            print(f"  {p}: the proxy exposes no {CACHE_METRIC}")
            out[p] = None
            continue
        hits = after[p].get("hit", 0.0) - before[p].get("hit", 0.0)
        misses = after[p].get("miss", 0.0) - before[p].get("miss", 0.0)
        rate = hits / (hits + misses) if hits + misses else 0.0
        out[p] = {"hits": hits, "misses": misses, "hit_rate": rate}
        print(f"  {p}: {hits:.0f} hits, {misses:.0f} misses: hit rate {rate:.1%}")
    return out


def goals(scenarios: list[dict[str, Any]], precisions: list[str], n: int = 10000) -> dict:
    several = len(precisions) > 1
    print(
        f"\n## issue 18 goal at {n} facts, concurrency 1: added < {GOAL_P50_MS} ms p50, "
        f"< {GOAL_P99_MS} ms p99, < {GOAL_CPU_MS} ms CPU per request"
    )
    out: dict[str, Any] = {}
    for p in precisions:
        key = label(p, f"on, {n} facts", several)
        rows = {s["name"]: s["added_ms"][key] for s in scenarios if key in s["added_ms"]}
        for name, v in rows.items():
            ok = v["p50"] < GOAL_P50_MS and v["p99"] < GOAL_P99_MS
            note = "" if name.endswith("concurrency 1") else " (under load: queueing)"
            print(
                f"  {p}, {name}: +{v['p50']:.2f} ms p50, +{v['p99']:.2f} ms p99, "
                f"+{v['cpu_ms']:.2f} ms CPU, {v['rps']:.0f} req/s "
                f"{'met' if ok else 'MISSED'}{note}"
            )
        c1 = [v for name, v in rows.items() if name.endswith("concurrency 1")]
        out[p] = {
            "added_ms": rows,
            "met_at_concurrency_1": bool(c1)
            and all(v["p50"] < GOAL_P50_MS and v["p99"] < GOAL_P99_MS for v in c1),
        }
    return {"facts": n, "goal_p50_ms": GOAL_P50_MS, "goal_p99_ms": GOAL_P99_MS, "by": out}
