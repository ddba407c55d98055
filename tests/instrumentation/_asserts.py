"""Checks the provider tests share: what a span and the metric points say about a call's
usage and cost, and an instrumentor switched on for the length of a test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from otel_tokens import semconv as sc
from otel_tokens.pricing import Catalog
from otel_tokens.usage import TokenUsage


def attrs_of(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def client_span(telemetry: Any) -> ReadableSpan:
    """The one span of ours, a CLIENT span."""
    span: ReadableSpan = telemetry.only_span()
    assert span.kind == SpanKind.CLIENT
    return span


class ServerHarness:
    """A local provider ``server`` and the ``telemetry`` its instrumented calls land in."""

    def __init__(self, server: Any, telemetry: Any) -> None:
        self.server = server
        self.telemetry = telemetry

    def spans(self) -> list[ReadableSpan]:
        spans: list[ReadableSpan] = self.telemetry.our_spans()
        return spans

    def span(self) -> ReadableSpan:
        return client_span(self.telemetry)

    def bucket_tokens(self) -> dict[str, int]:
        tokens: dict[str, int] = self.telemetry.bucket_tokens()
        return tokens


def usage_on_span(attrs: dict[str, Any]) -> dict[str, Any]:
    """The ``gen_ai.billing.usage.*`` attributes, by bucket."""
    return {
        k[len(sc.BILLING_USAGE_PREFIX) :]: v
        for k, v in attrs.items()
        if k.startswith(sc.BILLING_USAGE_PREFIX)
    }


def assert_span_usage(
    span: ReadableSpan, usage: TokenUsage, cost: Decimal | None, *, status: str | None = None
) -> None:
    """The span carries exactly ``usage`` (disjoint buckets and inclusive totals) and, when
    given, ``cost`` in USD (and the pricing ``status``)."""
    attrs = attrs_of(span)
    assert usage_on_span(attrs) == dict(usage.buckets()), attrs
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == usage.input_total
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == usage.output_total
    if cost is not None:
        assert Decimal(str(attrs[sc.BILLING_COST_DECIMAL])) == cost
        assert attrs[sc.GEN_AI_USAGE_COST_CURRENCY] == "USD"
        if status is not None:
            assert attrs[sc.BILLING_PRICING_STATUS] == status


def assert_token_metrics(telemetry: Any, usage: TokenUsage, cost: Decimal) -> None:
    """``gen_ai.client.token.usage`` adds up to ``usage``'s totals, the cost counter to ``cost``."""
    t = telemetry
    assert t.sum_of(sc.METRIC_CLIENT_TOKEN_USAGE, **{sc.GEN_AI_TOKEN_TYPE: "input"}) == (
        usage.input_total
    )
    assert t.sum_of(sc.METRIC_CLIENT_TOKEN_USAGE, **{sc.GEN_AI_TOKEN_TYPE: "output"}) == (
        usage.output_total
    )
    assert t.sum_of(sc.METRIC_BILLING_COST) == pytest.approx(float(cost), rel=1e-9)


_BUNDLED = object()  # a fresh catalog of the bundled prices (``None`` is a catalog argument too)


@contextmanager
def instrumenter(inst: Any, telemetry: Any) -> Iterator[Callable[..., Any]]:
    """``do(catalog=..., **kwargs)`` instruments ``inst`` with the test's providers, ``catalog``
    (by default the bundled prices) and ``kwargs``; undone when the block ends, if done."""

    def do(catalog: Any = _BUNDLED, **kwargs: Any) -> Any:
        inst.instrument(
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
            catalog=Catalog() if catalog is _BUNDLED else catalog,
            **kwargs,
        )
        return inst

    try:
        yield do
    finally:
        if inst.is_instrumented_by_opentelemetry:
            inst.uninstrument()


@contextmanager
def instrumenting(inst: Any, telemetry: Any, catalog: Catalog | None = None) -> Iterator[Any]:
    """``inst`` instrumented with the test's providers (and ``catalog``, by default the bundled
    prices) until the block ends."""
    with instrumenter(inst, telemetry) as do:
        yield do(_BUNDLED if catalog is None else catalog)
