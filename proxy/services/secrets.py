"""Values that look like credentials, so they are never stored as facts.

Detected: API keys and tokens (OpenAI/Anthropic ``sk-...``, AWS ``AKIA...``, GitHub, Slack,
Google, JWTs, bearer tokens, PEM private keys), payment card numbers (13-19 digits that pass
the Luhn check) and passwords ("my password is ...", or a key named like one). What is
checked is set by ``profile.redaction`` in the config.
"""

from __future__ import annotations

import re
from functools import lru_cache

from proxy.config import RedactionSettings

_API_KEYS = re.compile(
    r"\b(?:sk|pk|rk)[-_](?:live_|test_|proj-|ant-)?[A-Za-z0-9_\-]{16,}"
    r"|\bAKIA[0-9A-Z]{16}\b"
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}"
    r"|\bgithub_pat_[A-Za-z0-9_]{30,}"
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"
    r"|\bAIza[0-9A-Za-z_\-]{35}"
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
    r"|\bbearer\s+[A-Za-z0-9._~+/\-]{16,}",
    re.IGNORECASE,
)
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_PASSWORD_WORDS = r"pass(?:word|wd|phrase|code)|pwd|pin(?: code| number)?"
_PASSWORD = re.compile(
    rf"\b(?:{_PASSWORD_WORDS})\b\s*(?:is|was|=|:)\s*\S+",
    re.IGNORECASE,
)
_PASSWORD_KEY = re.compile(
    r"(?:^|_)(?:password|passwd|passphrase|passcode|pwd|pin|pin_code|api_key|apikey|secret_key"
    r"|access_token|auth_token|refresh_token|private_key|card_number|credit_card|cvv|cvc)"
    r"(?:_|$)"
)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_number(text: str) -> bool:
    for found in _CARD.finditer(text):
        digits = re.sub(r"\D", "", found.group())
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            return True
    return False


@lru_cache(maxsize=32)
def _custom(patterns: tuple[str, ...]) -> list[re.Pattern[str]]:
    return [re.compile(p, re.IGNORECASE) for p in patterns]


def find_secret(key: str | None, value: str, settings: RedactionSettings) -> str | None:
    """The kind of credential ``key``/``value`` look like (``api_key``, ``card_number``,
    ``password``, ``pattern``), or None."""
    if not settings.enabled:
        return None
    if settings.api_keys and _API_KEYS.search(value):
        return "api_key"
    if settings.card_numbers and _card_number(value):
        return "card_number"
    if settings.passwords and (
        _PASSWORD.search(value) or (key is not None and _PASSWORD_KEY.search(key))
    ):
        return "password"
    text = value if key is None else f"{key}: {value}"
    if any(p.search(text) for p in _custom(tuple(settings.patterns))):
        return "pattern"
    return None
