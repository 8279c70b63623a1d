"""A local rerank endpoint for latency runs: ``POST /v1/rerank`` (Cohere's shape) answering
the documents in the order given, at once. It measures what the reranking stage costs besides
the model (litellm, HTTP on loopback, reading the candidates' texts), not a model.

    with FakeRerankServer() as url: ...     # http://127.0.0.1:PORT
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        n = len(body.get("documents", []))
        results = [{"index": i, "relevance_score": 1.0 - i / max(n, 1)} for i in range(n)]
        data = json.dumps({"id": "rr", "results": results, "meta": {}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        return


class FakeRerankServer:
    def __init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
