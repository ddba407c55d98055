"""The real ``groq`` and ``together`` SDKs (their own clients, generated in the shape of
``openai``'s) against a local server speaking their OpenAI-shaped wire format
(``openai_shaped_server.py``), instrumented by `GroqInstrumentor` and `TogetherInstrumentor`.

Costs are worked out by hand from the reported usage and the vendors' published rates, as
genai-prices ships them (`test_hand_prices_are_genai_prices`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import groq
import pytest
import together
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from otel_tokens import semconv as sc
from otel_tokens.counting import count_messages
from otel_tokens.instrumentation import GroqInstrumentor, TogetherInstrumentor
from otel_tokens.pricing import Catalog
from otel_tokens.usage import TokenUsage
from otel_tokens_fakes import OPENAI_SHAPED_PIECES as PIECES
from otel_tokens_fakes import OpenAIShapedServer

from ._asserts import attrs_of, client_span, instrumenting

MTOK = Decimal(1_000_000)
MESSAGES = [{"role": "user", "content": "Say hi"}]
USAGE = TokenUsage(input=40, output=10)  # the server's default usage


@dataclass(frozen=True)
class Vendor:
    name: str  # gen_ai.provider.name
    instrumentor: type[Any]
    model: str
    input_rate: Decimal  # USD per million tokens
    output_rate: Decimal
    stream_usage: str  # where its streams carry the usage unasked (the server's header)

    @property
    def cost(self) -> Decimal:
        return (40 * self.input_rate + 10 * self.output_rate) / MTOK

    def client(self, base_url: str) -> Any:
        if self.name == "groq":
            return groq.Groq(api_key="test", base_url=base_url, max_retries=0)
        return together.Together(api_key="test", base_url=base_url, max_retries=0)

    def aclient(self, base_url: str) -> Any:
        if self.name == "groq":
            return groq.AsyncGroq(api_key="test", base_url=base_url, max_retries=0)
        return together.AsyncTogether(api_key="test", base_url=base_url, max_retries=0)


GROQ = Vendor(
    "groq", GroqInstrumentor, "llama-3.3-70b-versatile", Decimal("0.59"), Decimal("0.79"), "x_groq"
)
TOGETHER = Vendor(
    "together",
    TogetherInstrumentor,
    "meta-llama/Llama-3.3-70B-Instruct-Turbo",
    Decimal("0.88"),
    Decimal("0.88"),
    "last",
)
# 40 x 0.59 + 10 x 0.79 = 23.6 + 7.9 micro-dollars; (40 + 10) x 0.88 = 44.
assert Decimal("0.0000315") == GROQ.cost
assert Decimal("0.000044") == TOGETHER.cost


def test_hand_prices_are_genai_prices() -> None:
    from genai_prices import data_snapshot

    snapshot = data_snapshot.get_snapshot()
    for vendor in (GROQ, TOGETHER):
        _, model = snapshot.find_provider_model(vendor.model, None, vendor.name, None)
        assert not isinstance(model.prices, list)
        assert model.prices.input_mtok == vendor.input_rate
        assert model.prices.output_mtok == vendor.output_rate
    _, oss = snapshot.find_provider_model("openai/gpt-oss-20b", None, "groq", None)
    assert not isinstance(oss.prices, list)
    assert (oss.prices.input_mtok, oss.prices.cache_read_mtok, oss.prices.output_mtok) == (
        Decimal("0.075"),
        Decimal("0.0375"),
        Decimal("0.3"),
    )


class Harness:
    def __init__(self, vendor: Vendor, server: OpenAIShapedServer, telemetry: Any) -> None:
        self.vendor = vendor
        self.server = server
        self.telemetry = telemetry

    def client(self) -> Any:
        return self.vendor.client(self.server.base_url)

    def aclient(self) -> Any:
        return self.vendor.aclient(self.server.base_url)

    def span(self) -> ReadableSpan:
        return client_span(self.telemetry)

    def headers(self, **more: str) -> dict[str, str]:
        return {"x-test-stream-usage": self.vendor.stream_usage, **more}


@pytest.fixture(params=[GROQ, TOGETHER], ids=lambda v: v.name)
def h(
    request: pytest.FixtureRequest, shaped_server: OpenAIShapedServer, telemetry: Any
) -> Iterator[Harness]:
    vendor: Vendor = request.param
    with instrumenting(vendor.instrumentor(), telemetry):
        yield Harness(vendor, shaped_server, telemetry)


def assert_metered(h: Harness, span: ReadableSpan, usage: TokenUsage, cost: Decimal) -> None:
    attrs = attrs_of(span)
    assert attrs[sc.GEN_AI_PROVIDER_NAME] == h.vendor.name
    assert attrs[sc.GEN_AI_OPERATION_NAME] == "chat"
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == usage.input_total
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == usage.output_total
    assert attrs[sc.BILLING_USAGE_SOURCE] == "provider"
    assert attrs[sc.BILLING_PRICING_STATUS] == sc.STATUS_PRICED
    assert Decimal(str(attrs[sc.BILLING_COST_DECIMAL])) == cost


def test_a_chat_completion_is_metered_and_priced_as_the_vendor(h: Harness) -> None:
    reply = h.client().chat.completions.create(model=h.vendor.model, messages=MESSAGES)
    assert reply.choices[0].message.content == "".join(PIECES[:3])
    span = h.span()
    assert_metered(h, span, USAGE, h.vendor.cost)
    assert attrs_of(span)[sc.SERVER_ADDRESS] == "127.0.0.1"
    assert h.telemetry.bucket_tokens() == dict(USAGE.buckets())
    assert h.telemetry.sum_of(sc.METRIC_BILLING_COST) == pytest.approx(float(h.vendor.cost))


def test_a_stream_is_metered_from_the_usage_it_carries_unasked(h: Harness) -> None:
    stream = h.client().chat.completions.create(
        model=h.vendor.model, messages=MESSAGES, stream=True, extra_headers=h.headers()
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "".join(PIECES[:3])
    assert "stream_options" not in h.server.bodies[-1]  # nothing asked of their API
    assert_metered(h, h.span(), USAGE, h.vendor.cost)
    assert h.telemetry.bucket_tokens() == dict(USAGE.buckets())


def test_a_stream_with_include_usage_is_counted_once(h: Harness) -> None:
    chunks = list(
        h.client().chat.completions.create(
            model=h.vendor.model,
            messages=MESSAGES,
            stream=True,
            # Neither SDK has the parameter; their APIs take it (the OpenAI way).
            extra_body={"stream_options": {"include_usage": True}},
            extra_headers=h.headers(),
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None  # the user's, kept
    assert_metered(h, h.span(), USAGE, h.vendor.cost)
    assert h.telemetry.bucket_tokens() == dict(USAGE.buckets())


def test_a_stream_cut_short_is_estimated_and_marked(h: Harness) -> None:
    stream = h.client().chat.completions.create(
        model=h.vendor.model, messages=MESSAGES, stream=True, extra_headers=h.headers()
    )
    next(iter(stream))
    next(iter(stream))
    stream.close()
    attrs = attrs_of(h.span())
    assert attrs[sc.BILLING_USAGE_SOURCE] == sc.USAGE_SOURCE_ESTIMATED
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == count_messages(MESSAGES, h.vendor.model)
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 1  # "Hi"


def test_async_calls_and_streams_are_metered(h: Harness) -> None:
    async def main() -> str:
        client = h.aclient()
        await client.chat.completions.create(model=h.vendor.model, messages=MESSAGES)
        stream = await client.chat.completions.create(
            model=h.vendor.model, messages=MESSAGES, stream=True, extra_headers=h.headers()
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.run(main()) == "".join(PIECES[:3])
    spans = h.telemetry.our_spans()
    assert len(spans) == 2
    for span in spans:
        assert_metered(h, span, USAGE, h.vendor.cost)
    assert h.telemetry.bucket_tokens() == dict((USAGE + USAGE).buckets())


def test_an_error_ends_the_span_with_it_and_bills_nothing(h: Harness) -> None:
    with pytest.raises(Exception) as raised:
        h.client().chat.completions.create(
            model=h.vendor.model, messages=MESSAGES, extra_headers={"x-test-status": "429"}
        )
    assert type(raised.value).__name__ == "RateLimitError"
    span = h.span()
    assert span.status.status_code == StatusCode.ERROR
    assert attrs_of(span)[sc.ERROR_TYPE] == "RateLimitError"
    assert h.telemetry.bucket_tokens() == {}


def test_raw_responses_are_metered(h: Harness) -> None:
    raw = h.client().chat.completions.with_raw_response.create(
        model=h.vendor.model, messages=MESSAGES
    )
    assert raw.parse().choices[0].message.content == "".join(PIECES[:3])
    assert_metered(h, h.span(), USAGE, h.vendor.cost)


def test_groq_cached_prompt_tokens_are_cache_reads(
    shaped_server: OpenAIShapedServer, telemetry: Any
) -> None:
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 200,
        "total_tokens": 1200,
        "prompt_tokens_details": {"cached_tokens": 400},
    }
    with instrumenting(GroqInstrumentor(), telemetry):
        client = GROQ.client(shaped_server.base_url)
        stream = client.chat.completions.create(
            model="openai/gpt-oss-20b",
            messages=MESSAGES,
            stream=True,
            extra_headers={"x-test-usage": json.dumps(usage), "x-test-stream-usage": "x_groq"},
        )
        for _ in stream:
            pass
    # 600 x 0.075 + 400 x 0.0375 + 200 x 0.3 = 45 + 15 + 60 micro-dollars.
    attrs = attrs_of(telemetry.only_span())
    assert Decimal(str(attrs[sc.BILLING_COST_DECIMAL])) == Decimal("0.00012")
    assert telemetry.bucket_tokens() == {"input": 600, "cache_read": 400, "output": 200}


def test_each_path_is_metered_once_with_every_instrumentor_on(
    shaped_server: OpenAIShapedServer, telemetry: Any
) -> None:
    """The openai client at a vendor's URL, and the vendors' own SDKs, with the OpenAI, Groq
    and Together instrumentors all active: one usage-carrying span per call, each under its
    path's provider name (docs/openai-compatible.md)."""
    import openai

    from otel_tokens.instrumentation import OpenAIInstrumentor

    instrumentors = [OpenAIInstrumentor(), GroqInstrumentor(), TogetherInstrumentor()]
    for inst in instrumentors:
        inst.instrument(
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
            catalog=Catalog(),
        )
    try:
        url = shaped_server.base_url
        compat = openai.OpenAI(api_key="test", base_url=url + "/openai/v1", max_retries=0)
        compat.chat.completions.create(model=GROQ.model, messages=MESSAGES)
        GROQ.client(url).chat.completions.create(model=GROQ.model, messages=MESSAGES)
        TOGETHER.client(url).chat.completions.create(model=TOGETHER.model, messages=MESSAGES)
    finally:
        for inst in instrumentors:
            inst.uninstrument()
    spans = telemetry.our_spans()
    # A local URL is no known vendor's host: the openai client's call is provider openai.
    assert [attrs_of(s)[sc.GEN_AI_PROVIDER_NAME] for s in spans] == ["openai", "groq", "together"]
    assert telemetry.bucket_tokens() == dict((USAGE + USAGE + USAGE).buckets())


def test_a_stream_read_chunk_by_chunk_finds_the_usage_too(
    shaped_server: OpenAIShapedServer, telemetry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With content capture on, every chunk is read (for its text), not only the last ones:
    the usage is still found where each vendor puts it."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    for vendor in (GROQ, TOGETHER):
        with instrumenting(vendor.instrumentor(), telemetry):
            stream = vendor.client(shaped_server.base_url).chat.completions.create(
                model=vendor.model,
                messages=MESSAGES,
                stream=True,
                extra_headers={"x-test-stream-usage": vendor.stream_usage},
            )
            for _ in stream:
                pass
    groq_span, together_span = telemetry.our_spans()
    for span, vendor in ((groq_span, GROQ), (together_span, TOGETHER)):
        attrs = attrs_of(span)
        assert attrs[sc.BILLING_USAGE_SOURCE] == "provider", vendor.name
        assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == 40
        assert Decimal(str(attrs[sc.BILLING_COST_DECIMAL])) == vendor.cost
        assert json.loads(str(attrs[sc.GEN_AI_OUTPUT_MESSAGES])) == "".join(PIECES[:3])


# --- OpenRouter's own cost ----------------------------------------------------------------------
# OpenRouter answers with usage.cost (its credits, US dollars): kept beside our price as
# gen_ai.billing.provider_cost.*, the difference recorded, the two never added.
OPENROUTER_MODEL = "openai/gpt-4o-mini"  # $0.15 / $0.60 per MTok at OpenRouter
OPENROUTER_OURS = (40 * Decimal("0.15") + 10 * Decimal("0.6")) / MTOK  # 0.000012


@pytest.mark.parametrize("stream", [False, True])
def test_openrouter_reported_cost_is_kept_beside_our_price(
    stream: bool,
    shaped_server: OpenAIShapedServer,
    telemetry: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import openai

    from otel_tokens.instrumentation import OpenAIInstrumentor

    monkeypatch.setenv("OTEL_TOKENS_OPENAI_PROVIDER", "openrouter")  # a local URL
    usage = {"prompt_tokens": 40, "completion_tokens": 10, "total_tokens": 50, "cost": 0.0000135}
    with instrumenting(OpenAIInstrumentor(), telemetry):
        client = openai.OpenAI(api_key="test", base_url=shaped_server.base_url + "/v1")
        headers = {"x-test-usage": json.dumps(usage), "x-test-stream-usage": "last"}
        if stream:
            list(
                client.chat.completions.create(
                    model=OPENROUTER_MODEL,
                    messages=MESSAGES,
                    stream=True,
                    stream_options={"include_usage": True},
                    extra_headers=headers,
                )
            )
        else:
            client.chat.completions.create(
                model=OPENROUTER_MODEL, messages=MESSAGES, extra_headers=headers
            )
    (span,) = telemetry.our_spans()
    attrs = attrs_of(span)
    assert attrs[sc.GEN_AI_PROVIDER_NAME] == "openrouter"
    assert Decimal(str(attrs[sc.BILLING_COST_DECIMAL])) == OPENROUTER_OURS
    assert attrs[sc.GEN_AI_USAGE_COST_SOURCE] != "provider"  # the span's cost is ours
    assert attrs[sc.BILLING_PROVIDER_COST_DECIMAL] == "0.0000135"
    assert attrs[sc.BILLING_PROVIDER_COST_CURRENCY] == "USD"
    (point,) = telemetry.points(sc.METRIC_BILLING_COST_DIFFERENCE)
    assert point.sum == pytest.approx(float(Decimal("0.0000135") - OPENROUTER_OURS))
    assert point.attributes[sc.GEN_AI_PROVIDER_NAME] == "openrouter"
    # The billed total is ours alone: the reported cost is never added to it.
    assert telemetry.sum_of(sc.METRIC_BILLING_COST) == pytest.approx(float(OPENROUTER_OURS))


def test_a_cost_in_usage_is_not_reported_cost_off_openrouter(
    shaped_server: OpenAIShapedServer, telemetry: Any
) -> None:
    """Only OpenRouter says its usage.cost is what it charges."""
    import openai

    from otel_tokens.instrumentation import OpenAIInstrumentor

    usage = {"prompt_tokens": 40, "completion_tokens": 10, "total_tokens": 50, "cost": 1}
    inst = OpenAIInstrumentor()
    inst.instrument(tracer_provider=telemetry.tracer_provider, catalog=Catalog())
    try:
        client = openai.OpenAI(api_key="test", base_url=shaped_server.base_url + "/v1")
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            extra_headers={"x-test-usage": json.dumps(usage)},
        )
    finally:
        inst.uninstrument()
    (span,) = telemetry.our_spans()
    assert sc.BILLING_PROVIDER_COST_DECIMAL not in attrs_of(span)
