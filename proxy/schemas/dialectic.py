"""POST /v1/profile/dialectic request (Hebbrix's names, legacy aliases kept)."""

from __future__ import annotations

from pydantic import Field, model_validator

from proxy.schemas.profile import _Scoped

MAX_QUESTION_CHARS = 4000
QUESTION_FIELDS = ("user_message", "message", "question")


class DialecticRequest(_Scoped):
    user_message: str | None = Field(default=None, max_length=MAX_QUESTION_CHARS)
    message: str | None = Field(default=None, max_length=MAX_QUESTION_CHARS)  # legacy
    question: str | None = Field(default=None, max_length=MAX_QUESTION_CHARS)  # legacy
    session_id: str | None = Field(default=None, min_length=1, max_length=100)
    stream: bool = False
    model: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _one_question(self) -> DialecticRequest:
        given = [name for name in QUESTION_FIELDS if getattr(self, name) is not None]
        if not given:
            raise ValueError("send the question as 'user_message' (or legacy 'message'/'question')")
        if len(given) > 1:
            raise ValueError(f"send the question once: {', '.join(given)} were all given")
        if not str(getattr(self, given[0])).strip():
            raise ValueError(f"'{given[0]}' must not be empty")
        return self

    @property
    def text(self) -> str:
        for name in QUESTION_FIELDS:
            value = getattr(self, name)
            if value is not None:
                return str(value).strip()
        raise AssertionError("validated to hold one question")
