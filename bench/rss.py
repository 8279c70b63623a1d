"""A process's memory over time, read from ``/proc/<pid>/status`` (Linux), and its trend.

``RssSample`` keeps the total resident set and its split: anonymous memory (the heap: Python
objects, numpy arrays, Chroma's HNSW indexes) against file-backed pages (mapped files:
shared libraries, the model's weights, SQLite / Chroma files), which the kernel can drop.
Growth is judged after a warm-up, by a least-squares slope (one late spike does not decide
it), scaled to MiB per 10 minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

_FIELDS = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file", "Threads": "threads"}


@dataclass(frozen=True, slots=True)
class RssSample:
    seconds: float  # since the run started
    rss: int  # KiB
    anon: int  # KiB
    file: int  # KiB
    threads: int


def read(pid: int, seconds: float) -> RssSample:
    values = dict.fromkeys(_FIELDS.values(), 0)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in _FIELDS:
            values[_FIELDS[name]] = int(rest.split()[0])
    return RssSample(seconds=seconds, **values)


def slope_per_10min(points: list[tuple[float, float]]) -> float:
    """The least-squares slope of ``(seconds, value)`` points, per 600 s (0 for < 2 points)."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 600


def trend(samples: list[RssSample], *, warmup: float, every: float) -> dict[str, Any]:
    """Start / after-warm-up / end figures, slopes after ``warmup`` seconds (MiB per 10 min),
    and one sample per ``every`` seconds (MiB) to show the curve."""
    if not samples:
        return {}
    warm = [s for s in samples if s.seconds >= warmup] or samples[-1:]
    mib = 1024

    def slope(attr: str) -> float:
        return round(slope_per_10min([(s.seconds, getattr(s, attr) / mib) for s in warm]), 1)

    curve: list[dict[str, float]] = []
    for s in samples:
        if not curve or s.seconds - curve[-1]["s"] >= every or s is samples[-1]:
            curve.append(
                {
                    "s": round(s.seconds),
                    "rss": round(s.rss / mib, 1),
                    "anon": round(s.anon / mib, 1),
                    "file": round(s.file / mib, 1),
                    "threads": s.threads,
                }
            )
    return {
        "rss_start_mib": round(samples[0].rss / mib, 1),
        "rss_warm_mib": round(warm[0].rss / mib, 1),
        "rss_end_mib": round(samples[-1].rss / mib, 1),
        "warmup_seconds": round(warm[0].seconds, 1),
        "rss_slope_mib_per_10min": slope("rss"),
        "anon_slope_mib_per_10min": slope("anon"),
        "file_slope_mib_per_10min": slope("file"),
        "rss_samples": curve,
    }
