"""/v1/admin/queue: the caller account's learning queue (counts, depth, latency, failures,
dropped operations)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from proxy.deps import current_account, get_services
from proxy.models import Account

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.get("/queue", summary="The account's learning queue")
def queue(request: Request, account: Account = Depends(current_account)) -> dict[str, Any]:
    services = get_services(request)
    return {
        "object": "learning.queue",
        "account": account.id,
        **services.jobs.stats(account.id),
        "worker": {
            "running": services.learning.running,
            "concurrency": services.settings.learning.concurrency,
            "max_attempts": services.settings.learning.max_attempts,
        },
    }
