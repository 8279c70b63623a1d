"""A lean fake OpenAI-compatible upstream for benchmarks (no recording, no delays).

    python -m bench.upstream --port 9000 [--chunks 20]

``POST /v1/chat/completions`` answers a fixed ``chat.completion`` JSON, or, when the body asks
for ``"stream": true``, an SSE stream of ``--chunks`` chunks (role, content pieces, finish
reason; with ``stream_options.include_usage`` a last usage chunk) and ``data: [DONE]``, each
chunk written as its own event without delay.
Every other route: 200 ``{}`` (used as the readiness probe).
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson
from aiohttp import web

CREATED = int(time.time())
ID = "chatcmpl-bench0000000000000000000000"


def completion(model: str) -> bytes:
    return orjson.dumps(
        {
            "id": ID,
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "system_fingerprint": "fp_bench",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "Try the little Thai place on the corner: "
                        "the green curry is excellent and it is open late.",
                        "refusal": None,
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 42, "completion_tokens": 20, "total_tokens": 62},
        }
    )


def stream_events(model: str, chunks: int, include_usage: bool = False) -> list[bytes]:
    def event(delta: dict[str, object], finish: str | None = None) -> bytes:
        obj = {
            "id": ID,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "system_fingerprint": "fp_bench",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    pieces = max(chunks - 2, 1)
    out = [event({"role": "assistant", "content": ""})]
    out += [event({"content": f" word{i}"}) for i in range(pieces)]
    out.append(event({}, "stop"))
    if include_usage:  # OpenAI's last chunk: no choices, the usage
        usage = {"prompt_tokens": 42, "completion_tokens": pieces, "total_tokens": 42 + pieces}
        obj = {"id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": model,
               "system_fingerprint": "fp_bench", "choices": [], "usage": usage}  # fmt: skip
        out.append(b"data: " + orjson.dumps(obj) + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return out


def make_app(chunks: int) -> web.Application:
    json_cache: dict[str, bytes] = {}
    sse_cache: dict[tuple[str, bool], list[bytes]] = {}

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            req = orjson.loads(body)
            model = str(req.get("model") or "bench-model")
            stream = bool(req.get("stream"))
            options = req.get("stream_options")
            usage = isinstance(options, dict) and options.get("include_usage") is True
        except (orjson.JSONDecodeError, AttributeError):
            return web.json_response({"error": {"message": "bad json"}}, status=400)
        if not stream:
            data = json_cache.get(model) or json_cache.setdefault(model, completion(model))
            return web.Response(body=data, content_type="application/json")
        events = sse_cache.get((model, usage)) or sse_cache.setdefault(
            (model, usage), stream_events(model, chunks, usage)
        )
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        for ev in events:
            await resp.write(ev)
        await resp.write_eof()
        return resp

    async def other(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b"{}", content_type="application/json")

    app = web.Application(client_max_size=1 << 30)  # any body the proxy accepts
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_route("*", "/{tail:.*}", other)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=20)
    args = parser.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    web.run_app(
        make_app(args.chunks), host="127.0.0.1", port=args.port, access_log=None, print=None
    )


if __name__ == "__main__":
    main()
