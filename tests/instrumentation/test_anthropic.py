"""The real ``anthropic`` client (sync and async) against the local server, instrumented.

Every test runs the genuine SDK code paths (request building, SSE decoding, stream helpers, raw
responses, error mapping) and reads what reached the in-memory exporters. Two modes:

* ``sdk``: the client's own OpenTelemetry span (anthropic 2.x, scope ``com.anthropic.sdk.python``)
  is on; our billing and cost attributes must be ON it and we must make no span of our own.
* ``own``: the client's spans are off (``open_telemetry=False``); we make one ``chat {model}`` span.

Expected numbers come from the server's documented, deterministic usage: a prompt is 7 tokens plus
3 per message plus ceil(len(text) / 4); the default reply is one output token per word. Costs are
computed here by hand from Anthropic's published Claude Haiku 4.5 prices.
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import pydantic
import pytest
import wrapt
from anthropic.lib.streaming import AsyncMessageStreamManager, MessageStreamManager
from anthropic.types import Message
from anthropic.types.beta import BetaMessage
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from otel_tokens import semconv as sc
from otel_tokens.instrumentation import AnthropicInstrumentor
from otel_tokens.pricing import Catalog
from otel_tokens.usage import TokenUsage
from otel_tokens_fakes import DEFAULT_REPLY, estimate_tokens

from ._asserts import instrumenting

MODEL = "claude-haiku-4-5"
SERVED = "claude-haiku-4-5-20251001"  # the dated snapshot the server reports
SDK_SCOPE = "com.anthropic.sdk.python"
OUR_SCOPE = "otel_tokens"
SDK_SPAN = "anthropic.messages.create"
PROMPT = "hi there"
MESSAGES = [{"role": "user", "content": PROMPT}]
INPUT = 7 + 3 + estimate_tokens(PROMPT)  # 12
OUTPUT = len(DEFAULT_REPLY.split())  # 11
assert (INPUT, OUTPUT) == (12, 11)

# Anthropic's published Claude Haiku 4.5 prices, USD per million tokens (per search for web
# search: $10 per 1,000). https://platform.claude.com/docs/en/about-claude/pricing
MTOK = Decimal(1_000_000)
P_INPUT = Decimal("1")
P_WRITE_5M = Decimal("1.25")
P_WRITE_1H = Decimal("2")
P_READ = Decimal("0.10")
P_OUTPUT = Decimal("5")
P_SEARCH = Decimal("10") / 1000
PRICE_ID = "genai-prices:anthropic/claude-haiku-4-5"


def usd(
    *,
    input: int = 0,
    cache_read: int = 0,
    write_5m: int = 0,
    write_1h: int = 0,
    output: int = 0,
    reasoning: int = 0,
    searches: int = 0,
) -> Decimal:
    """The exact cost of a Haiku 4.5 call, by hand."""
    return (
        input * P_INPUT
        + cache_read * P_READ
        + write_5m * P_WRITE_5M
        + write_1h * P_WRITE_1H
        + (output + reasoning) * P_OUTPUT
    ) / MTOK + searches * P_SEARCH


PLAIN = TokenUsage(input=INPUT, output=OUTPUT)
PLAIN_COST = usd(input=INPUT, output=OUTPUT)
assert Decimal("0.000067") == PLAIN_COST


# --- fixtures and helpers ----------------------------------------------------------------------
@contextmanager
def instrumented(telemetry: Any, catalog: Catalog) -> Iterator[AnthropicInstrumentor]:
    with instrumenting(AnthropicInstrumentor(), telemetry, catalog) as inst:
        yield inst


class Harness:
    """Clients of one mode, and readers for the spans and metric points of their calls."""

    def __init__(self, server: Any, telemetry: Any, mode: str) -> None:
        self.server = server
        self.telemetry = telemetry
        self.mode = mode
        self._sync: list[anthropic.Anthropic] = []

    @property
    def sdk(self) -> bool:
        return self.mode == "sdk"

    def otel_option(self) -> Any:
        return {"tracer_provider": self.telemetry.tracer_provider} if self.sdk else False

    def client(self, **kwargs: Any) -> anthropic.Anthropic:
        options: dict[str, Any] = {"max_retries": 0, **kwargs}
        client = anthropic.Anthropic(
            api_key="test",
            base_url=self.server.anthropic_base_url,
            open_telemetry=self.otel_option(),
            **options,
        )
        self._sync.append(client)
        return client

    def aclient(self, **kwargs: Any) -> anthropic.AsyncAnthropic:
        # Used inside one asyncio.run(); closed by the test with `async with`.
        return anthropic.AsyncAnthropic(
            api_key="test",
            base_url=self.server.anthropic_base_url,
            max_retries=0,
            open_telemetry=self.otel_option(),
            **kwargs,
        )

    def close(self) -> None:
        for client in self._sync:
            client.close()

    # --- spans -------------------------------------------------------------------------
    def spans(self) -> list[ReadableSpan]:
        return self.telemetry.finished()

    def call_spans(self) -> list[ReadableSpan]:
        """Spans of this mode's scope; fails if the other scope made any (double counting)."""
        ours = [s for s in self.spans() if s.instrumentation_scope.name == OUR_SCOPE]
        sdk = [s for s in self.spans() if s.instrumentation_scope.name.startswith(SDK_SCOPE)]
        if self.sdk:
            assert ours == [], [s.name for s in ours]
            return sdk
        assert sdk == [], [s.name for s in sdk]
        return ours

    def span(self, model: str = MODEL) -> ReadableSpan:
        """The single span of the single call, checked for this mode's name, scope and kind."""
        spans = self.spans()
        assert len(spans) == 1, [(s.name, s.instrumentation_scope.name) for s in spans]
        (span,) = self.call_spans()
        assert span.kind == SpanKind.CLIENT
        if self.sdk:
            assert span.name == SDK_SPAN
        else:
            assert span.name == f"chat {model}"
            assert span.instrumentation_scope.name == OUR_SCOPE
        return span

    # --- metrics -----------------------------------------------------------------------
    def duration_count(self, **attrs: Any) -> int:
        return sum(
            p.count
            for p in self.telemetry.points(sc.METRIC_CLIENT_OPERATION_DURATION)
            if all(p.attributes.get(k) == v for k, v in attrs.items())
        )

    def bucket_tokens(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for p in self.telemetry.points(sc.METRIC_BILLING_TOKENS):
            bucket = p.attributes[sc.BILLING_TOKEN_BUCKET]
            found[bucket] = found.get(bucket, 0) + int(p.value)
        return found


@pytest.fixture(params=["sdk", "own"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def h(server: Any, telemetry: Any, mode: str) -> Iterator[Harness]:
    harness = Harness(server, telemetry, mode)
    with instrumented(telemetry, Catalog()):
        yield harness
    harness.close()


def buckets_of(usage: TokenUsage) -> dict[str, int]:
    return dict(usage.buckets())


def assert_span_usage(
    span: ReadableSpan,
    usage: TokenUsage,
    cost: Decimal | None,
    *,
    price_id: str = PRICE_ID,
) -> None:
    """The span carries exactly ``usage`` (disjoint buckets and inclusive totals) and ``cost``."""
    attrs = dict(span.attributes or {})
    on_span = {
        k[len(sc.BILLING_USAGE_PREFIX) :]: v
        for k, v in attrs.items()
        if k.startswith(sc.BILLING_USAGE_PREFIX)
    }
    assert on_span == buckets_of(usage), attrs
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == usage.input_total
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == usage.output_total
    assert attrs[sc.BILLING_USAGE_SOURCE] == usage.source
    # Every usage attribute on the span agrees: nothing overwrote ours with other numbers.
    assert TokenUsage.from_attributes(attrs) == usage
    if cost is None:
        return
    assert Decimal(str(attrs[sc.BILLING_COST_DECIMAL])) == cost
    assert attrs[sc.GEN_AI_USAGE_COST_AMOUNT] == float(cost)
    assert attrs[sc.GEN_AI_USAGE_COST_CURRENCY] == "USD"
    assert attrs[sc.GEN_AI_USAGE_COST_SOURCE] == sc.COST_SOURCE_LOCAL
    assert attrs[sc.BILLING_PRICING_STATUS] == (
        sc.STATUS_ESTIMATED if usage.is_estimated else sc.STATUS_PRICED
    )
    assert attrs[sc.BILLING_PRICE_ID] == price_id
    assert str(attrs[sc.BILLING_CATALOG_VERSION]).startswith("genai-prices@")
    assert attrs[sc.BILLING_PROCESSING] == sc.PROCESSING_STANDARD


def assert_metered(h: Harness, usage: TokenUsage, cost: Decimal, *, calls: int = 1) -> None:
    """Metric points add up to ``usage`` (already multiplied by ``calls``), recorded ``calls``x."""
    assert h.duration_count() == calls
    assert h.bucket_tokens() == buckets_of(usage)
    t = h.telemetry
    assert t.sum_of(sc.METRIC_CLIENT_TOKEN_USAGE, **{sc.GEN_AI_TOKEN_TYPE: "input"}) == (
        usage.input_total
    )
    assert t.sum_of(sc.METRIC_CLIENT_TOKEN_USAGE, **{sc.GEN_AI_TOKEN_TYPE: "output"}) == (
        usage.output_total
    )
    assert t.sum_of(sc.METRIC_BILLING_COST) == pytest.approx(float(cost), rel=1e-9)


def estimated_usage(span: ReadableSpan) -> TokenUsage:
    usage = TokenUsage.from_attributes(dict(span.attributes or {}))
    assert usage.source == sc.USAGE_SOURCE_ESTIMATED
    return usage


def create_kwargs(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 256, "messages": MESSAGES, **extra}


def scenario(name: str, **headers: str) -> dict[str, Any]:
    return {"extra_headers": {"x-test-scenario": name, **headers}}


# --- prices ------------------------------------------------------------------------------------
def test_hand_prices_are_genai_prices_haiku_4_5() -> None:
    """The hand-written prices above are the ones genai-prices ships (and Anthropic publishes)."""
    from genai_prices import data_snapshot

    _provider, info = data_snapshot.get_snapshot().find_provider_model(
        SERVED, None, "anthropic", None
    )
    assert info.id == "claude-haiku-4-5"
    prices = info.prices
    assert not isinstance(prices, list)  # one price, no history to choose from
    assert prices.input_mtok == P_INPUT
    assert prices.cache_write_mtok == P_WRITE_5M
    assert prices.cache_write_1h_mtok == P_WRITE_1H
    assert prices.cache_read_mtok == P_READ
    assert prices.output_mtok == P_OUTPUT
    assert prices.web_searches_kcount == P_SEARCH * 1000


# --- messages.create ---------------------------------------------------------------------------
def test_create_sync(h: Harness) -> None:
    message = h.client().messages.create(**create_kwargs())

    assert type(message) is Message
    assert message.usage.input_tokens == INPUT
    assert message.usage.output_tokens == OUTPUT
    span = h.span()
    attrs = span.attributes or {}
    assert attrs[sc.GEN_AI_OPERATION_NAME] == "chat"
    assert attrs[sc.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert attrs[sc.GEN_AI_REQUEST_MODEL] == MODEL
    assert attrs[sc.GEN_AI_RESPONSE_MODEL] == SERVED
    assert attrs[sc.GEN_AI_RESPONSE_ID] == message.id
    assert tuple(attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS]) == ("end_turn",)  # type: ignore[arg-type]
    assert attrs[sc.GEN_AI_REQUEST_MAX_TOKENS] == 256
    assert attrs[sc.SERVER_ADDRESS] == "127.0.0.1"
    assert attrs[sc.SERVER_PORT] == h.server.port
    assert sc.GEN_AI_REQUEST_STREAM not in attrs or attrs[sc.GEN_AI_REQUEST_STREAM] is False
    assert span.status.status_code != StatusCode.ERROR
    assert_span_usage(span, PLAIN, PLAIN_COST)
    assert_metered(h, PLAIN, PLAIN_COST)


def test_create_async(h: Harness) -> None:
    async def main() -> Message:
        async with h.aclient() as client:
            return await client.messages.create(**create_kwargs())

    message = asyncio.run(main())

    assert type(message) is Message
    span = h.span()
    assert (span.attributes or {})[sc.GEN_AI_RESPONSE_ID] == message.id
    assert_span_usage(span, PLAIN, PLAIN_COST)
    assert_metered(h, PLAIN, PLAIN_COST)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_retried_call_metered_once(h: Harness, stream: bool) -> None:
    """A 429 then a success, retried inside the client: one call, one span, usage once."""
    client = h.client(max_retries=1)
    kwargs = create_kwargs(**scenario("rate_limit_once"))
    if stream:
        list(client.messages.create(**kwargs, stream=True))
    else:
        client.messages.create(**kwargs)
    assert len(h.server.requests) >= 2
    assert h.server.requests[-1].headers.get("x-stainless-retry-count") == "1"
    span = h.span()
    assert span.status.status_code != StatusCode.ERROR
    assert_span_usage(span, PLAIN, PLAIN_COST)
    assert_metered(h, PLAIN, PLAIN_COST)
    assert h.duration_count(**{sc.ERROR_TYPE: "RateLimitError"}) == 0


def test_client_copies_keep_metering(h: Harness) -> None:
    client = h.client()
    client.with_options(timeout=30).messages.create(**create_kwargs())
    client.copy(max_retries=0).messages.create(**create_kwargs())
    spans = h.call_spans()
    assert len(spans) == len(h.spans()) == 2
    for span in spans:
        assert_span_usage(span, PLAIN, PLAIN_COST)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_create_reasoning_bucket(h: Harness, stream: bool) -> None:
    """Extended thinking: thinking tokens are the reasoning bucket, billed at the output rate."""
    kwargs = create_kwargs(max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024})
    client = h.client()
    if stream:
        with client.messages.stream(**kwargs) as s:
            message = s.get_final_message()
    else:
        message = client.messages.create(**kwargs)
    assert message.content[0].type == "thinking"
    thinking = message.usage.output_tokens - OUTPUT
    assert thinking > 0
    usage = TokenUsage(input=INPUT, output=OUTPUT, reasoning=thinking)
    cost = usd(input=INPUT, output=OUTPUT, reasoning=thinking)
    assert_span_usage(h.span(), usage, cost)
    assert_metered(h, usage, cost)


# --- streams ---------------------------------------------------------------------------------
def test_stream_true_sync(h: Harness) -> None:
    stream = h.client().messages.create(**create_kwargs(stream=True))

    assert type(stream) is anthropic.Stream
    assert isinstance(stream, anthropic.Stream)
    assert h.spans() == []  # nothing recorded before the stream is read
    events = list(stream)
    text = "".join(
        e.delta.text
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert text == DEFAULT_REPLY
    assert events[0].type == "message_start"
    assert events[-1].type == "message_stop"

    span = h.span()
    attrs = span.attributes or {}
    assert attrs[sc.GEN_AI_REQUEST_STREAM] is True
    assert attrs[sc.GEN_AI_RESPONSE_MODEL] == SERVED
    assert attrs[sc.GEN_AI_RESPONSE_ID] == events[0].message.id
    assert float(attrs[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]) > 0  # type: ignore[arg-type]
    assert_span_usage(span, PLAIN, PLAIN_COST)
    assert_metered(h, PLAIN, PLAIN_COST)
    assert len(h.telemetry.points(sc.METRIC_CLIENT_TIME_TO_FIRST_CHUNK)) == 1


def test_stream_true_async(h: Harness) -> None:
    async def main() -> list[Any]:
        async with h.aclient() as client:
            stream = await client.messages.create(**create_kwargs(stream=True))
            assert type(stream) is anthropic.AsyncStream
            return [event async for event in stream]

    events = asyncio.run(main())

    assert events[-1].type == "message_stop"
    span = h.span()
    assert (span.attributes or {})[sc.GEN_AI_REQUEST_STREAM] is True
    assert_span_usage(span, PLAIN, PLAIN_COST)
    assert_metered(h, PLAIN, PLAIN_COST)


@pytest.mark.parametrize("consume", ["text_stream", "get_final_message", "until_done", "events"])
def test_stream_manager_sync(h: Harness, consume: str) -> None:
    manager = h.client().messages.stream(**create_kwargs())
    assert type(manager) is MessageStreamManager
    with manager as stream:
        if consume == "text_stream":
            assert "".join(stream.text_stream) == DEFAULT_REPLY
        elif consume == "until_done":
            stream.until_done()
        elif consume == "events":
            assert [e.type for e in stream][-1] == "message_stop"
        final = stream.get_final_message()

    assert isinstance(final, Message)
    assert (final.usage.input_tokens, final.usage.output_tokens) == (INPUT, OUTPUT)
    span = h.span()
    assert (span.attributes or {})[sc.GEN_AI_RESPONSE_ID] == final.id
    assert_span_usage(span, PLAIN, PLAIN_COST)
    assert_metered(h, PLAIN, PLAIN_COST)


@pytest.mark.parametrize("consume", ["text_stream", "get_final_message", "until_done", "events"])
def test_stream_manager_async(h: Harness, consume: str) -> None:
    async def main() -> Message:
        async with h.aclient() as client:
            manager = client.messages.stream(**create_kwargs())
            assert type(manager) is AsyncMessageStreamManager
            async with manager as stream:
                if consume == "text_stream":
                    assert "".join([t async for t in stream.text_stream]) == DEFAULT_REPLY
                elif consume == "until_done":
                    await stream.until_done()
                elif consume == "events":
                    assert [e.type async for e in stream][-1] == "message_stop"
                return await stream.get_final_message()

    final = asyncio.run(main())

    assert (final.usage.input_tokens, final.usage.output_tokens) == (INPUT, OUTPUT)
    assert_span_usage(h.span(), PLAIN, PLAIN_COST)
    assert_metered(h, PLAIN, PLAIN_COST)


# --- beta, parse ---------------------------------------------------------------------------------
def test_beta_create_and_stream_sync(h: Harness) -> None:
    client = h.client()
    message = client.beta.messages.create(**create_kwargs(betas=["context-1m-2025-08-07"]))
    assert type(message) is BetaMessage
    with client.beta.messages.stream(**create_kwargs()) as stream:
        final = stream.get_final_message()
    assert (final.usage.input_tokens, final.usage.output_tokens) == (INPUT, OUTPUT)

    spans = h.call_spans()
    assert len(spans) == len(h.spans()) == 2
    for span in spans:
        assert_span_usage(span, PLAIN, PLAIN_COST)
    assert_metered(h, PLAIN + PLAIN, PLAIN_COST * 2, calls=2)
    assert h.server.requests[-2].headers.get("anthropic-beta") == "context-1m-2025-08-07"


def test_beta_create_async(h: Harness) -> None:
    async def main() -> Any:
        async with h.aclient() as client:
            return await client.beta.messages.create(**create_kwargs(betas=["foo-2025-01-01"]))

    assert type(asyncio.run(main())) is BetaMessage
    assert_span_usage(h.span(), PLAIN, PLAIN_COST)
    assert_metered(h, PLAIN, PLAIN_COST)


class Answer(pydantic.BaseModel):
    answer: str


def test_messages_parse(h: Harness) -> None:
    reply = '{"answer":"yes"}'  # one word: one output token
    client = h.client()
    assert hasattr(client.messages, "parse")
    parsed = client.messages.parse(
        **create_kwargs(output_format=Answer), extra_headers={"x-test-reply": reply}
    )

    assert isinstance(parsed, anthropic.types.ParsedMessage)
    assert parsed.parsed_output == Answer(answer="yes")
    usage = TokenUsage(input=parsed.usage.input_tokens, output=1)
    cost = usd(input=usage.input, output=1)
    assert_span_usage(h.span(), usage, cost)
    assert_metered(h, usage, cost)


def test_messages_parse_failure_still_meters_billed_usage(h: Harness) -> None:
    """The response was billed even though the client's parsing of it raised (e.g. structured
    output cut short by max_tokens)."""
    client = h.client()
    with pytest.raises(pydantic.ValidationError):
        client.messages.parse(
            **create_kwargs(output_format=Answer), extra_headers={"x-test-reply": "not json"}
        )
    usage = TokenUsage(input=INPUT, output=2)  # "not json": two words, two output tokens
    assert h.bucket_tokens() == buckets_of(usage)
    assert h.duration_count() == 1
    span = h.span()
    assert span.status.status_code == StatusCode.ERROR
    assert_span_usage(span, usage, usd(input=INPUT, output=2))


# --- raw responses -------------------------------------------------------------------------------
def test_with_raw_response_headers_and_parse_metered_once(h: Harness) -> None:
    raw = h.client().messages.with_raw_response.create(**create_kwargs())

    assert raw.headers["request-id"].startswith("req_")
    assert raw.http_response.status_code == 200
    message = raw.parse()
    assert type(message) is Message
    assert raw.parse() is message  # cached; parsing twice does not meter twice
    del raw
    gc.collect()
    assert_metered(h, PLAIN, PLAIN_COST)
    assert len(h.call_spans()) == len(h.spans()) == 1


def test_with_raw_response_async_metered_once(h: Harness) -> None:
    async def main() -> Message:
        async with h.aclient() as client:
            raw = await client.messages.with_raw_response.create(**create_kwargs())
            assert raw.headers["request-id"].startswith("req_")
            message = await raw.parse()
            assert await raw.parse() is message
            return message

    assert type(asyncio.run(main())) is Message
    assert_metered(h, PLAIN, PLAIN_COST)
    assert len(h.call_spans()) == len(h.spans()) == 1


@pytest.mark.parametrize(
    ("kind", "mode"),
    [
        ("raw", "sdk"),
        ("raw", "own"),
        ("raw_stream", "sdk"),
        ("raw_stream", "own"),
        ("streaming_response", "sdk"),
        ("streaming_response", "own"),
        ("streaming_stream", "sdk"),
        ("streaming_stream", "own"),
    ],
    indirect=["mode"],
)
def test_raw_response_span_carries_usage(h: Harness, kind: str) -> None:
    client = h.client()
    if kind == "raw":
        raw = client.messages.with_raw_response.create(**create_kwargs())
        assert type(raw.parse()) is Message
    elif kind == "raw_stream":
        raw = client.messages.with_raw_response.create(**create_kwargs(stream=True))
        stream = raw.parse()
        assert type(stream) is anthropic.Stream
        list(stream)
    elif kind == "streaming_response":
        with client.messages.with_streaming_response.create(**create_kwargs()) as raw:
            assert type(raw.parse()) is Message
    else:
        with client.messages.with_streaming_response.create(**create_kwargs(stream=True)) as raw:
            list(raw.parse())
    assert_metered(h, PLAIN, PLAIN_COST)  # metrics are right in both modes
    assert_span_usage(h.span(), PLAIN, PLAIN_COST)


@pytest.mark.parametrize(
    "mode",
    [
        "sdk",
        "own",
    ],
    indirect=True,
)
def test_raw_stream_parsed_from_a_temporary_is_metered(h: Harness) -> None:
    """The idiom ``stream = client.messages.with_raw_response.create(..., stream=True).parse()``."""
    stream = h.client().messages.with_raw_response.create(**create_kwargs(stream=True)).parse()
    gc.collect()
    assert [e.type for e in stream][-1] == "message_stop"
    assert_metered(h, PLAIN, PLAIN_COST)


def test_with_raw_response_unparsed_still_metered(h: Harness) -> None:
    """Raw responses used for their headers only: the body was read, so the usage is known."""
    raw = h.client().messages.with_raw_response.create(**create_kwargs())
    assert raw.headers["request-id"]
    del raw
    gc.collect()
    assert_metered(h, PLAIN, PLAIN_COST)
    assert_span_usage(h.span(), PLAIN, PLAIN_COST)


# --- caching, web search -------------------------------------------------------------------------
# "a " * 200 is 400 characters: 100 tokens, plus 7 + 3 = 110. Scenario cache: reads half (55),
# writes a quarter (27), of which x-test-cache-write-1h: 7 are 1-hour (so 20 are 5-minute);
# the rest, 110 - 55 - 27 = 28, is uncached input.
CACHE_PROMPT = "a " * 200
CACHE = TokenUsage(input=28, cache_read=55, cache_write_5m=20, cache_write_1h=7, output=OUTPUT)
CACHE_COST = usd(input=28, cache_read=55, write_5m=20, write_1h=7, output=OUTPUT)
assert Decimal("0.0001275") == CACHE_COST  # 28 + 5.5 + 25 + 14 + 55 micro-dollars


def cache_kwargs(**extra: Any) -> dict[str, Any]:
    return create_kwargs(
        messages=[{"role": "user", "content": CACHE_PROMPT}],
        **scenario("cache", **{"x-test-cache-write-1h": "7"}),
        **extra,
    )


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_cache_read_and_write_5m_1h(h: Harness, stream: bool) -> None:
    client = h.client()
    if stream:
        with client.messages.stream(**cache_kwargs()) as s:
            message = s.get_final_message()
    else:
        message = client.messages.create(**cache_kwargs())
    u = message.usage
    assert (u.input_tokens, u.cache_read_input_tokens) == (28, 55)
    assert u.cache_creation_input_tokens == 27
    assert u.cache_creation is not None
    assert u.cache_creation.ephemeral_5m_input_tokens == 20
    assert u.cache_creation.ephemeral_1h_input_tokens == 7

    span = h.span()
    attrs = span.attributes or {}
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == 110  # inclusive of cache reads and writes
    assert attrs[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 55
    assert attrs[sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == 27
    assert_span_usage(span, CACHE, CACHE_COST)
    assert_metered(h, CACHE, CACHE_COST)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_web_search_bucket(h: Harness, stream: bool) -> None:
    """Two searches; each adds 750 input tokens (reported only in the final usage)."""
    kwargs = create_kwargs(**scenario("web_search"))
    client = h.client()
    if stream:
        events = list(client.messages.create(**kwargs, stream=True))
        assert events[0].message.usage.input_tokens == INPUT  # message_start: before the searches
        final_usage = next(e.usage for e in events if e.type == "message_delta")
        assert final_usage.server_tool_use is not None
        searches = final_usage.server_tool_use.web_search_requests
        output = final_usage.output_tokens
    else:
        message = client.messages.create(**kwargs)
        assert message.usage.server_tool_use is not None
        searches = message.usage.server_tool_use.web_search_requests
        output = message.usage.output_tokens
    assert searches == 2
    usage = TokenUsage(input=INPUT + 750 * searches, output=output, web_search_requests=searches)
    cost = usd(input=usage.input, output=output, searches=searches)
    assert Decimal("0.02") < cost < Decimal("0.0217")

    assert_span_usage(h.span(), usage, cost)
    assert_metered(h, usage, cost)
    assert h.bucket_tokens()[sc.BUCKET_WEB_SEARCH] == 2


# --- metrics ------------------------------------------------------------------------------------
def test_metric_points_and_attributes(h: Harness) -> None:
    h.client().messages.create(**cache_kwargs())

    t = h.telemetry
    # Upstream GenAI client metrics: one input and one output sample, inclusive totals.
    usage_points = t.points(sc.METRIC_CLIENT_TOKEN_USAGE)
    assert sorted((p.attributes[sc.GEN_AI_TOKEN_TYPE], p.count, p.sum) for p in usage_points) == [
        ("input", 1, 110),
        ("output", 1, OUTPUT),
    ]
    (duration,) = t.points(sc.METRIC_CLIENT_OPERATION_DURATION)
    assert duration.count == 1
    assert 0 < duration.sum < 10
    for point in [*usage_points, duration]:
        assert point.attributes[sc.GEN_AI_OPERATION_NAME] == "chat"
        assert point.attributes[sc.GEN_AI_PROVIDER_NAME] == "anthropic"
        assert point.attributes[sc.GEN_AI_REQUEST_MODEL] == MODEL
        assert point.attributes[sc.GEN_AI_RESPONSE_MODEL] == SERVED
        assert sc.ERROR_TYPE not in point.attributes

    # Billing tokens: one point per disjoint bucket, adding up to the usage.
    billing = t.points(sc.METRIC_BILLING_TOKENS)
    assert {p.attributes[sc.BILLING_TOKEN_BUCKET]: p.value for p in billing} == buckets_of(CACHE)
    assert sum(p.value for p in billing) == CACHE.total_tokens == 110 + OUTPUT
    for point in billing:
        assert point.attributes[sc.BILLING_USAGE_SOURCE] == "provider"
        assert point.attributes[sc.BILLING_PROCESSING] == "standard"
        assert point.attributes[sc.GEN_AI_RESPONSE_MODEL] == SERVED

    # Cost: one point per call, the exact total of the buckets' amounts.
    (cost,) = t.points(sc.METRIC_BILLING_COST)
    assert sc.BILLING_TOKEN_BUCKET not in cost.attributes
    parts = (
        usd(input=28),
        usd(cache_read=55),
        usd(write_5m=20),
        usd(write_1h=7),
        usd(output=OUTPUT),
    )
    assert cost.value == pytest.approx(float(sum(parts)), rel=1e-12)
    assert cost.value == pytest.approx(float(CACHE_COST), rel=1e-12)
    for point in t.points(sc.METRIC_BILLING_COST):
        assert point.attributes[sc.GEN_AI_USAGE_COST_CURRENCY] == "USD"
        assert point.attributes[sc.BILLING_PRICING_STATUS] == "priced"
    assert t.points(sc.METRIC_BILLING_UNPRICED) == []


# --- streams ending early ------------------------------------------------------------------------
def _read_until_text(stream: Any) -> None:
    """Read past message_start and the first text delta, then stop."""
    for event in stream:
        if event.type == "content_block_delta":
            break


def assert_estimated_once(h: Harness, *, input: int = INPUT) -> TokenUsage:
    """One call, input as message_start reported it, output counted by us: estimated."""
    span = h.span()
    usage = estimated_usage(span)
    assert usage.input == input
    assert usage.cache_read == usage.cache_write == usage.web_search_requests == 0
    assert_span_usage(span, usage, usd(input=usage.input, output=usage.output))
    assert_metered(h, usage, usd(input=usage.input, output=usage.output))
    for point in h.telemetry.points(sc.METRIC_BILLING_TOKENS):
        assert point.attributes[sc.BILLING_USAGE_SOURCE] == "estimated"
    return usage


@pytest.mark.parametrize("how", ["break_close", "with_break", "manager_break", "del_partial"])
def test_stream_ended_early_sync(h: Harness, how: str) -> None:
    client = h.client()
    if how == "break_close":
        stream = client.messages.create(**create_kwargs(stream=True))
        _read_until_text(stream)
        stream.close()
        stream.close()  # twice: still once
    elif how == "with_break":
        with client.messages.create(**create_kwargs(stream=True)) as stream:
            _read_until_text(stream)
    elif how == "manager_break":
        with client.messages.stream(**create_kwargs()) as s:
            for _text in s.text_stream:
                break
    else:
        stream = client.messages.create(**create_kwargs(stream=True))
        _read_until_text(stream)
        del stream
        gc.collect()
    usage = assert_estimated_once(h)
    assert 1 <= usage.output < OUTPUT  # only what was read


@pytest.mark.parametrize("how", ["break_close", "manager_break"])
def test_stream_closed_early_async(h: Harness, how: str) -> None:
    async def main() -> None:
        async with h.aclient() as client:
            if how == "manager_break":
                async with client.messages.stream(**create_kwargs()) as s:
                    async for _text in s.text_stream:
                        break
                return
            stream = await client.messages.create(**create_kwargs(stream=True))
            async for event in stream:
                if event.type == "content_block_delta":
                    break
            await stream.close()
            await stream.close()

    asyncio.run(main())
    assert_estimated_once(h)


def test_stream_dropped_unconsumed(h: Harness) -> None:
    stream = h.client().messages.create(**create_kwargs(stream=True))
    assert type(stream) is anthropic.Stream
    del stream
    gc.collect()

    span = h.span()
    usage = estimated_usage(span)  # nothing was read: input estimated from the request
    assert usage.input > 0
    assert usage.output == 0
    assert_span_usage(span, usage, usd(input=usage.input))
    assert_metered(h, usage, usd(input=usage.input))


def test_async_stream_dropped_unconsumed(h: Harness) -> None:
    async def main() -> None:
        async with h.aclient() as client:
            stream = await client.messages.create(**create_kwargs(stream=True))
            assert type(stream) is anthropic.AsyncStream
            del stream
            gc.collect()

    asyncio.run(main())
    usage = estimated_usage(h.span())
    assert usage.input > 0
    assert h.duration_count() == 1


# anthropic >= 2.17 wraps a body read failure in APIConnectionError; earlier 2.x let the
# transport error through.
_DROP_ERRORS = (httpx2.RemoteProtocolError, anthropic.APIConnectionError)


def _drop_mid_stream(client: anthropic.Anthropic) -> BaseException:
    stream = client.messages.create(**create_kwargs(stream=True), **scenario("drop_mid_stream"))
    with pytest.raises(Exception) as info:
        for _ in stream:
            pass
    return info.value


def test_drop_mid_stream_error_unchanged_usage_once(h: Harness) -> None:
    client = h.client()
    with suppress_instrumentation():
        reference = _drop_mid_stream(client)
    h.telemetry.spans.clear()  # the SDK's own span of the reference call, in sdk mode

    error = _drop_mid_stream(client)

    assert type(error) is type(reference)
    assert str(error) == str(reference)
    assert isinstance(error, _DROP_ERRORS)
    span = h.span()
    assert span.status.status_code == StatusCode.ERROR
    assert (span.attributes or {}).get(sc.ERROR_TYPE)
    usage = assert_estimated_once(h)
    assert 1 <= usage.output < OUTPUT


@pytest.mark.parametrize(
    "mode",
    [
        "sdk",
        "own",
    ],
    indirect=True,
)
def test_drop_mid_stream_duration_has_error_type(h: Harness) -> None:
    error = _drop_mid_stream(h.client())
    assert h.duration_count() == 1
    assert h.duration_count(**{sc.ERROR_TYPE: type(error).__qualname__}) == 1


def test_drop_mid_stream_async(h: Harness) -> None:
    async def main() -> BaseException:
        async with h.aclient() as client:
            stream = await client.messages.create(
                **create_kwargs(stream=True), **scenario("drop_mid_stream")
            )
            with pytest.raises(Exception) as info:
                async for _ in stream:
                    pass
            return info.value

    error = asyncio.run(main())
    assert isinstance(error, _DROP_ERRORS)
    assert_estimated_once(h)


def test_stream_error_event(h: Harness) -> None:
    stream = h.client().messages.create(**create_kwargs(stream=True), **scenario("stream_error"))
    with pytest.raises(anthropic.APIStatusError) as info:
        list(stream)
    assert type(info.value) is anthropic.APIStatusError
    assert "overloaded_error" in str(info.value)
    span = h.span()
    assert span.status.status_code == StatusCode.ERROR
    assert_estimated_once(h)


# --- errors ---------------------------------------------------------------------------------
def _error_type(h: Harness, span: ReadableSpan) -> Any:
    return (span.attributes or {}).get(sc.ERROR_TYPE)


@pytest.mark.parametrize(
    ("name", "error", "status", "sdk_type"),
    [
        ("rate_limit", anthropic.RateLimitError, 429, "rate_limit_error"),
        ("server_error", anthropic.OverloadedError, 529, "overloaded_error"),
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_http_errors_propagate_unchanged(
    h: Harness, name: str, error: type[Exception], status: int, sdk_type: str, stream: bool
) -> None:
    with pytest.raises(anthropic.APIStatusError) as info:
        h.client().messages.create(**create_kwargs(stream=stream), **scenario(name))

    assert type(info.value) is error
    assert info.value.status_code == status
    span = h.span()
    assert span.status.status_code == StatusCode.ERROR
    # Our span names the exception class; the SDK's span uses the API's error type.
    expected = sdk_type if h.sdk else error.__qualname__
    assert _error_type(h, span) == expected
    attrs = span.attributes or {}
    assert not any(k.startswith(sc.BILLING_USAGE_PREFIX) for k in attrs)
    assert sc.GEN_AI_USAGE_COST_AMOUNT not in attrs
    # Metrics: one failed operation, no tokens, no cost.
    assert h.duration_count() == 1
    assert h.duration_count(**{sc.ERROR_TYPE: error.__qualname__}) == 1
    assert h.bucket_tokens() == {}
    assert h.telemetry.points(sc.METRIC_CLIENT_TOKEN_USAGE) == []
    assert h.telemetry.points(sc.METRIC_BILLING_COST) == []


def test_rate_limit_async(h: Harness) -> None:
    async def main() -> None:
        async with h.aclient() as client:
            await client.messages.create(**create_kwargs(), **scenario("rate_limit"))

    with pytest.raises(anthropic.RateLimitError):
        asyncio.run(main())
    assert h.span().status.status_code == StatusCode.ERROR
    assert h.duration_count(**{sc.ERROR_TYPE: "RateLimitError"}) == 1
    assert h.bucket_tokens() == {}


def test_connection_error_propagates(h: Harness) -> None:
    client = anthropic.Anthropic(
        api_key="test",
        base_url="http://127.0.0.1:9",  # discard port: connection refused
        max_retries=0,
        open_telemetry=h.otel_option(),
    )
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.create(**create_kwargs())
    client.close()
    assert h.span().status.status_code == StatusCode.ERROR
    assert h.duration_count() == 1
    assert h.bucket_tokens() == {}


# --- not metered -----------------------------------------------------------------------------
def test_count_tokens_is_not_metered(h: Harness) -> None:
    count = h.client().messages.count_tokens(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    assert count.input_tokens == INPUT
    assert [s for s in h.spans() if s.instrumentation_scope.name == OUR_SCOPE] == []
    for span in h.spans():  # the SDK's own span, in sdk mode: no billing on it
        assert not any(k.startswith("gen_ai.billing.") for k in (span.attributes or {}))
    assert h.duration_count() == 0
    assert h.bucket_tokens() == {}


# --- types and wrapping ----------------------------------------------------------------------
def test_types_unchanged(h: Harness) -> None:
    client = h.client()
    stream = client.messages.create(**create_kwargs(stream=True))
    assert type(stream) is anthropic.Stream
    with stream:
        pass
    with client.messages.stream(**create_kwargs()) as s:
        assert type(s) is anthropic.lib.streaming.MessageStream
        assert type(s.get_final_message()) is anthropic.types.ParsedMessage
    assert type(client.beta.messages.create(**create_kwargs())) is BetaMessage
    raw = client.messages.with_raw_response.create(**create_kwargs())
    assert type(raw) is anthropic._response.APIResponse
    assert type(raw.parse()) is Message

    async def main() -> None:
        async with h.aclient() as aclient:
            astream = await aclient.messages.create(**create_kwargs(stream=True))
            assert type(astream) is anthropic.AsyncStream
            await astream.close()

    asyncio.run(main())
    assert len(h.call_spans()) == 5


def test_wrapping_and_uninstrument(server: Any, telemetry: Any) -> None:
    import anthropic._base_client as base

    harness = Harness(server, telemetry, "own")
    with instrumented(telemetry, Catalog()):
        assert isinstance(base.SyncAPIClient.__dict__["request"], wrapt.FunctionWrapper)
        assert isinstance(base.AsyncAPIClient.__dict__["request"], wrapt.FunctionWrapper)
        assert isinstance(base.finish_api_call_span, wrapt.FunctionWrapper)
        client = harness.client()
        stream = client.messages.create(**create_kwargs(stream=True))  # watched before off
    assert not isinstance(base.SyncAPIClient.__dict__["request"], wrapt.FunctionWrapper)
    assert not isinstance(base.AsyncAPIClient.__dict__["request"], wrapt.FunctionWrapper)
    assert not isinstance(base.finish_api_call_span, wrapt.FunctionWrapper)

    events = list(stream)  # a stream started while instrumented still works, and is metered
    assert events[-1].type == "message_stop"
    after = client.messages.create(**create_kwargs())  # not metered any more
    later = list(client.messages.create(**create_kwargs(stream=True)))
    harness.close()

    (span,) = harness.call_spans()
    assert (span.attributes or {})[sc.GEN_AI_RESPONSE_ID] == events[0].message.id
    assert_span_usage(span, PLAIN, PLAIN_COST)
    assert_metered(harness, PLAIN, PLAIN_COST)
    assert after.id != later[0].message.id
    assert len(server.requests) >= 3


# --- SDK tracing switched off by the environment; SDK span not recording --------------------------
def test_env_switches_sdk_spans_off(
    server: Any, telemetry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_OPEN_TELEMETRY", "false")
    harness = Harness(server, telemetry, "own")
    with instrumented(telemetry, Catalog()):
        client = anthropic.Anthropic(
            api_key="test", base_url=server.anthropic_base_url, max_retries=0
        )
        assert client.open_telemetry["traces"]["enabled"] is False
        client.messages.create(**create_kwargs())
        list(client.messages.create(**create_kwargs(stream=True)))
        client.close()
    spans = harness.call_spans()
    assert [(s.name, s.kind) for s in spans] == [(f"chat {MODEL}", SpanKind.CLIENT)] * 2
    for span in spans:
        assert_span_usage(span, PLAIN, PLAIN_COST)


def _global_provider_is_noop() -> bool:
    return isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


@pytest.mark.skipif(not _global_provider_is_noop(), reason="a global TracerProvider is set")
@pytest.mark.parametrize(
    "stream",
    [
        False,
        True,
    ],
    ids=["json", "stream"],
)
def test_sdk_span_not_recording_gives_own_span_in_callers_trace(
    server: Any, telemetry: Any, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    """Default client option, global provider a no-op: the SDK's span does not record, so we
    make our own, a child of the caller's span."""
    monkeypatch.delenv("ANTHROPIC_OPEN_TELEMETRY", raising=False)
    harness = Harness(server, telemetry, "own")
    tracer = telemetry.tracer_provider.get_tracer("app")
    with instrumented(telemetry, Catalog()):
        client = anthropic.Anthropic(
            api_key="test", base_url=server.anthropic_base_url, max_retries=0
        )
        assert client.open_telemetry["traces"]["enabled"] is True
        with tracer.start_as_current_span("parent") as parent:
            result = client.messages.create(**create_kwargs(stream=stream))
        if stream:
            list(result)  # read after the caller's span ended, as a web app's response would
        client.close()
    (span,) = harness.call_spans()
    assert span.name == f"chat {MODEL}"
    assert_span_usage(span, PLAIN, PLAIN_COST)
    assert span.context.trace_id == parent.get_span_context().trace_id
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id


def test_span_is_child_of_callers_span(h: Harness) -> None:
    tracer = h.telemetry.tracer_provider.get_tracer("app")
    client = h.client()
    with tracer.start_as_current_span("parent") as parent:
        client.messages.create(**create_kwargs())
        stream = client.messages.create(**create_kwargs(stream=True))
    list(stream)
    spans = h.call_spans()
    assert len(spans) == 2
    for span in spans:
        assert span.parent is not None
        assert span.parent.span_id == parent.get_span_context().span_id


# --- Bedrock and Vertex -------------------------------------------------------------------------
_PLATFORM_PATH = re.compile(
    r"/model/(?P<bedrock>.+)/invoke$|/models/(?P<vertex>[^/]+):(?:streamRawPredict|rawPredict)$"
)


def _to_messages_api(request: httpx2.Request, base_url: str) -> httpx2.Request:
    """A Bedrock/Vertex request as the server's /v1/messages: the model back into the body."""
    path = urllib.parse.unquote(request.url.raw_path.decode().split("?", 1)[0])
    match = _PLATFORM_PATH.search(path)
    assert match, path
    body = json.loads(request.content)
    body["model"] = match.group("bedrock") or match.group("vertex")
    body.pop("anthropic_version", None)
    headers = {
        k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
    }
    return httpx2.Request(
        "POST", f"{base_url}/v1/messages", headers=headers, content=json.dumps(body).encode()
    )


class _PlatformTransport(httpx2.BaseTransport):
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.inner = httpx2.HTTPTransport()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        return self.inner.handle_request(_to_messages_api(request, self.base_url))

    def close(self) -> None:
        self.inner.close()


class _AsyncPlatformTransport(httpx2.AsyncBaseTransport):
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await request.aread()
        return await self.inner.handle_async_request(_to_messages_api(request, self.base_url))

    async def aclose(self) -> None:
        await self.inner.aclose()


BEDROCK_MODEL = "anthropic.claude-haiku-4-5-20251001-v1:0"
VERTEX_MODEL = "claude-haiku-4-5@20251001"


def test_bedrock_provider_and_price(h: Harness) -> None:
    """AnthropicBedrock with a bearer API key needs no boto3; its JSON call is served locally.
    (Bedrock streams use AWS event-stream framing, which the local server does not speak.)"""
    client = anthropic.AnthropicBedrock(
        api_key="test",
        aws_region="us-east-1",
        base_url=h.server.url,
        max_retries=0,
        open_telemetry=h.otel_option(),
        http_client=httpx2.Client(transport=_PlatformTransport(h.server.url)),
    )
    message = client.messages.create(**create_kwargs(model=BEDROCK_MODEL))
    client.close()
    assert type(message) is Message
    assert h.server.requests[-1].body["model"] == BEDROCK_MODEL

    span = h.span(model=BEDROCK_MODEL)
    attrs = span.attributes or {}
    assert attrs[sc.GEN_AI_PROVIDER_NAME] == "aws.bedrock"
    assert attrs[sc.GEN_AI_REQUEST_MODEL] == BEDROCK_MODEL
    # AWS regional (us-east-1) Haiku 4.5: $1.10 input, $5.50 output per million tokens.
    cost = (INPUT * Decimal("1.1") + OUTPUT * Decimal("5.5")) / MTOK
    assert_span_usage(
        span,
        PLAIN,
        cost,
        price_id="genai-prices:aws/regional.anthropic.claude-haiku-4-5-20251001-v1:0",
    )
    assert_metered(h, PLAIN, cost)
    for point in h.telemetry.points(sc.METRIC_BILLING_TOKENS):
        assert point.attributes[sc.GEN_AI_PROVIDER_NAME] == "aws.bedrock"


def test_vertex_provider_and_price(h: Harness) -> None:
    """AnthropicVertex with an access token needs no google-auth; JSON and SSE served locally."""
    client = anthropic.AnthropicVertex(
        access_token="test",
        region="us-east5",
        project_id="demo-project",
        base_url=h.server.url,
        max_retries=0,
        open_telemetry=h.otel_option(),
        http_client=httpx2.Client(transport=_PlatformTransport(h.server.url)),
    )
    message = client.messages.create(**create_kwargs(model=VERTEX_MODEL))
    stream = client.messages.create(**create_kwargs(model=VERTEX_MODEL, stream=True))
    assert type(stream) is anthropic.Stream
    list(stream)
    client.close()
    assert type(message) is Message

    spans = h.call_spans()
    assert len(spans) == len(h.spans()) == 2
    for span in spans:
        attrs = span.attributes or {}
        assert attrs[sc.GEN_AI_PROVIDER_NAME] == "gcp.vertex_ai"
        if not h.sdk:
            assert span.name == f"chat {VERTEX_MODEL}"
        # Vertex AI global Haiku 4.5: the same $1 / $5 as Anthropic's API.
        assert_span_usage(span, PLAIN, PLAIN_COST, price_id="genai-prices:google/claude-haiku-4-5")
    assert_metered(h, PLAIN + PLAIN, PLAIN_COST * 2, calls=2)


def test_vertex_async(h: Harness) -> None:
    async def main() -> None:
        client = anthropic.AsyncAnthropicVertex(
            access_token="test",
            region="us-east5",
            project_id="demo-project",
            base_url=h.server.url,
            max_retries=0,
            open_telemetry=h.otel_option(),
            http_client=httpx2.AsyncClient(transport=_AsyncPlatformTransport(h.server.url)),
        )
        async with client:
            await client.messages.create(**create_kwargs(model=VERTEX_MODEL))

    asyncio.run(main())
    span = h.span(model=VERTEX_MODEL)
    assert (span.attributes or {})[sc.GEN_AI_PROVIDER_NAME] == "gcp.vertex_ai"
    assert_span_usage(span, PLAIN, PLAIN_COST, price_id="genai-prices:google/claude-haiku-4-5")


# --- concurrency ---------------------------------------------------------------------------------
# The demo server keeps socketserver's listen backlog of 5: a burst of more new connections gets
# some reset (ReadError), instrumented or not. The clients below share a pool of 4 connections.
POOL = httpx2.Limits(max_connections=4, max_keepalive_connections=4)


def test_threads_exact_totals(h: Harness) -> None:
    client = h.client(http_client=httpx2.Client(limits=POOL))
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work(k: int) -> None:
        try:
            barrier.wait()
            for i in range(5):
                if (k + i) % 2:
                    list(client.messages.create(**create_kwargs(stream=True)))
                else:
                    client.messages.create(**create_kwargs())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    spans = h.call_spans()
    assert len(spans) == len(h.spans()) == 40
    for span in spans:
        assert_span_usage(span, PLAIN, PLAIN_COST)
    total = TokenUsage(input=40 * INPUT, output=40 * OUTPUT)
    assert_metered(h, total, PLAIN_COST * 40, calls=40)
    assert len({(s.attributes or {})[sc.GEN_AI_RESPONSE_ID] for s in spans}) == 40


def test_asyncio_gather_exact_totals(h: Harness) -> None:
    async def one(client: anthropic.AsyncAnthropic, k: int) -> None:
        if k % 2:
            stream = await client.messages.create(**create_kwargs(stream=True))
            async for _ in stream:
                pass
        else:
            async with client.messages.stream(**create_kwargs()) as s:
                await s.get_final_message()

    async def main() -> None:
        async with h.aclient(http_client=httpx2.AsyncClient(limits=POOL)) as client:
            await asyncio.gather(*(one(client, k) for k in range(20)))

    asyncio.run(main())
    spans = h.call_spans()
    assert len(spans) == len(h.spans()) == 20
    for span in spans:
        assert_span_usage(span, PLAIN, PLAIN_COST)
    assert_metered(h, TokenUsage(input=20 * INPUT, output=20 * OUTPUT), PLAIN_COST * 20, calls=20)


# --- a faulty catalog never breaks the call ----------------------------------------------------
class _BrokenCatalog(Catalog):
    def price(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("catalog is broken")


@pytest.fixture
def broken(server: Any, telemetry: Any, mode: str) -> Iterator[Harness]:
    harness = Harness(server, telemetry, mode)
    with instrumented(telemetry, _BrokenCatalog()):
        yield harness
    harness.close()


def test_faulty_catalog_never_breaks_the_call(broken: Harness) -> None:
    client = broken.client()
    message = client.messages.create(**create_kwargs())
    assert type(message) is Message
    assert message.usage.output_tokens == OUTPUT
    events = list(client.messages.create(**create_kwargs(stream=True)))
    assert events[-1].type == "message_stop"
    with client.messages.stream(**create_kwargs()) as s:
        assert s.get_final_message().usage.input_tokens == INPUT

    async def main() -> Message:
        async with broken.aclient() as aclient:
            return await aclient.messages.create(**create_kwargs())

    assert type(asyncio.run(main())) is Message

    spans = broken.call_spans()
    assert len(spans) == len(broken.spans()) == 4
    for span in spans:
        attrs = span.attributes or {}
        assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == INPUT  # the tokens still reach the span
        assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == OUTPUT
        assert sc.GEN_AI_USAGE_COST_AMOUNT not in attrs
        assert span.status.status_code != StatusCode.ERROR
    assert broken.duration_count() == 4
    t = broken.telemetry
    assert t.sum_of(sc.METRIC_CLIENT_TOKEN_USAGE, **{sc.GEN_AI_TOKEN_TYPE: "input"}) == 4 * INPUT


def test_faulty_catalog_still_counts_billing_tokens(broken: Harness) -> None:
    """Tokens are billed whatever the catalog does: counted, and the call counted unpriced."""
    broken.client().messages.create(**create_kwargs())
    assert broken.bucket_tokens() == buckets_of(PLAIN)
    assert broken.telemetry.sum_of(sc.METRIC_BILLING_UNPRICED) == 1
