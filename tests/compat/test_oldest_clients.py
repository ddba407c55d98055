"""The oldest client releases we support, through the paths every release has.

CI runs this file a second time in a virtualenv with ``openai==1.66.*`` (httpx, before
httpx2) and ``anthropic==0.49.*`` (before the SDK made its own spans); in the main venv it
runs against the newest releases. Only APIs present in both are used here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from _telemetry import SdkProviders
from otel_tokens import semconv as sc
from otel_tokens.instrumentation import AnthropicInstrumentor, OpenAIInstrumentor
from otel_tokens.pricing import Catalog
from otel_tokens_fakes import ProviderServer


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    with ProviderServer(stream_delay=0) as srv:
        yield srv


class T(SdkProviders):
    def usage_spans(self) -> list[Any]:
        return [
            s
            for s in self.exporter.get_finished_spans()
            if (s.attributes or {}).get(sc.BILLING_PRICING_STATUS)
        ]

    def tokens(self) -> int:
        return sum(int(p.value) for p in self.points(sc.METRIC_BILLING_TOKENS))


@pytest.fixture
def t() -> Iterator[T]:
    telemetry = T()
    catalog = Catalog()
    oi, ai = OpenAIInstrumentor(), AnthropicInstrumentor()
    for instrumentor in (oi, ai):
        instrumentor.instrument(
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
            catalog=catalog,
        )
    yield telemetry
    oi.uninstrument()
    ai.uninstrument()


def _one(t: T, status: str = "priced") -> dict[str, Any]:
    (span,) = t.usage_spans()
    attrs = dict(span.attributes or {})
    assert attrs[sc.BILLING_PRICING_STATUS] == status
    assert t.tokens() == attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] + attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS]
    return attrs


def test_openai_chat(t: T, server: ProviderServer) -> None:
    c = openai.OpenAI(api_key="t", base_url=server.openai_base_url, max_retries=0)
    r = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    attrs = _one(t)
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == r.usage.prompt_tokens  # type: ignore[union-attr]


def test_openai_stream_with_usage(t: T, server: ProviderServer) -> None:
    c = openai.OpenAI(api_key="t", base_url=server.openai_base_url, max_retries=0)
    stream = c.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    assert isinstance(stream, openai.Stream)
    chunks = list(stream)
    assert chunks[-1].usage is not None
    attrs = _one(t)
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == chunks[-1].usage.completion_tokens


def test_openai_stream_without_usage_is_estimated(t: T, server: ProviderServer) -> None:
    c = openai.OpenAI(api_key="t", base_url=server.openai_base_url, max_retries=0)
    list(
        c.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    attrs = _one(t, "estimated")
    assert attrs[sc.BILLING_USAGE_SOURCE] == "estimated"


def test_openai_raw_and_async_and_responses(t: T, server: ProviderServer) -> None:
    c = openai.OpenAI(api_key="t", base_url=server.openai_base_url, max_retries=0)
    raw = c.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers.get("content-type", "").startswith("application/json")
    raw.parse()
    c.responses.create(model="gpt-4o-mini", input="hi")
    c.embeddings.create(model="text-embedding-3-small", input="hi")

    async def go() -> None:
        a = openai.AsyncOpenAI(api_key="t", base_url=server.openai_base_url, max_retries=0)
        await a.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )

    asyncio.run(go())
    assert len(t.usage_spans()) == 4


def test_anthropic_create_stream_and_helper(t: T, server: ProviderServer) -> None:
    c = anthropic.Anthropic(api_key="t", base_url=server.anthropic_base_url, max_retries=0)
    m = c.messages.create(
        model="claude-haiku-4-5",
        max_tokens=50,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-test-scenario": "cache"},
    )
    assert m.usage.cache_read_input_tokens
    list(
        c.messages.create(
            model="claude-haiku-4-5",
            max_tokens=50,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
        )
    )
    with c.messages.stream(
        model="claude-haiku-4-5", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        assert "".join(stream.text_stream)
    spans = t.usage_spans()
    assert len(spans) == 3
    first = dict(spans[0].attributes or {})
    assert first[sc.BILLING_USAGE_PREFIX + "cache_read"] == m.usage.cache_read_input_tokens
    for span in spans:
        assert (span.attributes or {})[sc.BILLING_PRICING_STATUS] == "priced"
