"""Which upstream serves a model: the OpenAI-compatible pass-through or litellm."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from proxy.config import ModelEntry, Settings, resolve_secret

OPENAI_API_BASE = "https://api.openai.com/v1"
#: litellm provider prefixes whose wire format is OpenAI's own: relayed byte for byte.
OPENAI_COMPATIBLE = frozenset({"openai", "custom_openai", "hosted_vllm", "openai_like"})


@dataclass(frozen=True, slots=True)
class Route:
    kind: Literal["passthrough", "litellm"]
    model: str  # the model name the upstream is asked for
    api_base: str | None
    api_key: str | None
    litellm_params: dict[str, Any] = field(default_factory=dict)
    responses_api: bool = True  # the upstream serves POST /responses (pass-through routes)


class UpstreamRouter:
    def __init__(self, settings: Settings) -> None:
        """Resolves every configured route (and ``os.environ/`` reference) once, at start-up."""
        self.default_api_base = (settings.upstream.api_base or OPENAI_API_BASE).rstrip("/")
        self.default_api_key = resolve_secret(settings.upstream.api_key)
        self._responses_api = settings.upstream.responses_api
        self._routes = {m.model_name: _route(m) for m in settings.model_list}

    @property
    def model_names(self) -> list[str]:
        return list(self._routes)

    def resolve(self, model: str) -> Route:
        """The configured route of ``model``; a model not in the list goes to the upstream."""
        route = self._routes.get(model)
        if route is None:
            return Route(
                "passthrough",
                model,
                self.default_api_base,
                self.default_api_key,
                responses_api=self._responses_api,
            )
        return route


def _route(entry: ModelEntry) -> Route:
    params = entry.litellm_params
    provider, _, name = params.model.partition("/")
    api_key = resolve_secret(params.api_key)
    api_base = resolve_secret(params.api_base)
    if not name:  # no provider prefix: an OpenAI-compatible server (or OpenAI itself)
        provider, name = "openai", params.model
    if provider in OPENAI_COMPATIBLE:
        base = (api_base or OPENAI_API_BASE).rstrip("/")
        return Route("passthrough", name, base, api_key, responses_api=entry.responses_api)
    extra = {
        k: resolve_secret(v) if isinstance(v, str) else v
        for k, v in (params.model_extra or {}).items()
    }
    litellm_params = {"model": params.model, **extra}
    if api_base:
        litellm_params["api_base"] = api_base
    if api_key:
        litellm_params["api_key"] = api_key
    return Route("litellm", params.model, api_base, api_key, litellm_params)
