"""The soak's short form (the long one: ``python -m bench.soak --requests N --duration S``).

A real ``profilo serve`` and upstream on loopback, mixed chat / profile traffic: every request
must succeed. RSS growth and latency percentiles are reported, never asserted (timing on a
shared CI machine is noise).
"""

from __future__ import annotations

import json
import os

from bench import soak

REQUESTS = int(os.environ.get("SOAK_REQUESTS", "300"))


def test_mixed_traffic_holds_with_zero_errors() -> None:
    summary = soak.run(requests=REQUESTS, duration=120, concurrency=4, users=20, seed=7)
    print("\nsoak:", json.dumps(summary))
    assert summary["errors"] == 0, summary["error_kinds"]
    assert summary["requests"] == REQUESTS  # the count bound was reached, not the time one
    kinds = set(summary["latency_ms"]) - {"all"}
    assert kinds == {kind for kind, _ in soak.MIX}  # every kind of request was exercised
    assert summary["rss_end_mib"] > 0


def test_fixed_profiles_only_read_a_seeded_data_set() -> None:
    summary = soak.run(
        requests=REQUESTS // 2, duration=120, concurrency=4, users=10, seed=7, fixed_profiles=True
    )
    print("\nsoak --fixed-profiles:", json.dumps(summary))
    assert summary["errors"] == 0, summary["error_kinds"]
    assert summary["fixed_profiles"] is True
    kinds = set(summary["latency_ms"]) - {"all"}
    assert kinds == {kind for kind, _ in soak.FIXED_MIX}  # reads only: no fact written
    assert summary["rss_samples"] and summary["rss_samples"][-1]["rss"] > 0
