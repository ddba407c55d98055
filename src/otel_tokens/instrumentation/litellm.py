"""LiteLLM: ``completion``/``acompletion`` (streamed or not) and ``embedding``/``aembedding``.

LiteLLM reaches most providers over its own HTTP code, which no client instrumentation of
ours sees: there each call is metered from LiteLLM's OpenAI-shaped usage (`from_litellm`)
with the provider and model LiteLLM names. For OpenAI (and Azure OpenAI) it calls through
the ``openai`` SDK: with our OpenAI instrumentation active, that call's span carries the
usage and LiteLLM's span only frames it (`_framework.FrameworkCall`). Either way, one
usage-carrying span per provider call.

LiteLLM's own cost estimate (``response_cost``) is recorded beside our exact price
(``gen_ai.billing.provider_cost.*``) and the difference as ``gen_ai.billing.cost.difference``;
never added into a total.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.util.types import AttributeValue

from .._safety import log_once
from ..counting import count_messages, count_text, estimate_source
from ..usage import TokenUsage, from_litellm
from ._adapter import NO_FACTS, Request, ResponseFacts
from ._framework import FrameworkCall
from ._framework_wrap import Begin, FrameworkInstrumentor, Patching, call_wrappers
from ._instrumentor import _recorder
from ._reconcile import reported_cost

if TYPE_CHECKING:
    from ._recording import Recorder

FRAMEWORK = "litellm"
_STREAMS = "litellm.litellm_core_utils.streaming_handler"
# LiteLLM's provider names that differ from the GenAI conventions' gen_ai.provider.name.
_PROVIDERS = {
    "azure": "azure.ai.openai",
    "azure_ai": "azure.ai.inference",
    "bedrock": "aws.bedrock",
    "gemini": "gcp.gemini",
    "vertex_ai": "gcp.vertex_ai",
    "vertex_ai_beta": "gcp.vertex_ai",
    "mistral": "mistral_ai",
    "xai": "x_ai",
    "watsonx": "ibm.watsonx.ai",
}


class _Meter:
    """What every LiteLLM call of one instrumentation shares."""

    __slots__ = ("get_llm_provider", "providers", "recorder")

    def __init__(self, recorder: Recorder, options: dict[str, Any], module: Any) -> None:
        self.recorder = recorder
        self.get_llm_provider: Callable[..., Any] = module.get_llm_provider
        # (model, provider hint, api_base) -> (model, provider, host, port): LiteLLM's
        # provider lookup costs tens of microseconds per call.
        self.providers: dict[tuple[Any, ...], tuple[str, str, str | None, int | None]] = {}

    def request(self, operation: str, args: tuple[Any, ...], kwargs: Any) -> Request | None:
        model = kwargs.get("model", args[0] if args else None)
        if not isinstance(model, str) or not model:
            return None
        hint = kwargs.get("custom_llm_provider")
        api_base = kwargs.get("api_base") or kwargs.get("base_url")
        key = (model, hint, api_base)
        found = self.providers.get(key)
        if found is None:
            try:
                name, provider, _, _ = self.get_llm_provider(
                    model=model, custom_llm_provider=hint, api_base=api_base
                )
            except Exception:  # LiteLLM will raise its own error for this call
                name, provider = model, hint or FRAMEWORK
            found = (name, _PROVIDERS.get(provider, provider), *_server(api_base))
            if len(self.providers) < 1024:  # an application uses few models and endpoints
                self.providers[key] = found
        name, provider, host, port = found
        return Request(
            operation=operation,
            provider=provider,
            model=name,
            stream=kwargs.get("stream") is True,
            server_address=host,
            server_port=port,
            # A stream without usage is estimated from these (copied: a chat loop appends
            # to the list it sent).
            body={"messages": list(messages)}
            if kwargs.get("stream") is True and isinstance(messages := kwargs.get("messages"), list)
            else {},
        )

    def begin(self, operation: str, args: tuple[Any, ...], kwargs: Any) -> FrameworkCall | None:
        if not is_instrumentation_enabled():
            return None
        try:
            request = self.request(operation, args, kwargs)
            if request is None:
                return None
            return FrameworkCall(self.recorder, request, FRAMEWORK)
        except Exception as exc:
            log_once("litellm.request", exc)
            return None

    def complete(self, fc: FrameworkCall, result: Any) -> Any:
        """Meter a returned response, or watch a returned stream; never raises."""
        try:
            if type(result).__name__ == "CustomStreamWrapper":
                _watch(fc, result)
                return result
            facts = _read_response(result)
        except Exception as exc:
            log_once("litellm.response", exc)
            fc.end(NO_FACTS)
            return result
        try:
            reconciled = self._provider_cost(fc, facts, result)
        except Exception as exc:  # the reconciliation never costs the call its usage
            log_once("litellm.provider_cost", exc)
            reconciled = None
        fc.end(facts, attributes=reconciled)
        return result

    def _provider_cost(
        self, fc: FrameworkCall, facts: ResponseFacts, result: Any
    ) -> dict[str, AttributeValue] | None:
        hidden = getattr(result, "_hidden_params", None)
        cost = reported_cost(hidden.get("response_cost") if isinstance(hidden, dict) else None)
        if cost is None:
            return None
        call = fc.call
        request = call.request
        ours: tuple[Decimal | None, str | None] = (None, None)
        if facts.usage is not None:
            # Our price of the same usage (the call's own record, when it was not claimed,
            # priced it the same way; a claimed call's client read the same response).
            price = self.recorder.catalog.price_call(
                facts.usage,
                facts.model,
                request.model,
                provider=request.provider,
                at=datetime.fromtimestamp(call.start_ns / 1e9, UTC),
            )
            ours = (price.total, price.currency)
        # LiteLLM's cost map is in US dollars.
        return self.recorder.reconciler.reconcile((cost, "USD"), ours, request, facts.model)


def _server(api_base: Any) -> tuple[str | None, int | None]:
    if not isinstance(api_base, str) or not api_base:
        return None, None
    try:
        parts = urlsplit(api_base)
        return parts.hostname, parts.port
    except ValueError:
        return None, None


def _read_response(response: Any) -> ResponseFacts:
    hidden = getattr(response, "_hidden_params", None)
    if isinstance(hidden, dict) and hidden.get("cache_hit") is True:
        # Served from LiteLLM's own cache: no provider call, nothing billed.
        return ResponseFacts(model=getattr(response, "model", None))
    raw = getattr(response, "usage", None)
    usage = from_litellm(raw) if raw is not None else None
    reasons = tuple(
        r
        for r in (getattr(c, "finish_reason", None) for c in getattr(response, "choices", ()) or ())
        if isinstance(r, str)
    )
    model = getattr(response, "model", None)
    rid = getattr(response, "id", None)
    return ResponseFacts(
        usage=usage,
        model=model if isinstance(model, str) else None,
        response_id=rid if isinstance(rid, str) else None,
        finish_reasons=reasons,
    )


def _stream_facts(request: Request, chunks: list[Any]) -> ResponseFacts:
    """Facts of a LiteLLM stream from the chunks it kept (``CustomStreamWrapper.chunks``:
    every chunk, the usage-only ones the caller never sees included); estimated from the
    messages and the streamed text where no chunk carried usage (an OpenAI-compatible
    stream not asked for its usage)."""
    usage: TokenUsage | None = None
    model = rid = None
    reasons: list[str] = []
    for chunk in reversed(chunks):
        if usage is None and getattr(chunk, "usage", None) is not None:
            usage = from_litellm(chunk.usage)
        if model is None and isinstance(getattr(chunk, "model", None), str):
            model, rid = chunk.model, getattr(chunk, "id", None)
        if not reasons:
            for choice in getattr(chunk, "choices", ()) or ():
                reason = getattr(choice, "finish_reason", None)
                if isinstance(reason, str):
                    reasons.append(reason)
        if usage is not None and model is not None and reasons:
            break
    if usage is None and chunks:
        usage = _estimate(request, model, chunks)
    return ResponseFacts(
        usage=usage,
        model=model,
        response_id=rid if isinstance(rid, str) else None,
        finish_reasons=tuple(reasons),
    )


def _estimate(request: Request, model: str | None, chunks: list[Any]) -> TokenUsage:
    model = model or request.model
    text = "".join(
        content
        for chunk in chunks
        for choice in getattr(chunk, "choices", ()) or ()
        if isinstance(content := getattr(getattr(choice, "delta", None), "content", None), str)
    )
    return TokenUsage(
        input=count_messages(request.body.get("messages"), model),
        output=count_text(text, model),
        source=estimate_source(model),
    )


# Streams being watched: their framework call, until the stream ends.
_watched: weakref.WeakKeyDictionary[Any, FrameworkCall] = weakref.WeakKeyDictionary()


def _end_stream(fc: FrameworkCall, chunks: list[Any], error: BaseException | None) -> None:
    try:
        facts = _stream_facts(fc.call.request, chunks) if not fc.claimed else NO_FACTS
    except Exception as exc:
        log_once("litellm.stream", exc)
        facts = NO_FACTS
    fc.end(facts, error)


def _watch(fc: FrameworkCall, stream: Any) -> None:
    chunks = stream.chunks  # a LiteLLM without it: complete() ends the call without usage
    _watched[stream] = fc
    # Abandoned before its end: ended with what it received when it is collected.
    weakref.finalize(stream, _end_stream, fc, chunks, None)


class _Pull:
    """The framework call's span current (and its scope open) while a watched stream's
    chunk is pulled; the call ends with the stream's end or failure."""

    __slots__ = ("fc", "stream")

    def __init__(self, fc: FrameworkCall, stream: Any) -> None:
        self.fc = fc
        self.stream = stream

    def __enter__(self) -> None:
        self.fc.enter()

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        fc = self.fc
        fc.exit()
        if exc is None:
            fc.call.first_chunk()
            return
        _watched.pop(self.stream, None)
        ended = isinstance(exc, StopIteration | StopAsyncIteration)
        _end_stream(fc, getattr(self.stream, "chunks", None) or [], None if ended else exc)


def _next_hook(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    fc = _watched.get(instance) if _watched else None
    if fc is None:
        return wrapped(*args, **kwargs)
    with _Pull(fc, instance):
        return wrapped(*args, **kwargs)


async def _anext_hook(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    fc = _watched.get(instance) if _watched else None
    if fc is None:
        return await wrapped(*args, **kwargs)
    with _Pull(fc, instance):
        return await wrapped(*args, **kwargs)


def _begin(meter: _Meter, operation: str) -> Begin:
    def begin(instance: Any, args: Any, kwargs: Any) -> FrameworkCall | None:
        return meter.begin(operation, args, kwargs)

    return begin


class LiteLLMInstrumentor(FrameworkInstrumentor):
    """Meters ``litellm``'s ``completion``/``acompletion`` (streams included) and
    ``embedding``/``aembedding``, counting once with the client instrumentations (see
    docs/frameworks.md). Accepts ``tracer_provider``, ``meter_provider``, ``catalog``."""

    framework = FRAMEWORK
    dependencies = ("litellm >= 1.60",)

    def patches(self, patching: Patching) -> dict[str, Callable[[Any], None]]:
        def on_import(module: Any) -> None:
            meter = _Meter(_recorder(patching.options), patching.options, module)
            for operation, (sync, asynchronous) in (
                ("chat", ("completion", "acompletion")),
                ("embeddings", ("embedding", "aembedding")),
            ):
                wrappers = call_wrappers(_begin(meter, operation), meter.complete)
                patching.wrap(module, sync, wrappers[0])
                patching.wrap(module, asynchronous, wrappers[1])
            import importlib

            streams = importlib.import_module(_STREAMS).CustomStreamWrapper
            patching.wrap(streams, "__next__", _next_hook)
            patching.wrap(streams, "__anext__", _anext_hook)

        return {"litellm": on_import}


def provider_name(litellm_provider: str) -> str:
    """``gen_ai.provider.name`` for one of LiteLLM's provider names (``gemini/...`` is
    ``gcp.gemini``); also for the OpenAI Agents SDK's ``LitellmModel``."""
    return _PROVIDERS.get(litellm_provider, litellm_provider)
