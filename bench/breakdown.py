"""Where the proxy's time goes per request, measured in this process (no sockets but the
upstream call): each step of the chat path timed on its own, and the whole ASGI app called
directly (proxy vs the bare FastAPI + aiohttp app), so network and uvicorn are left out.

Used by ``bench.bench_proxy``; ``python -m bench.breakdown --upstream URL`` runs it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import pstats
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from io import StringIO
from pathlib import Path
from typing import Any

from fastapi import Request

from bench.common import chat_body, table
from bench.serve import index_available, install_index_stub


def _per_call_us(fn: Callable[[], Any], n: int, repeats: int = 5) -> float:
    best = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(best)


async def _per_call_us_async(fn: Callable[[], Awaitable[Any]], n: int, repeats: int = 5) -> float:
    best = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            await fn()
        best.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(best)


class AsgiDriver:
    """Calls an ASGI app with one POST and collects the answer (no network, no uvicorn)."""

    def __init__(self, app: Any, path: str, body: bytes) -> None:
        self.app = app
        self.body = body
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"host", b"127.0.0.1"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8080),
        }

    async def __call__(self) -> int:
        sent = False
        status = 0
        done = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": self.body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                done.set()

        await self.app(dict(self.scope), receive, send)
        if status != 200:
            raise RuntimeError(f"status {status}")
        return status


def _settings(data_dir: Path, upstream: str) -> Any:
    from proxy.config import Settings

    return Settings(
        data_dir=data_dir,
        upstream={"api_base": upstream, "api_key": "x"},
        embedding={"cache_dir": "/tmp/profilo-test-models"},
    )


def steps(upstream: str, work: Path, n: int = 2000) -> list[tuple[str, float]]:
    """Per-call cost (µs) of each step a pass-through chat request takes."""
    if not index_available():
        install_index_stub()
    import anyio.to_thread
    import orjson

    from proxy.app import build_services
    from proxy.deps import DEV_ACCOUNT
    from proxy.llm.offline import prepare_offline_env
    from proxy.middleware import new_request_id
    from proxy.schemas.openai import parse_chat_request

    prepare_offline_env()
    services = build_services(_settings(work / "data-steps", upstream))
    body = chat_body(False)
    chat = parse_chat_request(body)
    out = [
        ("keys.any_exist() (SQLite, every request with no key)", services.keys.any_exist),
        (
            "keys.authenticate(token) (SQLite, every keyed request)",
            lambda: services.keys.authenticate("pk-not-a-key"),
        ),
        ("account_config.get(account) (SQLite)", lambda: services.account_config.get("dev")),
        (
            "chat.features(account, chat) (incl. the above)",
            lambda: services.chat.features(DEV_ACCOUNT, chat),
        ),
        ("parse_chat_request(body)", lambda: parse_chat_request(body)),
        ("orjson.dumps(body) (re-serialize to forward)", lambda: orjson.dumps(chat.body)),
        ("new_request_id() (uuid4)", new_request_id),
    ]
    results = [(name, _per_call_us(fn, n)) for name, fn in out]

    async def hops() -> list[tuple[str, float]]:
        def noop() -> None:
            return None

        return [
            (
                "anyio.to_thread.run_sync(noop) (a sync dependency)",
                await _per_call_us_async(lambda: anyio.to_thread.run_sync(noop), n // 4),
            ),
            (
                "asyncio.to_thread(noop)",
                await _per_call_us_async(lambda: asyncio.to_thread(noop), n // 4),
            ),
        ]

    results += asyncio.run(hops())
    services.index.close()
    services.db.close()
    return results


def _async_account_app(settings: Any) -> Any:
    """The proxy with ``current_account`` served as an ``async def`` (same body) through
    ``dependency_overrides``: what the sync dependency's threadpool hop costs."""
    from proxy.app import create_app
    from proxy.deps import current_account

    app = create_app(settings)

    async def current_account_async(request: Request) -> Any:
        return current_account(request)

    app.dependency_overrides[current_account] = current_account_async
    return app


def apps(upstream: str, work: Path, n: int = 300, rounds: int = 7) -> dict[str, dict[str, float]]:
    """The whole ASGI app per request (upstream call included), JSON and SSE: the bare relay,
    the proxy, and the proxy with an async ``current_account``. The three apps are started
    once each and called in turn, ``rounds`` times ``n`` requests; the median round counts."""
    if not index_available():
        install_index_stub()
    from bench.bare_app import create_app as bare_app
    from proxy.app import create_app

    out: dict[str, dict[str, float]] = {}
    for stream in (False, True):
        key = "streaming" if stream else "non-streaming"
        made = {
            "bare": bare_app(upstream),
            "proxy": create_app(_settings(work / f"data-apps-{key}", upstream)),
            "proxy, async current_account": _async_account_app(
                _settings(work / f"data-apps-{key}-async", upstream)
            ),
        }
        out[key] = asyncio.run(_interleaved(made, chat_body(stream), n, rounds))
    return out


async def _interleaved(made: dict[str, Any], body: bytes, n: int, rounds: int) -> dict[str, float]:
    runs: dict[str, list[float]] = {name: [] for name in made}
    async with contextlib.AsyncExitStack() as stack:
        drivers = {}
        for name, app in made.items():
            await stack.enter_async_context(app.router.lifespan_context(app))
            drivers[name] = AsgiDriver(app, "/v1/chat/completions", body)
            for _ in range(100):
                await drivers[name]()
        for _ in range(rounds):
            for name, drive in drivers.items():
                runs[name].append(await _per_call_us_async(drive, n, repeats=1))
    return {name: statistics.median(v) for name, v in runs.items()}


def profile_app(upstream: str, work: Path, n: int = 3000) -> str:
    """cProfile of the proxy's ASGI app called in-process, ``n`` non-streaming requests."""
    if not index_available():
        install_index_stub()
    from proxy.app import create_app

    app = create_app(_settings(work / "data-profile", upstream))
    drive = AsgiDriver(app, "/v1/chat/completions", chat_body(False))
    prof = cProfile.Profile()

    async def loop() -> None:
        async with app.router.lifespan_context(app):
            for _ in range(100):
                await drive()
            prof.enable()
            for _ in range(n):
                await drive()
            prof.disable()

    asyncio.run(loop())
    buf = StringIO()
    stats = pstats.Stats(prof, stream=buf).strip_dirs()
    stats.sort_stats("tottime").print_stats(20)
    return buf.getvalue()


def run(upstream: str, work: Path, *, profile: bool = False) -> dict[str, Any]:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    s = steps(upstream, work)
    a = apps(upstream, work)
    print("\n## where the proxy's time goes (in-process, µs per call, median of 5 runs)")
    print(table(["step", "µs"], [[name, us] for name, us in s]))
    rows = []
    for key, v in a.items():
        for name, us in v.items():
            rows.append([f"{key}: {name}", us, us - v["bare"], us / v["bare"]])
    print(
        "\nwhole ASGI app per request, called in-process (upstream call included, no client"
        " socket, no uvicorn; median of 7 interleaved rounds):"
    )
    print(table(["app", "µs/request", "- bare µs", "÷ bare"], rows))
    result: dict[str, Any] = {"steps_us": dict(s), "asgi_app_us": a}
    if profile:
        text = profile_app(upstream, work)
        print("\ncProfile of the proxy's ASGI app in-process (non-streaming):\n" + text)
        result["profile"] = text
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:9000/v1")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    run(args.upstream, Path(tempfile.mkdtemp(prefix="profilo-breakdown-")), profile=args.profile)


if __name__ == "__main__":
    main()
