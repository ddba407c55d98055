"""Fixtures for instrumentation tests: real SDK providers with in-memory exporters and the
bundled provider server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_tokens import semconv as sc
from otel_tokens_fakes import (
    BedrockServer,
    CohereServer,
    GeminiServer,
    MistralServer,
    OllamaServer,
    OpenAIShapedServer,
    ProviderServer,
)


@pytest.fixture(scope="session")
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as srv:
        yield srv


# One local server per wire format, for the tests of a module.
@pytest.fixture(scope="module")
def bedrock_server() -> Iterator[BedrockServer]:
    with BedrockServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def cohere_server() -> Iterator[CohereServer]:
    with CohereServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def gemini_server() -> Iterator[GeminiServer]:
    with GeminiServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def mistral_server() -> Iterator[MistralServer]:
    with MistralServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def ollama_server() -> Iterator[OllamaServer]:
    with OllamaServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def shaped_server() -> Iterator[OpenAIShapedServer]:
    with OpenAIShapedServer() as srv:
        yield srv


class Telemetry:
    """A tracer and meter provider whose spans and metric points tests can read."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def our_spans(self) -> list[ReadableSpan]:
        return [s for s in self.finished() if s.instrumentation_scope.name == "otel_tokens"]

    def only_span(self) -> ReadableSpan:
        spans = self.our_spans()
        assert len(spans) == 1, [s.name for s in self.finished()]
        return spans[0]

    def bucket_tokens(self) -> dict[str, int]:
        """Billable tokens of the ``gen_ai.billing.tokens`` points, by bucket."""
        found: dict[str, int] = {}
        for p in self.points(sc.METRIC_BILLING_TOKENS):
            bucket = p.attributes[sc.BILLING_TOKEN_BUCKET]
            found[bucket] = found.get(bucket, 0) + int(p.value)
        return found

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        if data is None:
            return found
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def sum_of(self, name: str, **attrs: Any) -> float:
        total = 0.0
        for p in self.points(name):
            if all(p.attributes.get(k) == v for k, v in attrs.items()):
                total += p.value if hasattr(p, "value") else p.sum
        return total


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry()
