"""One ``profilo serve`` process of the cluster harness (``bench/cluster.py``), and the ports."""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Replica:
    index: int
    port: int
    data_dir: Path
    log: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        cmd = [sys.executable, "-m", "proxy", "--data-dir", str(self.data_dir)]
        cmd += ["serve", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,  # Ctrl-C is the harness's
            )  # fmt: skip

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as http:
            while True:
                if not self.alive:
                    code = self.proc.returncode if self.proc else None
                    raise RuntimeError(f"replica {self.index} exited ({code}):\n{self.tail()}")
                with contextlib.suppress(httpx.TransportError):
                    if http.get(self.url + "/readyz").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"replica {self.index} not ready in {timeout}s:\n"
                                       f"{self.tail()}")  # fmt: skip
                time.sleep(0.1)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise

    def terminate(self) -> None:
        """SIGTERM: it drains, then exits (``join``)."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)

    def join(self, timeout: float = 60.0) -> None:
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.wait_exit(timeout)  # SIGKILL past the timeout
        self.proc = None

    def stop(self, timeout: float = 60.0) -> None:
        self.terminate()
        self.join(timeout)

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def reserve_ports(count: int) -> list[int]:
    """Free loopback ports below the ephemeral range (32768+ on Linux), so that neither
    another pick nor an outgoing connection takes one while its process restarts."""
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < count:
        port = rng.randrange(20000, 32000)
        if port in ports:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    return ports
