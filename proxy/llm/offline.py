"""Make litellm work on a machine without internet: no fetch at import, none at call time.

litellm 1.106.2 reaches out to GitHub / its docs site unless told not to:

- the model cost map (``LITELLM_LOCAL_MODEL_COST_MAP``), fetched at import;
- the Anthropic beta-headers table (``LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS``), fetched on the
  first call whose headers need filtering;
- blog posts, auto-router presets and policy templates (``LITELLM_LOCAL_*``), used by its proxy
  server only; switched off too, since they cost nothing;
- tiktoken encodings, downloaded on first use unless ``TIKTOKEN_CACHE_DIR`` points at the files
  litellm bundles (cl100k_base, o200k_base, p50k_base).

``LITELLM_MODE=PRODUCTION`` stops litellm from loading a ``.env`` file from the working directory
into ``os.environ`` at import: profilo's own configuration decides the environment.

Every value is a ``setdefault``: an operator's explicit setting wins.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from pathlib import Path
from types import ModuleType

_LOCAL_FLAGS = (
    "LITELLM_LOCAL_MODEL_COST_MAP",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS",
    "LITELLM_LOCAL_BLOG_POSTS",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS",
    "LITELLM_LOCAL_POLICY_TEMPLATES",
)
_TOKENIZERS = ("litellm_core_utils", "tokenizers")


def litellm_tokenizers_dir() -> Path | None:
    """litellm's bundled tiktoken files, found without importing litellm (None if absent)."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location).joinpath(*_TOKENIZERS)
        if candidate.is_dir():
            return candidate
    return None


def prepare_offline_env() -> None:
    """Set the environment so importing and calling litellm opens no outbound connection.

    Idempotent, cheap, and safe to call before or after litellm is imported (though the cost
    map and ``.env`` switches only matter before).
    """
    for flag in _LOCAL_FLAGS:
        os.environ.setdefault(flag, "True")
    os.environ.setdefault("LITELLM_MODE", "PRODUCTION")
    bundled = litellm_tokenizers_dir()
    if bundled is not None:
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(bundled))
    chosen = os.environ.get("TIKTOKEN_CACHE_DIR")
    if chosen and (bundled is None or Path(chosen) != bundled):
        # litellm *overwrites* TIKTOKEN_CACHE_DIR at import unless CUSTOM_TIKTOKEN_CACHE_DIR
        # is set: keep an operator's own cache dir for everyone in the process.
        os.environ.setdefault("CUSTOM_TIKTOKEN_CACHE_DIR", chosen)


@functools.cache
def import_litellm() -> ModuleType:
    """The litellm module, imported once after ``prepare_offline_env`` (costs seconds)."""
    prepare_offline_env()
    litellm = importlib.import_module("litellm")
    # No banners on stdout ("Provider List: ...", "Give Feedback / Get Help"): we log errors.
    setattr(litellm, "suppress_debug_info", True)  # noqa: B010 (ModuleType has no such attr)
    return litellm
