"""``workflow(name)``: the cost roll-up of an agent task.

Calls are metered through the instrumentation's recording path (`Recorder` / `Call`, what
every provider wrapper uses) without a server; tests/instrumentation/test_attribution_e2e.py
rolls up real ``openai`` client calls.

Expected costs are computed here from genai-prices' published gpt-4o-mini prices (USD per
1M tokens: input 0.15, cached input 0.075, output 0.6), not from otel-tokens' pricing code.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

import otel_tokens
from _telemetry import SdkProviders
from otel_tokens import semconv as sc
from otel_tokens.instrumentation._recording import Recorder
from otel_tokens.pricing import Catalog
from otel_tokens.usage import TokenUsage
from otel_tokens.workflow import Rollup, open_rollups, workflow

D = Decimal
MTOK = D(1_000_000)
RATES = {"input": D("0.15"), "cache_read": D("0.075"), "output": D("0.6")}
MODEL = "gpt-4o-mini"
WF = sc.BILLING_WORKFLOW_USAGE_PREFIX


def cost(usage: TokenUsage) -> Decimal:
    return sum((D(n) * RATES[b] for b, n in usage.buckets()), D(0)) / MTOK


class Env(SdkProviders):
    """SDK providers with in-memory exporters and a recorder metering calls into them."""

    def __init__(self) -> None:
        super().__init__()
        self.recorder = Recorder(
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            catalog=Catalog(),
        )

    def workflow(self, name: str) -> workflow:
        return workflow(
            name, tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )

    def call(self, usage: TokenUsage, model: str = MODEL) -> None:
        """One model call, metered as the instrumentation does (start, then end)."""
        self.recorder.start(operation="chat", provider="openai", request_model=model).end(usage)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def workflow_spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [
            s
            for s in self.spans()
            if sc.GEN_AI_WORKFLOW_NAME in (s.attributes or {})
            and (name is None or (s.attributes or {})[sc.GEN_AI_WORKFLOW_NAME] == name)
        ]

    def only(self, name: str) -> dict[str, Any]:
        (span,) = self.workflow_spans(name)
        return dict(span.attributes or {})

    def call_spans(self) -> list[ReadableSpan]:
        return [s for s in self.spans() if sc.GEN_AI_WORKFLOW_NAME not in (s.attributes or {})]

    def histogram(self) -> dict[tuple[str, str], Any]:
        data = self.reader.get_metrics_data()
        out: dict[tuple[str, str], Any] = {}
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == sc.METRIC_BILLING_WORKFLOW_COST:
                        for p in m.data.data_points:
                            key = (
                                p.attributes[sc.GEN_AI_WORKFLOW_NAME],
                                p.attributes[sc.GEN_AI_USAGE_COST_CURRENCY],
                            )
                            out[key] = p
        return out


@pytest.fixture
def env() -> Env:
    return Env()


U1 = TokenUsage(input=1200, output=340)
U2 = TokenUsage(input=800, cache_read=4000, output=1000)
U3 = TokenUsage(input=7, output=3)


def totals(*usages: TokenUsage) -> dict[str, int]:
    total = sum(usages, TokenUsage())
    return {WF + b: n for b, n in total.buckets()}


def test_context_manager_totals_tokens_per_bucket_and_exact_cost(env: Env) -> None:
    with env.workflow("triage-ticket") as wf:
        assert isinstance(wf, workflow)
        env.call(U1)
        env.call(U2)
        env.call(U3)
    attrs = env.only("triage-ticket")
    expected = totals(U1, U2, U3)
    assert {k: v for k, v in attrs.items() if k.startswith(WF)} == expected
    assert expected == {WF + "input": 2007, WF + "cache_read": 4000, WF + "output": 1343}
    assert attrs[sc.BILLING_WORKFLOW_CALLS] == 3
    assert attrs[sc.BILLING_WORKFLOW_UNPRICED_CALLS] == 0
    assert attrs[sc.BILLING_WORKFLOW_COST_CURRENCY] == "USD"
    total = D(attrs[sc.BILLING_WORKFLOW_COST_DECIMAL])
    assert total == cost(U1) + cost(U2) + cost(U3)
    assert total == D("0.00140685")
    # Exactly the sum of the calls' own exact costs.
    per_call = [D((s.attributes or {})[sc.BILLING_COST_DECIMAL]) for s in env.call_spans()]  # type: ignore[arg-type]
    assert len(per_call) == 3
    assert sum(per_call, D(0)) == total


def test_workflow_span_is_named_and_parents_its_calls(env: Env) -> None:
    with env.workflow("triage-ticket"):
        env.call(U1)
    (wf_span,) = env.workflow_spans()
    assert wf_span.name == "workflow triage-ticket"
    (call_span,) = env.call_spans()
    assert call_span.parent is not None
    assert call_span.parent.span_id == wf_span.context.span_id
    assert call_span.context.trace_id == wf_span.context.trace_id
    assert wf_span.status.status_code == StatusCode.UNSET


def test_exported_at_the_package_top_level() -> None:
    assert otel_tokens.workflow is workflow


def test_empty_workflow(env: Env) -> None:
    with env.workflow("nothing"):
        pass
    attrs = env.only("nothing")
    assert attrs[sc.BILLING_WORKFLOW_CALLS] == 0
    assert attrs[sc.BILLING_WORKFLOW_UNPRICED_CALLS] == 0
    assert not any(k.startswith(WF) for k in attrs)
    assert sc.BILLING_WORKFLOW_COST_DECIMAL not in attrs
    assert env.histogram() == {}


def test_calls_outside_are_not_counted(env: Env) -> None:
    env.call(U1)
    with env.workflow("w"):
        env.call(U3)
    env.call(U2)
    attrs = env.only("w")
    assert attrs[sc.BILLING_WORKFLOW_CALLS] == 1
    assert D(attrs[sc.BILLING_WORKFLOW_COST_DECIMAL]) == cost(U3)
    assert open_rollups() == ()


def test_decorator_sync(env: Env) -> None:
    @env.workflow("summarise")
    def summarise(n: int) -> str:
        for _ in range(n):
            env.call(U3)
        return "done"

    assert summarise.__name__ == "summarise"
    assert summarise(2) == "done"
    assert summarise(1) == "done"
    runs = sorted(
        (s.attributes or {})[sc.BILLING_WORKFLOW_CALLS] for s in env.workflow_spans("summarise")
    )
    assert runs == [1, 2]  # one span per run
    point = env.histogram()["summarise", "USD"]
    assert point.count == 2
    assert D(str(point.sum)) == 3 * cost(U3)


def test_decorator_async(env: Env) -> None:
    @env.workflow("agent")
    async def agent() -> int:
        await asyncio.sleep(0)
        env.call(U1)
        await asyncio.sleep(0)
        env.call(U2)
        return 42

    assert asyncio.iscoroutinefunction(agent)
    assert asyncio.run(agent()) == 42
    attrs = env.only("agent")
    assert attrs[sc.BILLING_WORKFLOW_CALLS] == 2
    assert D(attrs[sc.BILLING_WORKFLOW_COST_DECIMAL]) == cost(U1) + cost(U2)


def test_async_context_manager(env: Env) -> None:
    async def main() -> None:
        async with env.workflow("agent"):
            await asyncio.sleep(0)
            env.call(U1)

    asyncio.run(main())
    assert env.only("agent")[sc.BILLING_WORKFLOW_CALLS] == 1


def test_nested_workflows_outer_includes_inner_calls_once(env: Env) -> None:
    with env.workflow("outer"):
        env.call(U1)
        with env.workflow("inner"):
            env.call(U2)
            with env.workflow("innermost"):
                env.call(U3)
        env.call(U3)
    outer, inner, innermost = env.only("outer"), env.only("inner"), env.only("innermost")
    assert outer[sc.BILLING_WORKFLOW_CALLS] == 4
    assert inner[sc.BILLING_WORKFLOW_CALLS] == 2
    assert innermost[sc.BILLING_WORKFLOW_CALLS] == 1
    assert D(outer[sc.BILLING_WORKFLOW_COST_DECIMAL]) == cost(U1) + cost(U2) + 2 * cost(U3)
    assert D(inner[sc.BILLING_WORKFLOW_COST_DECIMAL]) == cost(U2) + cost(U3)
    assert D(innermost[sc.BILLING_WORKFLOW_COST_DECIMAL]) == cost(U3)
    assert {k: v for k, v in outer.items() if k.startswith(WF)} == totals(U1, U2, U3, U3)
    # Spans nest: innermost under inner under outer.
    spans = {s.name: s for s in env.workflow_spans()}
    assert spans["workflow inner"].parent.span_id == spans["workflow outer"].context.span_id  # type: ignore[union-attr]
    assert (
        spans["workflow innermost"].parent.span_id  # type: ignore[union-attr]
        == spans["workflow inner"].context.span_id
    )
    # The histogram records each run by name.
    hist = env.histogram()
    assert set(hist) == {("outer", "USD"), ("inner", "USD"), ("innermost", "USD")}
    assert D(str(hist["inner", "USD"].sum)) == cost(U2) + cost(U3)


def test_same_name_nested_counts_in_both_runs(env: Env) -> None:
    with env.workflow("step"):
        env.call(U1)
        with env.workflow("step"):
            env.call(U3)
    runs = sorted((s.attributes or {})[sc.BILLING_WORKFLOW_CALLS] for s in env.workflow_spans())
    assert runs == [1, 2]
    assert env.histogram()["step", "USD"].count == 2


def test_calls_from_asyncio_tasks_are_included(env: Env) -> None:
    async def step(usage: TokenUsage) -> None:
        await asyncio.sleep(0.001)
        env.call(usage)

    async def main() -> None:
        with env.workflow("fanout"):
            await asyncio.gather(step(U1), step(U2), step(U3))
            task = asyncio.create_task(step(U3))
            await task

    asyncio.run(main())
    attrs = env.only("fanout")
    assert attrs[sc.BILLING_WORKFLOW_CALLS] == 4
    assert D(attrs[sc.BILLING_WORKFLOW_COST_DECIMAL]) == cost(U1) + cost(U2) + 2 * cost(U3)


def test_calls_from_threads_started_with_the_context_are_included(env: Env) -> None:
    with env.workflow("threads"):
        ctx = contextvars.copy_context()
        thread = threading.Thread(target=ctx.run, args=(env.call, U1))
        thread.start()
        thread.join()
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(contextvars.copy_context().run, env.call, U3) for _ in range(16)]
            for f in futures:
                f.result()
        # A thread started without the context is not part of the workflow.
        bare = threading.Thread(target=env.call, args=(U2,))
        bare.start()
        bare.join()
    attrs = env.only("threads")
    assert attrs[sc.BILLING_WORKFLOW_CALLS] == 17
    assert D(attrs[sc.BILLING_WORKFLOW_COST_DECIMAL]) == cost(U1) + 16 * cost(U3)
    assert {k: v for k, v in attrs.items() if k.startswith(WF)} == totals(U1, *[U3] * 16)


def test_workflow_span_carries_no_usage_so_summing_spans_counts_each_call_once(
    env: Env,
) -> None:
    with env.workflow("outer"), env.workflow("inner"):
        env.call(U1)
        env.call(U2)
    for span in env.workflow_spans():
        for key in span.attributes or {}:
            assert not key.startswith("gen_ai.usage."), key
            assert not key.startswith(sc.BILLING_USAGE_PREFIX), key
            assert key not in (sc.BILLING_COST_DECIMAL, sc.GEN_AI_USAGE_COST_AMOUNT), key
    # A backend summing gen_ai.usage.* over every span gets each call once.
    spans = env.spans()
    assert len(spans) == 4
    summed_input = sum(
        int((s.attributes or {}).get(sc.GEN_AI_USAGE_INPUT_TOKENS, 0))  # type: ignore[arg-type]
        for s in spans
    )
    assert summed_input == U1.input_total + U2.input_total
    summed_cost = sum(
        (D(str((s.attributes or {}).get(sc.BILLING_COST_DECIMAL, 0))) for s in spans), D(0)
    )
    assert summed_cost == cost(U1) + cost(U2)


def test_unpriced_calls_are_counted_and_left_out_of_the_cost(env: Env) -> None:
    with env.workflow("mixed"):
        env.call(U1)
        env.call(U2, model="no-such-model-anywhere")
        env.call(U3)
    attrs = env.only("mixed")
    assert attrs[sc.BILLING_WORKFLOW_CALLS] == 3
    assert attrs[sc.BILLING_WORKFLOW_UNPRICED_CALLS] == 1
    assert D(attrs[sc.BILLING_WORKFLOW_COST_DECIMAL]) == cost(U1) + cost(U3)
    # The unpriced call's tokens are still in the totals.
    assert {k: v for k, v in attrs.items() if k.startswith(WF)} == totals(U1, U2, U3)


def test_only_unpriced_calls(env: Env) -> None:
    with env.workflow("unknown"):
        env.call(U1, model="no-such-model-anywhere")
    attrs = env.only("unknown")
    assert attrs[sc.BILLING_WORKFLOW_UNPRICED_CALLS] == 1
    assert sc.BILLING_WORKFLOW_COST_DECIMAL not in attrs
    assert env.histogram() == {}


def test_failed_call_without_usage_is_not_a_call(env: Env) -> None:
    with env.workflow("w"):
        call = env.recorder.start(operation="chat", provider="openai", request_model=MODEL)
        call.end(None, RuntimeError("connection reset"))
        env.call(U3)
    attrs = env.only("w")
    assert attrs[sc.BILLING_WORKFLOW_CALLS] == 1
    assert D(attrs[sc.BILLING_WORKFLOW_COST_DECIMAL]) == cost(U3)


def test_a_call_still_running_when_the_workflow_ends_is_not_in_its_total(env: Env) -> None:
    with env.workflow("w"):
        streaming = env.recorder.start(operation="chat", provider="openai", request_model=MODEL)
        env.call(U3)
    streaming.end(U1)  # the stream finishes later
    attrs = env.only("w")
    assert attrs[sc.BILLING_WORKFLOW_CALLS] == 1
    assert D(attrs[sc.BILLING_WORKFLOW_COST_DECIMAL]) == cost(U3)
    assert len(env.call_spans()) == 2  # still metered in its own span


def test_an_exception_marks_the_span_and_propagates(env: Env) -> None:
    with pytest.raises(KeyError), env.workflow("fails"):
        env.call(U1)
        raise KeyError("missing")
    (span,) = env.workflow_spans("fails")
    attrs = dict(span.attributes or {})
    assert attrs[sc.ERROR_TYPE] == "KeyError"
    assert span.status.status_code == StatusCode.ERROR
    assert attrs[sc.BILLING_WORKFLOW_CALLS] == 1  # the totals are still there
    assert D(attrs[sc.BILLING_WORKFLOW_COST_DECIMAL]) == cost(U1)
    assert env.histogram()["fails", "USD"].count == 1
    assert open_rollups() == ()


def test_rollup_and_open_rollups(env: Env) -> None:
    assert open_rollups() == ()
    with env.workflow("outer") as outer:
        with env.workflow("inner") as inner:
            assert [r.name for r in open_rollups()] == ["outer", "inner"]
            env.call(U1)
            assert inner.rollup.calls == 1
            assert inner.rollup.usage == U1
        assert [r.name for r in open_rollups()] == ["outer"]
        assert isinstance(outer.rollup, Rollup)
        assert outer.rollup.calls == 1
        assert outer.rollup.costs == {"USD": cost(U1)}
        assert outer.rollup.unpriced == 0
    assert open_rollups() == ()


def test_one_instance_shared_by_concurrent_tasks_keeps_runs_apart(env: Env) -> None:
    """A module-level workflow object used by overlapping tasks: one span per run, each
    with its own calls, and every context restored."""
    shared = env.workflow("request")

    async def handle(usage: TokenUsage, delay: float) -> None:
        async with shared:
            await asyncio.sleep(delay)
            env.call(usage)
            await asyncio.sleep(delay)
        assert open_rollups() == ()

    async def main() -> None:
        await asyncio.gather(handle(U1, 0.0), handle(U2, 0.005), handle(U3, 0.01))

    asyncio.run(main())
    spans = env.workflow_spans("request")
    assert len(spans) == 3
    costs = sorted(D((s.attributes or {})[sc.BILLING_WORKFLOW_COST_DECIMAL]) for s in spans)  # type: ignore[arg-type]
    assert costs == sorted([cost(U1), cost(U2), cost(U3)])
    assert all((s.attributes or {})[sc.BILLING_WORKFLOW_CALLS] == 1 for s in spans)
    # Each call is parented by its own run's span.
    by_id = {s.context.span_id: s for s in spans}
    for call in env.call_spans():
        assert call.parent is not None and call.parent.span_id in by_id
    assert len({c.parent.span_id for c in env.call_spans()}) == 3  # type: ignore[union-attr]


def test_current_span_restored_after_the_workflow(env: Env) -> None:
    tracer = env.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        with env.workflow("w"):
            assert trace.get_current_span() is not request
        assert trace.get_current_span() is request
    (wf_span,) = env.workflow_spans()
    assert wf_span.parent is not None
    assert wf_span.parent.span_id == request.get_span_context().span_id


def test_concurrent_calls_from_many_threads_add_up_exactly(env: Env) -> None:
    usages = [TokenUsage(input=1 + i, output=2 * i + 1) for i in range(64)]
    with env.workflow("many"), ThreadPoolExecutor(max_workers=16) as pool:
        for f in [pool.submit(contextvars.copy_context().run, env.call, u) for u in usages]:
            f.result()
    attrs = env.only("many")
    assert attrs[sc.BILLING_WORKFLOW_CALLS] == 64
    assert D(attrs[sc.BILLING_WORKFLOW_COST_DECIMAL]) == sum(map(cost, usages), D(0))
    assert {k: v for k, v in attrs.items() if k.startswith(WF)} == totals(*usages)


@pytest.fixture(autouse=True)
def _no_open_workflows() -> Iterator[None]:
    yield
    assert open_rollups() == ()


def test_rollup_of_the_last_run_stays_readable(env: Env) -> None:
    wf = env.workflow("w")
    with pytest.raises(LookupError):
        _ = wf.rollup
    with wf:
        env.call(U1)
    assert wf.rollup.calls == 1
    assert wf.rollup.costs == {"USD": cost(U1)}
