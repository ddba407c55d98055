"""The count-once scope of framework calls (instrumentation/_framework.py), with the real
Recorder and SDK: nesting, threads, and what a claimed call leaves on its span."""

from __future__ import annotations

import contextvars
import threading
from typing import Any

from otel_tokens import semconv as sc
from otel_tokens.instrumentation._adapter import Request, ResponseFacts
from otel_tokens.instrumentation._framework import FrameworkCall
from otel_tokens.instrumentation._recording import Recorder
from otel_tokens.pricing import Catalog
from otel_tokens.usage import TokenUsage

USAGE = TokenUsage(input=100, output=20)


def recorder(telemetry: Any) -> Recorder:
    return Recorder(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        catalog=Catalog(),
    )


def request() -> Request:
    return Request(operation="chat", provider="openai", model="gpt-4o-mini")


def with_usage(telemetry: Any) -> list[Any]:
    return [s for s in telemetry.our_spans() if sc.BILLING_USAGE_SOURCE in (s.attributes or {})]


def test_an_unclaimed_framework_call_records_its_own_usage(telemetry: Any) -> None:
    fc = FrameworkCall(recorder(telemetry), request(), "test")
    fc.enter()
    fc.exit()
    fc.end(ResponseFacts(usage=USAGE, model="gpt-4o-mini"))
    (span,) = with_usage(telemetry)
    assert span.attributes[sc.BILLING_COST_DECIMAL] == "0.000027"  # 100 x 0.15 + 20 x 0.6
    assert telemetry.bucket_tokens() == {"input": 100, "output": 20}


def test_nested_framework_calls_count_the_innermost_once(telemetry: Any) -> None:
    rec = recorder(telemetry)
    outer = FrameworkCall(rec, request(), "outer")
    outer.enter()
    inner = FrameworkCall(rec, request(), "inner")  # made inside: claims the outer call
    inner.enter()
    inner.exit()
    inner.end(ResponseFacts(usage=USAGE))
    outer.exit()
    outer.end(ResponseFacts(usage=USAGE))  # the same call seen by the outer framework
    assert outer.claimed
    assert not inner.claimed
    (span,) = with_usage(telemetry)
    assert telemetry.bucket_tokens() == {"input": 100, "output": 20}
    outer_span = next(s for s in telemetry.our_spans() if s is not span)
    assert span.parent is not None
    assert span.parent.span_id == outer_span.context.span_id
    assert telemetry.points(sc.METRIC_CLIENT_OPERATION_DURATION)[0].count == 1


def test_a_call_metered_in_a_thread_started_with_the_context_claims_the_scope(
    telemetry: Any,
) -> None:
    rec = recorder(telemetry)
    fc = FrameworkCall(rec, request(), "test")
    fc.enter()

    def client_call() -> None:
        call = rec.start(operation="chat", provider="openai", request_model="gpt-4o-mini")
        call.end(USAGE)

    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(client_call,))
    thread.start()
    thread.join()
    fc.exit()
    fc.end(ResponseFacts(usage=USAGE))
    assert fc.claimed
    assert len(with_usage(telemetry)) == 1
    assert telemetry.bucket_tokens() == {"input": 100, "output": 20}


def test_tags_are_on_the_framework_span_and_on_the_client_span_inside(telemetry: Any) -> None:
    rec = recorder(telemetry)
    fc = FrameworkCall(rec, request(), "test", tags={"node": "writer"})
    fc.enter()
    call = rec.start(operation="chat", provider="openai", request_model="gpt-4o-mini")
    call.end(USAGE)
    fc.exit()
    fc.end()
    spans = telemetry.our_spans()
    assert len(spans) == 2
    assert {s.attributes["gen_ai.billing.tag.node"] for s in spans} == {"writer"}


def test_a_claimed_framework_call_that_failed_is_marked_on_its_span(telemetry: Any) -> None:
    rec = recorder(telemetry)
    fc = FrameworkCall(rec, request(), "test")
    fc.enter()
    rec.start(operation="chat", provider="openai", request_model="gpt-4o-mini").end(None)
    fc.exit()
    fc.end(error=TimeoutError("slow"))
    framework_span = next(
        s for s in telemetry.our_spans() if s.name == "chat gpt-4o-mini" and s.parent is None
    )
    assert framework_span.attributes[sc.ERROR_TYPE] == "TimeoutError"
    assert not framework_span.status.is_ok
    assert with_usage(telemetry) == []
