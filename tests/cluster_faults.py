"""The faults of tests/test_cluster.py and what the fake upstream saw of them.

The fake upstream serves every replica at ``/r<i>/v1`` (``Cluster``'s ``{i}``), so a recorded
request says which replica sent it; extraction calls are answered slowly enough that a
replica killed at a random moment has some in flight.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.cluster import Cluster
from proxy.store.postgres import PostgresDatabase
from tests.fakes.upstream import FakeUpstream, JsonReply, RecordedRequest, Reply
from tests.test_extraction import MARKER, op, ops_reply, prompt_of

ITEM = re.compile(r"I collect item (\d+)")


def items(delay: float) -> Callable[[RecordedRequest], Reply]:
    """Extraction answers: the turn 'I collect item N' teaches ``item_N = collects item N``."""

    def answer(rec: RecordedRequest) -> Reply:
        found = ITEM.search(prompt_of(rec).split("The new turn")[-1])
        if found is None:
            return ops_reply()
        n = found.group(1)
        reply = ops_reply(op("add", f"item_{n}", f"collects item {n}"))
        assert isinstance(reply, JsonReply)
        reply.delay = delay
        return reply

    return answer


def replica_of(rec: RecordedRequest) -> int:
    return int(rec.path.split("/")[1].removeprefix("r"))  # /r<i>/v1/chat/completions


def extractions(fake: FakeUpstream, *, live: bool = False) -> list[RecordedRequest]:
    """The extraction calls the fake received (``live``: those not answered yet)."""
    with fake._cond:
        ended = set(fake.finished) | set(fake.disconnects) | set(fake.dropped)
        recs = [r for r in fake.requests if MARKER in prompt_of(r)]
    return [r for r in recs if r.id not in ended] if live else recs


def drain(db: PostgresDatabase, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with db.read() as conn:
            left = conn.execute(
                "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')"
            ).fetchone()[0]
        if not left:
            return
        assert time.monotonic() < deadline, f"{left} jobs still pending"
        time.sleep(0.2)


@dataclass
class Chaos:
    """When each fault happened (time.monotonic) and whom it hit."""

    victim: int = -1
    cut: tuple[int, ...] = ()  # items whose extraction the kill cut short
    killed_at: float = 0.0
    dead_at: float = 0.0  # the kill is sent at killed_at; the process is gone by dead_at
    termed: int = -1
    term_at: float = 0.0
    term_done: float = 0.0
    term_code: int | None = None
    term_wall: tuple[float, float, float] = (0.0, 0.0, 0.0)  # SIGTERM, exit, back (Unix time)
    chroma_down: float = 0.0
    chroma_up: float = 0.0


def inject_faults(cluster: Cluster, fake: FakeUpstream, chaos: Chaos) -> None:
    time.sleep(3)
    # (a) kill -9 a replica with an extraction in flight
    deadline = time.monotonic() + 20
    while not (busy := extractions(fake, live=True)):
        assert time.monotonic() < deadline, "no extraction ever in flight"
        time.sleep(0.01)
    chaos.victim = replica_of(busy[0])
    chaos.killed_at = time.monotonic()
    cluster.kill(chaos.victim, signal.SIGKILL)
    # still unanswered once the kill is sent: the victim can never apply these
    cut = [r for r in busy if replica_of(r) == chaos.victim and r.id not in fake.finished]
    cluster.wait_exit(chaos.victim)
    chaos.dead_at = time.monotonic()
    chaos.cut = tuple(int(m.group(1)) for r in cut if (m := ITEM.search(prompt_of(r))))
    time.sleep(cluster.lease_seconds + 1)  # its leases run out; other replicas take over
    cluster.restart(chaos.victim)
    # (b) a rolling restart: SIGTERM (drain), then start again
    chaos.termed = (chaos.victim + 1) % len(cluster.replicas)
    chaos.term_at, sent = time.monotonic(), time.time()
    cluster.kill(chaos.termed, signal.SIGTERM)
    chaos.term_code = cluster.wait_exit(chaos.termed, timeout=60)
    exited = time.time()
    cluster.restart(chaos.termed)
    chaos.term_done = time.monotonic()
    chaos.term_wall = (sent, exited, time.time())
    time.sleep(1)
    # (c) the Chroma server down for a few seconds
    chaos.chroma_down = time.monotonic()
    cluster.stop_chroma()
    time.sleep(3)
    cluster.start_chroma()
    chaos.chroma_up = time.monotonic()
    time.sleep(3)
