"""The real ``mistralai`` client (sync and async) against a local server speaking Mistral AI's
wire format (``mistral_server.py``), instrumented.

Costs are worked by hand from the usage the server answers with and the genai-prices rates
(checked first): mistral-large-2512 $0.50 input, $0.05 cache read, $1.50 output per million
tokens; mistral-embed $0.10 input.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from mistralai.client import Mistral
from mistralai.client import errors as mistral_errors
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from otel_tokens import semconv as sc
from otel_tokens.counting import count_messages, count_text
from otel_tokens.instrumentation import MistralInstrumentor
from otel_tokens.pricing import Catalog
from otel_tokens.usage import TokenUsage
from otel_tokens_fakes import MISTRAL_REPLY as REPLY
from otel_tokens_fakes import MISTRAL_WORDS as WORDS
from otel_tokens_fakes import MistralServer

from ._asserts import instrumenting

LARGE = "mistral-large-2512"
EMBED = "mistral-embed"
MTOK = Decimal(1_000_000)
LARGE_INPUT, LARGE_CACHED, LARGE_OUTPUT = Decimal("0.5"), Decimal("0.05"), Decimal("1.5")
EMBED_INPUT = Decimal("0.1")

# 1200 prompt tokens of which 1000 were cache reads; 300 output tokens.
CACHED_USAGE = {
    "prompt_tokens": 1200,
    "completion_tokens": 300,
    "total_tokens": 1500,
    "prompt_tokens_details": {"cached_tokens": 1000},
}
CACHED = TokenUsage(input=200, cache_read=1000, output=300)
# 200 x 0.5 + 1000 x 0.05 + 300 x 1.5 = 100 + 50 + 450 micro-dollars.
CACHED_COST = (200 * LARGE_INPUT + 1000 * LARGE_CACHED + 300 * LARGE_OUTPUT) / MTOK
assert Decimal("0.0006") == CACHED_COST
MESSAGES = [{"role": "user", "content": "Say hello in six words."}]


def test_hand_prices_are_genai_prices() -> None:
    from genai_prices import data_snapshot

    snapshot = data_snapshot.get_snapshot()
    _, large = snapshot.find_provider_model(LARGE, None, "mistral", None)
    assert not isinstance(large.prices, list)
    assert (large.prices.input_mtok, large.prices.cache_read_mtok, large.prices.output_mtok) == (
        LARGE_INPUT,
        LARGE_CACHED,
        LARGE_OUTPUT,
    )
    _, embed = snapshot.find_provider_model(EMBED, None, "mistral", None)
    assert not isinstance(embed.prices, list)
    assert embed.prices.input_mtok == EMBED_INPUT


@pytest.fixture
def client(mistral_server: MistralServer, telemetry: Any) -> Iterator[Mistral]:
    with instrumenting(MistralInstrumentor(), telemetry):
        yield Mistral(api_key="test", server_url=mistral_server.base_url)


def usage_headers(usage: dict[str, Any]) -> dict[str, str]:
    return {"x-test-usage": json.dumps(usage)}


def span_of(telemetry: Any) -> ReadableSpan:
    span: ReadableSpan = telemetry.only_span()
    assert span.kind == SpanKind.CLIENT
    return span


def assert_billed(telemetry: Any, usage: TokenUsage, cost: Decimal | None) -> dict[str, Any]:
    span = span_of(telemetry)
    attrs = dict(span.attributes or {})
    assert attrs[sc.GEN_AI_PROVIDER_NAME] == "mistral_ai"
    assert TokenUsage.from_attributes(attrs).with_modalities(None) == usage
    assert telemetry.bucket_tokens() == dict(usage.buckets())
    if cost is None:
        assert attrs[sc.BILLING_PRICING_STATUS] != sc.STATUS_PRICED
    else:
        assert Decimal(str(attrs[sc.BILLING_COST_DECIMAL])) == cost
    return attrs


def test_chat_complete_with_cache_reads(client: Mistral, telemetry: Any) -> None:
    response = client.chat.complete(
        model=LARGE, messages=MESSAGES, max_tokens=50, http_headers=usage_headers(CACHED_USAGE)
    )
    assert response.choices[0].message.content == REPLY
    attrs = assert_billed(telemetry, CACHED, CACHED_COST)
    assert attrs[sc.BILLING_PRICING_STATUS] == sc.STATUS_PRICED
    assert attrs[sc.GEN_AI_OPERATION_NAME] == "chat"
    assert attrs[sc.GEN_AI_REQUEST_MODEL] == LARGE
    assert attrs[sc.GEN_AI_RESPONSE_MODEL] == LARGE
    assert attrs[sc.GEN_AI_REQUEST_MAX_TOKENS] == 50
    assert attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert attrs[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 1000
    assert attrs[sc.BILLING_USAGE_SOURCE] == "provider"
    assert span_of(telemetry).name == f"chat {LARGE}"


def test_older_cached_field_num_cached_tokens(client: Mistral, telemetry: Any) -> None:
    usage = {"prompt_tokens": 1200, "completion_tokens": 300, "num_cached_tokens": 1000}
    client.chat.complete(model=LARGE, messages=MESSAGES, http_headers=usage_headers(usage))
    assert_billed(telemetry, CACHED, CACHED_COST)


def test_chat_stream_usage_from_the_last_chunk(client: Mistral, telemetry: Any) -> None:
    stream = client.chat.stream(
        model=LARGE, messages=MESSAGES, http_headers=usage_headers(CACHED_USAGE)
    )
    text = "".join(
        e.data.choices[0].delta.content or ""
        for e in stream
        if isinstance(e.data.choices[0].delta.content, str)
    )
    assert text == REPLY
    attrs = assert_billed(telemetry, CACHED, CACHED_COST)
    assert attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert attrs[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] > 0
    assert len(telemetry.points(sc.METRIC_CLIENT_TIME_TO_FIRST_CHUNK)) == 1


def test_stream_span_is_current_from_call_start_to_stream_end(
    client: Mistral, telemetry: Any
) -> None:
    stream = client.chat.stream(model=LARGE, messages=MESSAGES)
    assert telemetry.our_spans() == []  # not ended before the stream is
    for _ in stream:
        pass
    assert len(telemetry.our_spans()) == 1


def test_async_complete_and_stream(client: Mistral, telemetry: Any) -> None:
    async def run() -> str:
        await client.chat.complete_async(
            model=LARGE, messages=MESSAGES, http_headers=usage_headers(CACHED_USAGE)
        )
        stream = await client.chat.stream_async(
            model=LARGE, messages=MESSAGES, http_headers=usage_headers(CACHED_USAGE)
        )
        parts = []
        async for event in stream:
            content = event.data.choices[0].delta.content
            if isinstance(content, str):
                parts.append(content)
        return "".join(parts)

    assert asyncio.run(run()) == REPLY
    spans = telemetry.our_spans()
    assert len(spans) == 2
    for span in spans:
        attrs = dict(span.attributes or {})
        assert TokenUsage.from_attributes(attrs).with_modalities(None) == CACHED
        assert Decimal(str(attrs[sc.BILLING_COST_DECIMAL])) == CACHED_COST
    assert telemetry.bucket_tokens() == dict((CACHED + CACHED).buckets())


def test_embeddings(client: Mistral, telemetry: Any) -> None:
    usage = {"prompt_tokens": 12, "completion_tokens": 0, "total_tokens": 12}
    client.embeddings.create(model=EMBED, inputs=["a", "b"], http_headers=usage_headers(usage))
    attrs = assert_billed(telemetry, TokenUsage(input=12), 12 * EMBED_INPUT / MTOK)
    assert attrs[sc.GEN_AI_OPERATION_NAME] == "embeddings"


def test_unknown_model_is_unpriced(client: Mistral, telemetry: Any) -> None:
    client.chat.complete(model="mistral-from-the-future", messages=MESSAGES)
    attrs = assert_billed(telemetry, TokenUsage(input=10, output=5), None)
    assert attrs[sc.BILLING_PRICING_STATUS] == sc.STATUS_UNPRICED
    assert telemetry.sum_of(sc.METRIC_BILLING_UNPRICED) == 1


def test_cut_stream_is_estimated_once(client: Mistral, telemetry: Any) -> None:
    stream = client.chat.stream(model=LARGE, messages=MESSAGES, http_headers={"x-test-cut": "3"})
    list(stream)
    # Counted locally: the prompt's messages and the three words received.
    expected = TokenUsage(
        input=count_messages(MESSAGES, LARGE),
        output=count_text("".join(WORDS[:3]), LARGE),
        source="estimated",
    )
    attrs = assert_billed(telemetry, expected, None)
    assert attrs[sc.BILLING_USAGE_SOURCE] == "estimated"
    assert attrs[sc.BILLING_PRICING_STATUS] == sc.STATUS_ESTIMATED


def test_stream_closed_early_is_recorded_once(client: Mistral, telemetry: Any) -> None:
    with client.chat.stream(model=LARGE, messages=MESSAGES) as stream:
        for _ in stream:
            break
    assert len(telemetry.our_spans()) == 1  # ended by the close, not later
    gc.collect()
    spans = telemetry.our_spans()
    assert len(spans) == 1
    attrs = dict(spans[0].attributes or {})
    # What the client had read when it closed: the usage chunk, or less (then estimated).
    assert attrs[sc.BILLING_USAGE_SOURCE] in ("estimated", "provider")


def test_stream_dropped_half_read_is_recorded_once(client: Mistral, telemetry: Any) -> None:
    stream = client.chat.stream(model=LARGE, messages=MESSAGES)
    next(stream)
    del stream
    gc.collect()
    assert len(telemetry.our_spans()) == 1


def test_dropped_stream_is_recorded_once(client: Mistral, telemetry: Any) -> None:
    stream = client.chat.stream(model=LARGE, messages=MESSAGES)
    del stream
    gc.collect()
    assert len(telemetry.our_spans()) == 1


def test_api_error_is_recorded_and_raised_unchanged(client: Mistral, telemetry: Any) -> None:
    with pytest.raises(mistral_errors.SDKError) as raised:
        client.chat.complete(model=LARGE, messages=MESSAGES, http_headers={"x-test-status": "401"})
    assert raised.value.status_code == 401
    span = span_of(telemetry)
    assert span.status.status_code == StatusCode.ERROR
    assert (span.attributes or {})[sc.ERROR_TYPE]
    assert telemetry.bucket_tokens() == {}


def test_uninstrument_restores_the_client(mistral_server: MistralServer, telemetry: Any) -> None:
    inst = MistralInstrumentor()
    inst.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    inst.uninstrument()
    Mistral(api_key="test", server_url=mistral_server.base_url).chat.complete(
        model=LARGE, messages=MESSAGES
    )
    assert telemetry.our_spans() == []


def test_fim_complete(client: Mistral, telemetry: Any) -> None:
    client.fim.complete(model="codestral-2508", prompt="def add(a, b):", suffix="")
    # codestral-2508: $0.30 input, $0.90 output per MTok; 10 x 0.3 + 5 x 0.9 = 7.5 micro-dollars.
    attrs = assert_billed(telemetry, TokenUsage(input=10, output=5), Decimal("0.0000075"))
    assert attrs[sc.GEN_AI_OPERATION_NAME] == "text_completion"


def test_stream_request_error_is_recorded(client: Mistral, telemetry: Any) -> None:
    with pytest.raises(mistral_errors.SDKError):
        client.chat.stream(model=LARGE, messages=MESSAGES, http_headers={"x-test-status": "429"})
    span = span_of(telemetry)
    assert span.status.status_code == StatusCode.ERROR
    assert (span.attributes or {})[sc.ERROR_TYPE] == "429"
    assert telemetry.bucket_tokens() == {}


def test_async_cut_stream_is_estimated_once(client: Mistral, telemetry: Any) -> None:
    async def run() -> None:
        stream = await client.chat.stream_async(
            model=LARGE, messages=MESSAGES, http_headers={"x-test-cut": "2"}
        )
        async for _ in stream:
            pass

    asyncio.run(run())
    expected = TokenUsage(
        input=count_messages(MESSAGES, LARGE),
        output=count_text("".join(WORDS[:2]), LARGE),
        source="estimated",
    )
    assert_billed(telemetry, expected, None)


def test_sdk_global_telemetry_is_warned_of(
    mistral_server: MistralServer,
    telemetry: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("MISTRAL_SDK_TELEMETRY", "global")
    inst = MistralInstrumentor()
    with caplog.at_level(logging.WARNING, logger="otel_tokens"):
        inst.instrument(
            tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
        )
    inst.uninstrument()
    assert "count tokens twice" in caplog.text


def test_entry_point_names_the_instrumentor() -> None:
    from importlib.metadata import entry_points

    found = {e.name: e for e in entry_points(group="opentelemetry_instrumentor")}
    assert found["otel_tokens_mistral"].load() is MistralInstrumentor
    assert MistralInstrumentor().instrumentation_dependencies() == ("mistralai >= 2.4.10",)


def test_priority_tier_is_not_priced_at_standard_rates(client: Mistral, telemetry: Any) -> None:
    usage = {**CACHED_USAGE, "service_tier": "priority"}
    client.chat.complete(model=LARGE, messages=MESSAGES, http_headers=usage_headers(usage))
    attrs = assert_billed(telemetry, CACHED, None)
    assert attrs[sc.BILLING_PROCESSING] == "priority"
    # genai-prices has no priority rates for Mistral: no price, never the standard one.
    assert attrs[sc.BILLING_PRICING_STATUS] == sc.STATUS_VARIANT_UNAVAILABLE
    assert sc.BILLING_COST_DECIMAL not in attrs


def test_standard_tier_is_priced(client: Mistral, telemetry: Any) -> None:
    usage = {**CACHED_USAGE, "service_tier": "standard"}
    client.chat.complete(model=LARGE, messages=MESSAGES, http_headers=usage_headers(usage))
    assert_billed(telemetry, CACHED, CACHED_COST)


def test_unknown_tier_is_unpriced_with_its_totals(client: Mistral, telemetry: Any) -> None:
    usage = {**CACHED_USAGE, "service_tier": "overnight"}
    client.chat.complete(model=LARGE, messages=MESSAGES, http_headers=usage_headers(usage))
    attrs = dict(span_of(telemetry).attributes or {})
    assert attrs[sc.BILLING_PRICING_STATUS] == sc.STATUS_UNPRICED
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == 1200
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 300
    assert sc.BILLING_COST_DECIMAL not in attrs


def test_captured_content_of_a_stream(
    mistral_server: MistralServer, telemetry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    with instrumenting(MistralInstrumentor(), telemetry):
        client = Mistral(api_key="test", server_url=mistral_server.base_url)
        list(client.chat.stream(model=LARGE, messages=MESSAGES))
        client.chat.complete(model=LARGE, messages=MESSAGES)
    for span in telemetry.our_spans():
        assert json.loads(str((span.attributes or {})[sc.GEN_AI_OUTPUT_MESSAGES])) == REPLY


def test_budget_enforced_before_the_request_is_sent(
    mistral_server: MistralServer, telemetry: Any
) -> None:
    from otel_tokens.attribution import attribute
    from otel_tokens.budgets import Budget, BudgetExceeded, BudgetManager, MemoryStore

    budget = Budget(
        "acme", limit=Decimal(100), unit="tokens", mode="enforce", scope={"tenant": "acme"}
    )
    manager = BudgetManager(
        [budget], MemoryStore(), catalog=Catalog(), meter_provider=telemetry.meter_provider
    )
    inst = MistralInstrumentor()
    inst.instrument(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        catalog=Catalog(),
        budgets=manager,
    )
    try:
        client = Mistral(api_key="test", server_url=mistral_server.base_url)
        before = len(mistral_server.bodies)
        with attribute(tenant="acme"), pytest.raises(BudgetExceeded) as info:
            client.chat.complete(model=LARGE, messages=MESSAGES, max_tokens=500)
        assert len(mistral_server.bodies) == before  # nothing reached the server
        # The request's messages counted locally, plus the most it may write.
        assert info.value.needed == count_messages(MESSAGES, LARGE) + 500
        with attribute(tenant="acme"):
            client.chat.complete(model=LARGE, messages=MESSAGES, max_tokens=20)
    finally:
        inst.uninstrument()
