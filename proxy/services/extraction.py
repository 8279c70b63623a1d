"""Learning from a finished turn: one LLM call per job, its operations applied exactly once.

``Extractor.run(job)``: the scope's nearest facts (shown to the model with short local ids),
the extraction prompt (the account's extractor config), one completion asking for JSON
operations (structured output, falling back to plain JSON when the model cannot), every
operation checked (``extraction_ops``), then ONE records transaction that applies them, writes
the job's change-log entry and marks the job done. A job already done changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from proxy.config import LearningSettings, ProfileSettings
from proxy.errors import BadRequest, ProxyError, UpstreamError
from proxy.llm.completer import Completer, message_content
from proxy.messages import text_of
from proxy.models import CATEGORIES, Account, Fact, Scope
from proxy.prompts import ExtractFact, ExtractInstructions, ExtractMessage, Prompts
from proxy.services.account_config import AccountConfigService
from proxy.services.extraction_apply import Applier
from proxy.services.extraction_ops import (
    OPERATIONS_SCHEMA,
    Checked,
    check_operations,
    parse_answer,
)
from proxy.services.metering import Meter
from proxy.services.retrieval import Retriever, SearchOptions
from proxy.store.facts import FactRecords
from proxy.store.jobs import Job

log = logging.getLogger("profilo.learning")

DEFAULT_CONTEXT = (
    "You are building a long-term profile of a user from their conversations with an AI "
    "assistant, so that future conversations can be personal."
)
DEFAULT_DEFINITION = (
    "durable facts about the user: who they are (name, role, industry, expertise, location, "
    "timezone, language), what they like and dislike, their interests, goals, habits, "
    "constraints, communication style and personality traits, and temporary circumstances "
    "that matter for a while (current projects, plans, situations)."
)
DEFAULT_SHOULD_EXTRACT = (
    "when the user's own messages reveal something lasting about them (a fact, preference, "
    "goal, constraint or circumstance); greetings, small talk, questions and requests alone "
    "reveal nothing"
)
#: How the answer's format is asked for, most structured first.
MODES = ("json_schema", "json_object", "plain")
ASK = "Answer now with the JSON object of operations for this turn."


class LearningQueue(Protocol):
    """Where finished turns go (implemented by ``proxy.worker.Worker``)."""

    async def admit(self, account: str, key_id: str | None = None) -> None: ...

    async def enqueue(
        self, job_id: str, scope: Scope, payload: dict[str, Any], key_id: str | None = None
    ) -> None: ...

    async def wait(self, account: str, job_id: str, seconds: float) -> Job | None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def stop_claiming(self) -> None: ...

    @property
    def running(self) -> bool: ...

    @property
    def in_flight(self) -> int: ...


def chat_turn(
    messages: list[dict[str, Any]], reply: str | None, max_chars: int
) -> list[dict[str, str]] | None:
    """The turn a chat request adds: the assistant message before the new user messages
    (context), the trailing user messages, the reply. None when the request ends with no
    user message (a tool result, say): nothing new was said by the user."""
    users: list[dict[str, str]] = []
    i = len(messages) - 1
    while i >= 0 and messages[i].get("role") == "user":
        text = text_of(messages[i].get("content"))
        if text:
            users.insert(0, {"role": "user", "content": text[:max_chars]})
        i -= 1
    if not users:
        return None
    turn: list[dict[str, str]] = []
    if i >= 0 and messages[i].get("role") == "assistant":
        context = text_of(messages[i].get("content"))
        if context:
            turn.append({"role": "assistant", "content": context[:max_chars]})
    turn += users
    if reply:
        turn.append({"role": "assistant", "content": reply[:max_chars]})
    return turn


@dataclass(slots=True)
class Plan:
    model: str
    prompt: str
    shown: dict[str, Fact]  # local id → fact
    user_messages: set[int]
    assistant_messages: set[int]


def _rejects_format(exc: UpstreamError) -> bool:
    if exc.status not in (400, 422):
        return False
    text = f"{exc.message} {exc.param or ''} {exc.code or ''}".lower()
    return any(word in text for word in ("response_format", "json_schema", "json_object"))


class Extractor:
    def __init__(
        self,
        *,
        records: FactRecords,
        retriever: Retriever,
        completer: Completer,
        prompts: Prompts,
        account_config: AccountConfigService,
        applier: Applier,
        settings: LearningSettings,
        profile_rules: ProfileSettings,
        extraction_model: str | None,
    ) -> None:
        self._records = records
        self._retriever = retriever
        self._completer = completer
        self._prompts = prompts
        self._account_config = account_config
        self._applier = applier
        self._settings = settings
        self._rules = profile_rules
        self._model = extraction_model
        self._start_mode: dict[str, int] = {}  # per model: the first format it accepted

    async def run(self, job: Job) -> dict[str, Any]:
        """Process one claimed job; returns its result. Raises on a failed attempt."""
        plan = await asyncio.to_thread(self.plan, job)
        meter = Meter(Account(job.account), job.scope.collection_id, plan.model, "worker",
                      kind="extraction")  # fmt: skip
        text, mode = await self.ask(plan.model, plan.prompt, meter)
        checked = self.check(plan, text)
        return await asyncio.to_thread(self._applier.apply, job, plan.shown, checked, mode)

    async def update_index(self, job: Job) -> None:
        """After ``run`` committed: the index catches up (waiters need not wait for it)."""
        await asyncio.to_thread(self._applier.update_index, job)

    def check(self, plan: Plan, text: str | None) -> Checked:
        return check_operations(
            parse_answer(text),
            shown=set(plan.shown),
            user_messages=plan.user_messages,
            assistant_messages=plan.assistant_messages,
            rules=self._rules,
        )

    def plan(self, job: Job) -> Plan:
        payload = job.payload
        model = self._model or payload.get("model")
        if not model:
            raise BadRequest("no extraction model: set models.extraction or send a model")
        messages: list[ExtractMessage] = []
        users: set[int] = set()
        assistants: set[int] = set()
        for number, message in enumerate(payload.get("messages") or [], start=1):
            role = "user" if message.get("role") == "user" else "assistant"
            (users if role == "user" else assistants).add(number)
            messages.append(ExtractMessage.of(number, role, str(message.get("content", ""))))
        query = "\n".join(
            str(m.get("content", ""))
            for m in payload.get("messages") or []
            if m.get("role") == "user"
        )
        shown = {f"f{i}": fact for i, fact in enumerate(self._nearest(job.scope, query), start=1)}
        config = self._account_config.get(job.account).profile_extractor_config
        instructions = ExtractInstructions(
            context=config.context_prompt or DEFAULT_CONTEXT,
            definition=config.profile_content_definition_prompt or DEFAULT_DEFINITION,
            should_extract=config.should_extract_profile_prompt_override or DEFAULT_SHOULD_EXTRACT,
        )
        prompt = self._prompts.extract_facts(
            instructions=instructions,
            messages=messages,
            facts=[
                ExtractFact.of(local, f.key, f.value, f.kind, f.category)
                for local, f in shown.items()
            ],
            categories=CATEGORIES,
        )
        return Plan(str(model), prompt, shown, users, assistants)

    def _nearest(self, scope: Scope, query: str) -> list[Fact]:
        """The scope's facts nearest to the turn; all of them when there are at most k (no
        embedding, no index lookup: the common case of a young profile)."""
        k = self._settings.nearest_facts
        if k == 0:
            return []
        facts = self._records.select(scope, limit=k + 1)
        if len(facts) <= k:
            return facts
        try:
            hits = self._retriever.search(scope, query[:4000], SearchOptions(top_k=k, threshold=-1))
            return [h.fact for h in hits]
        except ProxyError as exc:  # index down: the newest facts stand in for the nearest
            log.warning("nearest facts from the records (index unavailable): %s", exc.message)
            return self._records.select(scope)[-k:]

    async def ask(
        self, model: str, prompt: str, meter: Meter | None = None
    ) -> tuple[str | None, str]:
        """One completion; a model that rejects ``json_schema`` is asked again, in the same
        attempt, with ``json_object``, then with plain JSON instructions (remembered)."""
        start = self._start_mode.get(model, 0)
        for index in range(start, len(MODES)):
            mode = MODES[index]
            body: dict[str, Any] = {
                "model": model,
                "messages": [
                    {"role": "system", "content": prompt},
                    {"role": "user", "content": ASK},
                ],
            }
            if mode == "json_schema":
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "profile_operations",
                        "strict": True,
                        "schema": OPERATIONS_SCHEMA,
                    },
                }
            elif mode == "json_object":
                body["response_format"] = {"type": "json_object"}
            try:
                completion = await self._completer.complete(body, meter)
            except UpstreamError as exc:
                if index + 1 < len(MODES) and _rejects_format(exc):
                    log.info("model %s rejects %s; falling back: %s", model, mode, exc.message)
                    self._start_mode[model] = index + 1
                    continue
                raise
            return message_content(completion), mode
        raise AssertionError("unreachable: the plain mode has no fallback")
