"""What the framework tests (LiteLLM, LangChain/LangGraph, the OpenAI Agents SDK) share:
instrumenting for one test against its telemetry, and reading the spans that carry usage
and the workflow roll-ups."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from otel_tokens import semconv as sc
from otel_tokens.pricing import Catalog


@contextmanager
def instrumenting(
    telemetry: Any, *instrumentors: Any, catalog: Catalog | None = None
) -> Iterator[None]:
    """``instrumentors`` on, against ``telemetry``'s providers, for the block."""
    options = {
        "tracer_provider": telemetry.tracer_provider,
        "meter_provider": telemetry.meter_provider,
        "catalog": catalog or Catalog(),
    }
    for instrumentor in instrumentors:
        instrumentor.instrument(**options)
    try:
        yield
    finally:
        for instrumentor in instrumentors:
            instrumentor.uninstrument()


def usage_spans(telemetry: Any) -> list[ReadableSpan]:
    """Our spans that carry usage (one per provider call, whoever metered it)."""
    return [s for s in telemetry.our_spans() if sc.BILLING_USAGE_SOURCE in (s.attributes or {})]


def only_usage_span(telemetry: Any) -> ReadableSpan:
    spans = usage_spans(telemetry)
    assert len(spans) == 1, [(s.name, dict(s.attributes or {})) for s in telemetry.finished()]
    return spans[0]


def workflows(telemetry: Any) -> dict[str, Any]:
    """The workflow spans' attributes, by workflow name (each name once)."""
    found = {}
    for span in telemetry.our_spans():
        attrs = dict(span.attributes or {})
        if sc.GEN_AI_WORKFLOW_NAME in attrs:
            assert attrs[sc.GEN_AI_WORKFLOW_NAME] not in found, "one workflow per run"
            found[attrs[sc.GEN_AI_WORKFLOW_NAME]] = attrs
    return found
