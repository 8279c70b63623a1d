"""The baseline: a bare ``litellm.acompletion`` pass-through behind FastAPI, under uvicorn.

    python -m bench.litellm_app --port 9001 --upstream http://127.0.0.1:9000/v1

``POST /v1/chat/completions`` forwards the body to ``openai/<model>`` at ``--upstream`` and
returns ``model_dump_json()`` (non-streaming) or each chunk's ``model_dump_json()`` as an SSE
event, then ``data: [DONE]``. No auth, no validation, no memory: what "just use litellm" costs.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

from proxy.llm.offline import import_litellm


def create_app(upstream: str) -> FastAPI:
    litellm = import_litellm()  # LITELLM_LOCAL_MODEL_COST_MAP etc. set before the import
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body: dict[str, Any] = orjson.loads(await request.body())
        model = body.pop("model")
        response = await litellm.acompletion(
            model=f"openai/{model}", api_base=upstream, api_key="x", **body
        )
        if not body.get("stream"):
            return Response(response.model_dump_json(), media_type="application/json")

        async def events() -> AsyncIterator[bytes]:
            async for chunk in response:
                yield b"data: " + chunk.model_dump_json().encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    # The same uvicorn settings as ``profilo serve`` (proxy/cli.py).
    uvicorn.run(
        create_app(args.upstream),
        host="127.0.0.1",
        port=args.port,
        log_level=args.log_level,
        proxy_headers=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
