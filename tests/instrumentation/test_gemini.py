"""The real ``google-genai`` client (sync and ``client.aio``; Gemini Developer API and Vertex AI)
against a local server speaking the Gemini REST wire format
(``otel_tokens_fakes.GeminiServer``), instrumented.

The server answers with the ``usageMetadata`` each test gives it, so every count and cost
below is worked out by hand from the usage and Google's published rates (which are the
genai-prices rates, checked first).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from decimal import Decimal
from typing import Any

import google.oauth2.credentials
import pytest
from google import genai
from google.genai import _api_client, errors
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from otel_tokens import semconv as sc
from otel_tokens._safety import reset_log_once
from otel_tokens.instrumentation import GeminiInstrumentor
from otel_tokens.usage import TokenUsage
from otel_tokens_fakes import GEMINI_REPLY as REPLY
from otel_tokens_fakes import GeminiServer

from . import _asserts
from ._asserts import ServerHarness, assert_token_metrics, attrs_of, instrumenting

# Newer releases' request() returns the HTTP response (headers and body), older ones the
# decoded body only.
RETURNS_HEADERS = inspect.signature(_api_client.BaseApiClient.request).return_annotation in (
    getattr(genai.types, "HttpResponse", None),
    "SdkHttpResponse",
)

FLASH = "gemini-2.5-flash"
PRO = "gemini-2.5-pro"
EMBED = "gemini-embedding-001"
MTOK = Decimal(1_000_000)

# Google's published prices, USD per million tokens (https://ai.google.dev/pricing), as
# genai-prices ships them (test_hand_prices_are_genai_prices).
FLASH_INPUT, FLASH_CACHED, FLASH_AUDIO, FLASH_OUTPUT = (
    Decimal("0.30"),
    Decimal("0.03"),
    Decimal("1"),
    Decimal("2.50"),
)
# 2.5 Pro: a prompt above 200k tokens moves the whole request to the higher rates.
PRO_INPUT, PRO_INPUT_LONG = Decimal("1.25"), Decimal("2.50")
PRO_OUTPUT, PRO_OUTPUT_LONG = Decimal("10"), Decimal("15")
EMBED_INPUT = Decimal("0.15")

# Every usageMetadata field at once (flash): a context-cache hit, thinking, a tool's prompt.
FULL_USAGE = {
    "promptTokenCount": 1200,  # includes the 1000 cached tokens
    "cachedContentTokenCount": 1000,
    "candidatesTokenCount": 300,  # excludes the 500 thinking tokens
    "thoughtsTokenCount": 500,
    "toolUsePromptTokenCount": 40,  # NOT in promptTokenCount; billed as input
    "totalTokenCount": 2040,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 1200}],
    "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 1000}],
    "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 300}],
    "toolUsePromptTokensDetails": [{"modality": "TEXT", "tokenCount": 40}],
}
FULL = TokenUsage(input=1200 - 1000 + 40, cache_read=1000, output=300, reasoning=500)
# 240 x 0.30 + 1000 x 0.03 + (300 + 500) x 2.50 = 72 + 30 + 2000 micro-dollars.
FULL_COST = (240 * FLASH_INPUT + 1000 * FLASH_CACHED + 800 * FLASH_OUTPUT) / MTOK
assert Decimal("0.002102") == FULL_COST


def test_hand_prices_are_genai_prices() -> None:
    from genai_prices import data_snapshot

    snapshot = data_snapshot.get_snapshot()
    _, flash = snapshot.find_provider_model(FLASH, None, "google", None)
    assert not isinstance(flash.prices, list)
    assert flash.prices.input_mtok == FLASH_INPUT
    assert flash.prices.cache_read_mtok == FLASH_CACHED
    assert flash.prices.input_audio_mtok == FLASH_AUDIO
    assert flash.prices.output_mtok == FLASH_OUTPUT
    _, pro = snapshot.find_provider_model(PRO, None, "google", None)
    assert not isinstance(pro.prices, list)
    tiered_in, tiered_out = pro.prices.input_mtok, pro.prices.output_mtok
    assert (tiered_in.base, tiered_in.tiers[0].start, tiered_in.tiers[0].price) == (  # type: ignore[union-attr]
        PRO_INPUT,
        200_000,
        PRO_INPUT_LONG,
    )
    assert (tiered_out.base, tiered_out.tiers[0].price) == (PRO_OUTPUT, PRO_OUTPUT_LONG)  # type: ignore[union-attr]
    _, embed = snapshot.find_provider_model(EMBED, None, "google", None)
    assert not isinstance(embed.prices, list)
    assert embed.prices.input_mtok == EMBED_INPUT


# --- fixtures and helpers ----------------------------------------------------------------------
class Harness(ServerHarness):
    def __init__(self, server: GeminiServer, telemetry: Any) -> None:
        super().__init__(server, telemetry)
        # A genai.Client closes its HTTP client when collected: kept for the test's length.
        self.clients: list[genai.Client] = []

    def client(self) -> genai.Client:
        client = genai.Client(api_key="test", http_options={"base_url": self.server.base_url})
        self.clients.append(client)
        return client

    def vertex(self) -> genai.Client:
        # A token that never expires: no refresh, nothing leaves the machine.
        credentials = google.oauth2.credentials.Credentials(token="test")  # type: ignore[no-untyped-call]
        client = genai.Client(
            vertexai=True,
            project="proj",
            location="us-central1",
            credentials=credentials,
            http_options={"base_url": self.server.base_url},
        )
        self.clients.append(client)
        return client


@contextmanager
def instrumented(server: GeminiServer, telemetry: Any) -> Iterator[Harness]:
    with instrumenting(GeminiInstrumentor(), telemetry):
        yield Harness(server, telemetry)


@pytest.fixture
def h(gemini_server: GeminiServer, telemetry: Any) -> Iterator[Harness]:
    with instrumented(gemini_server, telemetry) as harness:
        yield harness


def config(usage: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
    """A request config making the server answer with ``usage`` (and ``headers``)."""
    if usage is not None:
        headers["x-test-usage"] = json.dumps(usage)
    return {"http_options": {"headers": headers}}


def assert_span_usage(span: ReadableSpan, usage: TokenUsage, cost: Decimal | None) -> None:
    _asserts.assert_span_usage(span, usage, cost, status=sc.STATUS_PRICED)
    # Every usage attribute agrees (the per-modality ones are checked where they matter).
    assert TokenUsage.from_attributes(attrs_of(span)).with_modalities(None) == usage


def assert_metered(h: Harness, usage: TokenUsage, cost: Decimal, *, calls: int = 1) -> None:
    t = h.telemetry
    assert sum(p.count for p in t.points(sc.METRIC_CLIENT_OPERATION_DURATION)) == calls
    assert h.bucket_tokens() == dict(usage.buckets())
    assert_token_metrics(t, usage, cost)


# --- generate_content --------------------------------------------------------------------------
def test_generate_content_every_usage_field(h: Harness) -> None:
    """Gemini Developer API: cached tokens inside the prompt, thinking on top of the candidates,
    the tool-use prompt on top of the prompt; one span, priced exactly."""
    response = h.client().models.generate_content(
        model=FLASH, contents="hi", config=config(FULL_USAGE)
    )

    assert response.text == REPLY
    assert response.usage_metadata is not None
    assert response.usage_metadata.prompt_token_count == 1200
    span = h.span()
    attrs = attrs_of(span)
    assert span.name == f"generate_content {FLASH}"
    assert attrs[sc.GEN_AI_OPERATION_NAME] == "generate_content"
    assert attrs[sc.GEN_AI_PROVIDER_NAME] == "gcp.gemini"
    assert attrs[sc.GEN_AI_REQUEST_MODEL] == FLASH
    assert attrs[sc.GEN_AI_RESPONSE_MODEL] == FLASH
    assert attrs[sc.GEN_AI_RESPONSE_ID] == "resp-gemini-1"
    assert tuple(attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS]) == ("stop",)
    assert attrs[sc.SERVER_ADDRESS] == "127.0.0.1"
    assert attrs[sc.SERVER_PORT] == h.server.port
    assert attrs[sc.BILLING_PROCESSING] == sc.PROCESSING_STANDARD
    assert attrs[sc.BILLING_CONTEXT_TIER] == "base"
    assert attrs[sc.BILLING_PRICE_ID] == f"genai-prices:google/{FLASH}"
    assert attrs[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 1000
    assert attrs[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 500
    assert attrs["gen_ai.usage.text.input_tokens"] == 1240  # prompt + tool-use prompt
    assert span.status.status_code != StatusCode.ERROR
    assert_span_usage(span, FULL, FULL_COST)
    assert_metered(h, FULL, FULL_COST)


def test_generate_content_async(h: Harness) -> None:
    async def main() -> Any:
        return await h.client().aio.models.generate_content(
            model=FLASH, contents="hi", config=config(FULL_USAGE)
        )

    response = asyncio.run(main())

    assert response.text == REPLY
    span = h.span()
    assert attrs_of(span)[sc.GEN_AI_PROVIDER_NAME] == "gcp.gemini"
    assert_span_usage(span, FULL, FULL_COST)
    assert_metered(h, FULL, FULL_COST)


def test_audio_input_modality_rate(h: Harness) -> None:
    """promptTokensDetails splits the prompt: audio input has its own rate ($1 vs $0.30)."""
    usage = {
        "promptTokenCount": 1000,
        "candidatesTokenCount": 100,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": 600},
            {"modality": "AUDIO", "tokenCount": 400},
        ],
    }
    h.client().models.generate_content(model=FLASH, contents="hi", config=config(usage))

    expected = TokenUsage(input=600, input_audio=400, output=100)
    cost = (600 * FLASH_INPUT + 400 * FLASH_AUDIO + 100 * FLASH_OUTPUT) / MTOK
    assert cost == Decimal("0.00083")
    assert_span_usage(h.span(), expected, cost)
    assert_metered(h, expected, cost)


def test_image_and_video_input_without_a_catalog_rate_is_unpriced(h: Harness) -> None:
    """Video is billed as text input; image input has its own bucket, which genai-prices gives
    no rate for gemini-2.5-flash: the call is unpriced (never priced at the text rate), its
    tokens are all counted."""
    usage = {
        "promptTokenCount": 858,
        "candidatesTokenCount": 100,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": 100},
            {"modality": "IMAGE", "tokenCount": 258},
            {"modality": "VIDEO", "tokenCount": 500},
        ],
    }
    h.client().models.generate_content(model=FLASH, contents="hi", config=config(usage))

    expected = TokenUsage(input=600, input_image=258, output=100)
    span = h.span()
    assert_span_usage(span, expected, None)
    attrs = attrs_of(span)
    assert attrs[sc.BILLING_PRICING_STATUS] == sc.STATUS_UNPRICED
    assert sc.GEN_AI_USAGE_COST_AMOUNT not in attrs
    assert h.bucket_tokens() == dict(expected.buckets())
    assert h.telemetry.sum_of(sc.METRIC_BILLING_UNPRICED) == 1


@pytest.mark.parametrize(
    ("prompt", "tier", "input_rate", "output_rate"),
    [
        (250_000, "above_200k", PRO_INPUT_LONG, PRO_OUTPUT_LONG),
        (200_000, "base", PRO_INPUT, PRO_OUTPUT),
    ],
    ids=["above-200k", "exactly-200k"],
)
def test_long_context_rate_applies_to_the_whole_request(
    h: Harness, prompt: int, tier: str, input_rate: Decimal, output_rate: Decimal
) -> None:
    usage = {"promptTokenCount": prompt, "candidatesTokenCount": 1000, "thoughtsTokenCount": 200}
    h.client().models.generate_content(model=PRO, contents="hi", config=config(usage))

    expected = TokenUsage(input=prompt, output=1000, reasoning=200)
    cost = (prompt * input_rate + 1200 * output_rate) / MTOK
    span = h.span()
    assert attrs_of(span)[sc.BILLING_CONTEXT_TIER] == tier
    assert_span_usage(span, expected, cost)


def test_unknown_model_is_unpriced_not_zero(h: Harness) -> None:
    h.client().models.generate_content(
        model="gemini-9-imaginary", contents="hi", config=config(FULL_USAGE)
    )

    attrs = attrs_of(h.span())
    assert attrs[sc.BILLING_PRICING_STATUS] == sc.STATUS_UNPRICED
    assert sc.GEN_AI_USAGE_COST_AMOUNT not in attrs
    assert h.bucket_tokens() == dict(FULL.buckets())
    assert h.telemetry.sum_of(sc.METRIC_BILLING_UNPRICED) == 1


def test_api_error_is_recorded_and_raised_unchanged(h: Harness) -> None:
    with pytest.raises(errors.ClientError) as raised:
        h.client().models.generate_content(
            model=FLASH, contents="hi", config=config(**{"x-test-status": "400"})
        )

    assert raised.value.code == 400
    span = h.span()
    assert span.status.status_code == StatusCode.ERROR
    attrs = attrs_of(span)
    assert attrs[sc.ERROR_TYPE] == "ClientError"
    assert sc.GEN_AI_USAGE_INPUT_TOKENS not in attrs
    assert h.bucket_tokens() == {}


@pytest.mark.skipif(
    "retry_options" not in genai.types.HttpOptions.model_fields,
    reason="this google-genai release does not retry",
)
def test_retried_call_metered_once(h: Harness) -> None:
    """A 429 then a success, retried inside the client: one call, one span, usage once."""
    retry = {"attempts": 2, "initial_delay": 0.01, "max_delay": 0.01, "jitter": 0}
    options = config(FULL_USAGE, **{"x-test-fail-once": "retried-call-metered-once"})
    options["http_options"]["retry_options"] = retry
    h.client().models.generate_content(model=FLASH, contents="hi", config=options)

    assert [s.path for s in h.server.seen[-2:]] == [h.server.seen[-1].path] * 2
    span = h.span()
    assert span.status.status_code != StatusCode.ERROR
    assert_span_usage(span, FULL, FULL_COST)
    assert_metered(h, FULL, FULL_COST)


def test_invalid_usage_never_reaches_the_caller(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """A usageMetadata that contradicts itself (more cached tokens than the prompt that
    includes them) is not billed as anything: the caller gets the response, the span has no
    usage, and the reason is logged."""
    usage = {"promptTokenCount": 5, "cachedContentTokenCount": 9, "candidatesTokenCount": 1}
    reset_log_once()  # another test may have logged this kind already
    with caplog.at_level(logging.WARNING, logger="otel_tokens"):
        response = h.client().models.generate_content(
            model=FLASH, contents="hi", config=config(usage)
        )

    assert response.text == REPLY
    attrs = attrs_of(h.span())
    assert sc.GEN_AI_USAGE_INPUT_TOKENS not in attrs
    assert h.bucket_tokens() == {}
    assert "cachedContentTokenCount (9) exceeds promptTokenCount (5)" in caplog.text


def test_output_content_captured_when_opted_in(
    gemini_server: GeminiServer, telemetry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    with instrumented(gemini_server, telemetry) as h:
        h.client().models.generate_content(model=FLASH, contents="hi", config=config(FULL_USAGE))

    assert json.loads(attrs_of(h.span())[sc.GEN_AI_OUTPUT_MESSAGES]) == REPLY


# --- chats -------------------------------------------------------------------------------------
def test_chat_turns_each_metered(h: Harness) -> None:
    chat = h.client().chats.create(model=FLASH, config=config(FULL_USAGE))
    chat.send_message("one")
    chat.send_message("two")

    spans = h.spans()
    assert len(spans) == 2
    for span in spans:
        assert span.name == f"generate_content {FLASH}"
        assert_span_usage(span, FULL, FULL_COST)
    assert_metered(h, FULL + FULL, 2 * FULL_COST, calls=2)


def test_async_chat_metered(h: Harness) -> None:
    async def main() -> None:
        chat = h.client().aio.chats.create(model=FLASH, config=config(FULL_USAGE))
        await chat.send_message("one")

    asyncio.run(main())

    assert_span_usage(h.span(), FULL, FULL_COST)


# --- Vertex AI ---------------------------------------------------------------------------------
def test_vertex_generate_content(h: Harness) -> None:
    usage = {**FULL_USAGE, "trafficType": "ON_DEMAND"}
    response = h.vertex().models.generate_content(model=FLASH, contents="hi", config=config(usage))

    assert response.text == REPLY
    seen = h.server.seen[-1]
    assert seen.path == (
        f"/v1beta1/projects/proj/locations/us-central1/publishers/google/models/{FLASH}"
        ":generateContent"
    )
    assert {k.lower(): v for k, v in seen.headers.items()}["authorization"] == "Bearer test"
    span = h.span()
    attrs = attrs_of(span)
    assert attrs[sc.GEN_AI_PROVIDER_NAME] == "gcp.vertex_ai"
    assert attrs[sc.GEN_AI_REQUEST_MODEL] == FLASH
    assert attrs[sc.BILLING_PROCESSING] == sc.PROCESSING_STANDARD
    assert_span_usage(span, FULL, FULL_COST)
    assert_metered(h, FULL, FULL_COST)


def test_vertex_async(h: Harness) -> None:
    async def main() -> Any:
        return await h.vertex().aio.models.generate_content(
            model=FLASH, contents="hi", config=config(FULL_USAGE)
        )

    asyncio.run(main())

    span = h.span()
    assert attrs_of(span)[sc.GEN_AI_PROVIDER_NAME] == "gcp.vertex_ai"
    assert_span_usage(span, FULL, FULL_COST)


@pytest.mark.parametrize(
    ("traffic", "processing"),
    [("ON_DEMAND_FLEX", "flex"), ("ON_DEMAND_PRIORITY", "priority")],
)
def test_vertex_traffic_type_without_a_catalog_price_is_unpriced(
    h: Harness, traffic: str, processing: str
) -> None:
    """Google publishes flex and priority rates; genai-prices has none for 2.5 Flash: the call
    is unpriced (variant_unavailable), never priced at the standard rate."""
    usage = {**FULL_USAGE, "trafficType": traffic}
    h.vertex().models.generate_content(model=FLASH, contents="hi", config=config(usage))

    span = h.span()
    attrs = attrs_of(span)
    assert attrs[sc.BILLING_PROCESSING] == processing
    assert attrs[sc.BILLING_PRICING_STATUS] == "variant_unavailable"
    assert sc.GEN_AI_USAGE_COST_AMOUNT not in attrs
    assert_span_usage(span, FULL, None)
    assert h.bucket_tokens() == dict(FULL.buckets())
    assert (
        h.telemetry.sum_of(sc.METRIC_BILLING_UNPRICED, **{sc.BILLING_PROCESSING: processing}) == 1
    )


@pytest.mark.skipif(
    not RETURNS_HEADERS, reason="this google-genai release's request() drops the headers"
)
def test_gemini_api_service_tier_header(h: Harness) -> None:
    """The Gemini Developer API names the tier that served the call in x-gemini-service-tier."""
    h.client().models.generate_content(
        model=FLASH, contents="hi", config=config(FULL_USAGE, **{"x-test-tier": "flex"})
    )

    attrs = attrs_of(h.span())
    assert attrs[sc.BILLING_PROCESSING] == "flex"
    assert attrs[sc.BILLING_PRICING_STATUS] == "variant_unavailable"


def test_provisioned_throughput_is_never_priced_at_on_demand_rates(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Provisioned throughput is paid per reserved capacity, not per token: the span carries
    the token totals and no cost; no billing point prices it."""
    usage = {**FULL_USAGE, "trafficType": "PROVISIONED_THROUGHPUT"}
    with caplog.at_level(logging.WARNING, logger="otel_tokens"):
        h.vertex().models.generate_content(model=FLASH, contents="hi", config=config(usage))

    attrs = attrs_of(h.span())
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == FULL.input_total
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == FULL.output_total
    assert attrs[sc.BILLING_PRICING_STATUS] == sc.STATUS_UNPRICED
    assert sc.GEN_AI_USAGE_COST_AMOUNT not in attrs
    assert h.telemetry.points(sc.METRIC_BILLING_COST) == []
    assert h.bucket_tokens() == {}
    assert "PROVISIONED_THROUGHPUT" in caplog.text


# --- embeddings --------------------------------------------------------------------------------
def test_embed_content_gemini_api(h: Harness) -> None:
    usage = {"promptTokenCount": 20, "totalTokenCount": 20}
    result = h.client().models.embed_content(model=EMBED, contents=["a", "b"], config=config(usage))

    assert result.embeddings is not None and len(result.embeddings) == 2
    assert h.server.seen[-1].path.endswith(f"models/{EMBED}:batchEmbedContents")
    span = h.span()
    attrs = attrs_of(span)
    assert span.name == f"embeddings {EMBED}"
    assert attrs[sc.GEN_AI_OPERATION_NAME] == "embeddings"
    expected = TokenUsage(input=20)
    cost = 20 * EMBED_INPUT / MTOK
    assert_span_usage(span, expected, cost)
    assert_metered(h, expected, cost)


def test_embed_content_vertex_gemini_embedding(h: Harness) -> None:
    """gemini-embedding-001 on Vertex AI: ``embedContent`` (usageMetadata, 7 tokens here) in
    current releases, ``predict`` (4 tokens per instance here) in older ones."""
    usage = {"promptTokenCount": 7}
    h.vertex().models.embed_content(model=EMBED, contents=["a"], config=config(usage))

    path = h.server.seen[-1].path
    tokens = 7 if path.endswith(f"models/{EMBED}:embedContent") else 4
    assert path.endswith(f"models/{EMBED}:embedContent" if tokens == 7 else ":predict")
    span = h.span()
    assert attrs_of(span)[sc.GEN_AI_PROVIDER_NAME] == "gcp.vertex_ai"
    assert_span_usage(span, TokenUsage(input=tokens), tokens * EMBED_INPUT / MTOK)


def test_embed_content_vertex_predict_counts_each_instance(h: Harness) -> None:
    """text-embedding-005 on Vertex AI answers ``predict`` with a token count per instance
    (4 each here); genai-prices has no price for it: unpriced, tokens counted."""
    h.vertex().models.embed_content(model="text-embedding-005", contents=["a", "b", "c"])

    assert h.server.seen[-1].path.endswith("models/text-embedding-005:predict")
    span = h.span()
    assert_span_usage(span, TokenUsage(input=12), None)
    assert attrs_of(span)[sc.BILLING_PRICING_STATUS] == sc.STATUS_UNPRICED


# --- what is not metered -----------------------------------------------------------------------
def test_count_tokens_is_not_a_billed_call(h: Harness) -> None:
    result = h.client().models.count_tokens(model=FLASH, contents="hi")

    assert result.total_tokens == 10
    assert h.spans() == []


# --- streams ------------------------------------------------------------------------------------
def test_stream_is_metered_from_its_last_chunk_and_chunks_untouched(h: Harness) -> None:
    """generate_content_stream: a plain generator inside the client, replaced by a watching
    one; the user's chunks are the server's, and the span is finished after the last one."""
    stream = h.client().models.generate_content_stream(
        model=FLASH, contents="hi", config=config(FULL_USAGE)
    )
    assert h.spans() == []  # open while the stream is
    chunks = list(stream)

    assert [c.text for c in chunks] == ["Hello from ", "the local ", "Gemini server."]
    assert "".join(c.text or "" for c in chunks) == REPLY
    assert chunks[-1].usage_metadata is not None
    span = h.span()
    attrs = attrs_of(span)
    assert attrs[sc.GEN_AI_REQUEST_STREAM] is True
    assert attrs[sc.GEN_AI_RESPONSE_ID] == "resp-gemini-stream"
    assert attrs[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] > 0
    assert_span_usage(span, FULL, FULL_COST)
    assert_metered(h, FULL, FULL_COST)


# --- Grounding with Google Search ------------------------------------------------------------
# genai-prices' web_searches_kcount for Google: $35 per 1,000 grounded prompts (Gemini 2.x),
# $14 per 1,000 search queries (Gemini 3 and later), as Google bills them.
SEARCH_2X, SEARCH_3 = Decimal("35") / 1000, Decimal("14") / 1000


def test_grounded_prompt_of_a_gemini_2_model_is_one_search_request(h: Harness) -> None:
    """Gemini 2.x bills a grounded prompt once, however many queries it searched."""
    h.client().models.generate_content(
        model=FLASH, contents="hi", config=config(FULL_USAGE, **{"x-test-search-queries": "a|b"})
    )
    grounded = replace(FULL, web_search_requests=1)
    assert_span_usage(h.span(), grounded, FULL_COST + SEARCH_2X)
    assert_metered(h, grounded, FULL_COST + SEARCH_2X)


def test_grounding_of_a_gemini_3_model_is_billed_per_search_query(h: Harness) -> None:
    model = "gemini-3-pro-preview"
    client = h.client()
    client.models.generate_content(model=model, contents="hi", config=config(FULL_USAGE))
    client.models.generate_content(
        model=model, contents="hi", config=config(FULL_USAGE, **{"x-test-search-queries": "a|b"})
    )
    plain, grounded = (attrs_of(span) for span in h.spans())
    assert grounded[sc.BILLING_USAGE_PREFIX + sc.BUCKET_WEB_SEARCH] == 2
    assert sc.BILLING_USAGE_PREFIX + sc.BUCKET_WEB_SEARCH not in plain
    difference = Decimal(str(grounded[sc.BILLING_COST_DECIMAL])) - Decimal(
        str(plain[sc.BILLING_COST_DECIMAL])
    )
    assert difference == 2 * SEARCH_3


def test_stream_grounding_in_an_earlier_chunk_is_billed(h: Harness) -> None:
    """A stream's usage is in its last chunk, its grounding metadata may come before it."""
    stream = h.client().models.generate_content_stream(
        model=FLASH, contents="hi", config=config(FULL_USAGE, **{"x-test-search-queries": "a"})
    )
    chunks = list(stream)
    assert chunks[1].candidates and chunks[1].candidates[0].grounding_metadata is not None
    grounded = replace(FULL, web_search_requests=1)
    assert_span_usage(h.span(), grounded, FULL_COST + SEARCH_2X)


def test_async_and_chat_streams_are_metered_once_each(h: Harness) -> None:
    async def main() -> None:
        stream = await h.client().aio.models.generate_content_stream(
            model=FLASH, contents="hi", config=config(FULL_USAGE)
        )
        async for _ in stream:
            pass

    asyncio.run(main())
    chat = h.client().chats.create(model=FLASH)
    for _ in chat.send_message_stream("hi", config=config(FULL_USAGE)):
        pass
    spans = h.spans()
    assert len(spans) == 2
    for span in spans:
        assert_span_usage(span, FULL, FULL_COST)
    assert_metered(h, FULL + FULL, 2 * FULL_COST, calls=2)


def test_stream_closed_before_its_usage_is_counted_from_its_text_and_marked(
    h: Harness,
) -> None:
    """Closed after the first chunk: no usage reached us. The prompt and the text seen are
    counted (o200k_base standing in for Gemini's tokenizer), marked estimated, once."""
    stream = h.client().models.generate_content_stream(
        model=FLASH, contents="hello there", config=config(FULL_USAGE)
    )
    first = next(iter(stream))
    stream.close()
    attrs = attrs_of(h.span())
    assert attrs[sc.BILLING_USAGE_SOURCE] == sc.USAGE_SOURCE_ESTIMATED
    assert attrs[sc.BILLING_PRICING_STATUS] == sc.STATUS_ESTIMATED
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == o200k(first.text or "")
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == o200k("hello there")


def test_stream_that_fails_ends_its_span_with_the_error(h: Harness) -> None:
    with pytest.raises(errors.APIError):
        list(
            h.client().models.generate_content_stream(
                model=FLASH, contents="hi", config=config(FULL_USAGE, **{"x-test-status": "500"})
            )
        )
    (span,) = h.spans()
    assert span.status.status_code is StatusCode.ERROR


def o200k(text: str) -> int:
    import tiktoken

    return len(tiktoken.get_encoding("o200k_base").encode(text))


def test_request_attributes_from_the_generation_config(h: Harness) -> None:
    """The adapter reads the library's own request arguments (path and request body)."""
    h.client().models.generate_content(
        model=FLASH,
        contents="hi",
        config={**config(FULL_USAGE), "max_output_tokens": 64, "temperature": 0.2, "top_p": 0.9},
    )
    attrs = attrs_of(h.span())
    assert attrs[sc.GEN_AI_REQUEST_MAX_TOKENS] == 64
    assert attrs[sc.GEN_AI_REQUEST_TEMPERATURE] == pytest.approx(0.2)
    assert attrs[sc.GEN_AI_REQUEST_TOP_P] == pytest.approx(0.9)
