"""Typed render functions over the Jinja templates in ``prompts/``.

Templates are compiled once (when ``Prompts`` is built at start-up), with ``StrictUndefined``
and no HTML autoescape. Fact text is escaped by ``data_literal`` before it reaches a template.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"


#: Escaped as ``\\uXXXX`` inside a literal: angle brackets and their look-alikes (nothing can
#: close or open a delimiter), line / paragraph separators and C1 controls (U+2028, U+2029,
#: U+0085 start a new line for many readers), bidi and zero-width format characters.
_UNSAFE = re.compile(
    "[<>\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff"
    "\u02c2\u02c3\u1433\u1438\u2039\u203a\u2329\u232a\u276c-\u2771\u27e8\u27e9"
    "\u29fc\u29fd\u3008\u3009\ufe64\ufe65\uff1c\uff1e]"
)


def data_literal(text: str) -> str:
    """Fact text (a value or a key) as an inert JSON string literal: NFKC first (full-width
    and other compatibility look-alikes become their plain characters), then quotes,
    backslashes and control characters escaped by JSON, and every ``_UNSAFE`` character as
    ``\\uXXXX``: it cannot end its line, close the block's tag or open a new one."""
    literal = json.dumps(unicodedata.normalize("NFKC", text), ensure_ascii=False)
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", literal)


def data_key(key: str) -> str:
    """Keys are already ``snake_case`` (letters, digits, ``_``); kept defensive anyway."""
    return "".join(ch for ch in key if ch.isalnum() or ch == "_")[:64] or "fact"


@dataclass(frozen=True, slots=True)
class BlockItem:
    key: str
    value: str  # already a data literal

    @classmethod
    def of(cls, key: str, value: str) -> BlockItem:
        """Key and value both rendered as quoted literals (a key is data too)."""
        return cls(data_literal(data_key(key)), data_literal(value))


@dataclass(frozen=True, slots=True)
class ExtractMessage:
    number: int
    role: str  # "user" | "assistant"
    text: str  # already a data literal

    @classmethod
    def of(cls, number: int, role: str, text: str) -> ExtractMessage:
        return cls(number, role, data_literal(text))


@dataclass(frozen=True, slots=True)
class ExtractFact:
    id: str  # the prompt's short local id (f1, f2, ...)
    key: str
    value: str  # already a data literal
    kind: str
    category: str

    @classmethod
    def of(cls, local_id: str, key: str, value: str, kind: str, category: str) -> ExtractFact:
        return cls(local_id, data_key(key), data_literal(value), kind, data_key(category))


@dataclass(frozen=True, slots=True)
class ExtractInstructions:
    """The account's extractor config, defaults filled in."""

    context: str
    definition: str
    should_extract: str


class Prompts:
    def __init__(self, *, memory_block: Path | None = None, directory: Path = PROMPTS_DIR) -> None:
        self._env = Environment(
            loader=FileSystemLoader(str(directory)),
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
        )
        self._memory_block = self._load(memory_block, "memory_block.j2")
        self._extract_facts = self._env.get_template("extract_facts.j2")
        self._dialectic = self._env.get_template("dialectic.j2")

    def _load(self, custom: Path | None, name: str) -> Template:
        if custom is None:
            return self._env.get_template(name)
        return self._env.from_string(Path(custom).read_text())

    def memory_block(self, *, profile: list[BlockItem], memories: list[BlockItem]) -> str:
        return self._memory_block.render(profile=profile, memories=memories).strip()

    def extract_facts(
        self,
        *,
        instructions: ExtractInstructions,
        messages: list[ExtractMessage],
        facts: list[ExtractFact],
        categories: tuple[str, ...],
    ) -> str:
        return self._extract_facts.render(
            context=instructions.context,
            definition=instructions.definition,
            should_extract=instructions.should_extract,
            messages=messages,
            facts=facts,
            categories=categories,
        ).strip()

    def dialectic(self, *, memory: str) -> str:
        """The dialectic's system prompt around an already rendered memory block."""
        return self._dialectic.render(memory=memory).strip()
