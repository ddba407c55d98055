"""Overhead per call of the framework instrumentations (LiteLLM, LangChain, LangGraph, the
OpenAI Agents SDK).

Each framework runs without network: LiteLLM with ``mock_response`` (its own response object,
usage included, built by LiteLLM as for a provider reply), LangChain with its
``GenericFakeChatModel`` answering messages that carry ``usage_metadata``, LangGraph with a
one-node graph calling that model, the Agents SDK with a Responses model whose request
returns a canned reply (a run of one agent, one model call). So what is timed is the
framework's own work, with and without our instrumentation, in the same process,
alternating rounds (instrument, measure, uninstrument, measure). Times are the calling
thread's CPU time; the added time is the difference of the medians of the per-call times,
the median over rounds.

The framework meters these calls itself (no client instrumentation underneath): its span,
usage, price and metric points, the most work a framework call does. A call a client
instrumentation claims records nothing of its own, so it adds less.

    python bench/frameworks.py            # about 20 s
    python bench/frameworks.py --rounds 9 --calls 400
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def _telemetry() -> dict[str, Any]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class _Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(_Drop()))
    return {
        "tracer_provider": tracer_provider,
        "meter_provider": MeterProvider(metric_readers=[InMemoryMetricReader()]),
    }


def litellm_call() -> Callable[[], Any]:
    import litellm

    def call() -> Any:
        return litellm.completion(
            model="anthropic/claude-3-5-haiku-20241022",
            messages=[{"role": "user", "content": "hello"}],
            mock_response="Hi there, how can I help?",
            api_key="bench",
        )

    return call


def _fake_model() -> Any:
    import itertools

    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    reply = AIMessage(
        content="Hi there, how can I help?",
        usage_metadata={"input_tokens": 12, "output_tokens": 8, "total_tokens": 20},
        response_metadata={"model_name": "gpt-4o-mini"},
    )

    class _Model(GenericFakeChatModel):
        @property
        def _llm_type(self) -> str:
            return "openai"

    return _Model(messages=itertools.repeat(reply))


def langchain_call() -> Callable[[], Any]:
    model = _fake_model()
    return lambda: model.invoke("hello")


def langgraph_call() -> Callable[[], Any]:
    from langgraph.graph import END, START, MessagesState, StateGraph

    model = _fake_model()
    graph = StateGraph(MessagesState)
    graph.add_node("answer", lambda state: {"messages": [model.invoke(state["messages"])]})
    graph.add_edge(START, "answer")
    graph.add_edge("answer", END)
    app = graph.compile(name="bench")
    return lambda: app.invoke({"messages": [("user", "hello")]})


def agents_call() -> Callable[[], Any]:
    """An Agents SDK run of one agent, one model call: ``OpenAIResponsesModel`` whose request
    (``_fetch_response``) returns a canned Responses API reply instead of sending it."""
    import asyncio

    import agents
    import openai
    from openai.types.responses import Response

    agents.set_tracing_disabled(True)
    reply = Response.model_validate(
        {
            "id": "resp_bench",
            "object": "response",
            "created_at": 0,
            "model": "gpt-4o-mini-2024-07-18",
            "status": "completed",
            "output": [
                {
                    "type": "message",
                    "id": "msg_bench",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": "Hi there!", "annotations": []}],
                }
            ],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": 12,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": 8,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 20,
            },
        }
    )

    class _Model(agents.OpenAIResponsesModel):
        async def _fetch_response(self, *args: Any, **kwargs: Any) -> Any:
            return reply

    client = openai.AsyncOpenAI(api_key="bench", base_url="http://127.0.0.1:9/v1")
    agent = agents.Agent(name="bench", model=_Model(model="gpt-4o-mini", openai_client=client))
    loop = asyncio.new_event_loop()
    return lambda: loop.run_until_complete(agents.Runner.run(agent, "hello"))


def _instrumentor(name: str) -> Any:
    from otel_tokens.instrumentation import LangChainInstrumentor, LiteLLMInstrumentor

    if name == "agents":
        from otel_tokens.instrumentation import OpenAIAgentsInstrumentor

        return OpenAIAgentsInstrumentor()
    return LiteLLMInstrumentor() if name == "litellm" else LangChainInstrumentor()


def _per_call(call: Callable[[], Any], calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.thread_time_ns()
        call()
        times.append(time.thread_time_ns() - start)
    return statistics.median(times) / 1000


def measure(name: str, make: Callable[[], Callable[[], Any]], rounds: int, calls: int) -> None:
    telemetry = _telemetry()
    call = make()
    for _ in range(20):  # warm up: imports, caches, the price catalog
        call()
    instrumentor = _instrumentor(name)
    instrumentor.instrument(**telemetry)
    for _ in range(20):
        call()
    instrumentor.uninstrument()
    added, base = [], []
    for i in range(rounds):
        order = (True, False) if i % 2 else (False, True)
        got: dict[bool, float] = {}
        for on in order:
            if on:
                instrumentor.instrument(**telemetry)
            got[on] = _per_call(call, calls)
            if on:
                instrumentor.uninstrument()
        added.append(got[True] - got[False])
        base.append(got[False])
    print(
        f"{name:10} framework call {statistics.median(base):8.1f} us   "
        f"added by otel-tokens {statistics.median(added):7.1f} us "
        f"(rounds: {', '.join(f'{a:.1f}' for a in sorted(added))})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    for name, make in (
        ("litellm", litellm_call),
        ("langchain", langchain_call),
        ("langgraph", langgraph_call),
        ("agents", agents_call),
    ):
        try:
            measure(name, make, args.rounds, args.calls)
        except ImportError as exc:
            print(f"{name:10} not measured: {exc}")


if __name__ == "__main__":
    main()
