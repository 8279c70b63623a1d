"""The litellm route: non-OpenAI providers (Anthropic, Bedrock, Gemini, ...) behind OpenAI's API.

litellm is imported lazily, once, in a worker thread (it costs seconds) with the offline
environment of ``proxy.llm.offline``. Its response objects are not OpenAI-schema-true as dumped
(missing ``logprobs``/``refusal``, nulls where none are allowed, extra keys), so answers are
rebuilt field by field (``proxy.llm.openai_shape``). Errors come out as ``proxy.errors`` kinds
(``proxy.llm.litellm_errors``), mid-stream ones included.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from types import ModuleType
from typing import Any

from proxy.llm.litellm_errors import map_error
from proxy.llm.offline import import_litellm
from proxy.llm.openai_shape import as_dict, chunk_to_openai, completion_to_openai, usage_to_openai

log = logging.getLogger(__name__)

#: Body fields litellm may see: OpenAI's chat request (OpenAI's published schema) plus two common
#: provider extras. Anything else (``api_base``, ``api_key``, ``base_url``, ``mock_response``,
#: ...) would steer litellm itself, so it is dropped: routing and credentials come from config.
REQUEST_FIELDS = frozenset(
    """audio frequency_penalty function_call functions logit_bias logprobs max_completion_tokens
    max_tokens messages metadata modalities moderation n parallel_tool_calls prediction
    presence_penalty prompt_cache_key prompt_cache_options prompt_cache_retention
    reasoning_effort response_format safety_identifier seed service_tier stop store
    temperature tool_choice tools top_logprobs top_p user verbosity web_search_options
    top_k thinking""".split()
)


class LiteLLMChat:
    def __init__(self, *, timeout: float = 600.0) -> None:
        self._timeout = timeout
        self._module: ModuleType | None = None

    async def complete(self, body: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """One non-streaming completion, as an OpenAI ``chat.completion`` dict."""
        litellm = await self._litellm()
        try:
            response = await litellm.acompletion(**self._kwargs(body, params, stream=False))
        except Exception as exc:
            raise map_error(exc) from exc
        return completion_to_openai(as_dict(response), _public_model(body, params))

    async def stream(
        self, body: dict[str, Any], params: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        """OpenAI ``chat.completion.chunk`` dicts; with ``stream_options.include_usage`` every
        chunk carries ``usage: null`` and a last chunk has ``choices: []`` and the usage."""
        litellm = await self._litellm()
        options = body.get("stream_options")
        include_usage = isinstance(options, Mapping) and bool(options.get("include_usage"))
        model = _public_model(body, params)
        usage: Any = None
        head: dict[str, Any] = {}
        response: Any = None
        try:
            response = await litellm.acompletion(**self._kwargs(body, params, stream=True))
            async for chunk in response:
                data = as_dict(chunk)
                usage = data.get("usage") or usage
                out = chunk_to_openai(data, model, include_usage=include_usage)
                if out is not None:
                    head = out
                    yield out
        except Exception as exc:
            raise map_error(exc) from exc
        finally:
            aclose = getattr(response, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:
                    log.debug("closing the litellm stream failed", exc_info=True)
        if include_usage:
            yield {
                "id": head.get("id") or "chatcmpl-litellm",
                "object": "chat.completion.chunk",
                "created": head.get("created") or 0,
                "model": model,
                "choices": [],
                "usage": usage_to_openai(usage),
            }

    async def _litellm(self) -> ModuleType:
        if self._module is None:  # a thread keeps the event loop serving during the import
            self._module = await asyncio.to_thread(import_litellm)
        return self._module

    def _kwargs(self, body: Mapping[str, Any], params: Mapping[str, Any], *, stream: bool) -> dict:
        kwargs = {k: v for k, v in body.items() if k in REQUEST_FIELDS}
        dropped = set(body) - REQUEST_FIELDS - {"model", "stream", "stream_options"}
        if dropped:
            log.info("not forwarded to litellm: %s", ", ".join(sorted(dropped)))
        kwargs.update(params)
        kwargs["model"] = params.get("model") or body.get("model")
        kwargs["stream"] = stream
        if stream and body.get("stream_options") is not None:
            kwargs["stream_options"] = body["stream_options"]
        kwargs.setdefault("timeout", self._timeout)
        # litellm 1.106.2 imports its MCP-gateway handler (needs the ``mcp`` package, not a
        # dependency of ours) for any request with ``tools``; we never use that gateway.
        kwargs["_skip_mcp_handler"] = True
        return kwargs


def _public_model(body: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    return str(body.get("model") or params.get("model") or "")
