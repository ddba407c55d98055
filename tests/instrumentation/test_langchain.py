"""LangChain (langchain-openai, langchain-anthropic) and LangGraph, driven for real against
the bundled provider server: one usage-carrying span per provider call with or without our
client instrumentations underneath, the graph node on each call, a graph run rolled up as a
workflow, exact costs worked by hand."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

pytest.importorskip("langchain_core")
langchain_openai = pytest.importorskip("langchain_openai")
langchain_anthropic = pytest.importorskip("langchain_anthropic")
langgraph_graph = pytest.importorskip("langgraph.graph")

from otel_tokens import semconv as sc  # noqa: E402
from otel_tokens.instrumentation import (  # noqa: E402
    AnthropicInstrumentor,
    LangChainInstrumentor,
    OpenAIInstrumentor,
)
from otel_tokens.usage import InvalidUsageError, TokenUsage, from_langchain  # noqa: E402

from ._frameworks import instrumenting, only_usage_span, usage_spans, workflows  # noqa: E402

CLAUDE = "claude-3-5-haiku-20241022"
GPT = "gpt-4o-mini"
MTOK = Decimal(1_000_000)
# claude-3-5-haiku, USD per million tokens: input, 5m cache write, 1h cache write, read, output
HAIKU = (Decimal("0.8"), Decimal("1"), Decimal("1.6"), Decimal("0.08"), Decimal("4"))
# gpt-4o-mini: input, output
MINI = (Decimal("0.15"), Decimal("0.6"))
# 13 prompt tokens: 3 read, 6 written (4 of them for an hour), 4 uncached
CACHE_HEADERS = {
    "x-test-cached-tokens": "3",
    "x-test-cache-write-tokens": "6",
    "x-test-cache-write-1h": "4",
}
CLAUDE_BUCKETS = {
    "input": 4,
    "cache_read": 3,
    "cache_write_5m": 2,
    "cache_write_1h": 4,
    "output": 11,
}
CLAUDE_COST = (4 * HAIKU[0] + 2 * HAIKU[1] + 4 * HAIKU[2] + 3 * HAIKU[3] + 11 * HAIKU[4]) / MTOK
GPT_COST = (10 * MINI[0] + 11 * MINI[1]) / MTOK  # "hello there": 10 prompt, 11 completion


def instrumented(telemetry: Any, *, clients: bool) -> Any:
    extra = (OpenAIInstrumentor(), AnthropicInstrumentor()) if clients else ()
    return instrumenting(telemetry, LangChainInstrumentor(), *extra)


@pytest.fixture(params=[False, True], ids=["langchain-only", "with-clients"])
def clients(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def claude(server: Any, **kwargs: Any) -> Any:
    return langchain_anthropic.ChatAnthropic(
        model=CLAUDE,
        base_url=server.anthropic_base_url,
        api_key="test",
        default_headers=CACHE_HEADERS,
        max_retries=0,
        **kwargs,
    )


def gpt(server: Any, **kwargs: Any) -> Any:
    return langchain_openai.ChatOpenAI(
        model=GPT, base_url=server.openai_base_url, api_key="test", max_retries=0, **kwargs
    )


def test_anthropic_invoke_is_counted_once(server: Any, telemetry: Any, clients: bool) -> None:
    with instrumented(telemetry, clients=clients):
        message = claude(server).invoke("hello there")
    assert message.usage_metadata["input_tokens"] == 13
    span = only_usage_span(telemetry)
    assert telemetry.bucket_tokens() == CLAUDE_BUCKETS
    attrs = span.attributes or {}
    assert attrs[sc.BILLING_COST_DECIMAL] == str(CLAUDE_COST)
    assert attrs[sc.GEN_AI_PROVIDER_NAME] == "anthropic"
    framing = [s for s in telemetry.our_spans() if s is not span]
    if clients:  # the client's span, inside LangChain's, carries the usage
        (outer,) = framing
        assert span.parent is not None
        assert span.parent.span_id == outer.context.span_id
    else:
        assert framing == []


def test_openai_invoke_and_stream_are_counted_once(
    server: Any, telemetry: Any, clients: bool
) -> None:
    with instrumented(telemetry, clients=clients):
        model = gpt(server)
        model.invoke("hello there")
        chunks = list(model.stream("hello there"))
        batch_spans = len(usage_spans(telemetry))
        replies = model.batch(["hello there", "hello there"])
    assert chunks
    assert len(replies) == 2
    assert len(usage_spans(telemetry)) == batch_spans + 2  # one per prompt of the batch
    spans = usage_spans(telemetry)[:batch_spans]
    assert len(spans) == 2
    streamed = [s for s in spans if s.attributes.get(sc.GEN_AI_REQUEST_STREAM)]
    if not clients:
        # No usage chunk was asked for: estimated, never lost. (The OpenAI client
        # instrumentation estimates the same way for this endpoint.)
        (stream_span,) = streamed
        assert stream_span.attributes[sc.BILLING_USAGE_SOURCE] == "estimated"
    invoked = [s for s in spans if s.attributes[sc.BILLING_USAGE_SOURCE] == "provider"]
    (invoke_span,) = invoked
    assert invoke_span.attributes[sc.BILLING_COST_DECIMAL] == str(GPT_COST)


def test_async_invoke_and_stream(server: Any, telemetry: Any, clients: bool) -> None:
    async def run() -> None:
        # langchain-openai shares one async HTTP client per (base URL, timeout) across event
        # loops; a timeout of this test's own keeps asyncio.run's closed loops apart.
        model = gpt(server, stream_usage=True, timeout=30.0 + clients)
        await model.ainvoke("hello there")
        async for _ in model.astream("hello there"):
            pass

    with instrumented(telemetry, clients=clients):
        asyncio.run(run())
    spans = usage_spans(telemetry)
    assert len(spans) == 2
    assert {s.attributes[sc.BILLING_USAGE_SOURCE] for s in spans} == {"provider"}
    assert telemetry.bucket_tokens() == {"input": 20, "output": 22}


def review_graph(writer: Any, critic: Any) -> Any:
    """The graph ``review``: node ``writer`` (a node function), then node ``critic``, which
    asks the model ``critic`` about the first message."""
    graph = langgraph_graph.StateGraph(langgraph_graph.MessagesState)
    graph.add_node("writer", writer)
    graph.add_node("critic", lambda state: {"messages": [critic.invoke(state["messages"][:1])]})
    graph.add_edge(langgraph_graph.START, "writer")
    graph.add_edge("writer", "critic")
    graph.add_edge("critic", langgraph_graph.END)
    return graph.compile(name="review")


def test_a_langgraph_run_is_a_workflow_with_each_node_on_its_calls(
    server: Any, telemetry: Any, clients: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TOKENS_METRIC_ATTRIBUTES", "tenant,feature,node")
    with instrumented(telemetry, clients=clients):
        writer = gpt(server)
        graph = review_graph(
            lambda state: {"messages": [writer.invoke(state["messages"])]}, claude(server)
        )
        graph.invoke({"messages": [("user", "hello there")]})
    spans = usage_spans(telemetry)
    assert sorted(s.attributes["gen_ai.billing.tag.node"] for s in spans) == ["critic", "writer"]
    assert {s.attributes["gen_ai.billing.tag.graph"] for s in spans} == {"review"}
    (flow,) = [s for s in telemetry.our_spans() if s.name == "workflow review"]
    attrs = flow.attributes or {}
    assert attrs[sc.GEN_AI_WORKFLOW_NAME] == "review"
    assert attrs[sc.BILLING_WORKFLOW_CALLS] == 2
    assert attrs[sc.BILLING_WORKFLOW_COST_DECIMAL] == str(GPT_COST + CLAUDE_COST)
    for span in spans:  # every call inside the workflow's span
        assert span.context.trace_id == flow.context.trace_id
    # The node is a metric attribute where allowed.
    nodes = {
        p.attributes.get("gen_ai.billing.tag.node")
        for p in telemetry.points(sc.METRIC_BILLING_TOKENS)
    }
    assert nodes == {"writer", "critic"}


def prompt_chain(model: Any) -> Any:
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    return ChatPromptTemplate.from_messages([("user", "{text}")]) | model | StrOutputParser()


def test_a_chain_run_is_a_workflow_named_after_the_chain(
    server: Any, telemetry: Any, clients: bool
) -> None:
    with instrumented(telemetry, clients=clients):
        chain = prompt_chain(gpt(server))
        answer = chain.invoke({"text": "hello there"})
        # An async client of its own (see test_async_invoke_and_stream).
        named = prompt_chain(gpt(server, timeout=40.0 + clients)).with_config(run_name="summarize")
        asyncio.run(named.ainvoke({"text": "hello there"}))
    assert isinstance(answer, str)
    flows = workflows(telemetry)
    assert set(flows) == {"RunnableSequence", "summarize"}
    for attrs in flows.values():
        assert attrs[sc.BILLING_WORKFLOW_CALLS] == 1
        assert attrs[sc.BILLING_WORKFLOW_COST_DECIMAL] == str(GPT_COST)
    spans = usage_spans(telemetry)
    assert len(spans) == 2
    chains = sorted(s.attributes[sc.BILLING_TAG_PREFIX + "chain"] for s in spans)
    assert chains == ["RunnableSequence", "summarize"]
    assert telemetry.bucket_tokens() == {"input": 20, "output": 22}


def test_a_chain_inside_a_graph_is_a_nested_workflow_each_call_counted_once(
    server: Any, telemetry: Any, clients: bool
) -> None:
    with instrumented(telemetry, clients=clients):
        chain = prompt_chain(gpt(server)).with_config(run_name="draft")

        def writer(state: Any) -> Any:
            return {"messages": [("ai", chain.invoke({"text": "hello there"}))]}

        review_graph(writer, claude(server)).invoke({"messages": [("user", "hello there")]})
    flows = workflows(telemetry)
    assert set(flows) == {"review", "draft"}
    assert flows["review"][sc.BILLING_WORKFLOW_CALLS] == 2
    assert flows["review"][sc.BILLING_WORKFLOW_COST_DECIMAL] == str(GPT_COST + CLAUDE_COST)
    assert flows["draft"][sc.BILLING_WORKFLOW_CALLS] == 1
    assert flows["draft"][sc.BILLING_WORKFLOW_COST_DECIMAL] == str(GPT_COST)
    spans = usage_spans(telemetry)
    assert len(spans) == 2
    (drafted,) = [s for s in spans if s.attributes.get(sc.BILLING_TAG_PREFIX + "chain")]
    assert drafted.attributes[sc.BILLING_TAG_PREFIX + "node"] == "writer"
    assert drafted.attributes[sc.BILLING_TAG_PREFIX + "graph"] == "review"
    # The chain's workflow span is inside the graph's.
    by_name = {s.name: s for s in telemetry.our_spans()}
    assert by_name["workflow draft"].context.trace_id == by_name["workflow review"].context.trace_id
    assert telemetry.bucket_tokens() == {
        "input": 10 + CLAUDE_BUCKETS["input"],
        "cache_read": 3,
        "cache_write_5m": 2,
        "cache_write_1h": 4,
        "output": 11 + 11,
    }


def test_the_calls_a_tool_makes_carry_its_name(
    server: Any, telemetry: Any, clients: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from langchain_core.tools import tool

    monkeypatch.setenv("OTEL_TOKENS_METRIC_ATTRIBUTES", "tenant,feature,tool")
    with instrumented(telemetry, clients=clients):
        model = claude(server)
        # An async client of its own (see test_async_invoke_and_stream).
        amodel = claude(server, timeout=50.0 + clients)

        @tool
        def critique(text: str) -> str:
            """Critique a text."""
            return str(model.invoke(text).content)

        @tool
        async def acritique(text: str) -> str:
            """Critique a text, asynchronously."""
            return str((await amodel.ainvoke(text)).content)

        critique.invoke({"text": "hello there"})
        asyncio.run(acritique.ainvoke({"text": "hello there"}))
        model.invoke("hello there")  # no tool running: no tag
    spans = usage_spans(telemetry)
    assert len(spans) == 3
    tools = sorted(str(s.attributes.get(sc.BILLING_TAG_PREFIX + "tool")) for s in spans)
    assert tools == ["None", "acritique", "critique"]
    assert telemetry.bucket_tokens() == {k: 3 * v for k, v in CLAUDE_BUCKETS.items()}
    cost = sum(
        Decimal(str(s.attributes[sc.BILLING_COST_DECIMAL]))
        for s in spans
        if s.attributes.get(sc.BILLING_TAG_PREFIX + "tool")
    )
    assert cost == 2 * CLAUDE_COST
    points = {
        p.attributes.get(sc.BILLING_TAG_PREFIX + "tool")
        for p in telemetry.points(sc.METRIC_BILLING_TOKENS)
    }
    assert points == {"critique", "acritique", None}


def test_a_response_from_langchains_cache_is_not_billed(server: Any, telemetry: Any) -> None:
    from langchain_core.caches import InMemoryCache

    with instrumented(telemetry, clients=False):
        model = claude(server, cache=InMemoryCache())
        first = model.invoke("hello there")
        second = model.invoke("hello there")
    assert second.content == first.content
    only_usage_span(telemetry)
    assert telemetry.bucket_tokens() == CLAUDE_BUCKETS


def test_a_failed_call_raises_as_without_us(server: Any, telemetry: Any, clients: bool) -> None:
    model = langchain_anthropic.ChatAnthropic(
        model=CLAUDE,
        base_url=server.anthropic_base_url,
        api_key="test",
        default_headers={"x-test-scenario": "server_error"},
        max_retries=0,
    )
    import anthropic

    with instrumented(telemetry, clients=clients), pytest.raises(anthropic.InternalServerError):
        model.invoke("hello there")
    assert usage_spans(telemetry) == []
    for span in telemetry.our_spans():
        assert not span.status.is_ok


def test_uninstrument_restores_langchain(server: Any, telemetry: Any) -> None:
    with instrumented(telemetry, clients=False):
        pass
    claude(server).invoke("hello there")
    assert telemetry.our_spans() == []


def test_uninstrument_restores_chains_and_tools(server: Any, telemetry: Any) -> None:
    from langchain_core.tools import tool
    from opentelemetry import baggage

    @tool
    def running(text: str) -> str:
        """The tool tag in the context while the tool runs."""
        return str(baggage.get_baggage(sc.BILLING_TAG_PREFIX + "tool"))

    with instrumented(telemetry, clients=False):
        assert running.invoke({"text": "hello there"}) == "running"
    assert running.invoke({"text": "hello there"}) == "None"
    prompt_chain(gpt(server)).invoke({"text": "hello there"})
    assert telemetry.our_spans() == []


# --- the usage converter --------------------------------------------------------------------
def test_from_langchain_splits_cache_writes_by_lifetime() -> None:
    usage = from_langchain(
        {
            "input_tokens": 13,
            "output_tokens": 11,
            "input_token_details": {
                "cache_read": 3,
                "cache_creation": 0,
                "ephemeral_5m_input_tokens": 2,
                "ephemeral_1h_input_tokens": 4,
            },
            "output_token_details": {"reasoning": 5},
        }
    )
    assert usage == TokenUsage(
        input=4, cache_read=3, cache_write_5m=2, cache_write_1h=4, output=6, reasoning=5
    )


def test_from_langchain_refuses_details_above_the_totals() -> None:
    with pytest.raises(InvalidUsageError, match="exceed input_tokens"):
        from_langchain(
            {"input_tokens": 2, "output_tokens": 1, "input_token_details": {"cache_read": 3}}
        )
    with pytest.raises(InvalidUsageError, match="exceed output_tokens"):
        from_langchain(
            {"input_tokens": 2, "output_tokens": 1, "output_token_details": {"reasoning": 3}}
        )
