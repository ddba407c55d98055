"""The real ``boto3`` ``bedrock-runtime`` client against a local server speaking Bedrock's
JSON wire format (``otel_tokens_fakes.BedrockServer``), instrumented.

The server answers with the usage each test gives it, so every count and cost below is
worked out by hand from the usage and Bedrock's published rates (which are the genai-prices
rates, checked first).
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError, ResponseStreamingError
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from otel_tokens import semconv as sc
from otel_tokens.instrumentation import BedrockInstrumentor
from otel_tokens.instrumentation.bedrock import split_model_id
from otel_tokens.pricing import Catalog
from otel_tokens.usage import TokenUsage
from otel_tokens_fakes import BEDROCK_REPLY as REPLY
from otel_tokens_fakes import BedrockServer

from . import _asserts
from ._asserts import ServerHarness, attrs_of, instrumenting

MTOK = Decimal(1_000_000)
SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"
NOVA_PRO = "amazon.nova-pro-v1:0"
LLAMA = "meta.llama3-1-70b-instruct-v1:0"
MISTRAL = "mistral.mistral-large-2402-v1:0"

# Bedrock's published on-demand rates, USD per million tokens, as genai-prices ships them
# (test_hand_prices_are_genai_prices). Claude Sonnet 4.5 in a region (and through a
# geographic profile) costs 10% more than through the global profile.
SONNET_RATES = {  # input, cache read, 5m write, 1h write, output
    "regional": (
        Decimal("3.3"),
        Decimal("0.33"),
        Decimal("4.125"),
        Decimal("6.6"),
        Decimal("16.5"),
    ),
    "global": (Decimal("3"), Decimal("0.3"), Decimal("3.75"), Decimal("6"), Decimal("15")),
}
NOVA_PRO_RATES = (Decimal("0.8"), Decimal("0.2"), Decimal("3.2"))  # input, cache read, output
LLAMA_RATE = Decimal("0.72")  # input and output
MISTRAL_RATES = (Decimal("4"), Decimal("12"))

# Every Converse usage field at once: inputTokens is the uncached input only; the cache
# writes split by TTL in cacheDetails.
FULL_USAGE = {
    "inputTokens": 100,
    "outputTokens": 50,
    "cacheReadInputTokens": 1000,
    "cacheWriteInputTokens": 500,
    "cacheDetails": [{"ttl": "5m", "inputTokens": 200}, {"ttl": "1h", "inputTokens": 300}],
    "totalTokens": 1650,
}
FULL = TokenUsage(input=100, cache_read=1000, cache_write_5m=200, cache_write_1h=300, output=50)


def _cost(rates: tuple[Decimal, ...]) -> Decimal:
    rin, rread, r5m, r1h, rout = rates
    return (100 * rin + 1000 * rread + 200 * r5m + 300 * r1h + 50 * rout) / MTOK


# 330 + 330 + 825 + 1980 + 825 micro-dollars; global: 300 + 300 + 750 + 1800 + 750.
FULL_COST = _cost(SONNET_RATES["regional"])
FULL_COST_GLOBAL = _cost(SONNET_RATES["global"])
assert Decimal("0.00429") == FULL_COST
assert Decimal("0.0039") == FULL_COST_GLOBAL


def test_hand_prices_are_genai_prices() -> None:
    from genai_prices import data_snapshot

    snapshot = data_snapshot.get_snapshot()
    for model_id, scope in ((SONNET, "regional"), ("global." + SONNET, "global")):
        _, model = snapshot.find_provider_model(model_id, None, "aws", None)
        prices = model.prices
        assert not isinstance(prices, list)
        found = (
            prices.input_mtok,
            prices.cache_read_mtok,
            prices.cache_write_mtok,
            prices.cache_write_1h_mtok,  # type: ignore[attr-defined]
            prices.output_mtok,
        )
        assert found == SONNET_RATES[scope], model_id
    _, nova = snapshot.find_provider_model(NOVA_PRO, None, "aws", None)
    assert not isinstance(nova.prices, list)
    assert (nova.prices.input_mtok, nova.prices.cache_read_mtok, nova.prices.output_mtok) == (
        NOVA_PRO_RATES
    )
    assert nova.prices.cache_write_mtok is None  # Bedrock's cache write rate is not in it
    _, llama = snapshot.find_provider_model(LLAMA, None, "aws", None)
    assert not isinstance(llama.prices, list)
    assert llama.prices.input_mtok == llama.prices.output_mtok == LLAMA_RATE
    _, mistral = snapshot.find_provider_model(MISTRAL, None, "aws", None)
    assert not isinstance(mistral.prices, list)
    assert (mistral.prices.input_mtok, mistral.prices.output_mtok) == MISTRAL_RATES


# --- model ids -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model_id", "priced", "scope"),
    [
        (SONNET, SONNET, None),
        ("us." + SONNET, SONNET, "us"),
        ("eu." + SONNET, SONNET, "eu"),
        ("apac." + SONNET, SONNET, "apac"),
        ("us-gov." + SONNET, SONNET, "us-gov"),
        ("global." + SONNET, "global." + SONNET, "global"),  # priced as its own model
        (f"arn:aws:bedrock:us-east-1::foundation-model/{SONNET}", SONNET, None),
        (
            f"arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.{SONNET}",
            SONNET,
            "eu",
        ),
        (
            f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/global.{SONNET}",
            "global." + SONNET,
            "global",
        ),
        # ARNs that do not name the model: not priced.
        ("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2", None, None),
        ("arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc", None, None),
        ("arn:aws:bedrock:us-east-1:123456789012", None, None),
        (NOVA_PRO, NOVA_PRO, None),
        ("us.meta.llama3-1-70b-instruct-v1:0", LLAMA, "us"),
    ],
)
def test_split_model_id(model_id: str, priced: str | None, scope: str | None) -> None:
    assert split_model_id(model_id) == (priced, scope)


# --- fixtures and helpers ------------------------------------------------------------------
class Harness(ServerHarness):
    def __init__(self, server: BedrockServer, telemetry: Any) -> None:
        super().__init__(server, telemetry)
        self.headers: dict[str, str] = {}  # sent with the next requests

    def _add_headers(self, request: Any, **_: Any) -> None:
        for name, value in self.headers.items():
            request.headers[name] = value

    def client(self, service: str = "bedrock-runtime") -> Any:
        client = boto3.client(
            service,
            endpoint_url=self.server.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(retries={"max_attempts": 1}),
        )
        client.meta.events.register("before-sign.*.*", self._add_headers)
        return client


@pytest.fixture
def h(bedrock_server: BedrockServer, telemetry: Any) -> Iterator[Harness]:
    with instrumenting(BedrockInstrumentor(), telemetry):
        yield Harness(bedrock_server, telemetry)


def assert_span_usage(span: ReadableSpan, usage: TokenUsage, cost: Decimal | None) -> None:
    _asserts.assert_span_usage(span, usage, cost, status=sc.STATUS_PRICED)


def assert_metered(h: Harness, usage: TokenUsage, cost: Decimal) -> None:
    t = h.telemetry
    assert sum(p.count for p in t.points(sc.METRIC_CLIENT_OPERATION_DURATION)) == 1
    assert h.bucket_tokens() == dict(usage.buckets())
    assert t.sum_of(sc.METRIC_BILLING_COST) == pytest.approx(float(cost), rel=1e-9)


def converse(h: Harness, model: str, usage: Any = None, **kwargs: Any) -> Any:
    if usage is not None:
        h.headers["x-test-usage"] = usage if isinstance(usage, str) else json.dumps(usage)
    return h.client().converse(
        modelId=model,
        messages=[{"role": "user", "content": [{"text": "hi"}]}],
        **kwargs,
    )


# --- converse ------------------------------------------------------------------------------
def test_converse_every_usage_field(h: Harness) -> None:
    """Uncached input, cache reads, cache writes split 5m/1h by cacheDetails, output: one
    span, priced exactly at the in-region rates."""
    response = converse(h, SONNET, FULL_USAGE, inferenceConfig={"maxTokens": 256, "topP": 0.5})

    assert response["output"]["message"]["content"][0]["text"] == REPLY
    assert response["usage"] == FULL_USAGE
    span = h.span()
    attrs = attrs_of(span)
    assert span.name == f"chat {SONNET}"
    assert attrs[sc.GEN_AI_OPERATION_NAME] == "chat"
    assert attrs[sc.GEN_AI_PROVIDER_NAME] == "aws.bedrock"
    assert attrs[sc.GEN_AI_REQUEST_MODEL] == SONNET
    assert attrs[sc.GEN_AI_RESPONSE_MODEL] == SONNET
    assert attrs[sc.GEN_AI_REQUEST_MAX_TOKENS] == 256
    assert attrs[sc.GEN_AI_REQUEST_TOP_P] == 0.5
    assert tuple(attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS]) == ("end_turn",)
    assert attrs[sc.SERVER_ADDRESS] == "127.0.0.1"
    assert attrs[sc.SERVER_PORT] == h.server.port
    assert attrs[sc.BILLING_PROCESSING] == sc.PROCESSING_STANDARD
    assert attrs[sc.BILLING_PRICE_ID] == f"genai-prices:aws/regional.{SONNET}"
    assert attrs[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 1000
    assert attrs[sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] == 500
    assert sc.BILLING_INFERENCE_PROFILE not in attrs
    assert span.status.status_code != StatusCode.ERROR
    assert_span_usage(span, FULL, FULL_COST)
    assert_metered(h, FULL, FULL_COST)


@pytest.mark.parametrize("scope", ["us", "eu", "apac"])
def test_converse_geographic_profile_is_priced_as_the_model(h: Harness, scope: str) -> None:
    converse(h, f"{scope}.{SONNET}", FULL_USAGE)

    attrs = attrs_of(h.span())
    assert attrs[sc.GEN_AI_REQUEST_MODEL] == f"{scope}.{SONNET}"
    assert attrs[sc.GEN_AI_RESPONSE_MODEL] == SONNET
    assert attrs[sc.BILLING_INFERENCE_PROFILE] == scope
    assert_span_usage(h.span(), FULL, FULL_COST)
    assert sc.BILLING_PRICED_MODEL not in attrs  # priced as served, not a fallback


def test_converse_global_profile_has_its_own_price(h: Harness) -> None:
    converse(h, f"global.{SONNET}", FULL_USAGE)

    attrs = attrs_of(h.span())
    assert attrs[sc.GEN_AI_RESPONSE_MODEL] == f"global.{SONNET}"
    assert attrs[sc.BILLING_INFERENCE_PROFILE] == "global"
    assert attrs[sc.BILLING_PRICE_ID] == f"genai-prices:aws/global.{SONNET}"
    assert_span_usage(h.span(), FULL, FULL_COST_GLOBAL)
    assert_metered(h, FULL, FULL_COST_GLOBAL)


def test_converse_arns(h: Harness) -> None:
    """A foundation-model ARN and an inference-profile ARN are priced as their model; the
    model id travels URL-encoded in the path, as botocore sends it."""
    foundation = f"arn:aws:bedrock:us-east-1::foundation-model/{SONNET}"
    profile = f"arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.{SONNET}"
    converse(h, foundation, FULL_USAGE)
    converse(h, profile, FULL_USAGE)

    assert [s.model for s in h.server.seen[-2:]] == [foundation, profile]
    first, second = sorted(h.spans(), key=lambda s: s.start_time or 0)
    for span, scope in ((first, None), (second, "eu")):
        attrs = attrs_of(span)
        assert attrs[sc.GEN_AI_RESPONSE_MODEL] == SONNET
        assert attrs.get(sc.BILLING_INFERENCE_PROFILE) == scope
        assert_span_usage(span, FULL, FULL_COST)


def test_converse_application_profile_arn_is_unpriced_but_counted(h: Harness) -> None:
    """An application inference profile's ARN does not name its model: the tokens are
    counted, and the call is unpriced rather than priced at some model's rate."""
    arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3"
    converse(h, arn, FULL_USAGE)

    attrs = attrs_of(h.span())
    assert sc.GEN_AI_RESPONSE_MODEL not in attrs
    assert attrs[sc.BILLING_PRICING_STATUS] == sc.STATUS_UNPRICED
    assert sc.BILLING_COST_DECIMAL not in attrs
    assert_span_usage(h.span(), FULL, None)
    assert h.bucket_tokens() == dict(FULL.buckets())


def test_converse_without_cache_details_writes_have_the_default_ttl(h: Harness) -> None:
    usage = {"inputTokens": 100, "outputTokens": 50, "cacheWriteInputTokens": 500}
    converse(h, SONNET, usage)

    expected = TokenUsage(input=100, cache_write_5m=500, output=50)
    cost = (100 * Decimal("3.3") + 500 * Decimal("4.125") + 50 * Decimal("16.5")) / MTOK
    assert_span_usage(h.span(), expected, cost)


def test_converse_bad_usage_is_reported_and_the_response_kept(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """cacheDetails adding up to more than cacheWriteInputTokens: no usage is made up; the
    user's response is untouched."""
    bad = {**FULL_USAGE, "cacheWriteInputTokens": 100}
    with caplog.at_level(logging.WARNING, logger="otel_tokens"):
        response = converse(h, SONNET, bad)

    assert response["usage"] == bad
    attrs = attrs_of(h.span())
    assert sc.BILLING_PRICING_STATUS not in attrs
    assert not h.bucket_tokens()


def test_converse_flex_tier_without_a_price_is_not_priced_at_standard(h: Harness) -> None:
    """A call served on the flex tier: the catalog has no flex rate for this model, so the
    call is variant_unavailable, never priced at the standard rate."""
    h.headers["x-test-service-tier"] = "flex"
    converse(h, SONNET, FULL_USAGE, serviceTier={"type": "flex"})

    attrs = attrs_of(h.span())
    assert attrs[sc.BILLING_PROCESSING] == sc.PROCESSING_FLEX
    assert attrs[sc.BILLING_PRICING_STATUS] == sc.STATUS_VARIANT_UNAVAILABLE
    assert sc.BILLING_COST_DECIMAL not in attrs
    assert h.bucket_tokens() == dict(FULL.buckets())


def test_converse_reserved_tier_is_unpriced(h: Harness) -> None:
    """Reserved capacity is paid for as capacity, not at the on-demand per-token rates;
    asked for, whether or not the response names the tier."""
    converse(h, SONNET, FULL_USAGE, serviceTier={"type": "reserved"})

    attrs = attrs_of(h.span())
    assert attrs[sc.BILLING_PRICING_STATUS] == sc.STATUS_UNPRICED
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == FULL.input_total
    assert sc.BILLING_COST_DECIMAL not in attrs


def test_converse_latency_optimized_is_unpriced(h: Harness) -> None:
    converse(h, SONNET, FULL_USAGE, performanceConfig={"latency": "optimized"})

    attrs = attrs_of(h.span())
    assert attrs[sc.BILLING_PRICING_STATUS] == sc.STATUS_UNPRICED
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == FULL.input_total
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == FULL.output_total
    assert sc.BILLING_COST_DECIMAL not in attrs


def test_converse_error_ends_the_span_with_its_type(h: Harness) -> None:
    h.headers["x-test-status"] = "400"
    with pytest.raises(ClientError):
        converse(h, SONNET, FULL_USAGE)

    span = h.span()
    assert span.status.status_code == StatusCode.ERROR
    assert attrs_of(span)[sc.ERROR_TYPE] == "ThrottlingException"  # the class boto3 raises


def test_other_aws_clients_and_operations_are_not_metered(h: Harness) -> None:
    """Every botocore call passes the wrapped method: an S3 call is not a GenAI call."""
    with pytest.raises(ClientError):
        h.client("s3").list_buckets()
    assert h.spans() == []


# --- invoke_model --------------------------------------------------------------------------
ANTHROPIC_REQUEST = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64}


def invoke(
    h: Harness,
    model: str,
    body: Any,
    token_headers: dict[str, str] | None = None,
    request: Any = None,
) -> Any:
    h.headers["x-test-body"] = json.dumps(body)
    if token_headers is not None:
        h.headers["x-test-token-headers"] = json.dumps(token_headers)
    return h.client().invoke_model(
        modelId=model, body=json.dumps(request if request is not None else ANTHROPIC_REQUEST)
    )


ANTHROPIC_BODY = {
    "id": "msg_bdrk_1",
    "type": "message",
    "role": "assistant",
    "content": [{"type": "text", "text": REPLY}],
    "stop_reason": "end_turn",
    "usage": {
        "input_tokens": 100,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 500,
        "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 300},
        "output_tokens": 50,
    },
}


def test_invoke_model_anthropic_body_and_the_body_is_kept(h: Harness) -> None:
    """Anthropic Messages usage with its cache fields; the user reads the very bytes the
    service sent, though the adapter read them first."""
    response = invoke(
        h,
        "us." + SONNET,
        ANTHROPIC_BODY,
        {"x-amzn-bedrock-input-token-count": "1600", "x-amzn-bedrock-output-token-count": "50"},
    )

    assert json.loads(response["body"].read()) == ANTHROPIC_BODY
    span = h.span()
    attrs = attrs_of(span)
    assert attrs[sc.GEN_AI_RESPONSE_MODEL] == SONNET
    assert attrs[sc.BILLING_INFERENCE_PROFILE] == "us"
    assert attrs[sc.GEN_AI_RESPONSE_ID] == "msg_bdrk_1"
    assert attrs[sc.GEN_AI_REQUEST_MAX_TOKENS] == 64
    assert tuple(attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS]) == ("end_turn",)
    assert_span_usage(span, FULL, FULL_COST)  # the body's split, not the headers' totals
    assert_metered(h, FULL, FULL_COST)


def test_invoke_model_body_streams_in_chunks(h: Harness) -> None:
    response = invoke(h, SONNET, ANTHROPIC_BODY)
    data = b"".join(response["body"].iter_chunks(chunk_size=7))
    assert json.loads(data) == ANTHROPIC_BODY


def test_invoke_model_body_that_fails_to_read_fails_for_the_user(h: Harness) -> None:
    """The connection drops mid-body: reading it for the usage fails, and the user's own
    read() fails as it would have without us; the call ends without made-up usage."""
    h.headers["x-test-truncate"] = "1"
    response = invoke(h, SONNET, ANTHROPIC_BODY)

    with pytest.raises(ResponseStreamingError):  # what botocore raises without us
        response["body"].read()
    attrs = attrs_of(h.span())
    assert sc.GEN_AI_USAGE_INPUT_TOKENS not in attrs
    assert not h.bucket_tokens()


def test_invoke_model_headers_where_the_body_has_no_usage(h: Harness) -> None:
    """A Mistral body reports no usage: Bedrock's token-count headers do."""
    body = {"outputs": [{"text": REPLY, "stop_reason": "stop"}]}
    response = invoke(
        h,
        MISTRAL,
        body,
        {"x-amzn-bedrock-input-token-count": "100", "x-amzn-bedrock-output-token-count": "50"},
    )

    assert json.loads(response["body"].read()) == body
    usage = TokenUsage(input=100, output=50)
    cost = (100 * MISTRAL_RATES[0] + 50 * MISTRAL_RATES[1]) / MTOK  # 400 + 600 micro-dollars
    assert cost == Decimal("0.001")
    assert_span_usage(h.span(), usage, cost)
    assert_metered(h, usage, cost)


@pytest.mark.parametrize("content_type", ["image/png", "application/json"])
def test_invoke_model_body_that_is_not_json_keeps_its_bytes_and_the_headers_count(
    h: Harness, content_type: str
) -> None:
    """A body that is not JSON (an image model's, or a broken one): the user gets its bytes,
    and the usage comes from the headers."""
    h.headers["x-test-content-type"] = content_type
    h.headers["x-test-body"] = "PNG bytes, not json"
    h.headers["x-test-token-headers"] = json.dumps(
        {"x-amzn-bedrock-input-token-count": "100", "x-amzn-bedrock-output-token-count": "50"}
    )
    response = h.client().invoke_model(modelId=MISTRAL, body=json.dumps({"prompt": "hi"}))

    assert response["body"].read() == b"PNG bytes, not json"
    usage = TokenUsage(input=100, output=50)
    assert_span_usage(h.span(), usage, (100 * MISTRAL_RATES[0] + 50 * MISTRAL_RATES[1]) / MTOK)


def test_invoke_model_without_any_usage_is_not_made_up(h: Harness) -> None:
    invoke(h, MISTRAL, {"outputs": []})
    attrs = attrs_of(h.span())
    assert sc.GEN_AI_USAGE_INPUT_TOKENS not in attrs
    assert not h.bucket_tokens()


NOVA_BODY = {
    "output": {"message": {"role": "assistant", "content": [{"text": REPLY}]}},
    "stopReason": "end_turn",
    # inputTokens is the uncached input, as in Converse.
    "usage": {
        "inputTokens": 100,
        "outputTokens": 50,
        "cacheReadInputTokenCount": 1000,
        "totalTokens": 1150,
    },
}


def test_invoke_model_amazon_nova_body(h: Harness) -> None:
    request = {
        "messages": [{"role": "user", "content": [{"text": "hi"}]}],
        "inferenceConfig": {"max_new_tokens": 64, "temperature": 0.2},
    }
    response = invoke(h, "us." + NOVA_PRO, NOVA_BODY, request=request)

    assert json.loads(response["body"].read()) == NOVA_BODY
    usage = TokenUsage(input=100, cache_read=1000, output=50)
    rin, rread, rout = NOVA_PRO_RATES
    cost = (100 * rin + 1000 * rread + 50 * rout) / MTOK  # 80 + 200 + 160 micro-dollars
    assert cost == Decimal("0.00044")
    attrs = attrs_of(h.span())
    assert attrs[sc.GEN_AI_RESPONSE_MODEL] == NOVA_PRO
    assert attrs[sc.GEN_AI_REQUEST_MAX_TOKENS] == 64
    assert attrs[sc.GEN_AI_REQUEST_TEMPERATURE] == 0.2
    assert tuple(attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS]) == ("end_turn",)
    assert_span_usage(h.span(), usage, cost)
    assert_metered(h, usage, cost)


def test_invoke_model_nova_cache_write_without_a_rate_is_unpriced(h: Harness) -> None:
    """The catalog has no Nova cache-write rate: the call is unpriced, its tokens counted,
    never priced as if the writes were free or plain input."""
    body = {**NOVA_BODY, "usage": {**NOVA_BODY["usage"], "cacheWriteInputTokenCount": 400}}
    invoke(h, NOVA_PRO, body, request={"messages": []})

    attrs = attrs_of(h.span())
    assert attrs[sc.BILLING_PRICING_STATUS] == sc.STATUS_UNPRICED
    assert sc.BILLING_COST_DECIMAL not in attrs
    usage = TokenUsage(input=100, cache_read=1000, cache_write_5m=400, output=50)
    assert_span_usage(h.span(), usage, None)
    assert h.bucket_tokens() == dict(usage.buckets())


def test_invoke_model_meta_llama_body(h: Harness) -> None:
    body = {
        "generation": REPLY,
        "prompt_token_count": 100,
        "generation_token_count": 50,
        "stop_reason": "stop",
    }
    response = invoke(h, LLAMA, body, request={"prompt": "hi", "max_gen_len": 128})

    assert json.loads(response["body"].read()) == body
    usage = TokenUsage(input=100, output=50)
    cost = 150 * LLAMA_RATE / MTOK  # 72 + 36 micro-dollars
    assert cost == Decimal("0.000108")
    attrs = attrs_of(h.span())
    assert attrs[sc.GEN_AI_REQUEST_MAX_TOKENS] == 128
    assert tuple(attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS]) == ("stop",)
    assert_span_usage(h.span(), usage, cost)
    assert_metered(h, usage, cost)


# --- streams ---------------------------------------------------------------------------------
def converse_stream(h: Harness, usage: Any = FULL_USAGE) -> Any:
    h.headers["x-test-usage"] = json.dumps(usage)
    return h.client().converse_stream(
        modelId=SONNET, messages=[{"role": "user", "content": [{"text": "hi"}]}]
    )


def test_converse_stream_exact_usage_and_cost_events_unchanged(h: Harness) -> None:
    """The usage of the last (``metadata``) event, priced exactly; the user's events are
    botocore's own, unchanged; the span is finished right after the last event (no flush)."""
    stream = converse_stream(h)["stream"]
    events = []
    for event in stream:
        events.append(event)
        if "metadata" in event:
            assert h.spans() == []  # the call is not over before the stream is
    assert h.telemetry.spans.get_finished_spans()  # no flush: ended by the stream's end

    text = "".join(
        e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e
    )
    assert text == REPLY
    assert events[-1]["metadata"]["usage"] == FULL_USAGE
    span = h.span()
    assert tuple(attrs_of(span)[sc.GEN_AI_RESPONSE_FINISH_REASONS]) == ("end_turn",)
    assert attrs_of(span)[sc.GEN_AI_RESPONSE_MODEL] == SONNET
    assert_span_usage(span, FULL, FULL_COST)
    assert_metered(h, FULL, FULL_COST)


INVOKE_CHUNKS = [
    {"type": "message_start", "message": {"id": "msg_bdrk_s", "usage": {"input_tokens": 100}}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 50}},
    {
        "type": "message_stop",
        "amazon-bedrock-invocationMetrics": {
            "inputTokenCount": 100,
            "outputTokenCount": 50,
            "cacheReadInputTokenCount": 1000,
            "cacheWriteInputTokenCount": 200,
            "invocationLatency": 120,
            "firstByteLatency": 40,
        },
    },
]
INVOKE_STREAM_USAGE = TokenUsage(input=100, cache_read=1000, cache_write_5m=200, output=50)
_R = SONNET_RATES["regional"]
INVOKE_STREAM_COST = (100 * _R[0] + 1000 * _R[1] + 200 * _R[2] + 50 * _R[4]) / MTOK


def invoke_stream(h: Harness, chunks: Any = INVOKE_CHUNKS) -> Any:
    h.headers["x-test-chunks"] = json.dumps(chunks)
    return h.client().invoke_model_with_response_stream(
        modelId=SONNET, body=json.dumps(ANTHROPIC_REQUEST)
    )


def test_invoke_model_with_response_stream_exact_usage_and_cost(h: Harness) -> None:
    """Bedrock's invocation metrics in the last chunk (cache counts included), priced
    exactly; the user reads the chunks' very bytes."""
    body = invoke_stream(h)["body"]
    assert [json.loads(e["chunk"]["bytes"]) for e in body] == INVOKE_CHUNKS
    assert h.telemetry.spans.get_finished_spans()  # no flush: ended by the stream's end

    span = h.span()
    assert tuple(attrs_of(span)[sc.GEN_AI_RESPONSE_FINISH_REASONS]) == ("end_turn",)
    assert_span_usage(span, INVOKE_STREAM_USAGE, INVOKE_STREAM_COST)
    assert_metered(h, INVOKE_STREAM_USAGE, INVOKE_STREAM_COST)


def test_converse_stream_closed_early_ends_the_call_once_without_made_up_usage(
    h: Harness,
) -> None:
    """Closed before its ``metadata`` event: one call, ended at the close, with no usage (the
    events before it carry no counts); a later collection ends nothing more."""
    stream = converse_stream(h)["stream"]
    iterator = iter(stream)
    next(iterator)
    stream.close()
    assert len(h.telemetry.spans.get_finished_spans()) == 1  # ended by the close
    del iterator, stream
    gc.collect()

    span = h.span()
    assert sc.GEN_AI_USAGE_INPUT_TOKENS not in attrs_of(span)
    assert sum(p.count for p in h.telemetry.points(sc.METRIC_CLIENT_OPERATION_DURATION)) == 1
    assert h.bucket_tokens() == {}


def test_converse_stream_error_event_fails_the_call(h: Harness) -> None:
    """An exception message in the stream (botocore raises it to the user): the call ends
    with that error type once the stream is done with, and without made-up usage."""
    h.headers["x-test-stream-error"] = "modelStreamErrorException"
    stream = converse_stream(h)["stream"]
    with pytest.raises(EventStreamError):
        list(stream)
    del stream
    gc.collect()

    span = h.span()
    assert attrs_of(span)[sc.ERROR_TYPE] == "modelStreamErrorException"
    assert span.status.status_code == StatusCode.ERROR
    assert sc.GEN_AI_USAGE_INPUT_TOKENS not in attrs_of(span)


def test_invoke_stream_closed_early_is_estimated_from_the_models_own_counts(h: Harness) -> None:
    """Closed after Anthropic's ``message_start`` and ``message_delta``, before Bedrock's
    invocation metrics: the model's own counts so far, marked estimated; ended once."""
    body = invoke_stream(h)["body"]
    iterator = iter(body)
    for _ in range(3):
        next(iterator)
    body.close()
    assert len(h.telemetry.spans.get_finished_spans()) == 1
    del iterator, body
    gc.collect()

    span = h.span()
    usage = TokenUsage(input=100, output=50, source="estimated")
    assert_span_usage(span, usage, None)
    assert attrs_of(span)[sc.BILLING_USAGE_SOURCE] == "estimated"
    assert sum(p.count for p in h.telemetry.points(sc.METRIC_CLIENT_OPERATION_DURATION)) == 1


def test_invoke_stream_cut_before_any_counts_has_no_usage(h: Harness) -> None:
    """A model whose events carry no counts of their own (Amazon Titan): cut before the
    metrics, the call has no usage, not a guess."""
    chunks = [{"outputText": "Hi", "index": 0}, {"outputText": " there", "index": 0}]
    body = invoke_stream(h, chunks)["body"]
    iterator = iter(body)
    next(iterator)
    body.close()
    del iterator, body
    gc.collect()

    assert sc.GEN_AI_USAGE_INPUT_TOKENS not in attrs_of(h.span())
    assert h.bucket_tokens() == {}


def test_invoke_stream_cache_writes_split_by_the_models_message_start(h: Harness) -> None:
    """Bedrock's invocation metrics have no 5m/1h split of the cache writes; Anthropic's
    ``message_start`` has it: 1h writes are priced at the 1h rate, not the 5m one."""
    chunks = [dict(c) for c in INVOKE_CHUNKS]
    chunks[0] = {
        "type": "message_start",
        "message": {"id": "msg_bdrk_s", "usage": ANTHROPIC_BODY["usage"]},
    }
    metrics = dict(chunks[-1]["amazon-bedrock-invocationMetrics"])
    metrics["cacheWriteInputTokenCount"] = 500
    chunks[-1] = {"type": "message_stop", "amazon-bedrock-invocationMetrics": metrics}
    body = invoke_stream(h, chunks)["body"]
    assert [json.loads(e["chunk"]["bytes"]) for e in body] == chunks

    assert_span_usage(h.span(), FULL, FULL_COST)
    assert_metered(h, FULL, FULL_COST)


def test_event_stream_can_be_watched_in_place_through_its_event_generator(
    bedrock_server: BedrockServer,
) -> None:
    """What the core's stream watcher would need (docs/bedrock.md): botocore's EventStream
    iterates its private ``_event_generator`` (raw messages, before parsing), so swapping it
    keeps the user's object and parsed events while a watcher sees the ``metadata`` event's
    usage. This pins the botocore internals the change would rely on."""
    h = Harness(bedrock_server, None)
    h.headers["x-test-usage"] = json.dumps(FULL_USAGE)
    response = h.client().converse_stream(
        modelId=SONNET, messages=[{"role": "user", "content": [{"text": "hi"}]}]
    )
    stream = response["stream"]
    seen: list[Any] = []

    def watch(inner: Iterator[Any]) -> Iterator[Any]:
        for message in inner:
            seen.append(message)
            yield message

    stream._event_generator = watch(stream._event_generator)
    events = list(stream)

    assert "metadata" in events[-1]
    kinds = [m.headers[":event-type"] for m in seen]
    assert kinds[0] == "messageStart" and kinds[-1] == "metadata"
    assert json.loads(seen[-1].payload)["usage"] == FULL_USAGE


# --- with OpenTelemetry's botocore instrumentation -----------------------------------------
# Its Bedrock extension makes a span per call with gen_ai.usage.* and records
# gen_ai.client.token.usage: the call rides on its span (docs/bedrock.md), in either order.
THEIR_SCOPE = "opentelemetry.instrumentation.botocore.bedrock-runtime"


@pytest.fixture(params=["theirs_outside", "ours_outside"])
def both(
    request: pytest.FixtureRequest, bedrock_server: BedrockServer, telemetry: Any
) -> Iterator[Harness]:
    """Both instrumentations; the last one instrumented is the outer wrapper."""
    botocore_instrumentation = pytest.importorskip("opentelemetry.instrumentation.botocore")
    theirs = botocore_instrumentation.BotocoreInstrumentor()
    ours = BedrockInstrumentor()
    steps = [
        lambda: ours.instrument(
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
            catalog=Catalog(),
        ),
        lambda: theirs.instrument(
            tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
        ),
    ]
    for step in steps if request.param == "theirs_outside" else steps[::-1]:
        step()
    try:
        yield Harness(bedrock_server, telemetry)
    finally:
        theirs.uninstrument()
        ours.uninstrument()


def usage_spans(h: Harness) -> list[ReadableSpan]:
    return [s for s in h.telemetry.finished() if sc.GEN_AI_USAGE_INPUT_TOKENS in attrs_of(s)]


def assert_counted_once(h: Harness, usage: TokenUsage, cost: Decimal) -> ReadableSpan:
    """One span with usage (theirs, with our exact attributes), one
    gen_ai.client.token.usage record per token type and one duration (theirs), the
    billing points exact."""
    spans = usage_spans(h)
    assert len(spans) == 1, [(s.name, s.instrumentation_scope.name) for s in spans]
    span = spans[0]
    assert span.instrumentation_scope.name == THEIR_SCOPE
    assert span.end_time is not None and span.end_time >= span.start_time
    assert_span_usage(span, usage, cost)
    t = h.telemetry
    records = t.points(sc.METRIC_CLIENT_TOKEN_USAGE)
    by_type: dict[str, int] = {}
    for p in records:
        kind = p.attributes[sc.GEN_AI_TOKEN_TYPE]
        by_type[kind] = by_type.get(kind, 0) + p.count
    assert by_type == {sc.TOKEN_TYPE_INPUT: 1, sc.TOKEN_TYPE_OUTPUT: 1}
    assert sum(p.count for p in t.points(sc.METRIC_CLIENT_OPERATION_DURATION)) == 1
    assert h.bucket_tokens() == dict(usage.buckets())
    assert t.sum_of(sc.METRIC_BILLING_COST) == pytest.approx(float(cost), rel=1e-9)
    return span


def test_with_otel_botocore_converse_counts_once(both: Harness) -> None:
    response = converse(both, SONNET, FULL_USAGE)
    assert response["usage"] == FULL_USAGE
    span = assert_counted_once(both, FULL, FULL_COST)
    assert span.name == f"chat {SONNET}"
    assert attrs_of(span)[sc.GEN_AI_PROVIDER_NAME] == "aws.bedrock"


def test_with_otel_botocore_invoke_model_counts_once(both: Harness) -> None:
    response = invoke(both, SONNET, ANTHROPIC_BODY)
    assert json.loads(response["body"].read()) == ANTHROPIC_BODY
    assert_counted_once(both, FULL, FULL_COST)


def test_with_otel_botocore_converse_stream_counts_once(both: Harness) -> None:
    events = list(converse_stream(both)["stream"])
    assert events[-1]["metadata"]["usage"] == FULL_USAGE
    assert_counted_once(both, FULL, FULL_COST)


def test_with_otel_botocore_invoke_stream_counts_once(both: Harness) -> None:
    body = invoke_stream(both)["body"]
    assert [json.loads(e["chunk"]["bytes"]) for e in body] == INVOKE_CHUNKS
    assert_counted_once(both, INVOKE_STREAM_USAGE, INVOKE_STREAM_COST)


@pytest.mark.parametrize("order", ["theirs_outside", "ours_outside"])
def test_with_otel_botocore_a_sampled_out_call_counts_once_in_the_metrics(
    order: str, bedrock_server: BedrockServer, telemetry: Any
) -> None:
    """Their span does not record (sampled out), so there is none to ride on; their
    extension records gen_ai.client.token.usage all the same, and we do not."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    botocore_instrumentation = pytest.importorskip("opentelemetry.instrumentation.botocore")
    theirs = botocore_instrumentation.BotocoreInstrumentor()
    ours = BedrockInstrumentor()
    sampled_out = TracerProvider(sampler=ALWAYS_OFF)
    steps = [
        lambda: ours.instrument(
            tracer_provider=sampled_out, meter_provider=telemetry.meter_provider, catalog=Catalog()
        ),
        lambda: theirs.instrument(
            tracer_provider=sampled_out, meter_provider=telemetry.meter_provider
        ),
    ]
    for step in steps if order == "theirs_outside" else steps[::-1]:
        step()
    try:
        h = Harness(bedrock_server, telemetry)
        converse(h, SONNET, FULL_USAGE)
        t = h.telemetry
        kinds = [p.attributes[sc.GEN_AI_TOKEN_TYPE] for p in t.points(sc.METRIC_CLIENT_TOKEN_USAGE)]
        counts = {
            k: sum(
                p.count
                for p in t.points(sc.METRIC_CLIENT_TOKEN_USAGE)
                if p.attributes[sc.GEN_AI_TOKEN_TYPE] == k
            )
            for k in set(kinds)
        }
        assert counts == {sc.TOKEN_TYPE_INPUT: 1, sc.TOKEN_TYPE_OUTPUT: 1}
        assert sum(p.count for p in t.points(sc.METRIC_CLIENT_OPERATION_DURATION)) == 1
        assert h.bucket_tokens() == dict(FULL.buckets())  # the billing points: ours, exact
    finally:
        theirs.uninstrument()
        ours.uninstrument()


def test_with_otel_botocore_an_error_is_one_span(both: Harness) -> None:
    both.headers["x-test-status"] = "400"
    with pytest.raises(ClientError):
        converse(both, SONNET, FULL_USAGE)
    spans = [s for s in both.telemetry.finished() if s.name == f"chat {SONNET}"]
    assert len(spans) == 1
    assert spans[0].status.status_code == StatusCode.ERROR
    assert both.bucket_tokens() == {}


def test_with_otel_botocore_other_services_are_theirs_alone(both: Harness) -> None:
    """An S3 call: their span, none of ours, nothing metered."""
    with pytest.raises(ClientError):
        both.client("s3").list_buckets()
    assert all(s.instrumentation_scope.name != "otel_tokens" for s in both.telemetry.finished())
    assert both.bucket_tokens() == {}


def test_no_otel_botocore_no_warning(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    from otel_tokens.instrumentation import bedrock

    bedrock._warned.discard("otel-botocore")
    with caplog.at_level(logging.WARNING, logger="otel_tokens"):
        converse(h, SONNET, FULL_USAGE)
    assert not [r for r in caplog.records if "botocore" in r.message]
    assert not bedrock.otel_botocore_meters_bedrock()


def test_otel_botocore_uninstrumented_our_span_again(
    bedrock_server: BedrockServer, telemetry: Any
) -> None:
    """Theirs instrumented, then uninstrumented: the next call has our own span again."""
    botocore_instrumentation = pytest.importorskip("opentelemetry.instrumentation.botocore")
    theirs = botocore_instrumentation.BotocoreInstrumentor()
    ours = BedrockInstrumentor()
    ours.instrument(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        catalog=Catalog(),
    )
    try:
        h = Harness(bedrock_server, telemetry)
        theirs.instrument(tracer_provider=telemetry.tracer_provider)
        converse(h, SONNET, FULL_USAGE)
        assert h.spans() == []  # rode on theirs
        theirs.uninstrument()
        converse(h, SONNET, FULL_USAGE)
        assert_span_usage(h.span(), FULL, FULL_COST)
        assert h.bucket_tokens() == dict((FULL + FULL).buckets())
    finally:
        ours.uninstrument()
