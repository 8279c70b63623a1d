"""Liveness and readiness for orchestrators (no auth)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from proxy.deps import get_services

router = APIRouter()


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the records database answers")
async def readyz(request: Request) -> Any:
    services = get_services(request)
    checks: dict[str, str] = {}
    try:
        with services.db.read() as conn:
            conn.execute("SELECT 1").fetchone()
        checks["records"] = "ok"
    except Exception as exc:  # readiness reports, it does not raise
        checks["records"] = f"error: {exc}"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503
    )
