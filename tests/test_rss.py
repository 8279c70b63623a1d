"""bench.rss: a process's memory from /proc and its trend after a warm-up."""

from __future__ import annotations

import os

import pytest

from bench import rss


def test_reads_this_process() -> None:
    sample = rss.read(os.getpid(), 1.5)
    assert sample.seconds == 1.5
    assert sample.rss > 0 and sample.threads >= 1
    assert sample.anon + sample.file <= sample.rss  # the rest is shared memory (RssShmem)


def test_slope_is_the_least_squares_trend_per_10_minutes() -> None:
    # 1 MiB per minute with noise that cancels out: 10 MiB per 10 minutes
    points = [(60.0 * i, float(i) + (0.5 if i % 2 else -0.5)) for i in range(11)]
    assert rss.slope_per_10min(points) == pytest.approx(10.0, rel=0.05)
    assert rss.slope_per_10min([(0.0, 5.0), (600.0, 5.0)]) == 0.0
    assert rss.slope_per_10min([(3.0, 5.0)]) == 0.0


def test_trend_ignores_the_warm_up() -> None:
    def at(seconds: float, mib: float) -> rss.RssSample:
        kib = int(mib * 1024)
        return rss.RssSample(seconds=seconds, rss=kib, anon=kib, file=0, threads=4)

    # +200 MiB while warming up, flat after
    samples = [at(t, 400 + min(t, 100) * 2) for t in range(0, 601, 10)]
    out = rss.trend(samples, warmup=120, every=60)
    assert out["rss_start_mib"] == 400 and out["rss_warm_mib"] == 600 and out["rss_end_mib"] == 600
    assert out["rss_slope_mib_per_10min"] == 0.0
    assert [s["s"] for s in out["rss_samples"]] == list(range(0, 601, 60))
