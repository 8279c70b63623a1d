"""Shared pieces of the benchmarks: processes, the load generator, statistics, tables.

Every server (fake upstream, proxy, litellm baseline) runs in its own process; the load
generator is an aiohttp client with keep-alive in the bench process. Each scenario is measured
in rounds that interleave the targets, so that the noise of a shared machine falls on all of
them alike, and every figure is reported next to a baseline measured in the same run.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
MODEL = "bench-model"


# -- machine ----------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_1m_at_start": load,
    }


def machine_line(m: dict[str, Any]) -> str:
    return f"machine: {m['cores']} cores, {m['cpu']}, Python {m['python']}, {m['platform']}"


# -- processes --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def spawn(
    name: str,
    args: Sequence[str],
    port: int,
    log_dir: Path,
    env: dict[str, str] | None = None,
    ready_path: str = "/",
    ready_timeout: float = 120.0,
    cwd: Path | None = None,
) -> Server:
    """Start ``python args...`` (in ``cwd``, the repo root by default) and wait until
    ``ready_path`` answers < 500."""
    log = log_dir / f"{name}.log"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PYTHON, *args], cwd=cwd or ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT
        )
    server = Server(name, proc, port, log)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(
                    f"GET {ready_path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
                )
                head = s.recv(64)
            if head.startswith(b"HTTP/1.1 ") and head[9:10] in b"234":
                return server
        except OSError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(
        f"{name} did not become ready in {ready_timeout}s:\n{log.read_text()[-3000:]}"
    )


# -- statistics -------------------------------------------------------------------------------
def pct(values: Sequence[float], q: float) -> float:
    """Percentile by linear interpolation (q in 0..100)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@dataclass
class Samples:
    """Latencies (seconds) of one target in one scenario, pooled over rounds."""

    latency: list[float] = field(default_factory=list)  # whole reply (non-streaming) or TTFB
    total: list[float] = field(default_factory=list)  # whole reply (streaming: to [DONE])
    wall: float = 0.0  # summed wall time of the batches
    count: int = 0
    errors: int = 0
    cpu: float = 0.0  # CPU seconds of the target's own server process over the batches
    flags: dict[str, int] = field(default_factory=dict)
    capped: int = 0  # batches cut short by the time cap

    def summary(self) -> dict[str, float]:
        ms = 1000.0
        return {
            "n": self.count,
            "errors": self.errors,
            "p50_ms": pct(self.latency, 50) * ms,
            "p90_ms": pct(self.latency, 90) * ms,
            "p99_ms": pct(self.latency, 99) * ms,
            "mean_ms": (sum(self.latency) / len(self.latency) * ms) if self.latency else 0.0,
            "total_p50_ms": pct(self.total, 50) * ms,
            "total_p99_ms": pct(self.total, 99) * ms,
            "rps": self.count / self.wall if self.wall else 0.0,
            "server_cpu_ms_per_req": self.cpu / self.count * ms if self.count else 0.0,
            "flags": dict(self.flags),
            "capped_batches": self.capped,
        }


# -- load generator ---------------------------------------------------------------------------
@dataclass
class Target:
    """One thing to send requests to."""

    name: str
    url: str  # full URL of the chat completions endpoint
    body: bytes
    stream: bool
    headers: dict[str, str] = field(default_factory=dict)
    #: Looks at a good response; a string it returns is counted in ``Samples.flags`` (the
    #: request still counts, e.g. memory that failed open).
    check: Callable[[aiohttp.ClientResponse], str | None] | None = None
    weight: float = 1.0  # share of the scenario's request count this target gets
    pid: int | None = None  # the server process whose CPU time is charged to this target
    #: When set, each request's body is ``make_body(i)`` (i = 0, 1, 2, ...) instead of ``body``:
    #: e.g. a distinct user message per request, so that no cache answers for the server.
    make_body: Callable[[int], bytes] | None = None
    seq: Iterator[int] = field(default_factory=itertools.count)


USER_MESSAGE = "Can you suggest a good place to eat tonight?"


def chat_body(stream: bool, model: str = MODEL, user: str = USER_MESSAGE, **extra: Any) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": user},
        ],
        **extra,
    }
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


async def _one(session: aiohttp.ClientSession, t: Target, out: Samples) -> None:
    t0 = time.perf_counter()
    flag: str | None = None
    try:
        body = t.body if t.make_body is None else t.make_body(next(t.seq))
        async with session.post(t.url, data=body, headers=t.headers) as resp:
            if t.stream:
                first = await resp.content.readany()
                t1 = time.perf_counter()
                tail = first
                while True:
                    chunk = await resp.content.readany()
                    if not chunk:
                        break
                    tail = (tail + chunk)[-64:]
                t2 = time.perf_counter()
                ok = resp.status == 200 and b"[DONE]" in tail
            else:
                data = await resp.read()
                t1 = t2 = time.perf_counter()
                ok = resp.status == 200 and data[:1] == b"{"
            if ok and t.check is not None:
                flag = t.check(resp)
    except (TimeoutError, aiohttp.ClientError, OSError):
        ok = False
        t1 = t2 = time.perf_counter()
    if not ok:
        out.errors += 1
        return
    if flag:
        out.flags[flag] = out.flags.get(flag, 0) + 1
    out.latency.append(t1 - t0)
    out.total.append(t2 - t0)


async def run_batch(
    session: aiohttp.ClientSession,
    t: Target,
    n: int,
    concurrency: int,
    out: Samples,
    max_seconds: float | None = None,
) -> None:
    """``n`` requests through ``concurrency`` workers, each sending one after the other; with
    ``max_seconds``, no new request starts after that long (the batch counts what was sent)."""
    counter = iter(range(n))
    sent = 0
    deadline = time.perf_counter() + max_seconds if max_seconds else None

    async def worker() -> None:
        nonlocal sent
        for _ in counter:
            if deadline is not None and time.perf_counter() > deadline:
                return
            sent += 1
            await _one(session, t, out)

    c0 = process_cpu(t.pid)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))
    out.wall += time.perf_counter() - t0
    out.cpu += process_cpu(t.pid) - c0
    out.count += sent
    if sent < n:
        out.capped += 1


_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads); 0 when unknown."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def new_session(limit: int = 256) -> aiohttp.ClientSession:
    """Keep-alive connections are dropped after 3 s idle, before the proxy's
    ``server.keep_alive_seconds`` (5): a request sent on a connection the server is closing
    fails (a benchmark measuring several proxies in turns leaves each one idle for seconds)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, force_close=False, keepalive_timeout=3.0),
        timeout=aiohttp.ClientTimeout(total=60),
        skip_auto_headers=("User-Agent",),
    )


async def measure(
    targets: Sequence[Target],
    *,
    n: int,
    concurrency: int,
    rounds: int,
    warmup: int,
    max_seconds: float | None = None,
) -> dict[str, Samples]:
    """Interleave the targets: every round sends ``n * weight // rounds`` requests to each, in
    an order rotated from round to round. Warm-up requests (every target, same concurrency)
    first. ``max_seconds`` caps each target's total time in the scenario (split over rounds)."""
    results = {t.name: Samples() for t in targets}
    cap = max_seconds / rounds if max_seconds else None
    async with new_session() as session:
        for t in targets:
            await run_batch(session, t, warmup, concurrency, Samples(), cap)
        for r in range(rounds):
            order = list(targets[r % len(targets) :]) + list(targets[: r % len(targets)])
            for t in order:
                per_round = max(1, int(n * t.weight) // rounds)
                await run_batch(session, t, per_round, concurrency, results[t.name], cap)
    return results


def use_uvloop() -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover
        pass


# -- tables -----------------------------------------------------------------------------------
def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            if v != v:  # nan
                return "-"
            return f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "  ".join(
        h.rjust(w) if i else h.ljust(w)
        for i, (h, w) in enumerate(zip(headers, widths, strict=True))
    )
    out = [line, "  ".join("-" * w for w in widths)]
    for r in cells:
        out.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(out)
