"""Typed render functions over the Jinja templates in ``prompts/``.

Templates are compiled once (when ``Prompts`` is built at start-up), with ``StrictUndefined``
and no HTML autoescape. Fact text is escaped by ``data_literal`` before it reaches a template.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"


def data_literal(text: str) -> str:
    """A value as an inert JSON string literal: quotes, newlines and control characters
    escaped, and ``<``/``>`` too, so it cannot close a delimiter or open a new one."""
    return json.dumps(text, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")


def data_key(key: str) -> str:
    """Keys are already ``snake_case`` (letters, digits, ``_``); kept defensive anyway."""
    return "".join(ch for ch in key if ch.isalnum() or ch == "_")[:64] or "fact"


@dataclass(frozen=True, slots=True)
class BlockItem:
    key: str
    value: str  # already a data literal

    @classmethod
    def of(cls, key: str, value: str) -> BlockItem:
        return cls(data_key(key), data_literal(value))


class Prompts:
    def __init__(self, *, memory_block: Path | None = None, directory: Path = PROMPTS_DIR) -> None:
        self._env = Environment(
            loader=FileSystemLoader(str(directory)),
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
        )
        self._memory_block = self._load(memory_block, "memory_block.j2")

    def _load(self, custom: Path | None, name: str) -> Template:
        if custom is None:
            return self._env.get_template(name)
        return self._env.from_string(Path(custom).read_text())

    def memory_block(self, *, profile: list[BlockItem], memories: list[BlockItem]) -> str:
        return self._memory_block.render(profile=profile, memories=memories).strip()
