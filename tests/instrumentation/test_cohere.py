"""The real ``cohere`` v2 client (``ClientV2``, ``AsyncClientV2``) against a local server
speaking Cohere's API v2 wire format (``cohere_server.py``), instrumented.

Billed is ``billed_units``, never ``tokens`` (the server answers with ``tokens`` ten times
the billed counts unless told otherwise). Costs are worked by hand from the genai-prices
rates (checked first): command-r $0.15 input, $0.60 output per million tokens; embed-v4.0
$0.12 input. Rerank bills search units, for which no rate exists: unpriced.
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import cohere
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from otel_tokens import semconv as sc
from otel_tokens.counting import count_messages, count_text
from otel_tokens.instrumentation import CohereInstrumentor
from otel_tokens.pricing import Catalog, parse_user_prices
from otel_tokens.usage import TokenUsage
from otel_tokens_fakes import COHERE_REPLY as REPLY
from otel_tokens_fakes import COHERE_WORDS as WORDS
from otel_tokens_fakes import CohereServer

from ._asserts import instrumenting

COMMAND_R = "command-r"
EMBED = "embed-v4.0"
MTOK = Decimal(1_000_000)
R_INPUT, R_OUTPUT, EMBED_INPUT = Decimal("0.15"), Decimal("0.6"), Decimal("0.12")

BILLED = {"input_tokens": 100.0, "output_tokens": 50.0}
USAGE = TokenUsage(input=100, output=50)
# 100 x 0.15 + 50 x 0.60 = 15 + 30 micro-dollars.
COST = (100 * R_INPUT + 50 * R_OUTPUT) / MTOK
assert Decimal("0.000045") == COST
MESSAGES = [{"role": "user", "content": "Say hello in six words."}]


def test_hand_prices_are_genai_prices() -> None:
    from genai_prices import data_snapshot

    snapshot = data_snapshot.get_snapshot()
    _, r = snapshot.find_provider_model(COMMAND_R, None, "cohere", None)
    assert not isinstance(r.prices, list)
    assert (r.prices.input_mtok, r.prices.output_mtok) == (R_INPUT, R_OUTPUT)
    _, embed = snapshot.find_provider_model(EMBED, None, "cohere", None)
    assert not isinstance(embed.prices, list)
    assert embed.prices.input_mtok == EMBED_INPUT


@pytest.fixture
def instrumented(telemetry: Any) -> Iterator[None]:
    with instrumenting(CohereInstrumentor(), telemetry):
        yield


@pytest.fixture
def client(cohere_server: CohereServer, instrumented: None) -> cohere.ClientV2:
    return cohere.ClientV2(api_key="test", base_url=cohere_server.base_url)


@pytest.fixture
def aclient(cohere_server: CohereServer, instrumented: None) -> cohere.AsyncClientV2:
    return cohere.AsyncClientV2(api_key="test", base_url=cohere_server.base_url)


def billed(units: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
    if units is not None:
        headers["x-test-billed"] = json.dumps(units)
    return {"additional_headers": headers}


def span_of(telemetry: Any) -> ReadableSpan:
    span: ReadableSpan = telemetry.only_span()
    assert span.kind == SpanKind.CLIENT
    return span


def assert_billed(telemetry: Any, usage: TokenUsage, cost: Decimal | None) -> dict[str, Any]:
    attrs = dict(span_of(telemetry).attributes or {})
    assert attrs[sc.GEN_AI_PROVIDER_NAME] == "cohere"
    assert TokenUsage.from_attributes(attrs).with_modalities(None) == usage
    assert telemetry.bucket_tokens() == dict(usage.buckets())
    if cost is not None:
        assert Decimal(str(attrs[sc.BILLING_COST_DECIMAL])) == cost
        assert attrs[sc.BILLING_PRICING_STATUS] == sc.STATUS_PRICED
    return attrs


def test_chat_bills_billed_units_not_tokens(client: cohere.ClientV2, telemetry: Any) -> None:
    response = client.chat(
        model=COMMAND_R, messages=MESSAGES, max_tokens=64, request_options=billed(BILLED)
    )
    assert response.message.content[0].text == REPLY  # type: ignore[index,union-attr]
    attrs = assert_billed(telemetry, USAGE, COST)
    assert attrs[sc.GEN_AI_OPERATION_NAME] == "chat"
    assert attrs[sc.GEN_AI_REQUEST_MODEL] == COMMAND_R
    assert attrs[sc.GEN_AI_REQUEST_MAX_TOKENS] == 64
    assert attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("COMPLETE",)
    assert attrs[sc.GEN_AI_RESPONSE_ID] == "chat-local"
    assert span_of(telemetry).name == f"chat {COMMAND_R}"


def test_chat_stream_usage_from_message_end(client: cohere.ClientV2, telemetry: Any) -> None:
    text = "".join(
        e.delta.message.content.text  # type: ignore[union-attr]
        for e in client.chat_stream(
            model=COMMAND_R, messages=MESSAGES, request_options=billed(BILLED)
        )
        if e.type == "content-delta"
    )
    assert text == REPLY
    attrs = assert_billed(telemetry, USAGE, COST)
    assert attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("COMPLETE",)
    assert attrs[sc.GEN_AI_RESPONSE_ID] == "chat-local"
    assert attrs[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] > 0


def test_async_chat_and_stream(aclient: cohere.AsyncClientV2, telemetry: Any) -> None:
    async def run() -> str:
        await aclient.chat(model=COMMAND_R, messages=MESSAGES, request_options=billed(BILLED))
        parts = []
        async for event in aclient.chat_stream(
            model=COMMAND_R, messages=MESSAGES, request_options=billed(BILLED)
        ):
            if event.type == "content-delta":
                parts.append(event.delta.message.content.text)  # type: ignore[union-attr]
        return "".join(parts)  # type: ignore[arg-type]

    assert asyncio.run(run()) == REPLY
    spans = telemetry.our_spans()
    assert len(spans) == 2
    for span in spans:
        attrs = dict(span.attributes or {})
        assert TokenUsage.from_attributes(attrs).with_modalities(None) == USAGE
        assert Decimal(str(attrs[sc.BILLING_COST_DECIMAL])) == COST
    assert telemetry.bucket_tokens() == dict((USAGE + USAGE).buckets())


def test_embed(client: cohere.ClientV2, telemetry: Any) -> None:
    client.embed(
        model=EMBED,
        texts=["a", "b"],
        input_type="search_document",
        embedding_types=["float"],
        request_options=billed({"input_tokens": 7}),
    )
    attrs = assert_billed(telemetry, TokenUsage(input=7), 7 * EMBED_INPUT / MTOK)
    assert attrs[sc.GEN_AI_OPERATION_NAME] == "embeddings"


def test_rerank_search_units_without_a_rate_are_unpriced(
    client: cohere.ClientV2, telemetry: Any
) -> None:
    client.rerank(
        model="rerank-v3.5",
        query="q",
        documents=["a", "b", "c"],
        request_options=billed({"search_units": 1}),
    )
    attrs = assert_billed(telemetry, TokenUsage(search_units=1), None)
    assert attrs[sc.BILLING_USAGE_PREFIX + "search_units"] == 1
    assert attrs[sc.BILLING_PRICING_STATUS] == sc.STATUS_UNPRICED
    assert attrs[sc.GEN_AI_OPERATION_NAME] == "rerank"
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == 0  # search units are in no token total
    assert sc.BILLING_COST_DECIMAL not in attrs
    assert telemetry.sum_of(sc.METRIC_BILLING_UNPRICED) == 1


def test_rerank_priced_per_search_by_a_price_file(
    cohere_server: CohereServer, telemetry: Any
) -> None:
    # Cohere's list price for Rerank 3.5: $2.00 per thousand searches.
    prices = parse_user_prices(
        json.dumps(
            {
                "version": 1,
                "models": [
                    {
                        "provider": "cohere",
                        "model": "rerank-v3.5",
                        "prices": {"search_units_kcount": "2.00"},
                    }
                ],
            }
        ).encode()
    )
    with instrumenting(CohereInstrumentor(), telemetry, Catalog(prices)):
        client = cohere.ClientV2(api_key="test", base_url=cohere_server.base_url)
        client.rerank(
            model="rerank-v3.5",
            query="q",
            documents=["a", "b"],
            request_options=billed({"search_units": 3}),
        )
    # 3 searches x $2.00 / 1000 = $0.006.
    attrs = assert_billed(telemetry, TokenUsage(search_units=3), Decimal("0.006"))
    assert attrs[sc.BILLING_PRICE_ID] == "user:cohere/rerank-v3.5"


def test_classifications_are_unpriced_and_said(client: cohere.ClientV2, telemetry: Any) -> None:
    client.chat(
        model=COMMAND_R,
        messages=MESSAGES,
        request_options=billed({"input_tokens": 4, "output_tokens": 2, "classifications": 1}),
    )
    attrs = dict(span_of(telemetry).attributes or {})
    assert attrs["cohere.billed_units.classifications"] == 1
    assert attrs[sc.BILLING_PRICING_STATUS] == sc.STATUS_UNPRICED
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == 4
    assert sc.BILLING_COST_DECIMAL not in attrs


def test_unknown_model_is_unpriced(client: cohere.ClientV2, telemetry: Any) -> None:
    client.chat(model="command-from-the-future", messages=MESSAGES, request_options=billed(BILLED))
    attrs = assert_billed(telemetry, USAGE, None)
    assert attrs[sc.BILLING_PRICING_STATUS] == sc.STATUS_UNPRICED
    assert telemetry.sum_of(sc.METRIC_BILLING_UNPRICED) == 1


def test_cut_stream_is_estimated_once(client: cohere.ClientV2, telemetry: Any) -> None:
    list(
        client.chat_stream(
            model=COMMAND_R, messages=MESSAGES, request_options=billed(None, **{"x-test-cut": "2"})
        )
    )
    expected = TokenUsage(
        input=count_messages(MESSAGES, COMMAND_R),
        output=count_text("".join(WORDS[:2]), COMMAND_R),
        source="estimated",
    )
    attrs = assert_billed(telemetry, expected, None)
    assert attrs[sc.BILLING_PRICING_STATUS] == sc.STATUS_ESTIMATED


def test_abandoned_stream_is_recorded_once(client: cohere.ClientV2, telemetry: Any) -> None:
    stream = client.chat_stream(model=COMMAND_R, messages=MESSAGES)
    next(stream)
    stream.close()
    del stream
    gc.collect()
    assert len(telemetry.our_spans()) == 1


def test_api_error_is_recorded_and_raised_unchanged(
    client: cohere.ClientV2, telemetry: Any
) -> None:
    with pytest.raises(cohere.core.api_error.ApiError) as raised:
        client.chat(
            model=COMMAND_R,
            messages=MESSAGES,
            request_options=billed(None, **{"x-test-status": "400"}),
        )
    assert raised.value.status_code == 400
    span = span_of(telemetry)
    assert span.status.status_code == StatusCode.ERROR
    assert telemetry.bucket_tokens() == {}


def test_stream_error_is_recorded(client: cohere.ClientV2, telemetry: Any) -> None:
    with pytest.raises(cohere.core.api_error.ApiError):
        list(
            client.chat_stream(
                model=COMMAND_R,
                messages=MESSAGES,
                request_options=billed(None, **{"x-test-status": "500"}),
            )
        )
    assert span_of(telemetry).status.status_code == StatusCode.ERROR


def test_v1_paths_are_not_metered(client: cohere.ClientV2, telemetry: Any) -> None:
    from otel_tokens.instrumentation.cohere import CohereAdapter

    adapter = CohereAdapter()
    assert adapter.read_request(None, ("v1/chat",), {"method": "POST", "json": {}}) is None


def test_entry_point_names_the_instrumentor() -> None:
    from importlib.metadata import entry_points

    found = {e.name: e for e in entry_points(group="opentelemetry_instrumentor")}
    assert found["otel_tokens_cohere"].load() is CohereInstrumentor


def test_captured_content(
    cohere_server: CohereServer, telemetry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    with instrumenting(CohereInstrumentor(), telemetry):
        client = cohere.ClientV2(api_key="test", base_url=cohere_server.base_url)
        client.chat(model=COMMAND_R, messages=MESSAGES)
        list(client.chat_stream(model=COMMAND_R, messages=MESSAGES))
    spans = telemetry.our_spans()
    assert len(spans) == 2
    for span in spans:
        attrs = dict(span.attributes or {})
        assert json.loads(str(attrs[sc.GEN_AI_OUTPUT_MESSAGES])) == REPLY
        assert attrs[sc.SERVER_ADDRESS] == "127.0.0.1"
