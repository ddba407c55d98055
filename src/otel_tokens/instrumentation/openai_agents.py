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

import importlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from .._safety import log_once
from ..counting import count_messages, count_text, estimate_source
from ..usage import TokenUsage, from_openai_responses
from ..usage import read_field as field
from ._adapter import NO_FACTS, Request, ResponseFacts
from ._common import server_of
from ._framework import FrameworkCall
from ._framework_wrap import (
    Begin,
    FrameworkInstrumentor,
    Patching,
    call_wrappers,
    ender,
    run_wrappers,
    stream_wrapper,
)
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


def _model_begin(meter: _Meter, *, stream: bool) -> Begin:
    def begin(instance: Any, args: Any, kwargs: Any) -> FrameworkCall | None:
        return meter.begin(instance, args, kwargs, stream=stream)

    return begin


def _tool_name(get_current_span: Callable[[], Any]) -> str | None:
    """The function tool running now, if the SDK's current span is a tool's (a run started
    inside a tool: an agent used as a tool, ``Agent.as_tool``)."""
    data = getattr(get_current_span(), "span_data", None)
    if type(data).__name__ != "FunctionSpanData":
        return None
    name = getattr(data, "name", None)
    return name if isinstance(name, str) and name else None


def _run(get_current_span: Callable[[], Any], agent: Any) -> tuple[str, dict[str, str]]:
    """The run's workflow, named after its starting agent; inside a tool, the calls of the
    run also carry the tool's name as the tag ``tool``."""
    name = getattr(agent, "name", None)
    name = name if isinstance(name, str) and name else "Agent run"
    tool = _tool_name(get_current_span)
    return name, {"tool": tool} if tool is not None else {}


class OpenAIAgentsInstrumentor(FrameworkInstrumentor):
    """Meters the OpenAI Agents SDK: each model call counted once with the client
    instrumentations and tagged with its agent, each run a workflow roll-up (see
    docs/frameworks.md). Accepts ``tracer_provider``, ``meter_provider``, ``catalog``."""

    framework = FRAMEWORK
    dependencies = ("openai-agents >= 0.2",)

    def patches(self, patching: Patching) -> dict[str, Callable[[Any], None]]:
        options = patching.options
        meters: list[_Meter] = []

        def meter() -> _Meter:
            if not meters:
                tracing = importlib.import_module(_TRACING)
                meters.append(_Meter(_recorder(options), tracing.get_current_span))
            return meters[0]

        def model(module: Any) -> None:
            cls = getattr(module, dict(_MODELS)[module.__name__])
            get_response = call_wrappers(
                _model_begin(meter(), stream=False), ender(_response_facts)
            )[1]
            patching.wrap(cls, "get_response", get_response)
            begin = _model_begin(meter(), stream=True)
            patching.wrap(cls, "stream_response", stream_wrapper(begin, _Events, asynchronous=True))

        def runner(module: Any) -> None:
            current = meter().get_current_span
            # AgentRunner.run(starting_agent, input, ...): run_sync runs it too.
            run = run_wrappers(
                FRAMEWORK,
                options,
                lambda _, args, kwargs: _run(
                    current, kwargs.get("starting_agent", args[0] if args else None)
                ),
            )[1]
            # The background task of run_streamed: the run's whole loop, all keyword arguments.
            start_streaming = run_wrappers(
                FRAMEWORK,
                options,
                lambda _, args, kwargs: _run(current, kwargs.get("starting_agent")),
            )[1]
            patching.wrap(module.AgentRunner, "run", run)
            patching.wrap(module, "start_streaming", start_streaming)

        patches: dict[str, Callable[[Any], None]] = {module: model for module, _ in _MODELS}
        patches[_RUN] = runner
        return patches
