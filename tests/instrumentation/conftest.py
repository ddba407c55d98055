"""Fixtures for instrumentation tests: real SDK providers with in-memory exporters and the
bundled provider server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan

from _telemetry import SdkProviders
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


def _serving(server: Callable[[], AbstractContextManager[Any]]) -> Any:
    """A fixture serving a local ``server`` for the tests of a module."""

    @pytest.fixture(scope="module")
    def fixture() -> Iterator[Any]:
        with server() as srv:
            yield srv

    return fixture


# One local server per wire format.
bedrock_server = _serving(BedrockServer)
cohere_server = _serving(CohereServer)
gemini_server = _serving(GeminiServer)
mistral_server = _serving(MistralServer)
ollama_server = _serving(OllamaServer)
shaped_server = _serving(OpenAIShapedServer)


class Telemetry(SdkProviders):
    """A tracer and meter provider whose spans and metric points tests can read."""

    def __init__(self) -> None:
        super().__init__()
        self.spans = self.exporter  # the name these tests read it by

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

    def sum_of(self, name: str, **attrs: Any) -> float:
        total = 0.0
        for p in self.points(name):
            if all(p.attributes.get(k) == v for k, v in attrs.items()):
                total += p.value if hasattr(p, "value") else p.sum
        return total


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry()
