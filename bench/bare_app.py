"""The floor: the least a FastAPI + aiohttp pass-through can do, under the same uvicorn.

    python -m bench.bare_app --port 9002 --upstream http://127.0.0.1:9000/v1

``POST /v1/chat/completions`` posts the request bytes to the upstream with one shared
``aiohttp.ClientSession`` and relays the answer bytes (JSON body, or the SSE bytes as they
come). No auth, no parsing, no database, no headers of its own: what any proxy built this way
pays on this machine. The distance from here to the proxy is the proxy's own work.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse


def create_app(upstream: str) -> FastAPI:
    url = f"{upstream}/chat/completions"
    holder: dict[str, aiohttp.ClientSession] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        holder["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await holder["s"].close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.body()
        headers = {"Content-Type": "application/json", "Authorization": "Bearer x"}
        if b'"stream":true' not in body and b'"stream": true' not in body:
            async with holder["s"].post(url, data=body, headers=headers) as resp:
                return Response(await resp.read(), media_type="application/json")
        ctx = holder["s"].post(url, data=body, headers=headers)
        resp = await ctx.__aenter__()

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for data in resp.content.iter_any():
                    yield data
            finally:
                await ctx.__aexit__(None, None, None)

        return StreamingResponse(relay(), media_type="text/event-stream")

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
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
