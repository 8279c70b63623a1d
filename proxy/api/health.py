"""Liveness and readiness for orchestrators (no auth)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter()


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz", summary="Readiness: records, vector index and embedder answer; not shutting down"
)
async def readyz(request: Request) -> Any:
    ready, body = await request.app.state.readiness.report()  # proxy/services/readiness.py
    return JSONResponse(body, 200 if ready else 503)
