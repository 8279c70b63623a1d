"""GET /metrics: Prometheus text format. No key unless ``metrics.require_key`` (scrapers
usually send none; the page holds aggregate counts only, no user data)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from proxy.deps import authenticate, get_services
from proxy.errors import NotFound
from proxy.metrics import CONTENT_TYPE, Metrics

router = APIRouter(tags=["operations"])


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    settings = get_services(request).settings.metrics
    if not settings.enabled:
        raise NotFound("metrics are disabled (metrics.enabled: false)", code="unknown_url")
    if settings.require_key:
        authenticate(request)  # 401 without a valid key (the dev account on loopback)
    registry: Metrics = request.app.state.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE)
