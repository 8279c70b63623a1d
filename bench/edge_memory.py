"""Memory of ``profilo serve`` around large request bodies (README "Connection limits").

    python -m bench.edge_memory [--mib 8] [--count 10] [--root DIR]

Starts the fake upstream and ``profilo serve`` (through ``bench.serve``, so exactly the
production server settings) with one API key, then reads the server's RSS (``/proc``):

1. after a warm-up (a few small chats);
2. after ``--count`` anonymous POSTs of ``--mib`` MiB each, all at once (sent whole, as an
   attacker would);
3. after ``--count`` authenticated chats at once, each with an image data URL of ``--mib``
   MiB, relayed to the upstream;
4. the same with bodies five times larger;
5. after 5 s idle.

``--root`` runs another checkout's server (e.g. an older commit, for a before/after figure).
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench import rss
from bench.common import PYTHON, ROOT, free_port, spawn

MODEL_CACHE = Path(tempfile.gettempdir()) / "profilo-test-models"  # the tests' shared cache


def _mib(pid: int) -> float:
    return round(rss.read(pid, 0.0).rss / 1024, 1)


class Peak:
    """The highest RSS of ``pid`` while the ``with`` block runs (sampled every 2 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.mib, self._stop = pid, 0.0, threading.Event()

    def _sample(self) -> None:
        while True:
            self.mib = max(self.mib, _mib(self.pid))
            if self._stop.wait(0.002):
                return

    def __enter__(self) -> Peak:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _anonymous(url: str, size: int) -> str:
    """POST ``size`` bytes with no key on a raw socket; the status line of the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: " + str(size).encode() + b"\r\n\r\n"
        )
        block = b"x" * (1 << 20)
        try:
            for _ in range(size // len(block)):
                sock.sendall(block)
        except OSError:
            pass  # the server answered and closed before the body was sent
        answer = b""
        try:
            while b"\r\n" not in answer and (chunk := sock.recv(4096)):
                answer += chunk
        except OSError:
            pass
    return answer.split(b"\r\n", 1)[0].decode() or "(no answer)"


def _chat(client: httpx.Client, url: str, key: str, size: int) -> int:
    image = base64.b64encode(os.urandom(size * 3 // 4)).decode()
    body = {
        "model": "bench-model",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + image}},
                ],
            }
        ],
    }
    r = client.post(url + "/v1/chat/completions", json=body, headers={"Authorization": key})
    return r.status_code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=8)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--root", type=Path, default=ROOT)
    args = parser.parse_args()
    size = args.mib * 1024 * 1024
    work = Path(tempfile.mkdtemp(prefix="profilo-edge-mem-"))
    up_port, port = free_port(), free_port()
    config = work / "config.yaml"
    config.write_text(
        f"data_dir: {work / 'data'}\n"
        f"upstream: {{api_base: 'http://127.0.0.1:{up_port}/v1', api_key: sk-bench}}\n"
        f"embedding: {{cache_dir: '{MODEL_CACHE}'}}\n"
        "learning: {run_worker: false}\nlog_level: warning\nmax_body_bytes: 104857600\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{args.root}{os.pathsep}{ROOT}"}
    made = subprocess.run(
        [PYTHON, "-m", "proxy", "--config", str(config), "keys", "create", "bench"],
        cwd=args.root, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    key = "Bearer " + made.stdout.strip().splitlines()[0]
    upstream = spawn("upstream", ["-m", "bench.upstream", "--port", str(up_port)], up_port, work)
    server = spawn(
        "proxy",
        ["-m", "bench.serve", "--config", str(config), "serve", "--port", str(port)],
        port, work, env={"PYTHONPATH": env["PYTHONPATH"]}, ready_path="/healthz",
    )  # fmt: skip
    pid = server.proc.pid
    try:
        with httpx.Client(timeout=120) as client:
            print(f"after start: {_mib(pid)} MiB")
            for _ in range(5):
                assert _chat(client, server.url, key, 1024) == 200
            print(f"after warm-up (5 small chats): {_mib(pid)} MiB")
            pool = ThreadPoolExecutor(args.count)
            with Peak(pid) as peak:
                answers = set(pool.map(lambda _: _anonymous(server.url, size), range(args.count)))
            print(
                f"after {args.count} anonymous {args.mib} MiB bodies {answers}: {_mib(pid)} MiB "
                f"(peak {peak.mib} MiB)"
            )
            for n in (1, 5):
                sizes = [n * size] * args.count
                with Peak(pid) as peak:
                    codes = set(pool.map(lambda s: _chat(client, server.url, key, s), sizes))
                time.sleep(1)  # the last responses' buffers are freed as their tasks end
                print(
                    f"after {args.count} authenticated chats with a {n * args.mib} MiB image "
                    f"{codes}: {_mib(pid)} MiB (peak {peak.mib} MiB)"
                )
            time.sleep(5)
            print(f"after 5 s idle: {_mib(pid)} MiB")
    finally:
        server.stop()
        upstream.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
