"""The rest of OpenAI's surface, relayed to the model's upstream: embeddings, legacy
completions, moderations (one model by id: proxy/services/models.py).

OpenAI-compatible routes get the body relayed byte for byte (a streamed completion as SSE).
Embeddings of a litellm route go through ``litellm.aembedding``. A route that cannot serve
the endpoint, or an upstream answering 404/405 there, is a clear OpenAI-style 404
(``unsupported_endpoint``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from proxy.errors import BadRequest, NotFound, ProxyError, UpstreamError
from proxy.llm.passthrough import Passthrough
from proxy.llm.router import Route, UpstreamRouter
from proxy.services.chat import ChatOutcome
from proxy.services.sse import relay

#: The model a moderation request without one is sent to (OpenAI's own default).
DEFAULT_MODERATION_MODEL = "omni-moderation-latest"

LiteLLMEmbed = Callable[[dict[str, Any], dict[str, Any]], Awaitable[dict[str, Any]]]


def _unsupported(endpoint: str, model: str, why: str) -> NotFound:
    return NotFound(
        f"{endpoint} is not served for model '{model}': {why}", code="unsupported_endpoint"
    )


class OpenAIRelay:
    def __init__(
        self,
        router: UpstreamRouter,
        passthrough: Passthrough,
        litellm_embed: LiteLLMEmbed,
    ) -> None:
        self._router = router
        self._passthrough = passthrough
        self._litellm_embed = litellm_embed

    def _model(self, body: dict[str, Any], default: str | None = None) -> str:
        model = body.get("model", default)
        if model is None:
            raise BadRequest("you must provide a model parameter", param="model")
        if not isinstance(model, str) or not model.strip():
            raise BadRequest("'model' must be a non-empty string", param="model")
        return model

    async def _post(self, endpoint: str, route: Route, model: str, body: dict[str, Any]) -> bytes:
        url = f"{route.api_base}/{endpoint}"
        payload = orjson.dumps({**body, "model": route.model})
        try:
            return (await self._passthrough.request("POST", url, route.api_key, payload)).body
        except UpstreamError as exc:
            raise _missing(exc, endpoint, model, route) from exc

    async def embeddings(self, body: dict[str, Any]) -> bytes:
        model = self._model(body)
        if body.get("input") is None:
            raise BadRequest("'input' is a required property", param="input")
        route = self._router.resolve(model)
        if route.kind == "passthrough":
            return await self._post("embeddings", route, model, body)
        return orjson.dumps(
            await self._litellm_embed({**body, "model": model}, route.litellm_params)
        )

    async def moderations(self, body: dict[str, Any]) -> bytes:
        model = self._model(body, DEFAULT_MODERATION_MODEL)
        route = self._router.resolve(model)
        if route.kind != "passthrough":
            raise _unsupported("POST /v1/moderations", model, "it is served through litellm")
        return await self._post("moderations", route, model, body)

    async def completions(self, body: dict[str, Any]) -> ChatOutcome:
        model = self._model(body)
        route = self._router.resolve(model)
        if route.kind != "passthrough":
            raise _unsupported(
                "POST /v1/completions (legacy)",
                model,
                "it is served through litellm; use POST /v1/chat/completions",
            )
        if not body.get("stream"):
            return ChatOutcome(json=await self._post("completions", route, model, body))
        url = f"{route.api_base}/completions"
        cm = self._passthrough.stream(
            url, route.api_key, orjson.dumps({**body, "model": route.model})
        )
        try:
            events = await cm.__aenter__()
        except UpstreamError as exc:
            raise _missing(exc, "completions", model, route) from exc

        return ChatOutcome(stream=relay(events, cm))


def _missing(exc: UpstreamError, endpoint: str, model: str, route: Route) -> ProxyError:
    """An upstream's 404/405 on the endpoint itself (not on the model) said clearly."""
    if exc.status in (404, 405) and exc.code != "model_not_found":
        return _unsupported(
            f"POST /v1/{endpoint}", model, f"the upstream {route.api_base} does not serve it"
        )
    return exc
