"""Values that look like credentials, so they are never stored as facts (and are masked in the
turn text a learning job keeps).

Detected: API keys and tokens (OpenAI/Anthropic ``sk-...``, AWS ``AKIA...``, GitHub, Slack,
Google, JWTs, bearer tokens, PEM private keys), payment card numbers (13-19 digits that pass
the Luhn check, whatever separates them) and passwords ("my password is ...", "the password
for my bank is ...", "mein Passwort ist ...", or a key named like one: ``password``,
``passwort``, ``bank_pw``, ``secret``, ``pin_code`` ...). Text is normalized first (NFKC,
every Unicode dash to ``-``, zero-width characters removed) so look-alikes match too. What is
checked is set by ``profile.redaction`` in the config.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from functools import lru_cache

from proxy.config import RedactionSettings

MASK = "[redacted]"
_DASHES = re.compile(r"[\u2010-\u2015\u2212\u2e3a\u2e3b\ufe58\ufe63\uff0d\u00ad]")
_INVISIBLE = re.compile(r"[\u200b-\u200d\u2060\ufeff\u180e]")

_API_KEYS = re.compile(
    r"\b(?:sk|pk|rk)[-_](?:live_|test_|proj-|ant-|svcacct-|admin-)?[A-Za-z0-9_\-]{16,}"
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
# 13-19 digits, any one or two separators between them (space, dot, dash, comma, slash, _)
_CARD = re.compile(r"(?<![\d])\d(?:[\s.,\-_/]{0,2}\d){12,18}(?![\d])")
_PASSWORD_WORDS = (
    r"pass(?:word|wd|phrase|code)s?|pwd|pw|pin(?: code| number)?|passwort|kennwort"
    r"|contrase[nñ]a|mot de passe|senha|wachtwoord|passord|l[oö]senord|has[lł]o|пароль"
)
_VERBS = r"is|was|are|=|:|ist|lautet|es|est|é|è|är|er|jest|это"
# "<word> is X", "<word> for my bank is X", "bank password: X", "password to the vpn = X"
_PASSWORD = re.compile(
    rf"\b(?:{_PASSWORD_WORDS})\b(?:\s+(?:for|to|of|on|at|f[üu]r|de|del|para)\s+[^\n.;]{{1,40}}?)?"
    rf"\s*(?:{_VERBS})\s*[\"'“]?(?P<secret>[^\s\"'”]+)",
    re.IGNORECASE,
)
_PASSWORD_KEY = re.compile(
    r"(?:^|_)(?:password|passwd|passphrase|passcode|passwort|kennwort|contrase_?n?a|senha"
    r"|wachtwoord|passord|mot_de_passe|pwd|pin_code|api_key|apikey|secret_key|client_secret"
    r"|access_token|auth_token|refresh_token|private_key|card_number|credit_card|cvv|cvc)"
    r"(?:_|$)"
    # short or common words only as the whole key or with a qualifier: "bank_pw", "atm_pin",
    # "secret", "pin_code"; not "pin_up_artist", "secret_santa"
    r"|^(?:[a-z0-9]+_)?(?:pw|pin|secret|token)(?:_(?:code|number|no|key))?$"
)


def normalize(text: str) -> str:
    """NFKC (full-width and other compatibility forms), Unicode dashes as ``-``, no
    zero-width characters: what a look-alike of a secret's shape becomes."""
    return _INVISIBLE.sub("", _DASHES.sub("-", unicodedata.normalize("NFKC", text)))


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _cards(text: str) -> list[re.Match[str]]:
    out = []
    for found in _CARD.finditer(text):
        digits = re.sub(r"\D", "", found.group())
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            out.append(found)
    return out


@lru_cache(maxsize=32)
def _custom(patterns: tuple[str, ...]) -> list[re.Pattern[str]]:
    return [re.compile(p, re.IGNORECASE) for p in patterns]


def _key_words(key: str) -> str:
    """A key as snake_case ASCII (accents dropped: ``contraseña`` → ``contrasena``)."""
    folded = unicodedata.normalize("NFKD", normalize(key)).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "_", folded.lower()).strip("_")


def find_secret(key: str | None, value: str, settings: RedactionSettings) -> str | None:
    """The kind of credential ``key``/``value`` look like (``api_key``, ``card_number``,
    ``password``, ``pattern``), or None."""
    if not settings.enabled:
        return None
    text = normalize(value)
    if settings.api_keys and _API_KEYS.search(text):
        return "api_key"
    if settings.card_numbers and _cards(text):
        return "card_number"
    if settings.passwords and (
        _PASSWORD.search(text) or (key is not None and _PASSWORD_KEY.search(_key_words(key)))
    ):
        return "password"
    full = text if key is None else f"{normalize(key)}: {text}"
    if any(p.search(full) for p in _custom(tuple(settings.patterns))):
        return "pattern"
    return None


def redact_text(text: str, settings: RedactionSettings) -> str:
    """``text`` with every credential found in it replaced by ``[redacted]`` (the turn text a
    learning job keeps, so a secret refused as a fact is not kept in the queue either)."""
    if not settings.enabled or not text:
        return text
    clean = normalize(text)
    spans: list[tuple[int, int]] = []
    finders: list[tuple[bool, Callable[[str], list[re.Match[str]]]]] = [
        (settings.api_keys, lambda t: list(_API_KEYS.finditer(t))),
        (settings.card_numbers, _cards),
        (settings.passwords, lambda t: list(_PASSWORD.finditer(t))),
    ]
    for enabled, finder in finders:
        if enabled:
            for m in finder(clean):
                group = "secret" if "secret" in m.re.groupindex else 0
                spans.append(m.span(group))
    for pattern in _custom(tuple(settings.patterns)):
        spans += [m.span() for m in pattern.finditer(clean)]
    if not spans:
        return text
    out, last = [], 0
    for start, end in sorted(spans):
        if start < last:
            last = max(last, end)
            continue
        out += [clean[last:start], MASK]
        last = end
    out.append(clean[last:])
    return "".join(out)
