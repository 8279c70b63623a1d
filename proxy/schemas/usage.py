"""Bodies of the usage API: the limits the operator sets (``PUT /admin/limits/...``)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from proxy.models import Limits

MAX_RATE = 10**12  # per minute: far past any upstream's own limit
MAX_BUDGET = 1e12

Rate = Annotated[int, Field(strict=True, ge=0, le=MAX_RATE)]


class LimitsBody(BaseModel):
    """Every field optional; absent or null: no limit. 0 refuses everything."""

    model_config = ConfigDict(extra="forbid")
    requests_per_minute: Rate | None = None
    tokens_per_minute: Rate | None = None
    monthly_budget: float | None = Field(None, ge=0, le=MAX_BUDGET, allow_inf_nan=False)
    extraction_jobs_per_minute: Rate | None = None

    @field_validator("monthly_budget", mode="before")
    @classmethod
    def _a_number(cls, value: Any) -> Any:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError("must be a number (USD)")
        return value

    def limits(self) -> Limits:
        return Limits(**self.model_dump())
