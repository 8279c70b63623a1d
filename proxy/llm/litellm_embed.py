"""``POST /v1/embeddings`` for litellm routes: the answer in OpenAI's shape, vectors as
floats or, with ``encoding_format: base64``, little-endian float32 bytes in base64 (what the
OpenAI SDK asks for by default). The proxy's own fact embedder is ``proxy.llm.embeddings``."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from typing import Any

import numpy as np

from proxy.errors import BadRequest
from proxy.llm.litellm_errors import map_error
from proxy.llm.offline import import_litellm

#: Request fields litellm gets (``encoding_format`` is applied here, not by the provider).
FIELDS = ("input", "dimensions", "user")


def encode(vector: Any, encoding_format: str | None) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return [float(v) for v in vector]


async def litellm_embeddings(
    body: Mapping[str, Any], params: Mapping[str, Any], *, timeout_seconds: float = 600.0
) -> dict[str, Any]:
    encoding_format = body.get("encoding_format")
    if encoding_format not in (None, "float", "base64"):
        raise BadRequest("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    litellm = await asyncio.to_thread(import_litellm)
    kwargs: dict[str, Any] = {k: body[k] for k in FIELDS if body.get(k) is not None}
    kwargs.update(params)
    kwargs.setdefault("timeout", timeout_seconds)
    try:
        response = await litellm.aembedding(**kwargs)
    except Exception as exc:
        raise map_error(exc) from exc
    raw = response.model_dump() if hasattr(response, "model_dump") else dict(response)
    data = [
        {
            "object": "embedding",
            "index": item.get("index", i),
            "embedding": encode(item["embedding"], encoding_format),
        }
        for i, item in enumerate(raw.get("data") or [])
    ]
    usage = raw.get("usage") or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    return {
        "object": "list",
        "data": data,
        "model": str(body.get("model")),
        "usage": {
            "prompt_tokens": prompt,
            "total_tokens": int(usage.get("total_tokens") or prompt),
        },
    }
