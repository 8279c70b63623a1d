"""The litellm route: non-OpenAI providers (Anthropic, Bedrock, Gemini, ...) behind OpenAI's API.

litellm is imported lazily, once, in a worker thread (it costs seconds) with the offline
environment of ``proxy.llm.offline``. Its response objects are not OpenAI-schema-true as dumped
(missing ``logprobs``/``refusal``, nulls where none are allowed, extra keys), so answers are
rebuilt field by field. Errors come out as ``proxy.errors`` kinds, mid-stream ones included.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from types import ModuleType
from typing import Any

from proxy.errors import ProxyError, UpstreamError, UpstreamTimeout, UpstreamUnreachable
from proxy.llm.offline import import_litellm

log = logging.getLogger(__name__)

#: Body fields litellm may see: OpenAI's chat request (shared/fixtures schema) plus two common
#: provider extras. Anything else (``api_base``, ``api_key``, ``base_url``, ``mock_response``,
#: ...) would steer litellm itself, so it is dropped: routing and credentials come from config.
REQUEST_FIELDS = frozenset(
    """audio frequency_penalty function_call functions logit_bias logprobs max_completion_tokens
    max_tokens messages metadata modalities moderation n parallel_tool_calls prediction
    presence_penalty prompt_cache_key prompt_cache_options prompt_cache_retention
    reasoning_effort response_format safety_identifier seed service_tier stop store
    temperature tool_choice tools top_logprobs top_p user verbosity web_search_options
    top_k thinking""".split()
)
FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
_FINISH_ALIASES = dict(  # provider words litellm may leave unmapped
    end_turn="stop", stop_sequence="stop", eos="stop", max_tokens="length",
    tool_use="tool_calls", refusal="content_filter", safety="content_filter",
)  # fmt: skip
SERVICE_TIERS = frozenset({"auto", "default", "flex", "scale", "priority", "fast"})
DELTA_ROLES = frozenset({"developer", "system", "user", "assistant", "tool"})
_USAGE_DETAILS = {  # OpenAI's keys only (litellm adds its own)
    "prompt_tokens_details": "audio_tokens cached_tokens text_tokens image_tokens "
    "cache_write_tokens".split(),
    "completion_tokens_details": "accepted_prediction_tokens audio_tokens reasoning_tokens "
    "text_tokens rejected_prediction_tokens".split(),
}


class LiteLLMChat:
    def __init__(self, *, timeout: float = 600.0) -> None:
        self._timeout = timeout
        self._module: ModuleType | None = None

    async def complete(self, body: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """One non-streaming completion, as an OpenAI ``chat.completion`` dict."""
        litellm = await self._litellm()
        try:
            response = await litellm.acompletion(**self._kwargs(body, params, stream=False))
        except Exception as exc:
            raise map_error(exc) from exc
        return completion_to_openai(_as_dict(response), _public_model(body, params))

    async def stream(
        self, body: dict[str, Any], params: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        """OpenAI ``chat.completion.chunk`` dicts; with ``stream_options.include_usage`` every
        chunk carries ``usage: null`` and a last chunk has ``choices: []`` and the usage."""
        litellm = await self._litellm()
        options = body.get("stream_options")
        include_usage = isinstance(options, Mapping) and bool(options.get("include_usage"))
        model = _public_model(body, params)
        usage: Any = None
        head: dict[str, Any] = {}
        response: Any = None
        try:
            response = await litellm.acompletion(**self._kwargs(body, params, stream=True))
            async for chunk in response:
                data = _as_dict(chunk)
                usage = data.get("usage") or usage
                out = chunk_to_openai(data, model, include_usage=include_usage)
                if out is not None:
                    head = out
                    yield out
        except Exception as exc:
            raise map_error(exc) from exc
        finally:
            aclose = getattr(response, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:
                    log.debug("closing the litellm stream failed", exc_info=True)
        if include_usage:
            yield {
                "id": head.get("id") or "chatcmpl-litellm",
                "object": "chat.completion.chunk",
                "created": head.get("created") or 0,
                "model": model,
                "choices": [],
                "usage": usage_to_openai(usage),
            }

    async def _litellm(self) -> ModuleType:
        if self._module is None:  # a thread keeps the event loop serving during the import
            self._module = await asyncio.to_thread(import_litellm)
        return self._module

    def _kwargs(self, body: Mapping[str, Any], params: Mapping[str, Any], *, stream: bool) -> dict:
        kwargs = {k: v for k, v in body.items() if k in REQUEST_FIELDS}
        dropped = set(body) - REQUEST_FIELDS - {"model", "stream", "stream_options"}
        if dropped:
            log.info("not forwarded to litellm: %s", ", ".join(sorted(dropped)))
        kwargs.update(params)
        kwargs["model"] = params.get("model") or body.get("model")
        kwargs["stream"] = stream
        if stream and body.get("stream_options") is not None:
            kwargs["stream_options"] = body["stream_options"]
        kwargs.setdefault("timeout", self._timeout)
        # litellm 1.106.2 imports its MCP-gateway handler (needs the ``mcp`` package, not a
        # dependency of ours) for any request with ``tools``; we never use that gateway.
        kwargs["_skip_mcp_handler"] = True
        return kwargs


def _public_model(body: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    return str(body.get("model") or params.get("model") or "")


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        return dict(obj)
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return dict(dump())
    return dict(vars(obj)) if hasattr(obj, "__dict__") else {}


def _finish(value: Any) -> str | None:
    if value is None or value in FINISH_REASONS:
        return value
    return _FINISH_ALIASES.get(str(value), "stop")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_to_openai(usage: Any) -> dict[str, Any] | None:
    if usage is None:
        return None
    raw = _as_dict(usage)
    prompt, completion = _int(raw.get("prompt_tokens")), _int(raw.get("completion_tokens"))
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": _int(raw.get("total_tokens")) or prompt + completion,
    }
    for name, keys in _USAGE_DETAILS.items():
        details = raw.get(name)
        if details is None:
            continue
        found = _as_dict(details)
        kept = {k: found[k] for k in keys if isinstance(found.get(k), int)}
        if kept:
            out[name] = kept
    return out


def _logprobs(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    raw = _as_dict(value)
    if not isinstance(raw.get("content"), list):
        return None
    refusal = raw.get("refusal")
    return {"content": raw["content"], "refusal": refusal if isinstance(refusal, list) else None}


def _arguments(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value if value is not None else {})


def _function(value: Any, *, partial: bool) -> dict[str, str]:
    fn = _as_dict(value or {})
    if partial:  # a stream delta: only the pieces present
        return {k: fn[k] for k in ("name", "arguments") if isinstance(fn.get(k), str)}
    return {"name": str(fn.get("name") or ""), "arguments": _arguments(fn.get("arguments"))}


def _tool_calls(calls: Any, *, partial: bool) -> list[dict[str, Any]]:
    out = []
    for i, call in enumerate(calls or []):
        raw = _as_dict(call)
        function = _function(raw.get("function"), partial=partial)
        if not partial:
            out.append(
                {"id": str(raw.get("id") or f"call_{i}"), "type": "function", "function": function}
            )
            continue
        item: dict[str, Any] = {"index": _int(raw.get("index")) if "index" in raw else i}
        if isinstance(raw.get("id"), str) and raw["id"]:  # the first delta of a call
            item.update(id=raw["id"], type="function")
        if function:
            item["function"] = function
        out.append(item)
    return out


def _message(raw: Mapping[str, Any]) -> dict[str, Any]:
    content, refusal = raw.get("content"), raw.get("refusal")
    out: dict[str, Any] = {
        "role": "assistant",
        "content": content if isinstance(content, str) else None,
        "refusal": refusal if isinstance(refusal, str) else None,
    }
    tool_calls = _tool_calls(raw.get("tool_calls"), partial=False)
    if tool_calls:
        out["tool_calls"] = tool_calls
    if raw.get("function_call") is not None:  # deprecated ``functions`` API
        out["function_call"] = _function(raw["function_call"], partial=False)
    annotations = raw.get("annotations")
    if isinstance(annotations, list) and annotations:
        out["annotations"] = [_as_dict(a) for a in annotations]
    return out


def _delta(raw: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if raw.get("role") in DELTA_ROLES:
        out["role"] = raw["role"]
    tool_calls = _tool_calls(raw.get("tool_calls"), partial=True)
    content = raw.get("content")
    if isinstance(content, str) and (content or not tool_calls):  # not litellm's "" + tool
        out["content"] = content
    if tool_calls:
        out["tool_calls"] = tool_calls
    if isinstance(raw.get("refusal"), str):
        out["refusal"] = raw["refusal"]
    if raw.get("function_call") is not None:
        out["function_call"] = _function(raw["function_call"], partial=True)
    return out


def _head(raw: Mapping[str, Any], model: str, kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": str(raw.get("id") or "chatcmpl-litellm"),
        "object": kind,
        "created": _int(raw.get("created")),
        "model": model,
    }
    if isinstance(raw.get("system_fingerprint"), str):
        out["system_fingerprint"] = raw["system_fingerprint"]
    if raw.get("service_tier") in SERVICE_TIERS:
        out["service_tier"] = raw["service_tier"]
    return out


def completion_to_openai(raw: Mapping[str, Any], model: str) -> dict[str, Any]:
    """A litellm ``ModelResponse`` (dumped) as an OpenAI ``chat.completion``."""
    out = _head(raw, model, "chat.completion")
    out["choices"] = [
        {
            "index": _int(c.get("index")) or i,
            "message": _message(_as_dict(c.get("message") or {})),
            "logprobs": _logprobs(c.get("logprobs")),
            "finish_reason": _finish(c.get("finish_reason")) or "stop",
        }
        for i, c in enumerate(map(_as_dict, raw.get("choices") or []))
    ]
    usage = usage_to_openai(raw.get("usage"))
    if usage is not None:
        out["usage"] = usage
    return out


def chunk_to_openai(
    raw: Mapping[str, Any], model: str, *, include_usage: bool = False
) -> dict[str, Any] | None:
    """A litellm ``ModelResponseStream`` (dumped) as an OpenAI ``chat.completion.chunk``;
    None for a chunk that says nothing (litellm's usage-only chunk: the caller keeps its usage
    and sends it last, as OpenAI does)."""
    choices = []
    for i, c in enumerate(map(_as_dict, raw.get("choices") or [])):
        delta = _delta(_as_dict(c.get("delta") or {}))
        finish = _finish(c.get("finish_reason"))
        if delta or finish is not None:
            logprobs = _logprobs(c.get("logprobs"))
            index = _int(c.get("index")) or i
            choices.append(
                {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            )
    if not choices:
        return None
    out = _head(raw, model, "chat.completion.chunk")
    out["choices"] = choices
    if include_usage:
        out["usage"] = None
    return out


_TIMEOUTS = frozenset(
    "Timeout APITimeoutError TimeoutException TimeoutError ServerTimeoutError".split()
)
_UNREACHABLE = frozenset(
    "APIConnectionError ConnectError NetworkError ClientConnectionError ConnectionError "
    "gaierror".split()
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, the exception it wraps (litellm's ``original_exception``) and its causes."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 16:
        cur = todo.pop(0)
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        wrapped = getattr(cur, "original_exception", None)
        todo += [wrapped if isinstance(wrapped, BaseException) else None]
        todo += [cur.__cause__, cur.__context__]


def map_error(exc: BaseException) -> ProxyError:
    """A litellm / transport exception as a ``proxy.errors`` kind. litellm wraps transport
    failures inconsistently (a refused connection to Anthropic is an ``InternalServerError``
    with status 500), so the causes are looked at first: a timeout or a connection error
    anywhere in the chain decides; otherwise the provider's HTTP status does."""
    chain = list(_chain(exc))
    for found in chain:
        if isinstance(found, ProxyError):
            return found
    names = [{cls.__name__ for cls in type(e).__mro__} for e in chain]
    if any(n & _TIMEOUTS for n in names):
        return UpstreamTimeout(f"upstream timed out: {_clean(str(exc))}")
    if any(n & _UNREACHABLE for n in names):
        return UpstreamUnreachable(f"upstream unreachable: {_clean(str(exc))}")
    for found in chain:
        status = getattr(found, "status_code", None)
        if getattr(getattr(found, "original_exception", None), "status_code", None):
            continue  # a wrapper (MidStreamFallbackError): the wrapped error says it better
        if isinstance(status, int) and 400 <= status <= 599:
            return _upstream_error(found, status)
    log.error("litellm failed", exc_info=exc)
    return ProxyError(f"litellm failed: {type(exc).__name__}: {_clean(str(exc))}")


_PREFIX = re.compile(r"^(?:litellm\.\w+:\s*)+")


_SUFFIX = re.compile(r"\s*Handle with `litellm\.\w+`\.?\s*$")


def _clean(text: str) -> str:
    return _SUFFIX.sub("", _PREFIX.sub("", text)).strip()[:1000]


def _upstream_error(exc: BaseException, status: int) -> UpstreamError:
    message = (
        _clean(str(getattr(exc, "message", None) or exc)) or f"upstream returned HTTP {status}"
    )
    type_: Any = None
    code: Any = None
    param: Any = None
    err = _provider_error(getattr(exc, "body", None)) or _provider_error(message)
    if err is not None:
        message = str(err.get("message") or message)
        type_, code, param = err.get("type"), err.get("code"), err.get("param")
    return UpstreamError(
        message,
        status=status,
        type=type_
        if isinstance(type_, str)
        else ("server_error" if status >= 500 else "upstream_error"),
        code=str(code) if isinstance(code, (str, int)) and not isinstance(code, bool) else None,
        param=param if isinstance(param, str) else None,
        headers=_retry_headers(exc),
    )


def _provider_error(source: Any) -> dict[str, Any] | None:
    """The ``error`` object of a provider's JSON error body (given parsed, or inside text)."""
    parsed = source
    if isinstance(source, str):
        start, end = source.find("{"), source.rfind("}")
        if start < 0 or end <= start:
            return None
        try:
            parsed = json.loads(source[start : end + 1])
        except ValueError:
            return None
    if not isinstance(parsed, dict):
        return None
    err = parsed.get("error", parsed)
    if isinstance(err, str):
        return {"message": err}
    return err if isinstance(err, dict) and err.get("message") else None


def _retry_headers(exc: BaseException) -> dict[str, str]:
    keep: dict[str, str] = {}
    response = getattr(exc, "response", None)
    for source in (
        getattr(exc, "litellm_response_headers", None),
        getattr(exc, "headers", None),
        getattr(response, "headers", None),
    ):
        if not source:
            continue
        for name, out in (("retry-after", "Retry-After"), ("retry-after-ms", "retry-after-ms")):
            value = source.get(name) or source.get(out)
            if value is not None and out not in keep:
                keep[out] = str(value)
    return keep
