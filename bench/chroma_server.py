"""A Chroma server (``chroma run``) on 127.0.0.1 over a directory: tests and the cluster harness.

``start()`` waits for its heartbeat; ``stop()`` ends it (SIGTERM, then SIGKILL); ``start()``
again serves the same path on the same port (an outage and its end).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

#: What the ``chroma`` CLI script (``.venv/bin/chroma``, next to ``sys.executable``) runs:
#: ``chromadb.cli.cli.app`` hands argv to the Rust CLI. Called directly, because the script
#: first imports all of ``chromadb`` (5-12 s per start on a 2-core box) before doing just this.
_CHROMA_CLI = "import sys, chromadb_rust_bindings; chromadb_rust_bindings.cli(sys.argv[1:])"


def chroma_command(*args: str) -> list[str]:
    """``chroma ARGS...`` in the running interpreter's environment."""
    return [sys.executable, "-c", _CHROMA_CLI, "chroma", *args]


class ChromaStartError(RuntimeError):
    pass


@dataclass
class ChromaServer:
    path: Path
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 60.0) -> ChromaServer:
        env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                chroma_command(
                    "run", "--path", str(self.path), "--host", "127.0.0.1", "--port", str(self.port)
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1) as http:
            while True:
                if self.proc.poll() is not None:
                    raise ChromaStartError(
                        f"chroma run exited with {self.proc.returncode}:\n{self.log.read_text()}"
                    )
                try:
                    if http.get(self.url + "/api/v2/heartbeat").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise ChromaStartError(
                        f"chroma run did not answer its heartbeat:\n{self.log.read_text()}"
                    )
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
        self.proc = None

    def client(self) -> Any:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        return chromadb.HttpClient(
            host="127.0.0.1", port=self.port, settings=ChromaSettings(anonymized_telemetry=False)
        )
