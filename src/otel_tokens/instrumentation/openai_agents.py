"""The OpenAI Agents SDK (``openai-agents``, module ``agents``), at its run and model entry
points.

- A model call (``get_response``/``stream_response`` of the SDK's ``OpenAIResponsesModel``,
  ``OpenAIChatCompletionsModel`` and ``LitellmModel``) is a `FrameworkCall`, tagged with the
  agent it runs for (``agent``). The first two call the provider through the ``openai``
  client: with `OpenAIInstrumentor` active the client's span, a child of this one, carries the
  usage; without it (or for ``LitellmModel`` without `LiteLLMInstrumentor`) the call is
  metered from the SDK's own usage (``ModelResponse.usage``, or the ``response.completed``
  event of a stream), which has the Responses API's shape.
- A run (``Runner.run``, ``run_sync``, ``run_streamed``) is a `workflow` named after its
  starting agent: its span is current for the whole run, so every call span is inside it,
  and it totals their tokens and exact cost, each call counted once.

Why not the SDK's ``TracingProcessor``: the SDK's tracing is its own, not OpenTelemetry's; a
processor is told of spans after the fact and cannot make our span current around the
``openai`` call (so the client span would not be its child), and it is not called at all when
the application turns the SDK's tracing off. The agent a call runs for is read from the SDK's
current span (an agent or turn span), which the SDK sets even with its tracing off.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Collection
from typing import TYPE_CHECKING, Any

import wrapt
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, unwrap

from .._safety import log_once
from ..counting import count_messages, count_text, estimate_source
from ..usage import TokenUsage, from_openai_responses
from ..usage import read_field as field
from ._adapter import NO_FACTS, Request, ResponseFacts
from ._common import server_of
from ._framework import FrameworkCall
from ._instrumentor import _recorder

if TYPE_CHECKING:
    from ._recording import Recorder

FRAMEWORK = "openai_agents"
_RUN = "agents.run"
_TRACING = "agents.tracing"
# (module, class) of the SDK's model implementations we meter.
_MODELS = (
    ("agents.models.openai_responses", "OpenAIResponsesModel"),
    ("agents.models.openai_chatcompletions", "OpenAIChatCompletionsModel"),
    ("agents.extensions.models.litellm_model", "LitellmModel"),
)


def _agent_name(get_current_span: Callable[[], Any]) -> str | None:
    """The agent the SDK is running now: its current span is the agent's (or, with task and
    turn spans on, the turn's, which names the agent)."""
    data = getattr(get_current_span(), "span_data", None)
    kind = type(data).__name__
    if kind == "AgentSpanData":
        name = getattr(data, "name", None)
    elif kind == "TurnSpanData":
        name = getattr(data, "agent_name", None)
    else:
        return None
    return name if isinstance(name, str) and name else None


def _litellm_provider(model: str) -> tuple[str, str]:
    """(provider, model) of a LiteLLM model name (``anthropic/claude-...``)."""
    from .litellm import provider_name

    provider, sep, name = model.partition("/")
    if not sep:
        return "openai", model  # LiteLLM's default route for a bare name
    return provider_name(provider), name


def _request(model: Any, stream: bool, args: Any, kwargs: Any) -> Request:
    name = getattr(model, "model", None)
    name = name if isinstance(name, str) and name else None
    client = getattr(model, "_client", None)
    if client is not None:  # the OpenAI models: an (Async)OpenAI client
        from .openai import PROVIDER_ENV, provider_for

        host, port = server_of(client)
        # Named as OpenAIInstrumentor names it (base URL host, OTEL_TOKENS_OPENAI_PROVIDER).
        provider = provider_for(client, host, os.environ.get(PROVIDER_ENV) or None)
    else:  # LitellmModel
        base = getattr(model, "base_url", None)
        host, port = None, None
        if isinstance(base, str) and base:
            import urllib.parse

            parsed = urllib.parse.urlsplit(base)
            host, port = parsed.hostname, parsed.port
        provider, name = _litellm_provider(name) if name else ("litellm", None)
    return Request(
        operation="chat",
        provider=provider,
        model=name,
        stream=stream,
        server_address=host,
        server_port=port,
        # Kept to estimate a call whose provider reported no usage (a chat completions
        # stream not asked for it): the SDK builds this input list for this call.
        body={
            "instructions": _arg(args, kwargs, 0, "system_instructions"),
            "input": _arg(args, kwargs, 1, "input"),
        },
    )


def _arg(args: Any, kwargs: Any, index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def _texts(value: Any) -> list[str]:
    """The strings of an item's content: a string, or a list of parts with ``text``."""
    if isinstance(value, str):
        return [value]
    found = []
    if isinstance(value, list):
        for part in value:
            text = part if isinstance(part, str) else field(part, "text")
            if isinstance(text, str):
                found.append(text)
    return found


def _item_text(item: Any) -> str:
    """The text an input or output item carries: a message's content, a tool call's
    arguments, a tool's output."""
    if isinstance(item, str):
        return item
    parts: list[str] = []
    for key in ("content", "arguments", "output"):
        parts.extend(_texts(field(item, key)))
    return "".join(parts)


def _estimate(request: Request, output: Any, model: str | None) -> TokenUsage:
    """Tokens counted here from the call's input items and the output the SDK assembled
    (the tool definitions are not counted: an estimate, and recorded as one)."""
    model = model or request.model
    instructions, items = request.body.get("instructions"), request.body.get("input")
    messages = [{"role": "system", "content": instructions}] if instructions else []
    if isinstance(items, str):
        items = [items]
    for item in items or ():
        role = field(item, "role") if not isinstance(item, str) else "user"
        messages.append(
            {"role": role if isinstance(role, str) else "tool", "content": _item_text(item)}
        )
    text = "".join(_item_text(item) for item in output or ())
    return TokenUsage(
        input=count_messages(messages, model),
        output=count_text(text, model),
        source=estimate_source(model),
    )


def _reported(raw: Any) -> TokenUsage | None:
    """The SDK's usage (Responses API shape), or None where the provider reported none (the
    SDK then reports zeros: a model call always has input tokens)."""
    if raw is None or not (field(raw, "input_tokens") or field(raw, "output_tokens")):
        return None
    return from_openai_responses(raw)


def _usage(request: Request, raw: Any, output: Any, model: str | None) -> TokenUsage:
    usage = _reported(raw)
    return usage if usage is not None else _estimate(request, output, model)


def _response_facts(request: Request, response: Any) -> ResponseFacts:
    rid = getattr(response, "response_id", None)
    return ResponseFacts(
        usage=_usage(request, getattr(response, "usage", None), response.output, None),
        response_id=rid if isinstance(rid, str) else None,
    )


class _Events:
    """The stream's terminal event (``response.completed``, ``.incomplete`` or ``.failed``):
    its response carries the usage, the served model and the id."""

    __slots__ = ("response", "started")

    def __init__(self) -> None:
        self.response: Any = None
        self.started = False  # an event came: the request was sent

    def add(self, event: Any) -> None:
        self.started = True
        if getattr(event, "type", None) in (
            "response.completed",
            "response.incomplete",
            "response.failed",
        ):
            self.response = getattr(event, "response", None)

    def facts(self, request: Request, error: BaseException | None) -> ResponseFacts:
        response = self.response
        if response is None:
            # Closed by the consumer after the first event: the request was sent and is
            # billed, its usage never came. A failure, or nothing sent: no usage known.
            if error is not None or not self.started:
                return NO_FACTS
            return ResponseFacts(usage=_estimate(request, (), None))
        model, rid = getattr(response, "model", None), getattr(response, "id", None)
        model = model if isinstance(model, str) and model else None
        status = getattr(response, "status", None)
        return ResponseFacts(
            usage=_usage(request, getattr(response, "usage", None), response.output, model),
            model=model,
            response_id=rid if isinstance(rid, str) and rid else None,
            finish_reasons=(status,) if isinstance(status, str) else (),
        )


class _Meter:
    __slots__ = ("get_current_span", "recorder")

    def __init__(self, recorder: Recorder, get_current_span: Callable[[], Any]) -> None:
        self.recorder = recorder
        self.get_current_span = get_current_span

    def begin(self, model: Any, args: Any, kwargs: Any, *, stream: bool) -> FrameworkCall | None:
        if not is_instrumentation_enabled():
            return None
        try:
            agent = _agent_name(self.get_current_span)
            tags = {"agent": agent} if agent else None
            return FrameworkCall(
                self.recorder, _request(model, stream, args, kwargs), FRAMEWORK, tags=tags
            )
        except Exception as exc:
            log_once("openai_agents.request", exc)
            return None


def _end_response(fc: FrameworkCall, response: Any) -> None:
    try:
        facts = NO_FACTS if fc.claimed else _response_facts(fc.call.request, response)
    except Exception as exc:
        log_once("openai_agents.response", exc)
        facts = NO_FACTS
    fc.end(facts)


def _get_response_wrapper(meter: _Meter) -> Callable[..., Any]:
    async def wrapper(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        fc = meter.begin(instance, args, kwargs, stream=False)
        if fc is None:
            return await wrapped(*args, **kwargs)
        fc.enter()
        try:
            response = await wrapped(*args, **kwargs)
        except BaseException as exc:
            fc.exit()
            fc.end(NO_FACTS, exc)
            raise
        fc.exit()
        _end_response(fc, response)
        return response

    return wrapper


async def _awatch(fc: FrameworkCall, stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """``stream`` with the model call's span current (and scope open) while each event is
    pulled; the call ends when the stream ends, fails or is closed."""
    seen = _Events()
    error: BaseException | None = None
    try:
        while True:
            fc.enter()
            try:
                event = await stream.__anext__()
            except StopAsyncIteration:
                break
            finally:
                fc.exit()
            fc.call.first_chunk()
            try:
                seen.add(event)
            except Exception as exc:
                log_once("openai_agents.event", exc)
            yield event
    except GeneratorExit:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        try:
            facts = NO_FACTS if fc.claimed else seen.facts(fc.call.request, error)
        except Exception as exc:
            log_once("openai_agents.stream", exc)
            facts = NO_FACTS
        fc.end(facts, error)


def _stream_response_wrapper(meter: _Meter) -> Callable[..., Any]:
    def wrapper(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        fc = meter.begin(instance, args, kwargs, stream=True)
        if fc is None:
            return wrapped(*args, **kwargs)
        try:
            stream = wrapped(*args, **kwargs)
        except BaseException as exc:
            fc.end(NO_FACTS, exc)
            raise
        return _awatch(fc, stream)

    return wrapper


def _tool_name(get_current_span: Callable[[], Any]) -> str | None:
    """The function tool running now, if the SDK's current span is a tool's (a run started
    inside a tool: an agent used as a tool, ``Agent.as_tool``)."""
    data = getattr(get_current_span(), "span_data", None)
    if type(data).__name__ != "FunctionSpanData":
        return None
    name = getattr(data, "name", None)
    return name if isinstance(name, str) and name else None


def _run_wrappers(
    options: dict[str, Any], get_current_span: Callable[[], Any]
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    from contextlib import ExitStack

    from ..attribution import attribute
    from ..workflow import workflow

    tp, mp = options.get("tracer_provider"), options.get("meter_provider")

    def flow(agent: Any) -> ExitStack | None:
        """The run's workflow, named after its starting agent; inside a tool, the calls of
        the run also carry the tool's name as the tag ``tool``."""
        if not is_instrumentation_enabled():
            return None
        stack = ExitStack()
        try:
            name = getattr(agent, "name", None)
            name = name if isinstance(name, str) and name else "Agent run"
            stack.enter_context(workflow(name, tracer_provider=tp, meter_provider=mp))
            tool = _tool_name(get_current_span)
            if tool is not None:
                stack.enter_context(attribute(tool=tool))
            return stack
        except Exception as exc:
            log_once("openai_agents.workflow", exc)
            stack.close()
            return None

    async def run(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        # AgentRunner.run(starting_agent, input, ...): run_sync runs it too.
        found = flow(kwargs.get("starting_agent", args[0] if args else None))
        if found is None:
            return await wrapped(*args, **kwargs)
        with found:
            return await wrapped(*args, **kwargs)

    async def start_streaming(
        wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any
    ) -> Any:
        # The background task of run_streamed: the run's whole loop, all keyword arguments.
        found = flow(kwargs.get("starting_agent"))
        if found is None:
            return await wrapped(*args, **kwargs)
        with found:
            return await wrapped(*args, **kwargs)

    return run, start_streaming


class _Patching:
    """Patches the SDK's runner and model classes as each module is imported."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.wrapped: list[tuple[Any, str]] = []
        self.done: set[str] = set()
        self.cancelled = False
        self._meter: _Meter | None = None

    def meter(self) -> _Meter:
        if self._meter is None:
            import importlib

            tracing = importlib.import_module(_TRACING)
            self._meter = _Meter(_recorder(self.options), tracing.get_current_span)
        return self._meter

    def model(self, module: Any) -> None:
        name = module.__name__
        if self.cancelled or name in self.done:
            return
        self.done.add(name)
        try:
            cls = getattr(module, dict(_MODELS)[name])
            meter = self.meter()
            self._wrap(cls, "get_response", _get_response_wrapper(meter))
            self._wrap(cls, "stream_response", _stream_response_wrapper(meter))
        except Exception as exc:  # never break the application's import
            log_once("instrument.openai_agents", exc)
            self.cancel()

    def runner(self, module: Any) -> None:
        if self.cancelled or _RUN in self.done:
            return
        self.done.add(_RUN)
        try:
            run, start_streaming = _run_wrappers(self.options, self.meter().get_current_span)
            self._wrap(module.AgentRunner, "run", run)
            self._wrap(module, "start_streaming", start_streaming)
        except Exception as exc:
            log_once("instrument.openai_agents", exc)
            self.cancel()

    def _wrap(self, owner: Any, name: str, wrapper: Any) -> None:
        wrapt.wrap_function_wrapper(owner, name, wrapper)
        self.wrapped.append((owner, name))

    def cancel(self) -> None:
        self.cancelled = True
        while self.wrapped:
            owner, name = self.wrapped.pop()
            try:
                unwrap(owner, name)
            except Exception as exc:
                log_once("uninstrument.openai_agents", exc)


class OpenAIAgentsInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Meters the OpenAI Agents SDK: each model call counted once with the client
    instrumentations and tagged with its agent, each run a workflow roll-up (see
    docs/frameworks.md). Accepts ``tracer_provider``, ``meter_provider``, ``catalog``."""

    _patching: _Patching | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("openai-agents >= 0.2",)

    def _instrument(self, **kwargs: Any) -> None:
        patching = self._patching = _Patching(kwargs)
        for module, _ in _MODELS:
            wrapt.register_post_import_hook(patching.model, module)
        wrapt.register_post_import_hook(patching.runner, _RUN)

    def _uninstrument(self, **kwargs: Any) -> None:
        patching, self._patching = self._patching, None
        if patching is not None:
            patching.cancel()
