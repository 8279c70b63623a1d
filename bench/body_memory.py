"""RSS of a real server after large request bodies, with and without the fixed mmap threshold.

    python -m bench.body_memory [--bodies 10] [--mib 8]

Starts the proxy twice in a child process (``profilo serve``'s settings; once with
``proxy.server.return_large_buffers_to_the_os`` as ``profilo serve`` does, once without: the
baseline), and reports its RSS at start, after N anonymous bodies (refused with 401 from the
headers: never read), and after N authenticated bodies of the same size (read whole, then a
400), each time after the requests ended. Same run, same machine: compare the two columns.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

CHILD = """
import sys, uvicorn
from proxy.app import create_app
from proxy.config import load_settings
from proxy.server import return_large_buffers_to_the_os, uvicorn_options
settings = load_settings(None, data_dir=sys.argv[1], port=int(sys.argv[2]))
if sys.argv[3] == "1":
    return_large_buffers_to_the_os()
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


def run(mallopt: bool, bodies: int, mib: int) -> list[float]:
    data = Path(tempfile.mkdtemp(prefix="profilo-bodies-"))
    from proxy.store.db import Database
    from proxy.store.keys import KeyStore

    token = KeyStore(Database(data / "profilo.sqlite3")).create("bench")[1]
    port = _port()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data), str(port), "1" if mallopt else "0"], env=env
    )
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
        for auth in (None, f"Bearer {token}"):
            headers = {"Content-Type": "application/json"}
            if auth:
                headers["Authorization"] = auth
            for _ in range(bodies):
                try:
                    httpx.post(url + "/v1/profile/search", content=body, headers=headers,
                               timeout=60)  # fmt: skip
                except httpx.HTTPError:
                    pass  # an anonymous upload is cut off once the 401 is sent
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
    with_fix = run(True, args.bodies, args.mib)
    without = run(False, args.bodies, args.mib)
    print(f"{args.bodies} bodies of {args.mib} MiB each; RSS in MiB after the requests ended")
    print(f"{'':34} {'profilo serve':>14} {'no mallopt':>11}")
    for i, what in enumerate(
        ("at start", "after anonymous bodies (401)", "after authenticated bodies")
    ):
        print(f"{what:34} {with_fix[i]:14.0f} {without[i]:11.0f}")


if __name__ == "__main__":
    main()
