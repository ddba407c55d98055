"""OpenAIInstrumentor, driven by the real ``openai`` clients against the bundled server.

Every expected cost is computed here from genai-prices' published prices (the table below,
checked against the installed genai-prices data) for the model the server *served*, not
from otel-tokens' own pricing code.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx2
import openai
import pydantic
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from otel_tokens import semconv as sc
from otel_tokens._safety import reset_log_once
from otel_tokens.instrumentation import OpenAIInstrumentor
from otel_tokens.pricing import ENV_PRICES, Catalog, set_default_catalog
from otel_tokens_fakes import DEFAULT_REPLY, ProviderServer, estimate_tokens

from ._asserts import instrumenter
from .conftest import Telemetry

# --- the served model and the server's deterministic usage --------------------------------
MODEL = "gpt-4o-mini"
SERVED = "gpt-4o-mini-2024-07-18"
CONTENT = "Hello there, how are you today?"
MESSAGES: list[Any] = [{"role": "user", "content": CONTENT}]
PROMPT = 3 + 4 + estimate_tokens(CONTENT)  # the server's chat prompt count
REPLY_WORDS = len(DEFAULT_REPLY.split())  # one output token per word
USAGE = {"input": PROMPT, "output": REPLY_WORDS}

# --- genai-prices published prices, USD per 1M tokens (see test_price_table_...) ----------
D = Decimal
MTOK = D(1_000_000)
GPT_4O_MINI = {"input": D("0.15"), "cache_read": D("0.075"), "output": D("0.6")}
GPT_5_MINI = {"input": D("0.25"), "cache_read": D("0.025"), "output": D("2")}
GPT_5_MINI_FLEX = {"input": D("0.125"), "cache_read": D("0.0125"), "output": D("1")}
O4_MINI = {"input": D("1.1"), "cache_read": D("0.275"), "output": D("4.4")}
EMBEDDING_3_SMALL = {"input": D("0.02")}
INSTRUCT = {"input": D("1.5"), "output": D("2")}
# A bucket without its own rate is billed at its parent's (reasoning as output).
_PARENT = {"reasoning": "output", "cache_read": "input"}

CATALOG_VERSION = f"genai-prices@{version('genai-prices')}"
PRICE_4O_MINI = "genai-prices:openai/gpt-4o-mini"
INPUT_BUCKETS = frozenset(
    {"input", "input_audio", "input_image", "cache_read", "cache_write_5m", "cache_write_1h"}
)
PROVIDER_STATUS = sc.STATUS_PRICED


def rate(rates: dict[str, Decimal], bucket: str) -> Decimal:
    return rates[bucket] if bucket in rates else rates[_PARENT[bucket]]


def cost_of(rates: dict[str, Decimal], buckets: dict[str, int]) -> Decimal:
    return sum((D(n) * rate(rates, b) for b, n in buckets.items()), D(0)) / MTOK


def scenario(name: str, **extra: str) -> dict[str, str]:
    return {"x-test-scenario": name, **extra}


# --- token estimates, counted independently with tiktoken -----------------------------------
def o200k(text: str) -> int:
    import tiktoken

    return len(tiktoken.get_encoding("o200k_base").encode(text)) if text else 0


def estimated_prompt(messages: list[dict[str, str]]) -> int:
    """OpenAI's published chat format: 3 per message plus role and content, 3 for priming."""
    return 3 + sum(3 + o200k(m["role"]) + o200k(m["content"]) for m in messages)


# --- fixtures -------------------------------------------------------------------------------
@pytest.fixture
def instrument(telemetry: Telemetry) -> Iterator[Callable[..., OpenAIInstrumentor]]:
    """instrument(**kwargs): our providers and a fresh genai-prices-only catalog."""
    with instrumenter(OpenAIInstrumentor(), telemetry) as do:
        yield do


@pytest.fixture
def instrumented(instrument: Callable[..., OpenAIInstrumentor]) -> OpenAIInstrumentor:
    return instrument()


@pytest.fixture
def client(server: ProviderServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="test", base_url=server.openai_base_url, max_retries=0) as c:
        yield c


@pytest.fixture
def azure(server: ProviderServer) -> Iterator[openai.AzureOpenAI]:
    with openai.AzureOpenAI(
        api_key="test",
        azure_endpoint=server.azure_endpoint,
        api_version="2024-10-21",
        max_retries=0,
    ) as c:
        yield c


def async_client(server: ProviderServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="test", base_url=server.openai_base_url, max_retries=0)


# --- assertions -------------------------------------------------------------------------------
def span_usage(span: ReadableSpan) -> dict[str, int]:
    attrs = span.attributes or {}
    return {
        k.removeprefix(sc.BILLING_USAGE_PREFIX): v  # type: ignore[misc]
        for k, v in attrs.items()
        if k.startswith(sc.BILLING_USAGE_PREFIX)
    }


def by(points: list[Any], key: str) -> dict[Any, list[Any]]:
    out: dict[Any, list[Any]] = {}
    for p in points:
        out.setdefault(p.attributes.get(key), []).append(p)
    return out


def assert_no_usage_metrics(t: Telemetry) -> None:
    for name in (
        sc.METRIC_CLIENT_TOKEN_USAGE,
        sc.METRIC_BILLING_TOKENS,
        sc.METRIC_BILLING_COST,
        sc.METRIC_BILLING_UNPRICED,
    ):
        assert t.points(name) == [], name


def assert_metered(
    t: Telemetry,
    *,
    buckets: dict[str, int],
    rates: dict[str, Decimal] | None,
    price_id: str | None = PRICE_4O_MINI,
    request_model: str = MODEL,
    response_model: str | None = SERVED,
    operation: str = "chat",
    provider: str = "openai",
    source: str = "provider",
    status: str | None = None,
    processing: str = "standard",
    stream: bool = False,
) -> ReadableSpan:
    """One span and one set of metric points, exactly right for ``buckets`` at ``rates``."""
    span = t.only_span()
    a = dict(span.attributes or {})
    assert span.name == f"{operation} {request_model}"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is not StatusCode.ERROR
    assert sc.ERROR_TYPE not in a
    assert a[sc.GEN_AI_OPERATION_NAME] == operation
    assert a[sc.GEN_AI_PROVIDER_NAME] == provider
    assert a[sc.GEN_AI_REQUEST_MODEL] == request_model
    if response_model is None:
        assert sc.GEN_AI_RESPONSE_MODEL not in a
    else:
        assert a[sc.GEN_AI_RESPONSE_MODEL] == response_model
    assert a[sc.SERVER_ADDRESS] == "127.0.0.1"
    assert isinstance(a[sc.SERVER_PORT], int)
    assert a.get(sc.GEN_AI_REQUEST_STREAM, False) is stream

    # usage: inclusive totals and disjoint buckets that add up to them
    input_total = sum(n for b, n in buckets.items() if b in INPUT_BUCKETS)
    output_total = sum(n for b, n in buckets.items() if b not in INPUT_BUCKETS)
    assert a[sc.GEN_AI_USAGE_INPUT_TOKENS] == input_total
    assert a[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == output_total
    assert a[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == buckets.get("cache_read", 0)
    assert a[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == buckets.get("reasoning", 0)
    assert span_usage(span) == buckets
    assert a[sc.BILLING_USAGE_SOURCE] == source

    # pricing
    expected_status = status or (sc.STATUS_ESTIMATED if source == "estimated" else "priced")
    assert a[sc.BILLING_PRICING_STATUS] == expected_status
    assert a[sc.BILLING_CATALOG_VERSION] == CATALOG_VERSION
    assert a[sc.BILLING_PROCESSING] == processing
    assert a[sc.BILLING_CONTEXT_TIER] == "base"
    if price_id is None:
        assert sc.BILLING_PRICE_ID not in a
    else:
        assert a[sc.BILLING_PRICE_ID] == price_id
    expected_cost = None if rates is None else cost_of(rates, buckets)
    if expected_cost is None:
        for key in (
            sc.BILLING_COST_DECIMAL,
            sc.GEN_AI_USAGE_COST_AMOUNT,
            sc.GEN_AI_USAGE_COST_CURRENCY,
            sc.GEN_AI_USAGE_COST_SOURCE,
        ):
            assert key not in a, key  # unpriced is never $0
    else:
        text = a[sc.BILLING_COST_DECIMAL]
        assert isinstance(text, str)
        assert "e" not in text.lower()
        assert D(text) == expected_cost
        assert a[sc.GEN_AI_USAGE_COST_AMOUNT] == float(expected_cost)
        assert a[sc.GEN_AI_USAGE_COST_CURRENCY] == "USD"
        assert a[sc.GEN_AI_USAGE_COST_SOURCE] == sc.COST_SOURCE_LOCAL

    # metrics: duration, semconv token usage, our buckets, cost or unpriced
    common = {
        sc.GEN_AI_OPERATION_NAME: operation,
        sc.GEN_AI_PROVIDER_NAME: provider,
        sc.GEN_AI_REQUEST_MODEL: request_model,
    }
    if response_model is not None:
        common[sc.GEN_AI_RESPONSE_MODEL] = response_model
    (duration,) = t.points(sc.METRIC_CLIENT_OPERATION_DURATION)
    assert duration.count == 1
    assert sc.ERROR_TYPE not in duration.attributes
    assert common.items() <= dict(duration.attributes).items()

    usage_points = by(t.points(sc.METRIC_CLIENT_TOKEN_USAGE), sc.GEN_AI_TOKEN_TYPE)
    assert set(usage_points) == {"input", "output"}
    for token_type, total in (("input", input_total), ("output", output_total)):
        (point,) = usage_points[token_type]
        assert (point.count, point.sum) == (1, total)
        assert common.items() <= dict(point.attributes).items()

    token_points = by(t.points(sc.METRIC_BILLING_TOKENS), sc.BILLING_TOKEN_BUCKET)
    assert {b: sum(p.value for p in ps) for b, ps in token_points.items()} == buckets
    for ps in token_points.values():
        for p in ps:
            assert common.items() <= dict(p.attributes).items()
            assert p.attributes[sc.BILLING_USAGE_SOURCE] == source
            assert p.attributes[sc.BILLING_PROCESSING] == processing

    cost_points = t.points(sc.METRIC_BILLING_COST)
    unpriced = t.points(sc.METRIC_BILLING_UNPRICED)
    if rates is None:
        assert cost_points == []
        (point,) = unpriced
        assert point.value == 1
        assert point.attributes[sc.BILLING_PRICING_STATUS] == expected_status
    else:
        assert unpriced == []
        # One cost point per call (no bucket attribute): the call's exact total.
        (point,) = cost_points
        assert sc.BILLING_TOKEN_BUCKET not in point.attributes
        assert point.value == pytest.approx(
            float(sum((D(n) * rate(rates, b) / MTOK for b, n in buckets.items()), D(0)))
        )
        assert point.attributes[sc.BILLING_PRICING_STATUS] == expected_status
        assert point.attributes[sc.GEN_AI_USAGE_COST_CURRENCY] == "USD"
        assert point.value == pytest.approx(float(expected_cost))
    return span


def assert_error(t: Telemetry, error_type: str) -> ReadableSpan:
    span = t.only_span()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})[sc.ERROR_TYPE] == error_type
    (duration,) = t.points(sc.METRIC_CLIENT_OPERATION_DURATION)
    assert duration.count == 1
    assert duration.attributes[sc.ERROR_TYPE] == error_type
    return span


def nothing_recorded(t: Telemetry) -> bool:
    return not t.finished() and not t.points(sc.METRIC_CLIENT_OPERATION_DURATION)


def chunk_view(chunks: list[Any]) -> list[dict[str, Any]]:
    """What a user reads from chunks, without the per-response ids and random fields."""
    out = []
    for chunk in chunks:
        data = chunk.model_dump()
        for key in ("id", "created", "obfuscation", "system_fingerprint"):
            data.pop(key, None)
        out.append(data)
    return out


def chat_stream(client: openai.OpenAI, **kwargs: Any) -> Any:
    return client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, **kwargs)


async def async_chat_stream(client: openai.AsyncOpenAI, **kwargs: Any) -> Any:
    return await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, **kwargs
    )


# ==========================================================================================
def test_price_table_matches_installed_genai_prices() -> None:
    from genai_prices import data_snapshot

    snapshot = data_snapshot.get_snapshot()
    keys = {"input": "input_mtok", "cache_read": "cache_read_mtok", "output": "output_mtok"}
    for model, table in (
        (SERVED, GPT_4O_MINI),
        ("gpt-5-mini-2025-08-07", GPT_5_MINI),
        ("o4-mini-2025-04-16", O4_MINI),
        ("text-embedding-3-small", EMBEDDING_3_SMALL),
        ("gpt-3.5-turbo-instruct:20230824-v2", INSTRUCT),
    ):
        _, info = snapshot.find_provider_model(model, None, "openai", None)
        for bucket, price in table.items():
            assert D(getattr(info.prices, keys[bucket])) == price, (model, bucket)
    _, info = snapshot.find_provider_model("gpt-5-mini", None, "openai", None)
    (flex,) = [v for v in info.price_variants or () if v.when == {"service_tier": "flex"}]
    assert {b: D(getattr(flex.prices, keys[b])) for b in GPT_5_MINI_FLEX} == GPT_5_MINI_FLEX


# --- chat completions ---------------------------------------------------------------------
def test_chat_create_sync(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_completion_tokens=50, temperature=0.5, top_p=0.9
    )
    assert type(response) is openai.types.chat.ChatCompletion
    assert response.model == SERVED
    span = assert_metered(telemetry, buckets=USAGE, rates=GPT_4O_MINI)
    a = span.attributes or {}
    assert a[sc.GEN_AI_RESPONSE_ID] == response.id
    assert list(a[sc.GEN_AI_RESPONSE_FINISH_REASONS]) == ["stop"]  # type: ignore[arg-type]
    assert a[sc.GEN_AI_REQUEST_MAX_TOKENS] == 50
    assert a[sc.GEN_AI_REQUEST_TEMPERATURE] == 0.5
    assert a[sc.GEN_AI_REQUEST_TOP_P] == 0.9
    assert sc.GEN_AI_INPUT_MESSAGES not in a  # content capture is off by default
    assert sc.GEN_AI_OUTPUT_MESSAGES not in a
    assert span.instrumentation_scope.name == "otel_tokens"


def test_chat_create_async(
    instrumented: OpenAIInstrumentor, server: ProviderServer, telemetry: Telemetry
) -> None:
    async def main() -> Any:
        async with async_client(server) as aclient:
            return await aclient.chat.completions.create(model=MODEL, messages=MESSAGES)

    response = asyncio.run(main())
    assert type(response) is openai.types.chat.ChatCompletion
    span = assert_metered(telemetry, buckets=USAGE, rates=GPT_4O_MINI)
    assert (span.attributes or {})[sc.GEN_AI_RESPONSE_ID] == response.id


class Answer(pydantic.BaseModel):
    answer: str


ANSWER_REPLY = {"x-test-reply": '{"answer":"hello"}'}  # one word: one output token


def test_chat_parse_pydantic(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    parsed = client.chat.completions.parse(
        model=MODEL, messages=MESSAGES, response_format=Answer, extra_headers=ANSWER_REPLY
    )
    assert parsed.choices[0].message.parsed == Answer(answer="hello")
    assert_metered(telemetry, buckets={"input": PROMPT, "output": 1}, rates=GPT_4O_MINI)


def test_chat_span_is_child_of_the_current_span(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    tracer = telemetry.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("handler") as parent:
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    span = telemetry.only_span()
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id
    assert trace.get_current_span() is trace.INVALID_SPAN  # our context was detached


def test_suppressed_instrumentation_records_nothing(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    with suppress_instrumentation():
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert nothing_recorded(telemetry)


# --- streaming -----------------------------------------------------------------------------
def test_stream_include_usage_from_provider(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    chunks = list(chat_stream(client, stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].choices == []  # the user sees it
    span = assert_metered(telemetry, buckets=USAGE, rates=GPT_4O_MINI, stream=True)
    a = span.attributes or {}
    assert a[sc.GEN_AI_RESPONSE_ID] == chunks[0].id
    assert list(a[sc.GEN_AI_RESPONSE_FINISH_REASONS]) == ["stop"]  # type: ignore[arg-type]
    ttfc = a[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
    assert isinstance(ttfc, float) and ttfc >= 0
    (point,) = telemetry.points(sc.METRIC_CLIENT_TIME_TO_FIRST_CHUNK)
    assert point.count == 1


def test_stream_without_usage_is_estimated_and_chunks_untouched(
    instrument: Callable[..., OpenAIInstrumentor],
    client: openai.OpenAI,
    server: ProviderServer,
    telemetry: Telemetry,
) -> None:
    plain = chunk_view(list(chat_stream(client)))
    instrument()
    server.clear()
    chunks = list(chat_stream(client))
    assert chunk_view(chunks) == plain
    assert all(c.usage is None for c in chunks)
    assert "include_usage" not in (server.last_request.body.get("stream_options") or {})
    buckets = {"input": estimated_prompt(MESSAGES), "output": o200k(DEFAULT_REPLY)}
    assert_metered(telemetry, buckets=buckets, rates=GPT_4O_MINI, source="estimated", stream=True)


def test_stream_server_ignoring_include_usage_is_estimated_per_chunk(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    # Usage asked for, so the chunks are not read as they pass; a server that sends no usage
    # chunk anyway is billed the prompt counted locally and a token per content chunk.
    chunks = list(
        chat_stream(
            client,
            stream_options={"include_usage": True},
            extra_headers=scenario("no_stream_usage"),
        )
    )
    assert all(c.usage is None for c in chunks) and len(chunks) == REPLY_WORDS + 2
    buckets = {"input": estimated_prompt(MESSAGES), "output": REPLY_WORDS}
    span = assert_metered(
        telemetry, buckets=buckets, rates=GPT_4O_MINI, source="estimated", stream=True
    )
    a = span.attributes or {}
    assert list(a[sc.GEN_AI_RESPONSE_FINISH_REASONS]) == ["stop"]  # type: ignore[arg-type]
    assert a[sc.GEN_AI_RESPONSE_ID] == chunks[0].id


@pytest.mark.parametrize("include_usage", [False, True])
def test_stream_of_several_choices(
    include_usage: bool,
    instrumented: OpenAIInstrumentor,
    client: openai.OpenAI,
    telemetry: Telemetry,
) -> None:
    # n > 1: every choice's finish reason is read as it passes, whatever the usage chunk.
    chunks = list(chat_stream(client, n=2, stream_options={"include_usage": include_usage}))
    a = telemetry.only_span().attributes or {}
    assert list(a[sc.GEN_AI_RESPONSE_FINISH_REASONS]) == ["stop", "stop"]  # type: ignore[arg-type]
    output = a[sc.GEN_AI_USAGE_OUTPUT_TOKENS]
    if include_usage:
        assert chunks[-1].usage is not None
        assert output == chunks[-1].usage.completion_tokens
        assert a[sc.BILLING_USAGE_SOURCE] == "provider"
    else:
        assert output == 2 * o200k(DEFAULT_REPLY)
        assert a[sc.BILLING_USAGE_SOURCE] == "estimated"


def test_stream_include_usage_with_content_capture(
    instrument: Callable[..., OpenAIInstrumentor],
    client: openai.OpenAI,
    telemetry: Telemetry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Capturing the reply means reading each chunk's text, usage chunk or not.
    monkeypatch.setenv(CAPTURE, "true")
    instrument()
    list(chat_stream(client, stream_options={"include_usage": True}))
    a = telemetry.only_span().attributes or {}
    assert DEFAULT_REPLY in str(a[sc.GEN_AI_OUTPUT_MESSAGES])
    assert a[sc.BILLING_USAGE_SOURCE] == "provider"


def test_include_usage_injection_stream_cut_is_estimated_per_chunk(
    instrument: Callable[..., OpenAIInstrumentor],
    client: openai.OpenAI,
    telemetry: Telemetry,
) -> None:
    instrument(include_usage=True)
    stream = chat_stream(client)
    seen = [next(stream) for _ in range(4)]
    stream.close()
    assert_cut_stream_metered(telemetry, seen, include_usage=True)


@pytest.mark.parametrize("how", ["env", "kwarg"])
def test_include_usage_injection_hides_usage_chunk(
    how: str,
    instrument: Callable[..., OpenAIInstrumentor],
    client: openai.OpenAI,
    server: ProviderServer,
    telemetry: Telemetry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user_options = {"include_obfuscation": True}
    plain = chunk_view(list(chat_stream(client, stream_options=user_options)))
    if how == "env":
        monkeypatch.setenv("OTEL_TOKENS_OPENAI_INCLUDE_USAGE", "true")
        instrument()
    else:
        instrument(include_usage=True)
    server.clear()
    stream = chat_stream(client, stream_options=user_options)
    assert type(stream) is openai.Stream
    chunks = list(stream)
    # the server was asked for usage, and the user's own options were kept (not mutated)
    assert server.last_request.body["stream_options"] == {
        "include_obfuscation": True,
        "include_usage": True,
    }
    assert user_options == {"include_obfuscation": True}
    # the user sees exactly what an uninstrumented run sees: no usage-only chunk
    assert chunk_view(chunks) == plain
    assert all(c.choices for c in chunks)
    assert_metered(telemetry, buckets=USAGE, rates=GPT_4O_MINI, stream=True)


def test_include_usage_injection_not_done_when_user_decided(
    instrument: Callable[..., OpenAIInstrumentor],
    client: openai.OpenAI,
    server: ProviderServer,
    telemetry: Telemetry,
) -> None:
    instrument(include_usage=True)
    chunks = list(chat_stream(client, stream_options={"include_usage": False}))
    assert server.last_request.body["stream_options"] == {"include_usage": False}
    assert all(c.usage is None for c in chunks)
    span = telemetry.only_span()
    assert (span.attributes or {})[sc.BILLING_USAGE_SOURCE] == "estimated"


def test_include_usage_injection_async(
    instrument: Callable[..., OpenAIInstrumentor], server: ProviderServer, telemetry: Telemetry
) -> None:
    instrument(include_usage=True)

    async def main() -> list[Any]:
        async with async_client(server) as aclient:
            stream = await aclient.chat.completions.create(
                model=MODEL, messages=MESSAGES, stream=True
            )
            assert type(stream) is openai.AsyncStream
            return [c async for c in stream]

    chunks = asyncio.run(main())
    assert server.last_request.body["stream_options"] == {"include_usage": True}
    assert len(chunks) == REPLY_WORDS + 2 and all(c.choices for c in chunks)
    assert_metered(telemetry, buckets=USAGE, rates=GPT_4O_MINI, stream=True)


def test_chat_stream_helper_get_final_completion(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    with client.chat.completions.stream(
        model=MODEL, messages=MESSAGES, stream_options={"include_usage": True}
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == DEFAULT_REPLY
    assert final.usage is not None and final.usage.completion_tokens == REPLY_WORDS
    assert_metered(telemetry, buckets=USAGE, rates=GPT_4O_MINI, stream=True)


def test_chat_stream_helper_async(
    instrumented: OpenAIInstrumentor, server: ProviderServer, telemetry: Telemetry
) -> None:
    async def main() -> Any:
        async with (
            async_client(server) as aclient,
            aclient.chat.completions.stream(
                model=MODEL, messages=MESSAGES, stream_options={"include_usage": True}
            ) as stream,
        ):
            return await stream.get_final_completion()

    final = asyncio.run(main())
    assert final.choices[0].message.content == DEFAULT_REPLY
    assert_metered(telemetry, buckets=USAGE, rates=GPT_4O_MINI, stream=True)


# --- Responses API --------------------------------------------------------------------------
RESPONSES_PROMPT = 3 + 4 + estimate_tokens(CONTENT)  # 3 plus 4 per input item


def test_responses_create(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    response = client.responses.create(model=MODEL, input=CONTENT)
    assert response.output_text == DEFAULT_REPLY
    span = assert_metered(
        telemetry, buckets={"input": RESPONSES_PROMPT, "output": REPLY_WORDS}, rates=GPT_4O_MINI
    )
    assert (span.attributes or {})[sc.GEN_AI_RESPONSE_ID] == response.id


def test_responses_parse(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    response = client.responses.parse(
        model=MODEL, input=CONTENT, text_format=Answer, extra_headers=ANSWER_REPLY
    )
    assert response.output_parsed == Answer(answer="hello")
    assert_metered(telemetry, buckets={"input": RESPONSES_PROMPT, "output": 1}, rates=GPT_4O_MINI)


def test_responses_stream_true(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    stream = client.responses.create(model=MODEL, input=CONTENT, stream=True)
    assert type(stream) is openai.Stream
    events = list(stream)
    assert events[-1].type == "response.completed"
    span = assert_metered(
        telemetry,
        buckets={"input": RESPONSES_PROMPT, "output": REPLY_WORDS},
        rates=GPT_4O_MINI,
        stream=True,
    )
    assert (span.attributes or {})[sc.GEN_AI_RESPONSE_ID] == events[-1].response.id


def test_responses_stream_helper(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    with client.responses.stream(model=MODEL, input=CONTENT) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == DEFAULT_REPLY == final.output_text
    assert_metered(
        telemetry,
        buckets={"input": RESPONSES_PROMPT, "output": REPLY_WORDS},
        rates=GPT_4O_MINI,
        stream=True,
    )


def test_responses_stream_async(
    instrumented: OpenAIInstrumentor, server: ProviderServer, telemetry: Telemetry
) -> None:
    async def main() -> Any:
        async with (
            async_client(server) as aclient,
            aclient.responses.stream(model=MODEL, input=CONTENT) as stream,
        ):
            return await stream.get_final_response()

    final = asyncio.run(main())
    assert final.output_text == DEFAULT_REPLY
    assert_metered(
        telemetry,
        buckets={"input": RESPONSES_PROMPT, "output": REPLY_WORDS},
        rates=GPT_4O_MINI,
        stream=True,
    )


# --- embeddings and legacy completions ---------------------------------------------------------
def test_embeddings(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    inputs = ["hello world", CONTENT]
    response = client.embeddings.create(model="text-embedding-3-small", input=inputs)
    assert len(response.data) == 2
    tokens = sum(estimate_tokens(i) for i in inputs)
    assert response.usage.prompt_tokens == tokens
    span = telemetry.only_span()
    assert (span.attributes or {})[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 0
    assert span_usage(span) == {"input": tokens}
    assert D((span.attributes or {})[sc.BILLING_COST_DECIMAL]) == cost_of(  # type: ignore[arg-type]
        EMBEDDING_3_SMALL, {"input": tokens}
    )
    assert span.name == "embeddings text-embedding-3-small"
    token_points = by(telemetry.points(sc.METRIC_BILLING_TOKENS), sc.BILLING_TOKEN_BUCKET)
    assert set(token_points) == {"input"}
    assert telemetry.points(sc.METRIC_BILLING_UNPRICED) == []
    assert (span.attributes or {})[sc.BILLING_PRICE_ID] == (
        "genai-prices:openai/text-embedding-3-small"
    )


@pytest.mark.parametrize("stream", [False, True])
def test_legacy_completions(
    stream: bool, instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    prompt = "Say something nice"
    kwargs: dict[str, Any] = {"model": "gpt-3.5-turbo-instruct", "prompt": prompt}
    if stream:
        kwargs.update(stream=True, stream_options={"include_usage": True})
        pieces = list(client.completions.create(**kwargs))
        text = "".join(c.choices[0].text for c in pieces if c.choices)
    else:
        text = client.completions.create(**kwargs).choices[0].text
    assert text == DEFAULT_REPLY
    assert_metered(
        telemetry,
        buckets={"input": estimate_tokens(prompt), "output": REPLY_WORDS},
        rates=INSTRUCT,
        operation="text_completion",
        request_model="gpt-3.5-turbo-instruct",
        response_model="gpt-3.5-turbo-instruct:20230824-v2",
        price_id="genai-prices:openai/gpt-3.5-turbo-instruct",
        stream=stream,
    )


def test_legacy_completions_stream_without_its_usage_chunk(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    # Usage asked for but never sent: a token per text chunk (no role chunk here).
    chunks = list(
        client.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt="Hi",
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=scenario("no_stream_usage"),
        )
    )
    assert len(chunks) == REPLY_WORDS + 1  # the words, then the finish chunk
    span = telemetry.only_span()
    assert (span.attributes or {})[sc.BILLING_USAGE_SOURCE] == "estimated"
    assert span_usage(span) == {"input": estimate_tokens("Hi"), "output": REPLY_WORDS}


def test_legacy_completions_stream_injection_hides_usage_chunk(
    instrument: Callable[..., OpenAIInstrumentor],
    client: openai.OpenAI,
    server: ProviderServer,
    telemetry: Telemetry,
) -> None:
    instrument(include_usage=True)
    chunks = list(
        client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Hi", stream=True)
    )
    assert server.last_request.body["stream_options"] == {"include_usage": True}
    assert all(c.choices for c in chunks)
    (span,) = telemetry.finished()
    assert (span.attributes or {})[sc.BILLING_USAGE_SOURCE] == "provider"
    assert span_usage(span) == {"input": estimate_tokens("Hi"), "output": REPLY_WORDS}


# --- raw and streaming responses -------------------------------------------------------------
def test_with_raw_response_non_stream_metered_once(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    assert raw.headers["content-type"].startswith("application/json")
    assert raw.http_response.status_code == 200
    completion = raw.parse()
    assert type(completion) is openai.types.chat.ChatCompletion
    assert raw.parse() is completion
    span = assert_metered(telemetry, buckets=USAGE, rates=GPT_4O_MINI)
    assert (span.attributes or {})[sc.GEN_AI_RESPONSE_ID] == completion.id


def test_with_raw_response_metered_without_parse(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    assert raw.http_response.json()["usage"]["prompt_tokens"] == PROMPT  # no .parse()
    del raw
    gc.collect()
    assert_metered(telemetry, buckets=USAGE, rates=GPT_4O_MINI)


def test_with_raw_response_stream_parse_yields_metered_stream(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    stream = raw.parse()
    assert type(stream) is openai.Stream
    assert telemetry.finished() == []
    chunks = list(stream)
    assert chunks[-1].usage is not None
    assert_metered(telemetry, buckets=USAGE, rates=GPT_4O_MINI, stream=True)


def test_with_streaming_response_non_stream(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=MESSAGES
    ) as response:
        assert response.headers["content-type"].startswith("application/json")
        completion = response.parse()
    assert type(completion) is openai.types.chat.ChatCompletion
    assert_metered(telemetry, buckets=USAGE, rates=GPT_4O_MINI)


def test_with_streaming_response_stream(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ) as response:
        stream = response.parse()
        assert type(stream) is openai.Stream
        chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DEFAULT_REPLY
    assert_metered(telemetry, buckets=USAGE, rates=GPT_4O_MINI, stream=True)


def test_with_streaming_response_never_parsed_ends_span(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=MESSAGES
    ) as response:
        assert response.http_response.status_code == 200
    del response
    gc.collect()
    span = telemetry.only_span()  # ended, even though no usage was ever read
    assert sc.GEN_AI_USAGE_INPUT_TOKENS not in (span.attributes or {})
    assert_no_usage_metrics(telemetry)


def test_raw_responses_async(
    instrumented: OpenAIInstrumentor, server: ProviderServer, telemetry: Telemetry
) -> None:
    async def main() -> None:
        async with async_client(server) as aclient:
            raw = await aclient.chat.completions.with_raw_response.create(
                model=MODEL, messages=MESSAGES
            )
            assert type(raw.parse()) is openai.types.chat.ChatCompletion
            raw = await aclient.chat.completions.with_raw_response.create(
                model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
            stream = raw.parse()
            assert type(stream) is openai.AsyncStream
            assert len([c async for c in stream]) == REPLY_WORDS + 3
            async with aclient.chat.completions.with_streaming_response.create(
                model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            ) as response:
                stream = await response.parse()
                assert type(stream) is openai.AsyncStream
                async for _ in stream:
                    pass
            async with aclient.chat.completions.with_streaming_response.create(
                model=MODEL, messages=MESSAGES
            ) as response:
                assert (await response.parse()).usage is not None

    asyncio.run(main())
    spans = telemetry.finished()
    assert len(spans) == 4
    for span in spans:
        assert span_usage(span) == USAGE
        assert D((span.attributes or {})[sc.BILLING_COST_DECIMAL]) == cost_of(  # type: ignore[arg-type]
            GPT_4O_MINI, USAGE
        )
    assert telemetry.sum_of(sc.METRIC_BILLING_TOKENS, **{sc.BILLING_TOKEN_BUCKET: "input"}) == (
        4 * PROMPT
    )
    assert telemetry.sum_of(sc.METRIC_BILLING_TOKENS, **{sc.BILLING_TOKEN_BUCKET: "output"}) == (
        4 * REPLY_WORDS
    )


def test_raw_resource_taken_before_instrument_is_metered(
    instrument: Callable[..., OpenAIInstrumentor], client: openai.OpenAI, telemetry: Telemetry
) -> None:
    raw_create = client.chat.completions.with_raw_response.create
    streaming = client.chat.completions.with_streaming_response
    instrument()
    raw_create(model=MODEL, messages=MESSAGES).parse()
    with streaming.create(model=MODEL, messages=MESSAGES) as response:
        response.parse()
    assert len(telemetry.finished()) == 2
    assert telemetry.sum_of(sc.METRIC_BILLING_TOKENS) == 2 * (PROMPT + REPLY_WORDS)


def test_after_uninstrument_nothing_is_recorded(
    instrument: Callable[..., OpenAIInstrumentor],
    client: openai.OpenAI,
    telemetry: Telemetry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import openai._base_client as base

    inst = instrument()
    raw_create = client.chat.completions.with_raw_response.create
    captured_wrapper = base.SyncAPIClient.__dict__["request"]  # e.g. kept by a later wrapper
    inst.uninstrument()
    assert base.SyncAPIClient.__dict__["request"] is not captured_wrapper
    raw_create(model=MODEL, messages=MESSAGES).parse()
    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    list(chat_stream(client))
    monkeypatch.setattr(base.SyncAPIClient, "request", captured_wrapper)
    client.chat.completions.create(model=MODEL, messages=MESSAGES)  # switched off
    assert nothing_recorded(telemetry)
    assert_no_usage_metrics(telemetry)


def test_reinstrument_after_uninstrument(
    instrument: Callable[..., OpenAIInstrumentor], client: openai.OpenAI, telemetry: Telemetry
) -> None:
    instrument().uninstrument()
    instrument()
    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert_metered(telemetry, buckets=USAGE, rates=GPT_4O_MINI)


# --- stream object identity and early endings ---------------------------------------------------
def test_stream_object_is_the_clients_own(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    with chat_stream(client, stream_options={"include_usage": True}) as stream:
        assert type(stream) is openai.Stream
        assert isinstance(stream, openai.Stream)
        assert isinstance(stream.response, httpx2.Response)
        assert stream.response.status_code == 200
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        first = next(stream)
        rest = list(stream)
    stream.close()  # closing again after the end is harmless
    assert first.choices[0].delta.role == "assistant"
    assert len(rest) == REPLY_WORDS + 2
    assert_metered(telemetry, buckets=USAGE, rates=GPT_4O_MINI, stream=True)


def test_async_stream_object_is_the_clients_own(
    instrumented: OpenAIInstrumentor, server: ProviderServer, telemetry: Telemetry
) -> None:
    async def main() -> None:
        async with async_client(server) as aclient:
            stream = await aclient.chat.completions.create(
                model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
            assert type(stream) is openai.AsyncStream
            assert isinstance(stream.response, httpx2.Response)
            async with stream:
                count = len([c async for c in stream])
            assert count == REPLY_WORDS + 3
            await stream.close()

    asyncio.run(main())
    assert_metered(telemetry, buckets=USAGE, rates=GPT_4O_MINI, stream=True)


def _estimated_partial(chunks: list[Any], include_usage: bool = False) -> dict[str, int]:
    """What a stream cut after ``chunks`` is billed: the prompt counted locally, and its reply
    text counted, or (usage asked for, so the chunks were not read) one token per chunk after
    the role chunk."""
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    output = len(chunks) - 1 if include_usage else o200k(text)
    buckets = {"input": estimated_prompt(MESSAGES)}
    if output:
        buckets["output"] = output
    return buckets


def assert_cut_stream_metered(
    telemetry: Telemetry, seen: list[Any], include_usage: bool = False
) -> None:
    """One streamed call, billed the estimate of a stream cut after ``seen``."""
    assert_metered(
        telemetry,
        buckets=_estimated_partial(seen, include_usage),
        rates=GPT_4O_MINI,
        source="estimated",
        stream=True,
    )


def test_stream_break_and_close(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    stream = chat_stream(client, stream_options={"include_usage": True})
    seen = []
    for chunk in stream:
        seen.append(chunk)
        if len(seen) == 4:
            break
    assert telemetry.finished() == []
    stream.close()
    assert stream.response.is_closed
    assert_cut_stream_metered(telemetry, seen, include_usage=True)
    del stream
    gc.collect()  # the suspended watcher is collected: still one span, one record
    assert len(telemetry.finished()) == 1
    (duration,) = telemetry.points(sc.METRIC_CLIENT_OPERATION_DURATION)
    assert duration.count == 1


def test_stream_with_block_exited_early(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    seen = []
    with chat_stream(client) as stream:
        for chunk in stream:
            seen.append(chunk)
            if len(seen) == 3:
                break
    assert stream.response.is_closed
    assert_cut_stream_metered(telemetry, seen)


def test_stream_dropped_without_iteration(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    stream = chat_stream(client)
    assert telemetry.finished() == []
    del stream
    gc.collect()
    # nothing was read: the prompt is estimated, the model is the requested one
    assert_metered(
        telemetry,
        buckets={"input": estimated_prompt(MESSAGES)},
        rates=GPT_4O_MINI,
        response_model=None,
        source="estimated",
        stream=True,
    )


def test_stream_dropped_half_read(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    stream = chat_stream(client)
    seen = [next(stream) for _ in range(5)]
    del stream
    gc.collect()
    assert_cut_stream_metered(telemetry, seen)


def test_stream_closed_before_iteration(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    stream = chat_stream(client)
    stream.close()
    assert len(telemetry.finished()) == 1
    del stream
    gc.collect()
    assert_metered(
        telemetry,
        buckets={"input": estimated_prompt(MESSAGES)},
        rates=GPT_4O_MINI,
        response_model=None,
        source="estimated",
        stream=True,
    )


@pytest.mark.parametrize("include_usage", [False, True])
def test_stream_dropped_mid_stream(
    include_usage: bool,
    instrumented: OpenAIInstrumentor,
    client: openai.OpenAI,
    telemetry: Telemetry,
) -> None:
    stream = chat_stream(
        client,
        stream_options={"include_usage": include_usage},
        extra_headers=scenario("drop_mid_stream", **{"x-test-drop-after": "6"}),
    )
    seen = []
    with pytest.raises(openai.APIConnectionError) as info:
        for chunk in stream:
            seen.append(chunk)
    assert type(info.value) is openai.APIConnectionError
    assert len(seen) == 6
    span = assert_error(telemetry, "APIConnectionError")
    assert any(e.name == "exception" for e in span.events)
    # the provider never sent usage: estimated from what was received
    assert span_usage(span) == _estimated_partial(seen, include_usage)
    a = span.attributes or {}
    assert a[sc.BILLING_USAGE_SOURCE] == "estimated"
    assert a[sc.BILLING_PRICING_STATUS] == sc.STATUS_ESTIMATED
    assert D(a[sc.BILLING_COST_DECIMAL]) == cost_of(  # type: ignore[arg-type]
        GPT_4O_MINI, _estimated_partial(seen, include_usage)
    )
    assert a[sc.GEN_AI_RESPONSE_MODEL] == SERVED
    assert telemetry.sum_of(sc.METRIC_BILLING_TOKENS) == sum(
        _estimated_partial(seen, include_usage).values()
    )
    stream.close()
    del stream
    gc.collect()
    assert len(telemetry.finished()) == 1


@pytest.mark.parametrize("include_usage", [False, True])
def test_async_stream_dropped_mid_stream(
    include_usage: bool,
    instrumented: OpenAIInstrumentor,
    server: ProviderServer,
    telemetry: Telemetry,
) -> None:
    # The client closes the response itself as the drop fails its read: the watcher, not
    # the close hook, must end the call (with the error).
    async def main() -> list[Any]:
        seen: list[Any] = []
        async with async_client(server) as aclient:
            stream = await async_chat_stream(
                aclient,
                stream_options={"include_usage": include_usage},
                extra_headers=scenario("drop_mid_stream", **{"x-test-drop-after": "4"}),
            )
            with pytest.raises(openai.APIConnectionError):
                async for chunk in stream:
                    seen.append(chunk)
        return seen

    seen = asyncio.run(main())
    span = assert_error(telemetry, "APIConnectionError")
    assert span_usage(span) == _estimated_partial(seen, include_usage)
    assert len(telemetry.finished()) == 1


@pytest.mark.parametrize("include_usage", [False, True])
def test_async_stream_closed_early(
    include_usage: bool,
    instrumented: OpenAIInstrumentor,
    server: ProviderServer,
    telemetry: Telemetry,
) -> None:
    async def main() -> list[Any]:
        seen: list[Any] = []
        async with async_client(server) as aclient:
            stream = await async_chat_stream(
                aclient, stream_options={"include_usage": include_usage}
            )
            async for chunk in stream:
                seen.append(chunk)
                if len(seen) == 3:
                    break
            await stream.close()  # the watcher is suspended: the close hook ends the call
        return seen

    seen = asyncio.run(main())
    assert len(telemetry.finished()) == 1
    span = telemetry.finished()[0]
    assert span.status.status_code != StatusCode.ERROR
    assert span_usage(span) == _estimated_partial(seen, include_usage)


def test_in_stream_error_event(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    stream = chat_stream(client, extra_headers=scenario("stream_error"))
    with pytest.raises(openai.APIError) as info:
        for _ in stream:
            pass
    assert type(info.value) is openai.APIError
    span = assert_error(telemetry, "APIError")
    assert (span.attributes or {})[sc.BILLING_USAGE_SOURCE] == "estimated"


def test_async_stream_dropped_without_iteration(
    instrumented: OpenAIInstrumentor, server: ProviderServer, telemetry: Telemetry
) -> None:
    async def main() -> None:
        async with async_client(server) as aclient:
            stream = await aclient.chat.completions.create(
                model=MODEL, messages=MESSAGES, stream=True
            )
            assert telemetry.finished() == []
            del stream
            gc.collect()

    asyncio.run(main())
    assert_metered(
        telemetry,
        buckets={"input": estimated_prompt(MESSAGES)},
        rates=GPT_4O_MINI,
        response_model=None,
        source="estimated",
        stream=True,
    )


# --- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "error", "status"),
    [
        ("rate_limit", openai.RateLimitError, 429),
        ("server_error", openai.InternalServerError, 500),
        ("bad_request", openai.BadRequestError, 400),
        ("auth_error", openai.AuthenticationError, 401),
    ],
)
def test_api_errors_reraised_unchanged(
    name: str,
    error: type[openai.APIStatusError],
    status: int,
    instrumented: OpenAIInstrumentor,
    client: openai.OpenAI,
    telemetry: Telemetry,
) -> None:
    with pytest.raises(error) as info:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, extra_headers=scenario(name))
    assert type(info.value) is error
    assert info.value.status_code == status
    if name == "rate_limit":
        assert info.value.response.headers["retry-after"]
    span = assert_error(telemetry, error.__name__)
    assert span.name == "chat gpt-4o-mini"
    assert span.kind is SpanKind.CLIENT
    assert any(e.name == "exception" for e in span.events)
    assert sc.GEN_AI_USAGE_INPUT_TOKENS not in (span.attributes or {})
    assert_no_usage_metrics(telemetry)


def test_api_error_async(
    instrumented: OpenAIInstrumentor, server: ProviderServer, telemetry: Telemetry
) -> None:
    async def main() -> None:
        async with async_client(server) as aclient:
            await aclient.chat.completions.create(
                model=MODEL, messages=MESSAGES, extra_headers=scenario("rate_limit")
            )

    with pytest.raises(openai.RateLimitError):
        asyncio.run(main())
    assert_error(telemetry, "RateLimitError")
    assert_no_usage_metrics(telemetry)


def test_stream_request_error_and_json_drop(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    with pytest.raises(openai.RateLimitError):
        chat_stream(client, extra_headers=scenario("rate_limit"))
    assert_error(telemetry, "RateLimitError")
    telemetry.spans.clear()
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, extra_headers=scenario("drop_mid_stream")
        )
    (span,) = telemetry.finished()
    assert (span.attributes or {})[sc.ERROR_TYPE] == "APIConnectionError"
    assert_no_usage_metrics(telemetry)


def test_sdk_retries_are_one_call(
    instrumented: OpenAIInstrumentor, server: ProviderServer, telemetry: Telemetry
) -> None:
    with openai.OpenAI(api_key="test", base_url=server.openai_base_url, max_retries=2) as c:
        c.chat.completions.create(
            model=MODEL, messages=MESSAGES, extra_headers=scenario("rate_limit_once")
        )
    assert_metered(telemetry, buckets=USAGE, rates=GPT_4O_MINI)


# --- cache, reasoning, service tiers, unknown models ------------------------------------------
def test_cached_tokens(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, extra_headers=scenario("cache")
    )
    assert response.usage is not None and response.usage.prompt_tokens_details is not None
    cached = response.usage.prompt_tokens_details.cached_tokens
    assert cached == PROMPT // 2 > 0
    buckets = {"input": PROMPT - cached, "cache_read": cached, "output": REPLY_WORDS}
    assert_metered(telemetry, buckets=buckets, rates=GPT_4O_MINI)


def test_cached_tokens_responses_stream(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    list(
        client.responses.create(
            model=MODEL,
            input=CONTENT,
            stream=True,
            extra_headers={"x-test-cached-tokens": "6"},
        )
    )
    buckets = {"input": RESPONSES_PROMPT - 6, "cache_read": 6, "output": REPLY_WORDS}
    assert_metered(telemetry, buckets=buckets, rates=GPT_4O_MINI, stream=True)


@pytest.mark.parametrize(
    ("model", "served", "rates", "effort", "reasoning"),
    [
        ("gpt-5-mini", "gpt-5-mini-2025-08-07", GPT_5_MINI, None, 64),
        ("o4-mini", "o4-mini-2025-04-16", O4_MINI, "high", 192),
    ],
)
def test_reasoning_tokens(
    model: str,
    served: str,
    rates: dict[str, Decimal],
    effort: str | None,
    reasoning: int,
    instrumented: OpenAIInstrumentor,
    client: openai.OpenAI,
    telemetry: Telemetry,
) -> None:
    kwargs: dict[str, Any] = {"reasoning_effort": effort} if effort else {}
    response = client.chat.completions.create(model=model, messages=MESSAGES, **kwargs)
    assert response.model == served
    assert response.usage is not None
    assert response.usage.completion_tokens == REPLY_WORDS + reasoning
    buckets = {"input": PROMPT, "output": REPLY_WORDS, "reasoning": reasoning}
    assert_metered(
        telemetry,
        buckets=buckets,
        rates=rates,
        request_model=model,
        response_model=served,
        price_id=f"genai-prices:openai/{model}",
    )


def test_reasoning_tokens_with_cache_responses(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    client.responses.create(
        model="gpt-5-mini", input=CONTENT, extra_headers={"x-test-cached-tokens": "4"}
    )
    buckets = {"input": RESPONSES_PROMPT - 4, "cache_read": 4, "output": REPLY_WORDS}
    buckets["reasoning"] = 64
    assert_metered(
        telemetry,
        buckets=buckets,
        rates=GPT_5_MINI,
        request_model="gpt-5-mini",
        response_model="gpt-5-mini-2025-08-07",
        price_id="genai-prices:openai/gpt-5-mini",
    )


def test_flex_service_tier_priced_with_flex_variant(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    client.chat.completions.create(model="gpt-5-mini", messages=MESSAGES, service_tier="flex")
    span = assert_metered(
        telemetry,
        buckets={"input": PROMPT, "output": REPLY_WORDS, "reasoning": 64},
        rates=GPT_5_MINI_FLEX,
        request_model="gpt-5-mini",
        response_model="gpt-5-mini-2025-08-07",
        price_id="genai-prices:openai/gpt-5-mini#flex",
        processing="flex",
    )
    assert (span.attributes or {})[sc.OPENAI_REQUEST_SERVICE_TIER] == "flex"


def test_variant_unavailable_is_unpriced_not_zero(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    client.chat.completions.create(model=MODEL, messages=MESSAGES, service_tier="flex")
    assert_metered(
        telemetry,
        buckets=USAGE,
        rates=None,
        price_id="genai-prices:openai/gpt-4o-mini#flex",
        status=sc.STATUS_VARIANT_UNAVAILABLE,
        processing="flex",
    )


def test_unknown_model_is_unpriced(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    response = client.chat.completions.create(model="acme-llm-7b", messages=MESSAGES)
    assert response.model == "acme-llm-7b"  # served as-is
    assert_metered(
        telemetry,
        buckets=USAGE,
        rates=None,
        price_id=None,
        request_model="acme-llm-7b",
        response_model="acme-llm-7b",
        status=sc.STATUS_UNPRICED,
    )


def test_unknown_served_model_is_unpriced(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    client.chat.completions.create(
        model="acme-chat", messages=MESSAGES, extra_headers={"x-test-served-model": "acme-2"}
    )
    assert_metered(
        telemetry,
        buckets=USAGE,
        rates=None,
        price_id=None,
        request_model="acme-chat",
        response_model="acme-2",
        status=sc.STATUS_UNPRICED,
    )


def test_served_model_decides_the_price(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    client.chat.completions.create(
        model=MODEL, messages=MESSAGES, extra_headers={"x-test-served-model": "o4-mini"}
    )
    assert_metered(
        telemetry,
        buckets={**USAGE, "reasoning": 64},  # the served model reasons
        rates=O4_MINI,
        response_model="o4-mini",
        price_id="genai-prices:openai/o4-mini",
    )


# --- Azure ----------------------------------------------------------------------------------
AZURE_SERVED = {"x-test-served-model": SERVED}


def test_azure_priced_by_response_model_not_deployment(
    instrumented: OpenAIInstrumentor,
    azure: openai.AzureOpenAI,
    server: ProviderServer,
    telemetry: Telemetry,
) -> None:
    response = azure.chat.completions.create(
        model="prod-chat", messages=MESSAGES, extra_headers=AZURE_SERVED
    )
    assert server.last_request.deployment == "prod-chat"
    assert response.model == SERVED
    span = assert_metered(
        telemetry,
        buckets=USAGE,
        rates=GPT_4O_MINI,
        provider="azure.ai.openai",
        request_model="prod-chat",
        price_id="genai-prices:azure/gpt-4o-mini",
    )
    assert (span.attributes or {})[sc.GEN_AI_RESPONSE_ID] == response.id


def test_azure_stream_with_prompt_filter_chunk(
    instrumented: OpenAIInstrumentor, azure: openai.AzureOpenAI, telemetry: Telemetry
) -> None:
    chunks = list(
        azure.chat.completions.create(
            model="prod-chat",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=AZURE_SERVED,
        )
    )
    assert chunks[0].choices == [] and chunks[0].model == ""  # Azure's prompt filter chunk
    assert_metered(
        telemetry,
        buckets=USAGE,
        rates=GPT_4O_MINI,
        provider="azure.ai.openai",
        request_model="prod-chat",
        price_id="genai-prices:azure/gpt-4o-mini",
        stream=True,
    )


def test_azure_stream_response_id(
    instrumented: OpenAIInstrumentor, azure: openai.AzureOpenAI, telemetry: Telemetry
) -> None:
    chunks = list(
        azure.chat.completions.create(
            model="prod-chat", messages=MESSAGES, stream=True, extra_headers=AZURE_SERVED
        )
    )
    assert chunks[0].id == ""
    span = telemetry.only_span()
    assert (span.attributes or {}).get(sc.GEN_AI_RESPONSE_ID) == chunks[1].id


def test_azure_injection_keeps_prompt_filter_chunk(
    instrument: Callable[..., OpenAIInstrumentor],
    azure: openai.AzureOpenAI,
    server: ProviderServer,
    telemetry: Telemetry,
) -> None:
    instrument(include_usage=True)
    chunks = list(
        azure.chat.completions.create(
            model="prod-chat", messages=MESSAGES, stream=True, extra_headers=AZURE_SERVED
        )
    )
    assert server.last_request.body["stream_options"] == {"include_usage": True}
    assert chunks[0].choices == []  # Azure's filter chunk is the user's, not hidden
    assert all(c.choices for c in chunks[1:])
    assert len(chunks) == REPLY_WORDS + 3
    span = telemetry.only_span()
    assert span_usage(span) == USAGE
    assert (span.attributes or {})[sc.GEN_AI_PROVIDER_NAME] == "azure.ai.openai"


def test_azure_responses_and_embeddings(
    instrumented: OpenAIInstrumentor, azure: openai.AzureOpenAI, telemetry: Telemetry
) -> None:
    azure.responses.create(model="prod-chat", input=CONTENT, extra_headers=AZURE_SERVED)
    azure.embeddings.create(model="text-embedding-3-small", input="hello world")
    responses, embeddings = sorted(telemetry.finished(), key=lambda s: s.start_time or 0)
    for span in (responses, embeddings):
        assert (span.attributes or {})[sc.GEN_AI_PROVIDER_NAME] == "azure.ai.openai"
        assert (span.attributes or {})[sc.BILLING_PRICING_STATUS] == "priced"
    assert (responses.attributes or {})[sc.BILLING_PRICE_ID] == "genai-prices:azure/gpt-4o-mini"
    assert D((responses.attributes or {})[sc.BILLING_COST_DECIMAL]) == cost_of(  # type: ignore[arg-type]
        GPT_4O_MINI, {"input": RESPONSES_PROMPT, "output": REPLY_WORDS}
    )


# --- content capture ---------------------------------------------------------------------------
CAPTURE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


def test_content_not_captured_by_default(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    list(chat_stream(client))
    client.responses.create(model=MODEL, input=CONTENT)
    for span in telemetry.finished():
        attrs = span.attributes or {}
        assert sc.GEN_AI_INPUT_MESSAGES not in attrs
        assert sc.GEN_AI_OUTPUT_MESSAGES not in attrs
        assert not any(CONTENT in str(v) or "deterministic" in str(v) for v in attrs.values())


def test_content_captured_when_enabled(
    instrument: Callable[..., OpenAIInstrumentor],
    client: openai.OpenAI,
    telemetry: Telemetry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(CAPTURE, "true")  # the environment is read when instrumenting
    instrument()
    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    list(chat_stream(client))
    client.responses.create(model=MODEL, input=CONTENT)
    spans = telemetry.finished()
    assert len(spans) == 3
    for span in spans:
        attrs = span.attributes or {}
        assert CONTENT in str(attrs[sc.GEN_AI_INPUT_MESSAGES])
        assert DEFAULT_REPLY in str(attrs[sc.GEN_AI_OUTPUT_MESSAGES])


def test_content_captured_on_responses_stream(
    instrument: Callable[..., OpenAIInstrumentor],
    client: openai.OpenAI,
    telemetry: Telemetry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(CAPTURE, "true")  # the environment is read when instrumenting
    instrument()
    list(client.responses.create(model=MODEL, input=CONTENT, stream=True))
    attrs = telemetry.only_span().attributes or {}
    assert CONTENT in str(attrs[sc.GEN_AI_INPUT_MESSAGES])
    assert DEFAULT_REPLY in str(attrs[sc.GEN_AI_OUTPUT_MESSAGES])


# --- concurrency ----------------------------------------------------------------------------
def test_threads_exact_totals(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        try:
            barrier.wait()
            for j in range(5):
                if (i + j) % 2:
                    list(chat_stream(client, stream_options={"include_usage": True}))
                else:
                    client.chat.completions.create(model=MODEL, messages=MESSAGES)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    spans = telemetry.finished()
    assert len(spans) == 40
    assert len({s.context.span_id for s in spans}) == 40
    assert all(s.parent is None for s in spans)  # no call nested under another thread's
    assert all(span_usage(s) == USAGE for s in spans)
    bucket = sc.BILLING_TOKEN_BUCKET
    assert telemetry.sum_of(sc.METRIC_BILLING_TOKENS, **{bucket: "input"}) == 40 * PROMPT
    assert telemetry.sum_of(sc.METRIC_BILLING_TOKENS, **{bucket: "output"}) == 40 * REPLY_WORDS
    token_type = sc.GEN_AI_TOKEN_TYPE
    assert telemetry.sum_of(sc.METRIC_CLIENT_TOKEN_USAGE, **{token_type: "input"}) == 40 * PROMPT
    total = sum(D(s.attributes[sc.BILLING_COST_DECIMAL]) for s in spans)  # type: ignore[arg-type,index]
    assert total == 40 * cost_of(GPT_4O_MINI, USAGE)
    assert telemetry.sum_of(sc.METRIC_BILLING_COST) == pytest.approx(float(total))
    (duration,) = telemetry.points(sc.METRIC_CLIENT_OPERATION_DURATION)
    assert duration.count == 40


def test_asyncio_gather_exact_totals(
    instrumented: OpenAIInstrumentor, server: ProviderServer, telemetry: Telemetry
) -> None:
    async def main() -> None:
        async with async_client(server) as aclient:

            async def one(i: int) -> None:
                if i % 2:
                    await aclient.chat.completions.create(model=MODEL, messages=MESSAGES)
                else:
                    stream = await aclient.chat.completions.create(
                        model=MODEL,
                        messages=MESSAGES,
                        stream=True,
                        stream_options={"include_usage": True},
                    )
                    async for _ in stream:
                        await asyncio.sleep(0)

            await asyncio.gather(*(one(i) for i in range(10)))

    asyncio.run(main())
    spans = telemetry.finished()
    assert len(spans) == 10
    assert all(s.parent is None for s in spans)
    assert all(span_usage(s) == USAGE for s in spans)
    assert telemetry.sum_of(sc.METRIC_BILLING_TOKENS) == 10 * (PROMPT + REPLY_WORDS)
    assert telemetry.sum_of(sc.METRIC_BILLING_COST) == pytest.approx(
        float(10 * cost_of(GPT_4O_MINI, USAGE))
    )


# --- never break the app -----------------------------------------------------------------------
class ExplodingCatalog(Catalog):
    """A deliberately faulty catalog: pricing raises."""

    def price(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("catalog exploded")


def _internal_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "otel_tokens" and "internal error" in r.getMessage()
    ]


def test_faulty_catalog_never_breaks_the_call(
    instrument: Callable[..., OpenAIInstrumentor],
    client: openai.OpenAI,
    telemetry: Telemetry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    reset_log_once()
    instrument(catalog=ExplodingCatalog())
    with caplog.at_level(logging.WARNING, logger="otel_tokens"):
        first = client.chat.completions.create(model=MODEL, messages=MESSAGES)
        chunks = list(chat_stream(client, stream_options={"include_usage": True}))
        second = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert first.choices[0].message.content == DEFAULT_REPLY == second.choices[0].message.content
    assert chunks[-1].usage is not None
    assert len(_internal_errors(caplog)) == 1
    spans = telemetry.finished()
    assert len(spans) == 3  # every span still ended, with its usage but without a cost
    for span in spans:
        assert span_usage(span) == USAGE
        assert sc.BILLING_COST_DECIMAL not in (span.attributes or {})
    assert telemetry.points(sc.METRIC_BILLING_COST) == []


def test_broken_price_file_never_breaks_the_call(
    instrument: Callable[..., OpenAIInstrumentor],
    client: openai.OpenAI,
    telemetry: Telemetry,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = Path(__file__).resolve().parents[1] / "data" / "prices" / "broken"
    monkeypatch.setenv(ENV_PRICES, str(broken / "invalid_yaml.yaml"))
    reset_log_once()
    set_default_catalog(None)
    try:
        instrument(catalog=None)  # the default catalog, from the environment's price file
        with caplog.at_level(logging.WARNING, logger="otel_tokens"):
            for _ in range(2):
                response = client.chat.completions.create(model=MODEL, messages=MESSAGES)
                assert response.choices[0].message.content == DEFAULT_REPLY
    finally:
        set_default_catalog(None)
    assert len(_internal_errors(caplog)) == 1
    assert len(telemetry.finished()) == 2
    assert telemetry.points(sc.METRIC_BILLING_COST) == []


def test_double_instrument_does_not_double_count(
    instrument: Callable[..., OpenAIInstrumentor], client: openai.OpenAI, telemetry: Telemetry
) -> None:
    import openai._base_client as base
    import wrapt

    inst = instrument()
    wrapper = base.SyncAPIClient.__dict__["request"]
    assert instrument() is inst
    assert base.SyncAPIClient.__dict__["request"] is wrapper
    assert not isinstance(wrapper.__wrapped__, wrapt.FunctionWrapper)
    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    list(chat_stream(client, stream_options={"include_usage": True}))
    assert len(telemetry.finished()) == 2
    assert telemetry.sum_of(sc.METRIC_BILLING_TOKENS) == 2 * (PROMPT + REPLY_WORDS)
    inst.uninstrument()
    assert not isinstance(base.SyncAPIClient.__dict__["request"], wrapt.ObjectProxy)


# --- more bugs found while testing -------------------------------------------------------------
def test_raw_stream_parsed_from_a_temporary_raw_response(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    stream = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ).parse()
    gc.collect()
    assert telemetry.finished() == []  # not ended before the stream is read
    chunks = list(stream)
    assert chunks[-1].usage is not None
    assert_metered(telemetry, buckets=USAGE, rates=GPT_4O_MINI, stream=True)


@pytest.mark.parametrize("helper", ["chat", "responses"])
def test_stream_helper_left_early_ends_the_call(
    helper: str, instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    manager: Any = (
        client.chat.completions.stream(model=MODEL, messages=MESSAGES)
        if helper == "chat"
        else client.responses.stream(model=MODEL, input=CONTENT)
    )
    with manager as stream:
        for i, _ in enumerate(stream):
            if i == 3:
                break
    assert stream is not None  # the user still holds it; the response is closed
    (span,) = telemetry.finished()
    assert (span.attributes or {})[sc.BILLING_USAGE_SOURCE] == "estimated"


TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def test_tool_call_stream_estimate_counts_tools(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            tools=TOOLS,
            stream=True,
            extra_headers=scenario("tool_call"),
        )
    )
    args = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments or ""
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
    )
    assert args
    usage = span_usage(telemetry.only_span())
    assert usage.get("output", 0) >= o200k(args)  # the arguments were generated and billed
    assert usage["input"] > estimated_prompt(MESSAGES)  # so were the tool definitions


def test_responses_stream_failed_is_an_error(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    events = list(
        client.responses.create(
            model=MODEL, input=CONTENT, stream=True, extra_headers=scenario("stream_error")
        )
    )
    assert events[-1].type == "response.failed"
    span = telemetry.only_span()
    assert span.status.status_code is StatusCode.ERROR
    assert sc.ERROR_TYPE in (span.attributes or {})


# --- more coverage ----------------------------------------------------------------------------
def test_responses_stream_dropped_mid_stream(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    stream = client.responses.create(
        model=MODEL,
        input=CONTENT,
        stream=True,
        extra_headers=scenario("drop_mid_stream", **{"x-test-drop-after": "8"}),
    )
    seen = []
    with pytest.raises(openai.APIConnectionError):
        for event in stream:
            seen.append(event)
    text = "".join(e.delta for e in seen if e.type == "response.output_text.delta")
    span = assert_error(telemetry, "APIConnectionError")
    a = span.attributes or {}
    assert a[sc.GEN_AI_RESPONSE_MODEL] == SERVED  # from response.created
    assert a[sc.BILLING_USAGE_SOURCE] == "estimated"
    expected = {"input": estimated_prompt(MESSAGES), "output": o200k(text)}
    assert span_usage(span) == {k: v for k, v in expected.items() if v}


def test_long_stream_is_counted_whole(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    chunks = list(chat_stream(client, extra_headers={"x-test-output-tokens": "700"}))
    assert len(chunks) == 702
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    buckets = {"input": estimated_prompt(MESSAGES), "output": o200k(text)}
    assert_metered(telemetry, buckets=buckets, rates=GPT_4O_MINI, source="estimated", stream=True)


def test_injection_through_streaming_response(
    instrument: Callable[..., OpenAIInstrumentor], client: openai.OpenAI, telemetry: Telemetry
) -> None:
    instrument(include_usage=True)
    with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=MESSAGES, stream=True
    ) as response:
        chunks = list(response.parse())
    assert len(chunks) == REPLY_WORDS + 2 and all(c.choices for c in chunks)
    assert_metered(telemetry, buckets=USAGE, rates=GPT_4O_MINI, stream=True)


def test_provider_override_env(
    instrument: Callable[..., OpenAIInstrumentor],
    client: openai.OpenAI,
    telemetry: Telemetry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "OTEL_TOKENS_OPENAI_PROVIDER", "azure.ai.openai"
    )  # the environment is read when instrumenting
    instrument()
    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert_metered(
        telemetry,
        buckets=USAGE,
        rates=GPT_4O_MINI,
        provider="azure.ai.openai",
        price_id="genai-prices:azure/gpt-4o-mini",
    )


def test_non_stream_has_no_time_to_first_chunk(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK not in (telemetry.only_span().attributes or {})
    assert telemetry.points(sc.METRIC_CLIENT_TIME_TO_FIRST_CHUNK) == []


def test_unknown_served_model_is_priced_at_the_requested_model_and_marked(
    instrumented: OpenAIInstrumentor, client: openai.OpenAI, telemetry: Telemetry
) -> None:
    """A served model the catalog does not know (a router's name): the requested model's
    price, marked ``estimated`` and naming the model that priced it, so finance can find it."""
    client.chat.completions.create(
        model=MODEL, messages=MESSAGES, extra_headers={"x-test-served-model": "router-7b-x"}
    )
    span = assert_metered(
        telemetry,
        buckets=USAGE,
        rates=GPT_4O_MINI,
        response_model="router-7b-x",
        status=sc.STATUS_ESTIMATED,
    )
    assert (span.attributes or {})[sc.BILLING_PRICED_MODEL] == MODEL
