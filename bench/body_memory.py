"""RSS of a real server after large request bodies: does memory come back?

    python -m bench.body_memory [--bodies 10] [--mib 8]

Starts the proxy in a child process with ``profilo serve``'s uvicorn settings and reports its
RSS at start (the baseline, same run), after N concurrent anonymous bodies (refused with 401
from the headers: never read) and after N concurrent authenticated bodies of the same size
(read whole, then a 400), each time once the requests ended.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

STATUSES: dict[object, int] = {}

CHILD = """
import sys, uvicorn
from proxy.app import create_app
from proxy.config import load_settings
from proxy.server import uvicorn_options
settings = load_settings(None, data_dir=sys.argv[1], port=int(sys.argv[2]))
uvicorn.run(create_app(settings), **uvicorn_options(settings), log_level="warning")
"""


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _send(url: str, body: bytes, headers: dict[str, str]) -> None:
    try:
        r = httpx.post(url + "/v1/profile/search", content=body, headers=headers, timeout=60)
        STATUSES[r.status_code] = STATUSES.get(r.status_code, 0) + 1
    except httpx.HTTPError as exc:  # an anonymous upload may be cut off after its 401
        STATUSES[type(exc).__name__] = STATUSES.get(type(exc).__name__, 0) + 1


def run(bodies: int, mib: int) -> list[float]:
    data = Path(tempfile.mkdtemp(prefix="profilo-bodies-"))
    from proxy.store.db import Database
    from proxy.store.keys import KeyStore

    token = KeyStore(Database(data / "profilo.sqlite3")).create("bench")[1]
    port = _port()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(data), str(port)], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        time.sleep(1)
        out = [_rss_mib(child.pid)]
        body = b'{"query": "' + b"x" * (mib * 1024 * 1024) + b'"}'
        for auth in ({}, {"Authorization": f"Bearer {token}"}):
            headers = {"Content-Type": "application/json", **auth}
            with ThreadPoolExecutor(bodies) as pool:  # all at once, as an attack would
                list(pool.map(_send, [url] * bodies, [body] * bodies, [headers] * bodies))
            time.sleep(2)
            out.append(_rss_mib(child.pid))
        return out
    finally:
        child.terminate()
        child.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bodies", type=int, default=10)
    parser.add_argument("--mib", type=int, default=8)
    args = parser.parse_args()
    rss = run(args.bodies, args.mib)
    print(f"{args.bodies} concurrent bodies of {args.mib} MiB; RSS once the requests ended")
    names = ("at start (baseline)", "after anonymous bodies (401)", "after authenticated (400)")
    for name, value in zip(names, rss, strict=True):
        print(f"{name:32} {value:7.0f} MiB  ({value / rss[0]:.2f}x)")
    print("answers:", STATUSES)


if __name__ == "__main__":
    main()
