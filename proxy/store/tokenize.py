"""Words as the lexical index sees them, in Python: the in-memory scope views
(``proxy/store/snapshot.py``) index and query facts with this, as FTS5 does with its ``porter
unicode61`` tokenizer: case folded, diacritics removed, split on every character that is not a
letter or a digit, each token stemmed by Porter's original algorithm (NLTK's, the one FTS5
implements). A fact's text is the one FTS5 indexes: ``key`` with ``_`` as spaces, ``: ``, value.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from nltk.stem.porter import PorterStemmer

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
_PORTER = PorterStemmer(mode=PorterStemmer.ORIGINAL_ALGORITHM)
_STEMMED = range(3, 65)  # FTS5 leaves shorter and longer tokens as they are


def fact_text(key: str, value: str) -> str:
    return f"{key.replace('_', ' ')}: {value}"


@lru_cache(maxsize=1 << 16)
def _stem(token: str) -> str:
    """FTS5's porter works on UTF-8 bytes (a non-ASCII letter is consonants, lengths are in
    bytes): NLTK's is given one character per byte, then the bytes are read back."""
    raw = token.encode()
    if len(raw) not in _STEMMED:
        return token
    if token.isascii():
        return _PORTER.stem(token, to_lowercase=False)
    return _PORTER.stem(raw.decode("latin-1"), to_lowercase=False).encode("latin-1").decode()


def _fold(text: str) -> str:
    text = text.lower()
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def tokens(text: str) -> list[str]:
    """The text's stemmed tokens, in order, repeats kept (their count is the term frequency)."""
    return [_stem(t) for t in _TOKEN.findall(_fold(text))]
