"""The models a client can use: ``model_list`` entries and the default upstream's own list.

``GET /v1/models`` is the union of the configured names and what the default upstream's
``GET /models`` answers (fetched with the operator's key, cached for
``upstream.models_ttl_seconds``; one fetch at a time; a failed fetch keeps serving the
configured entries and the last good list, and is retried after ``models_retry_seconds``).
Each id appears once; a configured name wins over an upstream id of the same name.
The list is the same for every account (it holds no tenant data).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from proxy.config import UpstreamSettings
from proxy.errors import NotFound, ProxyError
from proxy.llm.passthrough import Passthrough
from proxy.llm.router import UpstreamRouter
from proxy.llm.urls import is_safe_segment, segment, upstream_url

log = logging.getLogger("profilo.models")


class ModelCatalog:
    def __init__(
        self,
        router: UpstreamRouter,
        passthrough: Passthrough,
        settings: UpstreamSettings,
        started_at: float,
        *,
        clock: Any = time.monotonic,
    ) -> None:
        self._router = router
        self._passthrough = passthrough
        self._settings = settings
        self._created = int(started_at)
        self._clock = clock
        self._upstream: list[dict[str, Any]] = []
        self._fresh_until = 0.0
        self._lock = asyncio.Lock()

    @property
    def _fetches(self) -> bool:
        """The default upstream is asked only when the operator configured it (a base or a
        key): a proxy serving only ``model_list`` never calls api.openai.com for a list."""
        return bool(self._settings.api_base or self._router.default_api_key)

    def _configured(self) -> list[dict[str, Any]]:
        return [
            {"id": name, "object": "model", "created": self._created, "owned_by": "profilo"}
            for name in self._router.model_names
        ]

    async def _refresh(self) -> None:
        if not self._fetches or self._clock() < self._fresh_until:
            return
        async with self._lock:  # concurrent lists wait for one fetch
            if self._clock() < self._fresh_until:
                return
            try:
                self._upstream = await self._fetch()
                self._fresh_until = self._clock() + self._settings.models_ttl_seconds
            except (ProxyError, ValueError) as exc:
                log.warning("the upstream's model list could not be read: %s", exc)
                self._fresh_until = self._clock() + self._settings.models_retry_seconds

    async def _fetch(self) -> list[dict[str, Any]]:
        url = upstream_url(self._router.default_api_base, "models")
        reply = await asyncio.wait_for(
            self._passthrough.request("GET", url, self._router.default_api_key),
            self._settings.models_timeout_seconds,
        )
        data = orjson.loads(reply.body).get("data")
        if not isinstance(data, list):
            raise ValueError("the answer holds no 'data' list")
        models = []
        for item in data:
            if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]:
                models.append(
                    {
                        "id": item["id"],
                        "object": "model",
                        "created": item.get("created")
                        if isinstance(item.get("created"), int)
                        else self._created,
                        "owned_by": str(item.get("owned_by") or "upstream"),
                    }
                )
        return models

    async def list(self) -> list[dict[str, Any]]:
        await self._refresh()
        seen: dict[str, dict[str, Any]] = {m["id"]: m for m in self._configured()}
        for model in self._upstream:
            seen.setdefault(model["id"], model)
        return list(seen.values())

    async def get(self, model_id: str) -> dict[str, Any] | bytes:
        """One model: from the list when it is there, else asked of the default upstream
        (only as one safe path segment); unknown -> 404 ``model_not_found``."""
        for model in self._configured():
            if model["id"] == model_id:
                return model  # no upstream call for a configured name
        for model in await self.list():
            if model["id"] == model_id:
                return model
        if not self._fetches or not is_safe_segment(model_id):
            raise _not_found(model_id)
        url = upstream_url(
            self._router.default_api_base, "models", segment(model_id, param="model")
        )
        return (await self._passthrough.request("GET", url, self._router.default_api_key)).body


def _not_found(model_id: str) -> NotFound:
    return NotFound(
        f"The model '{model_id[:200]}' does not exist", param="model", code="model_not_found"
    )
