"""Prices per token from litellm's local cost map (never fetched: ``LITELLM_LOCAL_MODEL_COST_MAP``).

The map is the JSON file litellm itself loads in local mode (``litellm.model_cost``), read
without importing litellm (seconds of import for one dictionary): lazily, by the usage
recorder's flusher, off the request path. A model not in the map has no price (tokens only).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("profilo.usage")

COST_MAP_FILE = "model_prices_and_context_window_backup.json"


def _load_map() -> dict[str, Any]:
    loaded = sys.modules.get("litellm")
    if loaded is not None and isinstance(getattr(loaded, "model_cost", None), dict):
        return dict(loaded.model_cost)
    spec = importlib.util.find_spec("litellm")  # locates the package; does not import it
    if spec is None or spec.origin is None:
        return {}
    path = Path(spec.origin).parent / COST_MAP_FILE
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("no model cost map (%s): usage is metered in tokens only", exc)
        return {}
    return data if isinstance(data, dict) else {}


class CostMap:
    """``(input, output)`` price per token by model name; None for a model it does not know."""

    def __init__(self, prices: dict[str, Any] | None = None) -> None:
        self._prices = prices
        self._lock = threading.Lock()
        self._found: dict[str, tuple[float, float] | None] = {}

    def _map(self) -> dict[str, Any]:
        if self._prices is None:
            with self._lock:
                if self._prices is None:
                    self._prices = _load_map()
        return self._prices

    def price(self, model: str) -> tuple[float, float] | None:
        if model in self._found:
            return self._found[model]
        prices = self._map()
        found = None
        # "openai/gpt-4o-mini" is priced as "gpt-4o-mini" when only that is listed
        for name in (model, model.split("/", 1)[-1]):
            entry = prices.get(name)
            if isinstance(entry, dict):
                inp, out = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
                if isinstance(inp, (int, float)) and isinstance(out, (int, float)):
                    found = (float(inp), float(out))
                    break
        self._found[model] = found
        return found

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        price = self.price(model)
        if price is None:
            return None
        return prompt_tokens * price[0] + completion_tokens * price[1]
