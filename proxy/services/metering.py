"""Metering of chat answers: the tokens the upstream reported, the memory tokens injected,
recorded per account, key, end user and model (``UsageRecorder``), and the limits' windows.

JSON answers: their ``usage``. Streams: the upstream is asked for its usage chunk
(``stream_options.include_usage``) when the client did not ask; that extra chunk is then
taken out of what the client receives (it gets no usage, as it asked), while it is metered.
A stream that reports no usage (the upstream ignores the option) is recorded with the
memory tokens only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from proxy.llm.router import UpstreamRouter
from proxy.llm.usage_fields import ask_for_usage, usage_numbers
from proxy.models import Account
from proxy.schemas.openai import ChatRequest
from proxy.services.limits import Limiter
from proxy.services.usage_recorder import UsageRecorder
from proxy.store.usage import UsageEvent

log = logging.getLogger("profilo.usage")

_NULL_USAGE = re.compile(rb'"usage"\s*:\s*null')


class Answer(Protocol):
    """What ``settle`` meters (``services.chat.ChatOutcome``)."""

    json: bytes | None
    stream: AsyncIterator[bytes] | None


@dataclass(slots=True)
class Meter:
    """One metered call: who it serves, which model, what memory it carried."""

    account: Account
    collection_id: str | None
    model: str
    route: str
    kind: str = "chat"
    memory_tokens: int = 0
    strip_usage: bool = False  # the usage chunk was asked for by the proxy, not the client


class Metering:
    def __init__(
        self,
        recorder: UsageRecorder,
        limiter: Limiter,
        router: UpstreamRouter,
        *,
        ask_stream_usage: bool = True,
    ) -> None:
        self.ask_stream_usage = ask_stream_usage
        self._recorder = recorder
        self._limiter = limiter
        self._router = router  # a call is priced as the model the upstream was asked for

    @property
    def limiter(self) -> Limiter:
        return self._limiter

    async def start(
        self, chat: ChatRequest, account: Account, user: str | None, headers: dict[str, str]
    ) -> Meter:
        """Admit a chat request under the usage limits (``InsufficientQuota`` /
        ``RateLimited``; ``x-ratelimit-*`` into ``headers``) and start its meter; a stream's
        body is changed to ask the upstream for its usage."""
        meter = await self.admit(account, user, chat.model, "/v1/chat/completions", headers)
        if chat.stream and self.ask_stream_usage:
            chat.body, meter.strip_usage = ask_for_usage(chat.body)
        return meter

    async def admit(
        self, account: Account, user: str | None, model: str, route: str, headers: dict[str, str]
    ) -> Meter:
        """Admit a request under the usage limits (``InsufficientQuota`` / ``RateLimited``;
        ``x-ratelimit-*`` into ``headers``); its meter."""
        headers.update(await self._limiter.admit_request(account))
        return Meter(account, user, model, route)

    async def settle(self, meter: Meter, outcome: Answer) -> None:
        """Meter an answer (a ``ChatOutcome``): a JSON one now, a stream as it is relayed."""
        if outcome.json is not None:
            await self.json(meter, outcome.json)
        elif outcome.stream is not None:
            outcome.stream = self.stream(meter, outcome.stream)

    async def record(self, meter: Meter, usage: Any) -> None:
        """Record one answered call (``usage``: the upstream's object, or None)."""
        prompt, completion = usage_numbers(usage) or (0, 0)
        self._recorder.record(
            UsageEvent(
                account=meter.account.id,
                key_id=meter.account.key_id,
                collection_id=meter.collection_id,
                kind=meter.kind,
                model=meter.model,
                route=meter.route,
                created_at=self._limiter.clock(),
                prompt_tokens=prompt,
                completion_tokens=completion,
                memory_tokens=meter.memory_tokens,
            ),
            priced_as=self._router.resolve(meter.model).model,
        )
        try:
            await self._limiter.consumed(meter.account, prompt + completion)
        except Exception as exc:  # the answer is out: a counter that failed is logged only
            log.error("tokens not counted for the rate limits: %s", exc)

    async def json(self, meter: Meter, answer: bytes) -> None:
        try:
            usage = orjson.loads(answer).get("usage")
        except (orjson.JSONDecodeError, AttributeError):
            usage = None
        await self.record(meter, usage)

    async def stream(self, meter: Meter, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Relay the events; the usage chunk is read (and dropped when the proxy asked for
        it); the call is recorded once the stream ends, however it ends."""
        usage: Any = None
        try:
            async for event in events:
                if _has_usage(event):
                    found, event = _take_usage(event, meter.strip_usage)
                    usage = found if found is not None else usage
                    if not event:
                        continue
                yield event
        finally:
            try:
                await self.record(meter, usage)
            finally:
                aclose = getattr(events, "aclose", None)
                if aclose is not None:
                    await aclose()


def _has_usage(line: bytes) -> bool:
    return b'"usage"' in line and line.count(b'"usage"') > len(_NULL_USAGE.findall(line))


def _take_usage(events: bytes, strip: bool) -> tuple[Any, bytes]:
    """The usage object in these SSE events (one or more), and the bytes to relay: without
    the usage chunk when ``strip`` (b"" when nothing is left)."""
    usage: Any = None
    out: list[bytes] = []
    dropped = False  # the blank line ending a dropped event goes too
    for line in events.splitlines(keepends=True):
        if dropped and not line.strip():
            dropped = False
            continue
        dropped = False
        if line.startswith(b"data:") and _has_usage(line):
            try:
                obj = orjson.loads(line[5:].strip())
            except orjson.JSONDecodeError:
                obj = None
            if isinstance(obj, dict) and isinstance(obj.get("usage"), dict):
                usage = obj["usage"]
                if strip and not obj.get("choices"):  # the usage chunk the client did not ask
                    dropped = True
                    continue
                if strip:  # usage on a content chunk (some providers): the content only
                    obj.pop("usage")
                    line = b"data: " + orjson.dumps(obj) + line[len(line.rstrip(b"\r\n")) :]
        out.append(line)
    return usage, b"".join(out)
