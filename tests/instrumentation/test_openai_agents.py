"""The OpenAI Agents SDK (openai-agents), driven for real against the bundled provider
server: an agent that hands off to another, which calls a function tool (three model calls),
over the Responses API and over chat completions, streamed and not, with and without
`OpenAIInstrumentor` underneath. Each provider call has exactly one usage-carrying span, with
its agent's name; the run is a workflow whose total is the exact sum of its calls."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

agents = pytest.importorskip("agents")
openai = pytest.importorskip("openai")

from opentelemetry.sdk.trace import ReadableSpan  # noqa: E402

from otel_tokens import semconv as sc  # noqa: E402
from otel_tokens.instrumentation import (  # noqa: E402
    OpenAIAgentsInstrumentor,
    OpenAIInstrumentor,
)
from otel_tokens.pricing import Catalog  # noqa: E402

from ._frameworks import instrumenting  # noqa: E402
from ._frameworks import usage_spans as _usage_spans  # noqa: E402

# Nothing goes to OpenAI's trace backend: the SDK's own tracing is off (our metering does
# not depend on it: the agent is read from the SDK's current span, set either way).
agents.set_tracing_disabled(True)

GPT = "gpt-4o-mini"
MTOK = Decimal(1_000_000)
# gpt-4o-mini, USD per million tokens: input, cached input, output
MINI = (Decimal("0.15"), Decimal("0.075"), Decimal("0.6"))
# The server calls the first function tool the request declares; 2 prompt tokens cached.
TOOL_CALL = {"x-test-scenario": "tool_call", "x-test-cached-tokens": "2"}
AGENT_TAG = sc.BILLING_TAG_PREFIX + "agent"


def instrumented(telemetry: Any, *, clients: bool) -> Any:
    extra = (OpenAIInstrumentor(),) if clients else ()
    return instrumenting(telemetry, OpenAIAgentsInstrumentor(), *extra)


@pytest.fixture(params=[False, True], ids=["agents-only", "with-openai"])
def clients(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture(params=["responses", "chat"])
def api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class _OneToolCall(agents.AgentHooks):  # type: ignore[misc]
    """After its tool ran, the agent stops asking the server for tool calls (else the
    ``tool_call`` scenario would call it forever)."""

    async def on_tool_end(self, context: Any, agent: Any, tool: Any, result: Any) -> None:
        agent.model_settings = replace(agent.model_settings, extra_headers={})


def triage_agent(server: Any, api: str, *, include_usage: bool | None = True) -> Any:
    """``triage`` hands off to ``forecaster``, which calls its ``weather`` tool, then
    answers: three model calls. ``include_usage``: chat completions streams ask for their
    usage (``ModelSettings.include_usage``), as an application should."""
    client = openai.AsyncOpenAI(api_key="test", base_url=server.openai_base_url, max_retries=0)
    if api == "responses":
        model: Any = agents.OpenAIResponsesModel(model=GPT, openai_client=client)
    else:
        model = agents.OpenAIChatCompletionsModel(model=GPT, openai_client=client)

    @agents.function_tool
    def weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    settings = agents.ModelSettings(extra_headers=TOOL_CALL, include_usage=include_usage)
    forecaster = agents.Agent(
        name="forecaster",
        model=model,
        tools=[weather],
        model_settings=settings,
        hooks=_OneToolCall(),
    )
    return agents.Agent(name="triage", model=model, handoffs=[forecaster], model_settings=settings)


def usage_spans(telemetry: Any) -> list[ReadableSpan]:
    return sorted(_usage_spans(telemetry), key=lambda s: s.start_time or 0)


def cost(usage: Any) -> Decimal:
    cached = usage.input_tokens_details.cached_tokens
    return (
        (usage.input_tokens - cached) * MINI[0] + cached * MINI[1] + usage.output_tokens * MINI[2]
    ) / MTOK


def check_run(telemetry: Any, result: Any, sent: int, clients: bool) -> None:
    """One usage span per provider call with its exact tokens, cost and agent; all inside
    the run's workflow, whose total is their sum."""
    calls = [r.usage for r in result.raw_responses]
    assert len(calls) == sent == 3
    spans = usage_spans(telemetry)
    assert len(spans) == 3, [(s.name, dict(s.attributes or {})) for s in telemetry.finished()]
    for span, usage in zip(spans, calls, strict=True):
        attrs = span.attributes or {}
        cached = usage.input_tokens_details.cached_tokens
        assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == usage.input_tokens
        assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == usage.output_tokens
        assert attrs.get("gen_ai.billing.usage.cache_read", 0) == cached
        assert attrs[sc.BILLING_COST_DECIMAL] == str(cost(usage))
        assert attrs[sc.GEN_AI_PROVIDER_NAME] == "openai"
    assert [s.attributes[AGENT_TAG] for s in spans] == ["triage", "forecaster", "forecaster"]
    assert [u.input_tokens_details.cached_tokens for u in calls] == [2, 2, 0]
    assert telemetry.bucket_tokens() == {
        "input": sum(u.input_tokens - u.input_tokens_details.cached_tokens for u in calls),
        "cache_read": 4,
        "output": sum(u.output_tokens for u in calls),
    }

    (flow,) = [s for s in telemetry.our_spans() if s.name == "workflow triage"]
    attrs = flow.attributes or {}
    assert attrs[sc.GEN_AI_WORKFLOW_NAME] == "triage"
    assert attrs[sc.BILLING_WORKFLOW_CALLS] == 3
    assert attrs[sc.BILLING_WORKFLOW_COST_DECIMAL] == str(sum(map(cost, calls), Decimal(0)))

    by_id = {s.context.span_id: s for s in telemetry.finished()}

    def ancestors(span: ReadableSpan) -> list[ReadableSpan]:
        found = []
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            found.append(span)
        return found

    framing = [s for s in telemetry.our_spans() if s is not flow and s not in spans]
    for span in spans:  # every call inside the run's span
        assert flow in ancestors(span)
    if clients:  # the client's span, inside the SDK's model call span, has the usage
        assert len(framing) == 3
        for span in spans:
            parent = by_id[span.parent.span_id]  # type: ignore[union-attr]
            assert parent in framing
            assert sc.BILLING_USAGE_SOURCE not in (parent.attributes or {})
            assert parent.attributes[AGENT_TAG] == span.attributes[AGENT_TAG]  # type: ignore[index]
    else:
        assert framing == []


def test_a_run_counts_each_call_once_with_its_agent(
    server: Any, telemetry: Any, clients: bool, api: str
) -> None:
    before = len(server.requests)
    with instrumented(telemetry, clients=clients):
        result = agents.Runner.run_sync(triage_agent(server, api), "weather in Paris?")
    assert result.last_agent.name == "forecaster"
    check_run(telemetry, result, len(server.requests) - before, clients)


def test_a_streamed_run_counts_each_call_once_with_its_agent(
    server: Any, telemetry: Any, clients: bool, api: str
) -> None:
    before = len(server.requests)

    async def run() -> Any:
        result = agents.Runner.run_streamed(triage_agent(server, api), "weather in Paris?")
        async for _ in result.stream_events():
            pass
        return result

    with instrumented(telemetry, clients=clients):
        result = asyncio.run(run())
    check_run(telemetry, result, len(server.requests) - before, clients)


def test_the_agent_is_a_metric_attribute_where_allowed(
    server: Any, telemetry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TOKENS_METRIC_ATTRIBUTES", "tenant,feature,agent")
    with instrumented(telemetry, clients=True):
        agents.Runner.run_sync(triage_agent(server, "responses"), "weather in Paris?")
    agents_seen = {p.attributes.get(AGENT_TAG) for p in telemetry.points(sc.METRIC_BILLING_TOKENS)}
    assert agents_seen == {"triage", "forecaster"}


def test_a_stream_without_usage_is_estimated_not_zero(
    server: Any, telemetry: Any, clients: bool
) -> None:
    """A chat completions stream not asked for its usage reports none (the SDK's usage is
    zeros): each call is counted once, estimated and marked so, never priced at $0."""

    async def run() -> Any:
        agent = triage_agent(server, "chat", include_usage=None)
        result = agents.Runner.run_streamed(agent, "weather in Paris?")
        async for _ in result.stream_events():
            pass
        return result

    with instrumented(telemetry, clients=clients):
        result = asyncio.run(run())
    assert [r.usage.input_tokens for r in result.raw_responses] == [0, 0, 0]
    spans = usage_spans(telemetry)
    assert len(spans) == 3
    for span in spans:
        attrs = span.attributes or {}
        assert attrs[sc.BILLING_USAGE_SOURCE].startswith("estimated")
        assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] > 0
        assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] > 0
        assert Decimal(str(attrs[sc.BILLING_COST_DECIMAL])) > 0
    (flow,) = [s for s in telemetry.our_spans() if s.name == "workflow triage"]
    assert (flow.attributes or {})[sc.BILLING_WORKFLOW_CALLS] == 3


CLAUDE = "claude-3-5-haiku-20241022"
# claude-3-5-haiku, USD per million tokens: input, 5m cache write, read, output
HAIKU = (Decimal("0.8"), Decimal("1"), Decimal("0.08"), Decimal("4"))
# 13 prompt tokens: 3 read from the cache, 6 written to it, 4 uncached; 11 output
CLAUDE_BUCKETS = {"input": 4, "cache_read": 3, "cache_write_5m": 6, "output": 11}
CLAUDE_COST = (4 * HAIKU[0] + 6 * HAIKU[1] + 3 * HAIKU[2] + 11 * HAIKU[3]) / MTOK


@pytest.mark.parametrize("stream", [False, True], ids=["run", "streamed"])
@pytest.mark.parametrize("litellm_on", [False, True], ids=["agents-only", "with-litellm"])
def test_a_litellm_model_is_metered_from_the_sdks_usage_or_by_litellm(
    server: Any, telemetry: Any, stream: bool, litellm_on: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``LitellmModel`` reaches Anthropic over LiteLLM's own HTTP, which no client
    instrumentation sees: without `LiteLLMInstrumentor` the SDK's usage is metered (cache
    reads and writes included); with it, LiteLLM's call carries the usage. Once either way."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    litellm_model = pytest.importorskip("agents.extensions.models.litellm_model")
    from otel_tokens.instrumentation import LiteLLMInstrumentor

    model = litellm_model.LitellmModel(
        model=f"anthropic/{CLAUDE}", base_url=server.anthropic_base_url, api_key="test"
    )
    headers = {"x-test-cached-tokens": "3", "x-test-cache-write-tokens": "6"}
    settings = agents.ModelSettings(include_usage=True, extra_headers=headers)
    agent = agents.Agent(name="poet", model=model, model_settings=settings)

    async def run() -> Any:
        if not stream:
            return await agents.Runner.run(agent, "hello there")
        result = agents.Runner.run_streamed(agent, "hello there")
        async for _ in result.stream_events():
            pass
        return result

    with instrumented(telemetry, clients=False):
        litellm = LiteLLMInstrumentor()
        if litellm_on:
            litellm.instrument(
                tracer_provider=telemetry.tracer_provider,
                meter_provider=telemetry.meter_provider,
                catalog=Catalog(),
            )
        try:
            asyncio.run(run())
        finally:
            if litellm_on:
                litellm.uninstrument()
    (span,) = usage_spans(telemetry)
    attrs = span.attributes or {}
    assert attrs[sc.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert attrs[sc.BILLING_COST_DECIMAL] == str(CLAUDE_COST)
    assert attrs[AGENT_TAG] == "poet"
    assert telemetry.bucket_tokens() == CLAUDE_BUCKETS
    (flow,) = [s for s in telemetry.our_spans() if s.name == "workflow poet"]
    assert (flow.attributes or {})[sc.BILLING_WORKFLOW_COST_DECIMAL] == str(CLAUDE_COST)
    framing = [s for s in telemetry.our_spans() if s not in (span, flow)]
    if litellm_on:  # LiteLLM's span, inside the SDK's model call span, has the usage
        (outer,) = framing
        assert span.parent is not None and span.parent.span_id == outer.context.span_id
    else:
        assert framing == []


def test_an_agent_used_as_a_tool_is_a_nested_workflow_tagged_with_the_tool(
    server: Any, telemetry: Any, clients: bool
) -> None:
    client = openai.AsyncOpenAI(api_key="test", base_url=server.openai_base_url, max_retries=0)
    model = agents.OpenAIResponsesModel(model=GPT, openai_client=client)
    translator = agents.Agent(name="translator", model=model)
    manager = agents.Agent(
        name="manager",
        model=model,
        tools=[translator.as_tool(tool_name="translate", tool_description="Translate text.")],
        model_settings=agents.ModelSettings(extra_headers=TOOL_CALL),
        hooks=_OneToolCall(),
    )
    with instrumented(telemetry, clients=clients):
        result = agents.Runner.run_sync(manager, "say hello in French")
    spans = usage_spans(telemetry)
    assert [(s.attributes or {})[AGENT_TAG] for s in spans] == ["manager", "translator", "manager"]
    assert [(s.attributes or {}).get(sc.BILLING_TAG_PREFIX + "tool") for s in spans] == [
        None,
        "translate",
        None,
    ]
    flows = {s.name: s for s in telemetry.our_spans() if s.name.startswith("workflow ")}
    outer, inner = flows["workflow manager"], flows["workflow translator"]
    assert inner.parent is not None and inner.context.trace_id == outer.context.trace_id
    assert (outer.attributes or {})[sc.BILLING_WORKFLOW_CALLS] == 3
    assert (inner.attributes or {})[sc.BILLING_WORKFLOW_CALLS] == 1
    costs = [Decimal(str((s.attributes or {})[sc.BILLING_COST_DECIMAL])) for s in spans]
    assert (outer.attributes or {})[sc.BILLING_WORKFLOW_COST_DECIMAL] == str(sum(costs))
    assert (inner.attributes or {})[sc.BILLING_WORKFLOW_COST_DECIMAL] == str(costs[1])
    assert len(result.raw_responses) == 2  # the manager's own calls; the translator's are its run's


def test_with_the_sdks_own_tracing_on_the_agent_is_still_read(server: Any, telemetry: Any) -> None:
    """The SDK's tracing on (its spans real, sent to a processor of the application's; here
    none, so nothing leaves the machine): the same spans, tags and roll-up."""
    agents.set_trace_processors([])
    agents.set_tracing_disabled(False)
    try:
        before = len(server.requests)
        with instrumented(telemetry, clients=True):
            result = agents.Runner.run_sync(triage_agent(server, "responses"), "weather?")
    finally:
        agents.set_tracing_disabled(True)
    check_run(telemetry, result, len(server.requests) - before, clients=True)


def test_a_failed_call_raises_as_without_us(server: Any, telemetry: Any, clients: bool) -> None:
    client = openai.AsyncOpenAI(api_key="test", base_url=server.openai_base_url, max_retries=0)
    model = agents.OpenAIResponsesModel(model=GPT, openai_client=client)
    settings = agents.ModelSettings(extra_headers={"x-test-scenario": "server_error"})
    agent = agents.Agent(name="fragile", model=model, model_settings=settings)
    with pytest.raises(openai.InternalServerError):
        agents.Runner.run_sync(agent, "hello")
    with instrumented(telemetry, clients=clients), pytest.raises(openai.InternalServerError):
        agents.Runner.run_sync(agent, "hello")
    assert usage_spans(telemetry) == []
    calls = [s for s in telemetry.our_spans() if s.name == f"chat {GPT}"]
    assert calls and all(s.status.status_code.name == "ERROR" for s in calls)
    assert {(s.attributes or {}).get(AGENT_TAG) for s in calls} == {"fragile"}
    (flow,) = [s for s in telemetry.our_spans() if s.name == "workflow fragile"]
    assert (flow.attributes or {})[sc.BILLING_WORKFLOW_CALLS] == 0


def test_uninstrument_leaves_the_sdk_as_it_was(server: Any, telemetry: Any) -> None:
    with instrumented(telemetry, clients=False):
        pass
    for cls in (agents.OpenAIResponsesModel, agents.OpenAIChatCompletionsModel):
        assert not hasattr(cls.get_response, "__wrapped__")
        assert not hasattr(cls.stream_response, "__wrapped__")
    import agents.run as agents_run

    assert not hasattr(agents_run.AgentRunner.run, "__wrapped__")
    assert not hasattr(agents_run.start_streaming, "__wrapped__")
    agents.Runner.run_sync(triage_agent(server, "responses"), "weather?")
    assert telemetry.our_spans() == []
