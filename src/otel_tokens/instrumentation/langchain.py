"""LangChain chat models and LangGraph graphs, at the runnable layer.

A chat model's call (``invoke``/``ainvoke``/``batch`` through ``_generate_with_cache``, and
``stream``/``astream``) is a `FrameworkCall`: its span is current while the model runs, and
the LangGraph node it runs in (``langgraph_node`` in the run's metadata) is its attribution
tag ``node``. LangChain's integrations call the provider through its client library
(langchain-openai through ``openai``, langchain-anthropic through ``anthropic``): with our
client instrumentation active, the client's span carries the usage; without it, the call is
metered from the message's ``usage_metadata`` (`from_langchain`), with the provider and model
LangChain names. A response served from LangChain's cache is not a provider call: no usage.

A LangGraph graph's ``invoke``/``ainvoke`` (an agent made with ``create_agent`` is one), and a
chain's (a ``RunnableSequence``: ``prompt | model | parser``), is a `workflow` named after
the graph or chain: its span totals the calls inside, each counted once (a chain run inside a
graph is a workflow nested in the graph's). The calls a LangChain tool makes while it runs
carry its name as the tag ``tool``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from .._safety import log_once
from ..counting import count_messages, count_text, estimate_source
from ..usage import TokenUsage, from_langchain
from ._adapter import NO_FACTS, Request, ResponseFacts
from ._framework import FrameworkCall
from ._framework_wrap import (
    Begin,
    FrameworkInstrumentor,
    Patching,
    Run,
    call_wrappers,
    ender,
    run_wrappers,
    stream_wrapper,
    tag_wrappers,
)
from ._instrumentor import _recorder
from ._scope import claim

if TYPE_CHECKING:
    from ._recording import Recorder

FRAMEWORK = "langchain"
_CHAT_MODELS = "langchain_core.language_models.chat_models"
_PREGEL = "langgraph.pregel.main"
_RUNNABLES = "langchain_core.runnables.base"
_TOOLS = "langchain_core.tools.base"
# LangChain's ls_provider names that differ from the GenAI conventions' provider names.
_PROVIDERS = {
    "azure": "azure.ai.openai",
    "amazon_bedrock": "aws.bedrock",
    "bedrock": "aws.bedrock",
    "bedrock_converse": "aws.bedrock",
    "google_genai": "gcp.gemini",
    "google_vertexai": "gcp.vertex_ai",
    "mistralai": "mistral_ai",
    "xai": "x_ai",
}


class _Meter:
    __slots__ = ("recorder",)

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def begin(
        self, model: Any, kwargs: Any, metadata: Any, *, stream: bool, messages: Any
    ) -> FrameworkCall | None:
        if not is_instrumentation_enabled():
            return None
        try:
            try:
                params = model._get_ls_params(**kwargs)
            except Exception:
                params = {}
            provider = params.get("ls_provider") or getattr(model, "_llm_type", FRAMEWORK)
            name = params.get("ls_model_name")
            request = Request(
                operation="chat",
                provider=_PROVIDERS.get(provider, provider),
                model=name if isinstance(name, str) else None,
                stream=stream,
                # Kept to estimate a response without usage (the messages list is LangChain's
                # own copy of the input, made for this call).
                body={"messages": messages},
            )
            tags = None
            if isinstance(metadata, dict):
                node = metadata.get("langgraph_node")
                if isinstance(node, str) and node:
                    tags = {"node": node}
            return FrameworkCall(self.recorder, request, FRAMEWORK, tags=tags)
        except Exception as exc:
            log_once("langchain.request", exc)
            return None


def _message_dicts(messages: Any) -> list[dict[str, Any]]:
    return [
        {"role": getattr(m, "type", "user"), "content": getattr(m, "content", "")}
        for m in messages or ()
    ]


def _estimate(request: Request, text: str, model: str | None) -> TokenUsage:
    model = model or request.model
    return TokenUsage(
        input=count_messages(_message_dicts(request.body.get("messages")), model),
        output=count_text(text, model),
        source=estimate_source(model),
    )


def _text(message: Any) -> str:
    content = getattr(message, "content", "")
    if isinstance(content, str):
        return content
    parts = []
    for block in content or ():
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and isinstance(block.get("text"), str):
            parts.append(block["text"])
    return "".join(parts)


def _result_facts(request: Request, result: Any) -> ResponseFacts:
    generations = getattr(result, "generations", None) or []
    if not generations:
        return NO_FACTS
    message = getattr(generations[0], "message", None)
    metadata = getattr(message, "response_metadata", None) or {}
    model = metadata.get("model_name") or metadata.get("model")
    model = model if isinstance(model, str) else None
    raw = getattr(message, "usage_metadata", None)
    if raw:
        usage = from_langchain(raw)
    else:
        usage = _estimate(
            request, "".join(_text(getattr(g, "message", None)) for g in generations), model
        )
    reason = metadata.get("finish_reason") or metadata.get("stop_reason")
    rid = metadata.get("id")
    return ResponseFacts(
        usage=usage,
        model=model,
        response_id=rid if isinstance(rid, str) else None,
        finish_reasons=(reason,) if isinstance(reason, str) else (),
    )


class _Chunks:
    """What a stream's chunks told so far: usage summed (LangChain splits it over chunks,
    as AIMessageChunk addition does), the model, the text for an estimate."""

    __slots__ = ("model", "parts", "usage")

    def __init__(self) -> None:
        self.usage: TokenUsage | None = None
        self.model: str | None = None
        self.parts: list[str] = []

    def add(self, chunk: Any) -> None:
        raw = getattr(chunk, "usage_metadata", None)
        if raw:
            usage = from_langchain(raw)
            self.usage = usage if self.usage is None else self.usage + usage
        metadata = getattr(chunk, "response_metadata", None)
        if self.model is None and isinstance(metadata, dict):
            model = metadata.get("model_name") or metadata.get("model")
            if isinstance(model, str):
                self.model = model
        self.parts.append(_text(chunk))

    def facts(self, request: Request, error: BaseException | None) -> ResponseFacts:
        usage = self.usage
        if usage is None and (self.parts or request.body.get("messages")):
            usage = _estimate(request, "".join(self.parts), self.model)
        return ResponseFacts(usage=usage, model=self.model)


def _generate_begin(meter: _Meter) -> Begin:
    def begin(instance: Any, args: Any, kwargs: Any) -> FrameworkCall | None:
        run_manager = kwargs.get("run_manager", args[2] if len(args) > 2 else None)
        stop = kwargs.get("stop", args[1] if len(args) > 1 else None)
        return meter.begin(
            instance,
            _ls_kwargs(kwargs, stop),
            getattr(run_manager, "metadata", None),
            stream=False,
            messages=args[0] if args else kwargs.get("messages"),
        )

    return begin


def _ls_kwargs(kwargs: Any, stop: Any) -> dict[str, Any]:
    """The call's options as ``_get_ls_params`` takes them (a per-call ``model`` override)."""
    out = {k: v for k, v in kwargs.items() if k not in ("run_manager", "messages", "stop")}
    out["stop"] = stop
    return out


def _stream_begin(meter: _Meter) -> Begin:
    def begin(instance: Any, args: Any, kwargs: Any) -> FrameworkCall | None:
        try:
            from langchain_core.runnables.config import ensure_config

            config = ensure_config(kwargs.get("config", args[1] if len(args) > 1 else None))
            model_input = kwargs.get("input", args[0] if args else None)
            messages = instance._convert_input(model_input).to_messages()
            options = {k: v for k, v in kwargs.items() if k not in ("input", "config")}
        except Exception as exc:
            log_once("langchain.stream_request", exc)
            return None
        return meter.begin(
            instance, options, config.get("metadata"), stream=True, messages=messages
        )

    return begin


def _cache_hit_hook(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    """LangChain's cache answered: no provider call, nothing billed; the framework call
    around it records no usage."""
    claim()
    return wrapped(*args, **kwargs)


def _graph_run(instance: Any, args: Any, kwargs: Any) -> tuple[str, dict[str, str]]:
    """A graph run's workflow, and its name as the attribution tag ``graph`` of the calls
    inside (an agent made with ``create_agent`` is a graph of the agent's name)."""
    name = getattr(instance, "name", None)
    name = name if isinstance(name, str) and name else "LangGraph"
    return name, {"graph": name}


def _chain_run(instance: Any, args: Any, kwargs: Any) -> tuple[str, dict[str, str]]:
    """A chain run's workflow: named as LangChain names the run (``run_name`` in its config,
    else the runnable's name, ``RunnableSequence`` by default), also the tag ``chain``."""
    config = kwargs.get("config", args[1] if len(args) > 1 else None)
    name = config.get("run_name") if isinstance(config, dict) else None
    if not isinstance(name, str) or not name:
        name = instance.get_name()
    name = name if isinstance(name, str) and name else "RunnableSequence"
    return name, {"chain": name}


def _tool_tags(instance: Any, args: Any, kwargs: Any) -> dict[str, str] | None:
    """A tool is running: the calls it makes carry its name as the tag ``tool``."""
    name = getattr(instance, "name", None)
    return {"tool": name} if isinstance(name, str) and name else None


class LangChainInstrumentor(FrameworkInstrumentor):
    """Meters LangChain chat models (invoke, batch, stream, async) counting once with the
    client instrumentations, tags each call with its LangGraph node and the tool it runs in,
    and makes every LangGraph graph run and chain run (``RunnableSequence``) a workflow
    roll-up (see docs/frameworks.md). Accepts ``tracer_provider``, ``meter_provider``,
    ``catalog``."""

    framework = FRAMEWORK
    dependencies = ("langchain-core >= 0.3",)

    def patches(self, patching: Patching) -> dict[str, Callable[[Any], None]]:
        options = patching.options

        def chat_models(module: Any) -> None:
            meter = _Meter(_recorder(options))
            base = module.BaseChatModel
            generate, agenerate = call_wrappers(_generate_begin(meter), ender(_result_facts))
            patching.wrap(base, "_generate_with_cache", generate)
            patching.wrap(base, "_agenerate_with_cache", agenerate)
            begin = _stream_begin(meter)
            patching.wrap(base, "stream", stream_wrapper(begin, _Chunks, asynchronous=False))
            patching.wrap(base, "astream", stream_wrapper(begin, _Chunks, asynchronous=True))
            patching.wrap(base, "_convert_cached_generations", _cache_hit_hook)

        def runs(owner_of: Callable[[Any], Any], run: Run) -> Callable[[Any], None]:
            def patch(module: Any) -> None:
                invoke, ainvoke = run_wrappers(FRAMEWORK, options, run)
                patching.wrap(owner_of(module), "invoke", invoke)
                patching.wrap(owner_of(module), "ainvoke", ainvoke)

            return patch

        def tools(module: Any) -> None:
            run, arun = tag_wrappers(FRAMEWORK, _tool_tags)
            patching.wrap(module.BaseTool, "run", run)
            patching.wrap(module.BaseTool, "arun", arun)

        return {
            _CHAT_MODELS: chat_models,
            _PREGEL: runs(lambda module: module.Pregel, _graph_run),
            _RUNNABLES: runs(lambda module: module.RunnableSequence, _chain_run),
            _TOOLS: tools,
        }
