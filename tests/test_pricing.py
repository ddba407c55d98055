"""The pricing engine against prices worked out by hand from the providers' price pages.

Every hand-computed case states where each price comes from and checks the total twice:
against otel-tokens' exact engine and against genai-prices' own ``calc_price`` on its bundled
data, so a data release that disagrees with the published price fails here.

Arithmetic convention in the comments: ``tokens x $/MTok`` is summed in micro-dollars and
divided by 1,000,000 at the end; web searches are ``count x $/1K / 1000``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Context, Decimal, Inexact, localcontext
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import genai_prices
import pytest
from genai_prices.types import Usage as GpUsage
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_tokens.pricing import (
    Catalog,
    Price,
    PriceFileError,
    PriceResult,
    Processing,
    default_catalog,
    load_user_prices,
    parse_user_prices,
    price,
    set_default_catalog,
)
from otel_tokens.usage import (
    TokenUsage,
    from_anthropic,
    from_gemini,
    from_openai_chat,
    from_openai_responses,
)

PRICES = Path(__file__).parent / "data" / "prices"
BROKEN = PRICES / "broken"

# After every processing variant in genai-prices' data took effect (2026-10-12 / 2026-10-14).
AT = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
CATALOG = Catalog()  # genai-prices only: no user file, whatever the environment says

_PRICE_CONTEXT: dict[str, dict[str, str]] = {
    "batch": {"processing": "batch"},
    "flex": {"service_tier": "flex"},
    "priority": {"service_tier": "priority"},
}


def _genai_prices_total(
    usage: TokenUsage, model: str, provider: str, at: datetime, processing: Processing
) -> Decimal:
    """genai-prices' own total for the same usage (its Usage counts are inclusive)."""
    counts = {
        "input_tokens": usage.input_total,
        "cache_read_tokens": usage.cache_read,
        "cache_write_tokens": usage.cache_write,
        "cache_write_5m_tokens": usage.cache_write_5m,
        "cache_write_1h_tokens": usage.cache_write_1h,
        "input_audio_tokens": usage.input_audio,
        "input_image_tokens": usage.input_image,
        "output_tokens": usage.output_total,
        "output_reasoning_tokens": usage.reasoning,
        "output_audio_tokens": usage.output_audio,
        "output_image_tokens": usage.output_image,
        "web_searches": usage.web_search_requests,
    }
    calc = genai_prices.calc_price(
        GpUsage(**{k: v for k, v in counts.items() if v}),
        model,
        provider_id=provider,
        genai_request_timestamp=at,
        price_context=_PRICE_CONTEXT.get(processing),
    )
    return calc.total_price


def check(
    usage: TokenUsage,
    model: str,
    provider: str,
    expected: str,
    *,
    at: datetime = AT,
    processing: Processing = "standard",
    amounts: dict[str, str] | None = None,
    context_tier: str = "base",
) -> PriceResult:
    """Price with otel-tokens and with genai-prices; both must give the hand-computed total."""
    result = price(usage, model, provider=provider, at=at, processing=processing, catalog=CATALOG)
    assert result.status == ("estimated" if usage.is_estimated else "priced"), result.reason
    assert result.total == Decimal(expected), (result.total, expected)
    assert isinstance(result.total, Decimal)
    assert result.currency == "USD"
    assert result.context_tier == context_tier
    assert result.unpriced_buckets == ()
    assert result.total == sum(result.amounts.values(), Decimal(0))
    if amounts is not None:
        assert {k: Decimal(v) for k, v in amounts.items()} == dict(result.amounts)
    assert _genai_prices_total(usage, model, provider, at, processing) == Decimal(expected)
    return result


def _user_catalog(text: str) -> Catalog:
    return Catalog(parse_user_prices(text.encode(), "inline.yaml"))


# ---------------------------------------------------------------------------------------
# OpenAI: prompt_tokens includes cached_tokens; completion_tokens includes reasoning
# ---------------------------------------------------------------------------------------

# A chat completion that hit the prompt cache: 1920 of the 2006 prompt tokens were cached.
CHAT_CACHED = {
    "prompt_tokens": 2006,
    "completion_tokens": 300,
    "total_tokens": 2306,
    "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
}


def test_openai_gpt4o_cached_input() -> None:
    # OpenAI pricing page: gpt-4o $2.50/MTok input, $1.25 cached input, $10.00 output.
    # input   (2006 - 1920) =   86 x 2.50 =   215
    # cached            1920      x 1.25 =  2400
    # output             300      x 10   =  3000
    # total 5615 micro-dollars = $0.005615 (not 2006 x 2.50 = 5015 + 3000 = $0.008015)
    usage = from_openai_chat(CHAT_CACHED)
    check(
        usage,
        "gpt-4o",
        "openai",
        "0.005615",
        amounts={"input": "0.000215", "cache_read": "0.0024", "output": "0.003"},
    )


def test_openai_gpt4o_mini_cached_input() -> None:
    # OpenAI pricing page: gpt-4o-mini $0.15/MTok input, $0.075 cached input, $0.60 output.
    # 86 x 0.15 = 12.9; 1920 x 0.075 = 144; 300 x 0.60 = 180 -> 336.9 -> $0.0003369
    check(from_openai_chat(CHAT_CACHED), "gpt-4o-mini", "openai", "0.0003369")


# A Responses API call of a reasoning model: 4096 cached, 1024 of 1200 output are reasoning.
RESPONSES_REASONING = {
    "input_tokens": 5000,
    "input_tokens_details": {"cached_tokens": 4096, "cache_write_tokens": 0},
    "output_tokens": 1200,
    "output_tokens_details": {"reasoning_tokens": 1024},
    "total_tokens": 6200,
}


def test_openai_gpt5_reasoning_tokens_billed_as_output() -> None:
    # OpenAI pricing page: gpt-5 $1.25/MTok input, $0.125 cached input, $10.00 output
    # (reasoning tokens are billed as output tokens).
    # input 904 x 1.25 = 1130; cached 4096 x 0.125 = 512;
    # output 176 x 10 = 1760; reasoning 1024 x 10 = 10240 -> 13642 -> $0.013642
    usage = from_openai_responses(RESPONSES_REASONING)
    assert (usage.output, usage.reasoning) == (176, 1024)
    check(
        usage,
        "gpt-5",
        "openai",
        "0.013642",
        amounts={
            "input": "0.00113",
            "cache_read": "0.000512",
            "output": "0.00176",
            "reasoning": "0.01024",
        },
    )


def test_openai_o4_mini_mostly_reasoning() -> None:
    # OpenAI pricing page: o4-mini $1.10/MTok input, $0.275 cached input, $4.40 output.
    # input 10000 x 1.10 = 11000; output (1000 + 7000 reasoning) x 4.40 = 35200
    # -> 46200 -> $0.0462
    usage = from_openai_chat(
        {
            "prompt_tokens": 10000,
            "completion_tokens": 8000,
            "completion_tokens_details": {"reasoning_tokens": 7000},
        }
    )
    check(
        usage,
        "o4-mini",
        "openai",
        "0.0462",
        amounts={"input": "0.011", "output": "0.0044", "reasoning": "0.0308"},
    )


def test_openai_cache_writes_billed_at_cache_write_rate() -> None:
    # OpenAI pricing page (Cyber models, Standard), as quoted in genai-prices' price_comments:
    # gpt-5.6-cyber $12.50/MTok input, $1.25 cached input, $15.625 cache writes (1.25x
    # input), $75 output. input_tokens includes cached_tokens and cache_write_tokens.
    # input (10000 - 2000 - 6000) = 2000 x 12.50  =  25000
    # cached                 2000 x  1.25          =   2500
    # cache write            6000 x 15.625         =  93750
    # output                 1000 x 75             =  75000
    # total 196250 -> $0.19625
    usage = from_openai_responses(
        {
            "input_tokens": 10000,
            "input_tokens_details": {
                "cached_tokens": 2000,
                "cache_write_tokens": 6000,
                "cache_write_tokens_details": {"ttl_30m_tokens": 6000, "ttl_12h_tokens": 0},
            },
            "output_tokens": 1000,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 11000,
        }
    )
    check(usage, "gpt-5.6-cyber", "openai", "0.19625")


def test_openai_web_search_calls() -> None:
    # OpenAI pricing page, built-in tools: web search $10.00 / 1K calls; gpt-4o $2.50/MTok
    # input, $10.00 output.
    # input 1000 x 2.50 = 2500; output 200 x 10 = 2000 -> $0.0045; 4 calls x $10/1000 = $0.04
    usage = TokenUsage(input=1000, output=200, web_search_requests=4)
    check(
        usage,
        "gpt-4o",
        "openai",
        "0.0445",
        amounts={"input": "0.0025", "output": "0.002", "web_search": "0.04"},
    )


# ---------------------------------------------------------------------------------------
# Anthropic: input_tokens excludes cache reads and writes; 5m and 1h cache writes
# ---------------------------------------------------------------------------------------

ANTHROPIC_CACHED = {
    "input_tokens": 12,
    "cache_creation_input_tokens": 3000,
    "cache_read_input_tokens": 40000,
    "output_tokens": 850,
}


def test_anthropic_sonnet_45_cache_write_5m_and_read() -> None:
    # Anthropic pricing page: Sonnet 4.5 $3/MTok input, $3.75 5m cache write, $6 1h cache
    # write, $0.30 cache read, $15 output. No cache_creation breakdown: all writes are 5m.
    # input 12 x 3 = 36; 5m write 3000 x 3.75 = 11250; read 40000 x 0.30 = 12000;
    # output 850 x 15 = 12750 -> 36036 -> $0.036036
    usage = from_anthropic(ANTHROPIC_CACHED)
    check(
        usage,
        "claude-sonnet-4-5",
        "anthropic",
        "0.036036",
        amounts={
            "input": "0.000036",
            "cache_write_5m": "0.01125",
            "cache_read": "0.012",
            "output": "0.01275",
        },
    )


def test_anthropic_sonnet_45_cache_write_1h() -> None:
    # Anthropic pricing page: Sonnet 4.5 $3/MTok input, $3.75 5m cache write, $6 1h cache
    # write, $0.30 cache read, $15 output.
    # input 36; 5m write 1000 x 3.75 = 3750; 1h write 2000 x 6 = 12000; read 12000;
    # output 12750 -> 40536 -> $0.040536
    usage = from_anthropic(
        {
            **ANTHROPIC_CACHED,
            "cache_creation": {
                "ephemeral_5m_input_tokens": 1000,
                "ephemeral_1h_input_tokens": 2000,
            },
        }
    )
    check(
        usage,
        "claude-sonnet-4-5",
        "anthropic",
        "0.040536",
        amounts={
            "input": "0.000036",
            "cache_write_5m": "0.00375",
            "cache_write_1h": "0.012",
            "cache_read": "0.012",
            "output": "0.01275",
        },
    )


def test_anthropic_opus_41_all_cache_kinds() -> None:
    # Anthropic pricing page: Opus 4.1 $15/MTok input, $18.75 5m cache write, $30 1h cache
    # write, $1.50 cache read, $75 output.
    # input 2000 x 15 = 30000; 5m 10000 x 18.75 = 187500; 1h 5000 x 30 = 150000;
    # read 20000 x 1.50 = 30000; output 1000 x 75 = 75000 -> 472500 -> $0.4725
    usage = TokenUsage(
        input=2000, cache_write_5m=10000, cache_write_1h=5000, cache_read=20000, output=1000
    )
    check(usage, "claude-opus-4-1", "anthropic", "0.4725")


def test_anthropic_haiku_45_web_search() -> None:
    # Anthropic pricing page: Haiku 4.5 $1/MTok input, $5 output; web search $10 per 1,000
    # searches. input 5000 x 1 = 5000; output 1000 x 5 = 5000 -> $0.01; 3 searches -> $0.03
    usage = from_anthropic(
        {
            "input_tokens": 5000,
            "output_tokens": 1000,
            "server_tool_use": {"web_search_requests": 3},
        }
    )
    assert usage.web_search_requests == 3
    check(
        usage,
        "claude-haiku-4-5",
        "anthropic",
        "0.04",
        amounts={"input": "0.005", "output": "0.005", "web_search": "0.03"},
    )


def test_anthropic_sonnet_45_long_context_above_200k() -> None:
    # Anthropic pricing page, long context (input > 200K tokens, cache included): Sonnet 4.5
    # $6/MTok input, $0.60 cache read, $22.50 output, for the whole request.
    # input_total = 10000 + 240000 = 250000 > 200000:
    # input 10000 x 6 = 60000; read 240000 x 0.60 = 144000; output 2000 x 22.50 = 45000
    # -> 249000 -> $0.249
    usage = TokenUsage(input=10000, cache_read=240000, output=2000)
    check(usage, "claude-sonnet-4-5", "anthropic", "0.249", context_tier="above_200k")


def test_anthropic_thinking_tokens_are_output_priced() -> None:
    # Anthropic pricing page: Sonnet 4.5 $3/MTok input, $15 output (thinking is output).
    # input 1000 x 3 = 3000; output (250 + 600 thinking) x 15 = 12750 -> $0.01575
    usage = from_anthropic(
        {
            "input_tokens": 1000,
            "output_tokens": 850,
            "output_tokens_details": {"thinking_tokens": 600},
        }
    )
    assert (usage.output, usage.reasoning) == (250, 600)
    check(usage, "claude-sonnet-4-5", "anthropic", "0.01575")


# ---------------------------------------------------------------------------------------
# Gemini: the 200k cliff, thoughts, cache and audio
# ---------------------------------------------------------------------------------------


def test_gemini_25_pro_exactly_200k_stays_base() -> None:
    # Gemini API pricing page: 2.5 Pro $1.25/MTok input and $10 output for prompts <= 200k.
    # 200000 x 1.25 = 250000; 1000 x 10 = 10000 -> 260000 -> $0.26
    usage = from_gemini({"promptTokenCount": 200000, "candidatesTokenCount": 1000})
    check(usage, "gemini-2.5-pro", "google", "0.26", context_tier="base")


def test_gemini_25_pro_one_token_above_200k_is_a_cliff() -> None:
    # Gemini API pricing page: 2.5 Pro $2.50/MTok input and $15 output for prompts > 200k,
    # applied to the whole call. 200001 x 2.50 = 500002.5; 1000 x 15 = 15000
    # -> 515002.5 -> $0.5150025
    usage = from_gemini({"promptTokenCount": 200001, "candidatesTokenCount": 1000})
    check(
        usage,
        "gemini-2.5-pro",
        "google",
        "0.5150025",
        amounts={"input": "0.5000025", "output": "0.015"},
        context_tier="above_200k",
    )


def test_gemini_25_pro_cached_tokens_count_towards_the_tier() -> None:
    # Gemini API pricing page, 2.5 Pro > 200k: $2.50/MTok input, $0.25 context caching,
    # $15 output (thinking included). promptTokenCount 250000 includes 200000 cached:
    # input 50000 x 2.50 = 125000; cache 200000 x 0.25 = 50000;
    # output (1000 + 3000 thoughts) x 15 = 60000 -> 235000 -> $0.235
    usage = from_gemini(
        {
            "promptTokenCount": 250000,
            "cachedContentTokenCount": 200000,
            "candidatesTokenCount": 1000,
            "thoughtsTokenCount": 3000,
        }
    )
    check(usage, "gemini-2.5-pro", "google", "0.235", context_tier="above_200k")


def test_gemini_25_flash_thinking_and_cache() -> None:
    # Gemini API pricing page: 2.5 Flash $0.30/MTok input (text/image/video), $0.03 context
    # caching, $2.50 output including thinking.
    # input 6000 x 0.30 = 1800; cache 4000 x 0.03 = 120; output (500 + 1500) x 2.50 = 5000
    # -> 6920 -> $0.00692
    usage = from_gemini(
        {
            "promptTokenCount": 10000,
            "cachedContentTokenCount": 4000,
            "candidatesTokenCount": 500,
            "thoughtsTokenCount": 1500,
        }
    )
    check(usage, "gemini-2.5-flash", "google", "0.00692")


def test_gemini_25_flash_audio_input() -> None:
    # Gemini API pricing page: 2.5 Flash $0.30/MTok text input, $1.00 audio input, $2.50
    # output. text 1000 x 0.30 = 300; audio 2000 x 1.00 = 2000; output 200 x 2.50 = 500
    # -> 2800 -> $0.0028
    usage = from_gemini(
        {
            "promptTokenCount": 3000,
            "candidatesTokenCount": 200,
            "promptTokensDetails": [
                {"modality": "TEXT", "tokenCount": 1000},
                {"modality": "AUDIO", "tokenCount": 2000},
            ],
        }
    )
    check(
        usage,
        "gemini-2.5-flash",
        "google",
        "0.0028",
        amounts={"input": "0.0003", "input_audio": "0.002", "output": "0.0005"},
    )


def test_gemini_15_flash_one_token_is_exact() -> None:
    # Gemini API pricing page (legacy): 1.5 Flash $0.075/MTok input up to 128k.
    # 1 x 0.075 / 1e6 = 0.000000075 exactly, a Decimal, never 7.499999e-08.
    result = check(TokenUsage(input=1), "gemini-1.5-flash", "google", "0.000000075")
    assert result.total == Decimal("0.000000075")
    assert result.to_dict()["total"] == "0.000000075"


def test_gemini_15_flash_above_128k() -> None:
    # Gemini API pricing page (legacy): 1.5 Flash $0.15/MTok input above 128k tokens, $0.60
    # output above 128k. 128001 x 0.15 = 19200.15; 100 x 0.60 = 60 -> 19260.15
    # -> $0.01926015
    check(
        TokenUsage(input=128001, output=100),
        "gemini-1.5-flash",
        "google",
        "0.01926015",
        context_tier="above_128k",
    )


def test_gemini_grounding_with_google_search() -> None:
    # Gemini API pricing page: 2.5 Flash grounding with Google Search $35 / 1,000 grounded
    # prompts; $0.30/MTok input. 1000 x 0.30 = $0.0003; 2 x 35 / 1000 = $0.07 -> $0.0703
    check(TokenUsage(input=1000, web_search_requests=2), "gemini-2.5-flash", "google", "0.0703")


# ---------------------------------------------------------------------------------------
# Processing variants: batch, flex, priority; and a variant the data does not have
# ---------------------------------------------------------------------------------------


def test_openai_batch_gpt5() -> None:
    # OpenAI pricing page, Batch: gpt-5 $0.625/MTok input, $0.0625 cached, $5.00 output.
    # 904 x 0.625 = 565; 4096 x 0.0625 = 256; 1200 x 5 = 6000 -> 6821 -> $0.006821
    result = check(
        from_openai_responses(RESPONSES_REASONING),
        "gpt-5",
        "openai",
        "0.006821",
        processing="batch",
    )
    assert result.processing == "batch"
    assert result.price_id == "genai-prices:openai/gpt-5#batch"


def test_anthropic_batch_haiku_45() -> None:
    # Anthropic pricing page, batch processing (50%): Haiku 4.5 $0.50/MTok input, $2.50
    # output; cache multipliers stack: $0.625 5m write, $1 1h write, $0.05 read.
    # 1000 x 0.50 = 500; 2000 x 0.625 = 1250; 1000 x 1 = 1000; 4000 x 0.05 = 200;
    # 1000 x 2.50 = 2500 -> 5450 -> $0.00545
    usage = TokenUsage(
        input=1000, cache_write_5m=2000, cache_write_1h=1000, cache_read=4000, output=1000
    )
    check(usage, "claude-haiku-4-5", "anthropic", "0.00545", processing="batch")


def test_gemini_batch_25_pro_above_200k() -> None:
    # Gemini API pricing page, Batch: 2.5 Pro $1.25/MTok input and $7.50 output for prompts
    # > 200k (50% of $2.50 / $15). 300000 x 1.25 = 375000; 1000 x 7.50 = 7500
    # -> 382500 -> $0.3825
    check(
        TokenUsage(input=300000, output=1000),
        "gemini-2.5-pro",
        "google",
        "0.3825",
        processing="batch",
        context_tier="above_200k",
    )


def test_openai_flex_o3() -> None:
    # OpenAI pricing page, Flex: o3 $1.00/MTok input, $0.25 cached input, $4.00 output.
    # 8000 x 1 = 8000; 2000 x 0.25 = 500; 5000 x 4 = 20000 -> 28500 -> $0.0285
    usage = from_openai_chat(
        {
            "prompt_tokens": 10000,
            "prompt_tokens_details": {"cached_tokens": 2000},
            "completion_tokens": 5000,
            "completion_tokens_details": {"reasoning_tokens": 4000},
        }
    )
    check(usage, "o3", "openai", "0.0285", processing="flex")


def test_openai_priority_gpt4o() -> None:
    # OpenAI pricing page, Priority: gpt-4o $4.25/MTok input, $2.125 cached input, $17.00
    # output. 86 x 4.25 = 365.5; 1920 x 2.125 = 4080; 300 x 17 = 5100 -> 9545.5
    # -> $0.0095455
    check(from_openai_chat(CHAT_CACHED), "gpt-4o", "openai", "0.0095455", processing="priority")


@pytest.mark.parametrize(
    ("model", "provider", "processing"),
    [
        ("gpt-4o", "openai", "flex"),  # OpenAI offers flex for reasoning models, not gpt-4o
        ("claude-opus-4-1", "anthropic", "batch"),  # genai-prices has no batch rate for it
        ("gemini-2.5-pro", "google", "priority"),
    ],
)
def test_variant_not_in_the_data_is_variant_unavailable(
    model: str, provider: str, processing: Processing
) -> None:
    result = price(
        TokenUsage(input=1000, output=100),
        model,
        provider=provider,
        at=AT,
        processing=processing,
        catalog=CATALOG,
    )
    assert result.status == "variant_unavailable"
    assert result.total is None
    assert not result.is_priced
    assert result.amounts == {}
    assert result.reason is not None and processing in result.reason
    assert result.price_id is not None and result.price_id.endswith(f"#{processing}")


def test_variant_before_its_start_date_is_unavailable() -> None:
    # genai-prices dates its batch rates from 2026-10-14: a batch call the day before has no
    # batch price in the data, and must not silently get the standard one.
    result = price(
        TokenUsage(input=1000),
        "gpt-5",
        provider="openai",
        at=datetime(2026, 10, 13, 23, 59, 59, tzinfo=UTC),
        processing="batch",
        catalog=CATALOG,
    )
    assert result.status == "variant_unavailable"
    assert result.total is None


# ---------------------------------------------------------------------------------------
# Unpriced and estimated
# ---------------------------------------------------------------------------------------


def test_unknown_model_is_unpriced_never_zero() -> None:
    result = price(
        TokenUsage(input=1000, output=100),
        "acme-unreleased-9",
        provider="acme",
        at=AT,
        catalog=CATALOG,
    )
    assert result.status == "unpriced"
    assert result.total is None
    assert result.total != Decimal(0)
    assert result.amounts == {}
    assert result.to_dict()["total"] is None
    reason = result.reason or ""
    # says how to add a price
    assert "acme-unreleased-9" in reason
    assert "OTEL_TOKENS_PRICES" in reason
    assert "models:" in reason and "input_mtok" in reason and "output_mtok" in reason


def test_unknown_model_without_provider_is_unpriced() -> None:
    result = price(TokenUsage(input=1), "totally-unknown-model-xyz", at=AT, catalog=CATALOG)
    assert (result.status, result.total) == ("unpriced", None)


def test_estimated_usage_is_priced_with_status_estimated() -> None:
    # OpenAI pricing page: gpt-4o-mini $0.15/MTok input, $0.60 output.
    # 1000 x 0.15 = 150; 200 x 0.60 = 120 -> 270 -> $0.00027, flagged as an estimate.
    usage = TokenUsage.from_inclusive(input_total=1000, output_total=200, source="estimated")
    result = check(usage, "gpt-4o-mini", "openai", "0.00027")
    assert result.status == "estimated"
    assert result.is_priced
    assert result.to_dict()["usage_source"] == "estimated"


def test_heuristic_estimate_is_priced_with_status_estimated() -> None:
    # Counted at 4 characters per token (no tokenizer): priced exactly like any estimate,
    # 1000 x 0.15 + 200 x 0.60 per MTok = $0.00027, and the rougher source kept.
    usage = TokenUsage.from_inclusive(
        input_total=1000, output_total=200, source="estimated_heuristic"
    )
    result = check(usage, "gpt-4o-mini", "openai", "0.00027")
    assert result.status == "estimated"
    assert result.to_dict()["usage_source"] == "estimated_heuristic"


def test_bucket_without_a_rate_is_reported_not_zeroed() -> None:
    # The user's gpt-4o entry (contract.yaml) lists no web_searches_kcount: the searches are
    # not billed at genai-prices' rate, and the call is not priced without them either (a
    # total of the text alone would look exact and be short).
    catalog = Catalog.load(PRICES / "contract.yaml")
    usage = TokenUsage(input=1000, output=100, web_search_requests=2)
    result = catalog.price(usage, "gpt-4o", provider="openai", at=AT)
    assert (result.status, result.total, dict(result.amounts)) == ("unpriced", None, {})
    assert result.unpriced_buckets == ("web_search",)
    assert "web_search" in (result.reason or "")
    assert result.price_id == "user:openai/gpt-4o"
    only_searches = catalog.price(
        TokenUsage(web_search_requests=2), "gpt-4o", provider="openai", at=AT
    )
    assert (only_searches.status, only_searches.total) == ("unpriced", None)


# ---------------------------------------------------------------------------------------
# genai-prices' own dated price change: o3's price cut of 2025-06-10
# ---------------------------------------------------------------------------------------

O3_CUT = datetime(2025, 6, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("at", "expected", "price_id"),
    [
        # OpenAI cut o3 by 80% on 10 June 2025: $10/$40 per MTok before, $2/$8 from then.
        # before: 1000 x 10 + 1000 x 40 = 50000 -> $0.05; after: 2000 + 8000 -> $0.01
        (O3_CUT, "0.01", "genai-prices:openai/o3@2025-06-10"),
        (O3_CUT - timedelta(microseconds=1), "0.05", "genai-prices:openai/o3"),
        # the constraint is a UTC date: 01:00 in Berlin on the 10th is still the 9th in UTC
        (
            datetime(2025, 6, 10, 1, 0, tzinfo=timezone(timedelta(hours=2))),
            "0.05",
            "genai-prices:openai/o3",
        ),
        # and 20:00 in New York on the 9th is already the 10th in UTC
        (
            datetime(2025, 6, 9, 20, 0, tzinfo=timezone(timedelta(hours=-4))),
            "0.01",
            "genai-prices:openai/o3@2025-06-10",
        ),
        (datetime(2025, 6, 10), "0.01", "genai-prices:openai/o3@2025-06-10"),  # naive = UTC
    ],
)
def test_genai_prices_dated_change_o3(at: datetime, expected: str, price_id: str) -> None:
    result = check(TokenUsage(input=1000, output=1000), "o3", "openai", expected, at=at)
    assert result.price_id == price_id


@pytest.mark.parametrize(
    ("hour", "expected", "since"),
    [
        # genai-prices data for deepseek-v4-pro: $0.66/MTok input, $1.98 output from
        # 2026-08-17, and $1.32 / $3.96 daily from 01:00 to 04:00 UTC (end excluded).
        # 1M in + 1M out: 0.66 + 1.98 = $2.64; in the window 1.32 + 3.96 = $5.28
        (0, "2.64", "@2026-08-17"),
        (1, "5.28", "@daily-01:00:00+00:00-04:00:00+00:00"),
        (3, "5.28", "@daily-01:00:00+00:00-04:00:00+00:00"),
        (4, "2.64", "@2026-08-17"),
    ],
)
def test_genai_prices_time_of_day_prices(hour: int, expected: str, since: str) -> None:
    at = datetime(2026, 11, 1, hour, tzinfo=UTC)
    usage = TokenUsage(input=1_000_000, output=1_000_000)
    result = check(usage, "deepseek-v4-pro", "deepseek", expected, at=at)
    assert result.price_id == f"genai-prices:deepseek/deepseek-v4-pro{since}"


@pytest.mark.parametrize(
    ("provider", "model", "price_id"),
    [
        # gen_ai.provider.name values of the semantic conventions -> genai-prices providers
        ("gcp.gemini", "gemini-2.5-flash", "genai-prices:google/gemini-2.5-flash"),
        ("gcp.vertex_ai", "gemini-2.5-flash", "genai-prices:google/gemini-2.5-flash"),
        ("azure.ai.openai", "gpt-4o", "genai-prices:azure/gpt-4o"),
        ("mistral_ai", "mistral-large-latest", "genai-prices:mistral/mistral-large"),
        ("x_ai", "grok-4", "genai-prices:x-ai/grok-4-0709"),
        ("OpenAI", "GPT-4o", "genai-prices:openai/gpt-4o"),
    ],
)
def test_semconv_provider_names_map_to_genai_prices(
    provider: str, model: str, price_id: str
) -> None:
    result = price(TokenUsage(input=1000), model, provider=provider, at=AT, catalog=CATALOG)
    assert result.status == "priced"
    assert result.price_id == price_id
    assert result.provider == provider  # reported as given


# ---------------------------------------------------------------------------------------
# The user price file: precedence, effective instants, FX, tiers
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def contract() -> Catalog:
    return Catalog.load(PRICES / "contract.yaml")


def test_user_exact_model_beats_pattern_and_catalog(contract: Catalog) -> None:
    # contract.yaml models[0]: gpt-4o $2.00 input, $8.00 output:
    # 1000 x 2 + 300 x 8 = 4400 -> $0.0044
    usage = TokenUsage(input=1000, output=300)
    result = contract.price(usage, "gpt-4o", provider="openai", at=AT)
    assert result.status == "priced"
    assert result.total == Decimal("0.0044")
    assert result.price_id == "user:openai/gpt-4o"
    # It has no cache_read price: the 1920 cached tokens are neither billed at the input rate
    # nor at genai-prices' $1.25 (an entry replaces the catalog's whole): unpriced.
    cached = contract.price(from_openai_chat(CHAT_CACHED), "gpt-4o", provider="openai", at=AT)
    assert (cached.status, cached.total, cached.unpriced_buckets) == (
        "unpriced",
        None,
        ("cache_read",),
    )
    assert "cache_read_mtok" in (cached.reason or "")


def test_user_pattern_beats_catalog(contract: Catalog) -> None:
    # contract.yaml models[1]: 'gpt-4o*' $9/$9: 1000 x 9 + 100 x 9 = 9900 -> $0.0099
    # (gpt-4o-search-preview is a model of its own, not a dated snapshot of gpt-4o)
    result = contract.price(
        TokenUsage(input=1000, output=100), "gpt-4o-search-preview", provider="openai", at=AT
    )
    assert result.total == Decimal("0.0099")
    assert result.price_id == "user:openai/pattern:gpt-4o*"


def test_user_first_matching_pattern_in_file_order_wins(contract: Catalog) -> None:
    # gpt-4o-mini matches models[1] 'gpt-4o*' and models[2] 'gpt-4o-mini*': models[1] wins.
    result = contract.price(TokenUsage(input=1000), "gpt-4o-mini", provider="openai", at=AT)
    assert result.total == Decimal("0.009")
    assert result.price_id == "user:openai/pattern:gpt-4o*"
    # Without the provider, the provider is genai-prices' (openai), as a call would name it:
    # models[1] (provider: openai) still applies.
    result = contract.price(TokenUsage(input=1000), "gpt-4o-mini", at=AT)
    assert result.total == Decimal("0.009")
    assert result.price_id == "user:openai/pattern:gpt-4o*"
    # A model genai-prices does not know has no provider to infer: models[2] applies.
    result = contract.price(TokenUsage(input=1000), "gpt-4o-mini-selfhosted", at=AT)
    assert result.price_id == "user:*/pattern:gpt-4o-mini*"


def test_user_file_falls_back_to_catalog(contract: Catalog) -> None:
    # OpenAI pricing page: gpt-4.1 $2.00/MTok input, $0.50 cached, $8.00 output; no entry
    # or discount in contract.yaml applies. 1000 x 2 + 100 x 8 = 2800 -> $0.0028
    result = contract.price(TokenUsage(input=1000, output=100), "gpt-4.1", provider="openai", at=AT)
    assert result.total == Decimal("0.0028")
    assert result.price_id == "genai-prices:openai/gpt-4.1"
    assert result.catalog_version == contract.version


def test_user_entry_variant_and_missing_variant(contract: Catalog) -> None:
    # contract.yaml models[0] batch: $1.00 input, $4.00 output. 1000 x 1 + 100 x 4 -> $0.0014
    usage = TokenUsage(input=1000, output=100)
    batch = contract.price(usage, "gpt-4o", provider="openai", at=AT, processing="batch")
    assert batch.total == Decimal("0.0014")
    assert batch.price_id == "user:openai/gpt-4o#batch"
    # The entry has no priority variant: genai-prices' priority rate must not leak in.
    prio = contract.price(usage, "gpt-4o", provider="openai", at=AT, processing="priority")
    assert prio.status == "variant_unavailable"
    assert prio.total is None
    assert "models[0]" in (prio.reason or "") and "variants" in (prio.reason or "")


def test_discount_exact_beats_pattern_beats_provider(contract: Catalog) -> None:
    # Anthropic pricing page: Haiku 4.5 $1/MTok input, $5 output; Sonnet 4.5 $3 / $15.
    usage = TokenUsage(input=1000, output=1000)  # Haiku list: 1000 + 5000 -> $0.006
    exact = contract.price(usage, "claude-haiku-4-5", provider="anthropic", at=AT)
    assert exact.total == Decimal("0.0042")  # 30% off (discounts[2], exact model)
    assert exact.price_id == "genai-prices:anthropic/claude-haiku-4-5~discount2:30%"
    # Before discounts[2] takes effect (2026-06-01), the pattern's 20% applies.
    earlier = contract.price(
        usage, "claude-haiku-4-5", provider="anthropic", at=datetime(2026, 5, 31, tzinfo=UTC)
    )
    assert earlier.total == Decimal("0.0048")
    assert earlier.price_id is not None and earlier.price_id.endswith("~discount1:20%")
    # Sonnet 4.5: only the provider-wide 10%: (3000 + 15000) x 0.9 -> $0.0162
    sonnet = contract.price(usage, "claude-sonnet-4-5", provider="anthropic", at=AT)
    assert sonnet.total == Decimal("0.0162")
    assert sonnet.price_id is not None and sonnet.price_id.endswith("~discount0:10%")


def test_discount_applies_to_tiered_rates(contract: Catalog) -> None:
    # Anthropic long context for Sonnet 4.5 (> 200K): $6 input, $22.50 output; less 10%:
    # 250000 x 6 x 0.9 = 1350000; 1000 x 22.50 x 0.9 = 20250 -> 1370250 -> $1.37025
    result = contract.price(
        TokenUsage(input=250000, output=1000), "claude-sonnet-4-5", provider="anthropic", at=AT
    )
    assert result.total == Decimal("1.37025")
    assert result.context_tier == "above_200k"


@pytest.mark.parametrize(
    ("at", "expected", "since"),
    [
        # models[4] takes effect at 2026-03-01T09:00:00+01:00 = 2026-03-01T08:00:00Z.
        # new: 1000 x 0.25 + 1000 x 0.125 + 1000 x 1.00 = 1375 -> $0.001375
        # old: 1000 x 0.30 + 1000 x 0.15 + 1000 x 1.20 = 1650 -> $0.00165
        (datetime(2026, 3, 1, 8, 0, tzinfo=UTC), "0.001375", "@2026-03-01T08:00:00Z"),
        (
            datetime(2026, 3, 1, 9, 0, tzinfo=timezone(timedelta(hours=1))),
            "0.001375",
            "@2026-03-01T08:00:00Z",
        ),
        (datetime(2026, 3, 1, 7, 59, 59, 999999, tzinfo=UTC), "0.00165", ""),
        (
            datetime(2026, 3, 1, 8, 59, 59, 999999, tzinfo=timezone(timedelta(hours=1))),
            "0.00165",
            "",
        ),
        (
            datetime(2026, 2, 28, 23, 30, tzinfo=timezone(timedelta(hours=-9))),
            "0.001375",
            "@2026-03-01T08:00:00Z",
        ),  # = 2026-03-01T08:30Z
    ],
)
def test_user_effective_from_instant_with_offset(
    contract: Catalog, at: datetime, expected: str, since: str
) -> None:
    usage = TokenUsage(input=1000, cache_read=1000, output=1000)
    result = contract.price(usage, "ft:gpt-4o-mini:acme::abc123", at=at)
    assert result.total == Decimal(expected)
    assert result.price_id == f"user:*/ft:gpt-4o-mini:acme::abc123{since}"


def test_user_effective_from_date_means_midnight_utc(contract: Catalog) -> None:
    # models[5] acme-llm from 2026-01-01 (midnight UTC): $0.50 input, $1.50 output.
    # 1000 x 0.5 + 1000 x 1.5 = 2000 -> $0.002
    usage = TokenUsage(input=1000, output=1000)
    midnight = datetime(2026, 1, 1, tzinfo=UTC)
    assert contract.price(usage, "acme-llm", at=midnight).total == Decimal("0.002")
    before = contract.price(usage, "acme-llm", at=midnight - timedelta(microseconds=1))
    assert (before.status, before.total) == ("unpriced", None)
    # 00:30 in Paris on New Year's Day is still 2025 in UTC
    paris = datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    assert contract.price(usage, "acme-llm", at=paris).status == "unpriced"


def test_user_model_names_match_case_insensitively(contract: Catalog) -> None:
    result = contract.price(TokenUsage(input=1000), "ACME-LLM", at=AT)
    assert result.total == Decimal("0.0005")


def test_fx_entry_in_eur_reported_in_usd() -> None:
    # eur_contract.yaml: EUR 1.80/MTok input, EUR 5.40 output; 1 EUR = 1.0850 USD.
    # input 10000 x 1.80 = EUR 0.018 -> x 1.085 = USD 0.01953
    # output 2000 x 5.40 = EUR 0.0108 -> x 1.085 = USD 0.011718 -> total USD 0.031248
    catalog = Catalog.load(PRICES / "eur_contract.yaml")
    result = catalog.price(TokenUsage(input=10000, output=2000), "mistral-contract", at=AT)
    assert result.currency == "USD"
    assert result.total == Decimal("0.031248")
    assert dict(result.amounts) == {"input": Decimal("0.01953"), "output": Decimal("0.011718")}


def test_fx_catalog_prices_reported_in_eur() -> None:
    # OpenAI pricing page: gpt-4o $2.50/MTok input, $10 output; 1 USD = 0.92 EUR.
    # 1000 x 2.50 + 100 x 10 = 3500 -> USD 0.0035 -> EUR 0.00322
    catalog = Catalog.load(PRICES / "eur_reporting.yaml")
    result = catalog.price(TokenUsage(input=1000, output=100), "gpt-4o", provider="openai", at=AT)
    assert (result.currency, result.total) == ("EUR", Decimal("0.00322"))


def test_fx_missing_for_catalog_prices_is_unpriced_with_reason() -> None:
    catalog = Catalog.load(PRICES / "eur_reporting_no_usd.yaml")
    result = catalog.price(TokenUsage(input=1000), "gpt-4o", provider="openai", at=AT)
    assert (result.status, result.total) == ("unpriced", None)
    assert "fx" in (result.reason or "") and "USD" in (result.reason or "")
    # the file's own EUR entry needs no FX: 1000 x 0.40 -> EUR 0.0004
    own = catalog.price(TokenUsage(input=1000), "eu-hosted-llm", at=AT)
    assert (own.currency, own.total) == ("EUR", Decimal("0.0004"))


@pytest.mark.parametrize(
    ("usage", "expected", "tier"),
    [
        # tiered.yaml acme-long: input $1 / $2 above 100k / $3 above 500k (cliffs on the
        # inclusive input total), cache read $0.10 flat, output $4 / $6 above 100k.
        # 100000 x 1 + 1000 x 4 = 104000 -> $0.104
        (TokenUsage(input=100000, output=1000), "0.104", "base"),
        # 100001 x 2 + 1000 x 6 = 206002 -> $0.206002
        (TokenUsage(input=100001, output=1000), "0.206002", "above_100k"),
        # cache counts toward the total: 1 x 2 + 100000 x 0.10 + 1000 x 6 = 16002 -> $0.016002
        (TokenUsage(input=1, cache_read=100000, output=1000), "0.016002", "above_100k"),
        # 500001 x 3 + 1000 x 6 = 1506003 -> $1.506003
        (TokenUsage(input=500001, output=1000), "1.506003", "above_500k"),
    ],
)
def test_tiered_user_prices(usage: TokenUsage, expected: str, tier: str) -> None:
    catalog = Catalog.load(PRICES / "tiered.yaml")
    result = catalog.price(usage, "acme-long", at=AT)
    assert result.total == Decimal(expected)
    assert result.context_tier == tier


def test_unquoted_decimals_in_the_file_are_exact() -> None:
    # 0.0416666666666666667 has more digits than a float holds; 1000000 tokens cost exactly it.
    catalog = Catalog.load(PRICES / "exact_decimals.yaml")
    result = catalog.price(TokenUsage(input=1_000_000), "thirds-llm", at=AT)
    assert result.total == Decimal("0.0416666666666666667")


# ---------------------------------------------------------------------------------------
# Catalog version and price ids
# ---------------------------------------------------------------------------------------


def test_catalog_version_names_genai_prices_and_hashes_the_user_file(tmp_path: Path) -> None:
    gp_version = dist_version("genai-prices")
    assert Catalog().version == Catalog(corrections=False).version == f"genai-prices@{gp_version}"
    text = (PRICES / "contract.yaml").read_text()
    a = tmp_path / "a.yaml"
    a.write_text(text)
    b = tmp_path / "b.yaml"
    b.write_text(text)  # same content, other path: same version
    c = tmp_path / "c.yaml"
    c.write_text(text + "# a comment is a change too\n")
    va, vb, vc = (Catalog.load(p).version for p in (a, b, c))
    assert va.startswith(f"genai-prices@{gp_version}+user.sha256:")
    assert va == vb
    assert va != vc
    result = Catalog.load(c).price(TokenUsage(input=1), "gpt-4.1", provider="openai", at=AT)
    assert result.catalog_version == vc


def test_price_id_is_stable_and_names_the_entry(contract: Catalog) -> None:
    usage = TokenUsage(input=10, output=10)
    ids = {
        Catalog().price(usage, "gpt-4o", provider="openai", at=AT).price_id,
        Catalog().price(TokenUsage(input=99), "gpt-4o", provider="openai", at=AT).price_id,
        price(usage, "gpt-4o", provider="openai", at=AT, catalog=CATALOG).price_id,
    }
    assert ids == {"genai-prices:openai/gpt-4o"}
    again = Catalog.load(PRICES / "contract.yaml")
    for model in ("gpt-4o", "gpt-4o-mini", "claude-haiku-4-5"):
        provider = "anthropic" if model.startswith("claude") else "openai"
        first = contract.price(usage, model, provider=provider, at=AT).price_id
        assert first == again.price(usage, model, provider=provider, at=AT).price_id
    # a provider name from the semantic conventions maps to the genai-prices provider
    gemini = price(usage, "gemini-2.5-flash", provider="gcp.gemini", at=AT, catalog=CATALOG)
    assert gemini.price_id == "genai-prices:google/gemini-2.5-flash"


# ---------------------------------------------------------------------------------------
# Decimal exactness
# ---------------------------------------------------------------------------------------


def _assert_no_float(value: Any) -> None:
    assert not isinstance(value, float), value
    if isinstance(value, dict):
        for k, v in value.items():
            _assert_no_float(k)
            _assert_no_float(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _assert_no_float(v)


def test_no_float_anywhere(contract: Catalog) -> None:
    full = TokenUsage(input=12345, cache_read=6789, cache_write_5m=11, output=987, reasoning=3)
    no_cache = TokenUsage(input=12345, output=987, reasoning=3)
    for model, provider, catalog, usage in [
        ("claude-sonnet-4-5", "anthropic", CATALOG, full),
        ("gemini-2.5-pro", "google", CATALOG, replace(full, cache_write_5m=0)),
        ("claude-haiku-4-5", "anthropic", contract, full),
        ("mistral-contract", None, Catalog.load(PRICES / "eur_contract.yaml"), no_cache),
    ]:
        result = catalog.price(usage, model, provider=provider, at=AT)
        assert result.is_priced, result.reason
        assert isinstance(result.total, Decimal)
        assert all(isinstance(v, Decimal) for v in result.amounts.values())
        as_dict = result.to_dict()
        _assert_no_float(as_dict)
        assert isinstance(as_dict["total"], str)
        assert Decimal(as_dict["total"]) == result.total  # the string loses nothing
        assert "E" not in as_dict["total"] and "e" not in as_dict["total"]


def test_tiny_and_huge_amounts_are_exact() -> None:
    # Gemini API pricing page: 1.5 Flash $0.075/MTok input (<= 128k), $0.30 output.
    small = price(
        TokenUsage(output=1), "gemini-1.5-flash", provider="google", at=AT, catalog=CATALOG
    )
    assert small.total == Decimal("0.0000003")
    # Anthropic: Opus 4.1 $75/MTok output; a billion tokens over many calls is $75,000 exact.
    many = sum((TokenUsage(output=1_000_000) for _ in range(1000)), TokenUsage())
    big = price(many, "claude-opus-4-1", provider="anthropic", at=AT, catalog=CATALOG)
    assert big.total == Decimal(75000)


def test_default_catalog_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    previous = default_catalog()
    monkeypatch.setenv("OTEL_TOKENS_PRICES", str(PRICES / "tiered.yaml"))
    set_default_catalog(None)  # reload from the environment on next use
    try:
        # tiered.yaml acme-long: $1.00/MTok input -> 1000 tokens cost $0.001
        result = price(TokenUsage(input=1000), "acme-long", at=AT)
        assert result.total == Decimal("0.001")
        assert "+user.sha256:" in result.catalog_version
    finally:
        set_default_catalog(previous)


# ---------------------------------------------------------------------------------------
# Broken price files: PriceFileError naming the file and the place
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fragments"),
    [
        ("invalid_yaml.yaml", ["not valid YAML", "line 3"]),
        ("unknown_key.yaml", ["models[0]", "unknown key(s) price", "prices"]),
        ("negative_price.yaml", ["models[0].prices.input_mtok", "non-negative", "-2.5"]),
        ("nan_price.yaml", ["models[0].prices.input_mtok", "finite"]),
        ("naive_instant.yaml", ["models[0].effective_from", "no UTC offset", "Z"]),
        (
            "unknown_price_key.yaml",
            ["models[0].prices.output_tokens", "unknown price key", "output_mtok"],
        ),
        ("bad_currency.yaml", ["at currency", "ISO 4217", "'usd'"]),
        ("not_utf8.yaml", ["not UTF-8"]),
        ("model_and_pattern.yaml", ["models[0]", "not both"]),
        ("missing_fx.yaml", ["models[0].currency", "no FX rate for EUR", "fx:"]),
    ],
)
def test_broken_price_file(name: str, fragments: list[str]) -> None:
    path = BROKEN / name
    with pytest.raises(PriceFileError) as info:
        load_user_prices(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    with pytest.raises(PriceFileError):
        Catalog.load(path)


def test_missing_price_file() -> None:
    with pytest.raises(PriceFileError, match="cannot read price file"):
        load_user_prices(BROKEN / "does-not-exist.yaml")


X = "models:\n  - model: x\n"  # the start of a one-entry file


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("models:\n  - model: x\n    prices: {input_mtok: .inf}\n", ["input_mtok", "finite"]),
        ("models:\n  - model: x\n    prices: {input_mtok: 'NaN'}\n", ["input_mtok", "finite"]),
        ("models:\n  - model: x\n    prices: {input_mtok: '-0.5'}\n", ["non-negative"]),
        ("models:\n  - model: x\n    prices: {input_mtok: true}\n", ["input_mtok", "number"]),
        ("models:\n  - model: x\n    prices: {input_mtok: 'cheap'}\n", ["decimal number"]),
        ("models:\n  - model: x\n    prices: {}\n", ["models[0].prices", "price keys"]),
        ("models:\n  - model: x\n", ["models[0].prices"]),
        ("models:\n  - prices: {input_mtok: 1}\n", ["models[0]", "'model'", "'pattern'"]),
        (
            "models:\n  - model: x\n    currency: EURO\n    prices: {input_mtok: 1}\n",
            ["models[0].currency", "ISO 4217"],
        ),
        ("fx: {eur: 1.1}\n", ["fx.eur", "ISO 4217"]),
        ("fx: {EUR: 0}\n", ["fx.EUR", "positive"]),
        (
            X + "    effective_from: 'next tuesday'\n    prices: {input_mtok: 1}\n",
            ["models[0].effective_from", "ISO 8601"],
        ),
        (
            "models:\n  - model: x\n    effective_from: 2026-03-01 09:00:00\n"
            "    prices: {input_mtok: 1}\n",
            ["models[0].effective_from", "no UTC offset"],
        ),
        (
            X + "    prices: {input_mtok: 1}\n    variants: {turbo: {input_mtok: 1}}\n",
            ["models[0].variants.turbo", "batch, flex, priority"],
        ),
        (
            X + "    prices:\n      input_mtok: {tiers: [{start: 10, price: 1}]}\n",
            ["models[0].prices.input_mtok", "'base'"],
        ),
        (
            X + "    prices:\n      input_mtok: {base: 1, tiers: [{start: -5, price: 2}]}\n",
            ["models[0].prices.input_mtok.tiers[0].start", "non-negative integer"],
        ),
        (
            X + "    prices:\n      input_mtok: {base: 1, tiers: [{from: 5, price: 2}]}\n",
            ["tiers[0]", "'start' and 'price'"],
        ),
        ("discounts:\n  - provider: openai\n    percent: 120\n", ["discounts[0].percent", "100"]),
        ("discounts:\n  - provider: openai\n", ["discounts[0]", "'percent'"]),
        ("discounts:\n  - percent: 5\n", ["discounts[0]", "provider"]),
        ("discounts:\n  - model: a\n    pattern: 'a*'\n    percent: 5\n", ["not both"]),
        ("version: 2\n", ["version", "unsupported"]),
        ("- just a list\n", ["must be a mapping"]),
        ("models: {model: x}\n", ["models", "must be a list"]),
        ("models:\n  - model: ''\n    prices: {input_mtok: 1}\n", ["models[0].model", "non-empty"]),
    ],
)
def test_broken_inline_price_files(text: str, fragments: list[str]) -> None:
    with pytest.raises(PriceFileError) as info:
        parse_user_prices(text.encode(), "inline.yaml")
    message = str(info.value)
    assert message.startswith("inline.yaml"), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_empty_price_file_is_valid() -> None:
    catalog = Catalog(parse_user_prices(b"", "empty.yaml"))
    result = catalog.price(TokenUsage(input=1000), "gpt-4.1", provider="openai", at=AT)
    # OpenAI pricing page: gpt-4.1 $2.00/MTok input -> $0.002
    assert result.total == Decimal("0.002")


# ---------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------

_count = st.integers(min_value=0, max_value=50_000_000)
usages = st.builds(
    TokenUsage,
    input=_count,
    input_audio=_count,
    input_image=_count,
    cache_read=_count,
    cache_write_5m=_count,
    cache_write_1h=_count,
    output=_count,
    output_audio=_count,
    output_image=_count,
    reasoning=_count,
    web_search_requests=st.integers(min_value=0, max_value=10_000),
    source=st.sampled_from(["provider", "estimated", "estimated_heuristic"]),
)
# Models without tiered prices, from three providers; and a user-file model.
FLAT_MODELS = [
    ("gpt-4o", "openai"),
    ("o3", "openai"),
    ("claude-haiku-4-5", "anthropic"),
    ("gemini-2.5-flash", "google"),
]
TIERED_MODELS = [("claude-sonnet-4-5", "anthropic"), ("gemini-2.5-pro", "google")]


@settings(max_examples=150, deadline=None)
@given(usage=usages, which=st.sampled_from(FLAT_MODELS + TIERED_MODELS))
def test_property_total_is_the_sum_of_amounts(usage: TokenUsage, which: tuple[str, str]) -> None:
    model, provider = which
    result = price(usage, model, provider=provider, at=AT, catalog=CATALOG)
    billed = {b for b, _ in usage.buckets()}
    resolved = CATALOG.resolve(model, provider=provider, at=AT)
    assert isinstance(resolved, Price)
    without_rate = {b for b in billed if resolved.rate_key(b) is None}
    if without_rate:  # fail closed: no total, every bucket without a rate named
        assert (result.status, result.total) == ("unpriced", None)
        assert set(result.unpriced_buckets) == without_rate
        return
    assert result.status == ("estimated" if usage.is_estimated else "priced")
    assert result.total == sum(result.amounts.values(), Decimal(0))
    assert set(result.amounts) == billed
    assert result.unpriced_buckets == ()


@settings(max_examples=150, deadline=None)
@given(a=usages, b=usages, which=st.sampled_from(FLAT_MODELS))
def test_property_pricing_is_additive_for_flat_models(
    a: TokenUsage, b: TokenUsage, which: tuple[str, str]
) -> None:
    model, provider = which

    def total(u: TokenUsage) -> Decimal | None:
        return price(u, model, provider=provider, at=AT, catalog=CATALOG).total

    ta, tb, tab = total(a), total(b), total(a + b)
    if ta is None or tb is None:  # a bucket without a rate stays unpriced in the sum
        assert tab is None
    else:
        assert ta + tb == tab


@settings(max_examples=100, deadline=None)
@given(
    a=usages,
    b=usages,
    percent=st.decimals(min_value=0, max_value=100, places=2, allow_nan=False),
)
def test_property_discounts_scale_exactly(a: TokenUsage, b: TokenUsage, percent: Decimal) -> None:
    catalog = _user_catalog(f"discounts:\n  - provider: openai\n    percent: '{percent}'\n")
    full = price(a + b, "gpt-4o", provider="openai", at=AT, catalog=CATALOG).total
    off = catalog.price(a + b, "gpt-4o", provider="openai", at=AT).total
    assert (full is None) == (off is None)
    if full is None or off is None:
        return
    with localcontext(Context(prec=100, traps=[Inexact])):
        assert off == full * (100 - percent) / 100


# Models whose prices the hand-computed tests above check, plus dated and tiered ones.
CROSS_CHECK_MODELS = [
    ("gpt-4o", "openai"),
    ("gpt-4o-mini", "openai"),
    ("gpt-4.1", "openai"),
    ("gpt-5", "openai"),
    ("o3", "openai"),
    ("o4-mini", "openai"),
    ("gpt-5.6-cyber", "openai"),
    ("gpt-5.6-terra", "openai"),
    ("claude-sonnet-4-5", "anthropic"),
    ("claude-opus-4-1", "anthropic"),
    ("claude-haiku-4-5", "anthropic"),
    ("gemini-2.5-pro", "google"),
    ("gemini-2.5-flash", "google"),
    ("gemini-1.5-flash", "google"),
    ("deepseek-v4-pro", "deepseek"),
]
text_usages = st.builds(
    TokenUsage,
    input=st.integers(0, 400_000),
    cache_read=st.integers(0, 300_000),
    cache_write_5m=st.integers(0, 100_000),
    cache_write_1h=st.integers(0, 100_000),
    output=st.integers(0, 100_000),
    reasoning=st.integers(0, 100_000),
    web_search_requests=st.integers(0, 5),
)


@settings(max_examples=300, deadline=None)
@given(
    usage=text_usages,
    which=st.sampled_from(CROSS_CHECK_MODELS),
    processing=st.sampled_from(["standard", "batch", "flex", "priority"]),
    at=st.datetimes(
        min_value=datetime(2025, 1, 1),
        max_value=datetime(2027, 12, 31),
        timezones=st.just(UTC),
    ),
)
def test_property_engine_agrees_with_genai_prices(
    usage: TokenUsage, which: tuple[str, str], processing: Processing, at: datetime
) -> None:
    model, provider = which
    result = price(usage, model, provider=provider, at=at, processing=processing, catalog=CATALOG)
    if result.status == "variant_unavailable":
        return
    if result.status == "unpriced":
        # Where genai-prices bills a bucket at its parent's rate (a 1-hour cache write as
        # input), we have no rate for it: every bucket named has none of its own.
        resolved = CATALOG.resolve(model, provider=provider, at=at, processing=processing)
        assert isinstance(resolved, Price)
        assert result.unpriced_buckets
        assert all(resolved.rate_key(b) is None for b in result.unpriced_buckets)
        return
    assert result.total == _genai_prices_total(usage, model, provider, at, processing)


def test_catalog_version_names_updated_price_data() -> None:
    """Opted-in updates (genai-prices' UpdatePrices) show in the catalog version, and prices
    resolved from the bundled data are not reused for the updated data."""
    from genai_prices import data_snapshot

    from otel_tokens.pricing import Catalog as _Catalog

    catalog = _Catalog()
    bundled = catalog.version
    updated = data_snapshot.DataSnapshot(
        providers=data_snapshot.get_snapshot().providers, from_auto_update=True
    )
    data_snapshot.set_custom_snapshot(updated)
    try:
        result = catalog.price(TokenUsage(input=1000), "gpt-4o", provider="openai")
        assert result.catalog_version.startswith(bundled + "+update.")
        assert catalog.version == result.catalog_version
    finally:
        data_snapshot.set_custom_snapshot(None)
    assert catalog.version == bundled


# ---------------------------------------------------------------------------------------
# Fail closed, bucket by bucket: a bucket with tokens and no rate of its own
# ---------------------------------------------------------------------------------------


def test_audio_tokens_without_an_audio_rate_are_unpriced_not_text_priced() -> None:
    # genai-prices gives gpt-4o-audio-preview only text rates ($2.50 / $10 per MTok), while
    # OpenAI bills its audio tokens at $40 in / $80 out: pricing the audio at the text rate
    # would look exact and be 16x short.
    usage = from_openai_chat(
        {
            "prompt_tokens": 1000,
            "completion_tokens": 700,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 600},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 500},
        }
    )
    result = price(usage, "gpt-4o-audio-preview", provider="openai", at=AT, catalog=CATALOG)
    assert (result.status, result.total, dict(result.amounts)) == ("unpriced", None, {})
    assert result.unpriced_buckets == ("input_audio", "output_audio")
    assert "input_audio_mtok" in (result.reason or "")
    assert "output_audio_mtok" in (result.reason or "")
    # The text alone is still priced: 400 x 2.50 + 200 x 10 = 3000 -> $0.003
    text = TokenUsage(input=usage.input, output=usage.output)
    check(text, "gpt-4o-audio-preview", "openai", "0.003")


def test_audio_tokens_with_audio_rates_are_priced_at_them() -> None:
    # genai-prices: gpt-4o-realtime-preview $5 text in, $40 audio in, $20 text out, $80 audio
    # out per MTok: 400 x 5 + 600 x 40 + 200 x 20 + 500 x 80 = 2000 + 24000 + 4000 + 40000
    # = 70000 -> $0.07
    usage = TokenUsage(input=400, input_audio=600, output=200, output_audio=500)
    check(
        usage,
        "gpt-4o-realtime-preview",
        "openai",
        "0.07",
        amounts={
            "input": "0.002",
            "input_audio": "0.024",
            "output": "0.004",
            "output_audio": "0.04",
        },
    )


@pytest.mark.parametrize(
    ("usage", "model", "provider", "missing"),
    [
        # genai-prices' aws entry has a (5-minute) cache write rate but none for 1-hour writes,
        # which Anthropic bills at 2x input, not at the 1.25x of a 5-minute write.
        (
            TokenUsage(input=10, cache_write_1h=100, output=5),
            "global.anthropic.claude-sonnet-4-20250514-v1:0",
            "aws.bedrock",
            ("cache_write_1h",),
        ),
        # gpt-4o has no cache write rate at all: not billed at the input rate.
        (TokenUsage(input=10, cache_write_5m=100), "gpt-4o", "openai", ("cache_write_5m",)),
        # Image input and output without an image rate.
        (
            TokenUsage(input=10, input_image=258, output_image=1290),
            "gpt-4o",
            "openai",
            ("input_image", "output_image"),
        ),
    ],
)
def test_every_bucket_without_its_own_rate_fails_closed(
    usage: TokenUsage, model: str, provider: str, missing: tuple[str, ...]
) -> None:
    result = price(usage, model, provider=provider, at=AT, catalog=CATALOG)
    assert (result.status, result.total) == ("unpriced", None), result
    assert result.unpriced_buckets == missing
    assert result.price_id is not None  # which entry lacks the rate


def test_a_price_file_rate_prices_the_bucket_the_catalog_lacks() -> None:
    # The fix the message suggests: OpenAI's price page lists gpt-4o-audio-preview audio
    # at $40 / $80 per MTok. 600 x 40 + 500 x 80 = 64000 -> $0.064; + text 0.003 = $0.067
    catalog = _user_catalog(
        "models:\n  - provider: openai\n    model: gpt-4o-audio-preview\n"
        "    prices: {input_mtok: '2.50', output_mtok: '10', input_audio_mtok: '40',"
        " output_audio_mtok: '80'}\n"
    )
    usage = TokenUsage(input=400, input_audio=600, output=200, output_audio=500)
    result = catalog.price(usage, "gpt-4o-audio-preview", provider="openai", at=AT)
    assert (result.status, result.total) == ("priced", Decimal("0.067"))


# ---------------------------------------------------------------------------------------
# Contracts apply to snapshots; calls without a provider; entries that match nothing
# ---------------------------------------------------------------------------------------

SNAPSHOT_CONTRACT = """
models:
  - provider: openai
    model: gpt-4o
    prices: {input_mtok: '2.00', cache_read_mtok: '1.00', output_mtok: '8.00'}
  - provider: openai
    model: gpt-4o-2024-11-20
    prices: {input_mtok: '1.50', output_mtok: '6.00'}
"""


@pytest.mark.parametrize(
    ("model", "price_id", "expected"),
    [
        # The README's example: an entry for gpt-4o prices the snapshot OpenAI serves for it.
        # 1000 x 2 + 100 x 8 = 2800 -> $0.0028
        ("gpt-4o-2024-08-06", "user:openai/gpt-4o", "0.0028"),
        # A snapshot genai-prices does not know yet: one of gpt-4o by its name.
        ("gpt-4o-2099-01-01", "user:openai/gpt-4o", "0.0028"),
        # An exact entry for the snapshot is more specific: 1000 x 1.5 + 100 x 6 -> $0.0021
        ("gpt-4o-2024-11-20", "user:openai/gpt-4o-2024-11-20", "0.0021"),
        # genai-prices prices gpt-4o-2024-05-13 as a model of its own ($5 / $15), not as
        # gpt-4o: 1000 x 5 + 100 x 15 = 6500 -> $0.0065
        ("gpt-4o-2024-05-13", "genai-prices:openai/gpt-4o-2024-05-13", "0.0065"),
        # Not a snapshot: a model of its own ($0.15 / $0.60): 150 + 60 -> $0.00021
        ("gpt-4o-mini", "genai-prices:openai/gpt-4o-mini", "0.00021"),
    ],
)
def test_an_entry_for_a_model_applies_to_its_dated_snapshots(
    model: str, price_id: str, expected: str
) -> None:
    catalog = _user_catalog(SNAPSHOT_CONTRACT)
    result = catalog.price(TokenUsage(input=1000, output=100), model, provider="openai", at=AT)
    assert (result.price_id, result.total) == (price_id, Decimal(expected))


def test_genai_prices_names_the_model_of_a_snapshot() -> None:
    # claude-sonnet-4-20250514 is genai-prices' claude-sonnet-4-0: the entry applies.
    catalog = _user_catalog(
        "models:\n  - provider: anthropic\n    model: claude-sonnet-4-0\n"
        "    prices: {input_mtok: '2', output_mtok: '10'}\n"
    )
    result = catalog.price(
        TokenUsage(input=1000), "claude-sonnet-4-20250514", provider="anthropic", at=AT
    )
    assert (result.price_id, result.total) == ("user:anthropic/claude-sonnet-4-0", Decimal("0.002"))


def test_without_a_provider_provider_scoped_entries_apply_as_for_calls() -> None:
    catalog = _user_catalog(
        SNAPSHOT_CONTRACT + "discounts:\n  - provider: anthropic\n    percent: 50\n"
    )
    # What a call would be priced at (its provider is always known) ...
    with_provider = catalog.price(TokenUsage(input=1000), "gpt-4o", provider="openai", at=AT)
    # ... is what the same usage without a provider is priced at.
    without = catalog.price(TokenUsage(input=1000), "gpt-4o", at=AT)
    assert without.price_id == with_provider.price_id == "user:openai/gpt-4o"
    assert without.total == with_provider.total == Decimal("0.002")
    haiku = catalog.price(TokenUsage(input=1000), "claude-haiku-4-5", at=AT)
    assert haiku.price_id == "genai-prices:anthropic/claude-haiku-4-5~discount0:50%"


def test_cli_price_without_provider_uses_the_contract(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from otel_tokens.cli import main

    prices = tmp_path / "prices.yaml"
    prices.write_text(SNAPSHOT_CONTRACT)
    args = ["price", "gpt-4o", "--input", "1000", "--output", "100", "--prices", str(prices)]
    assert main([*args, "--json"]) == 0
    out = capsys.readouterr().out
    assert '"price_id": "user:openai/gpt-4o"' in out
    assert '"total": "0.0028"' in out


def test_check_prices_lists_entries_that_match_no_known_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from otel_tokens.cli import main

    prices = tmp_path / "prices.yaml"
    prices.write_text(
        SNAPSHOT_CONTRACT
        + "  - provider: openai\n    model: gpt4o\n    prices: {input_mtok: 1}\n"
        + "  - pattern: 'llama-*-selfhosted'\n    prices: {input_mtok: 1}\n"
        + "  - provider: openai\n    pattern: 'gpt-4o*'\n    prices: {input_mtok: 1}\n"
        + "discounts:\n  - model: claude-hiaku-4-5\n    percent: 5\n"
    )
    assert main(["check-prices", str(prices)]) == 0
    out = capsys.readouterr().out
    assert "models[2] (model gpt4o of provider openai) matches no model" in out
    assert "models[3] (pattern llama-*-selfhosted) matches no model" in out
    assert "discounts[0] (model claude-hiaku-4-5) matches no model" in out
    assert "models[0]" not in out and "models[1]" not in out and "models[4]" not in out


# ---------------------------------------------------------------------------------------
# A call priced by the model it asked for: marked, never passed off as exact
# ---------------------------------------------------------------------------------------


def test_price_call_prices_by_the_served_model() -> None:
    # gpt-4o-mini-2024-07-18 has its own price ($0.15): the requested alias does not matter.
    result = CATALOG.price_call(
        TokenUsage(input=1_000_000), "gpt-4o-mini-2024-07-18", "gpt-4o", provider="openai", at=AT
    )
    assert (result.status, result.total, result.priced_model) == ("priced", Decimal("0.15"), None)
    assert result.model == "gpt-4o-mini-2024-07-18"


def test_an_unknown_served_model_is_priced_at_the_requested_model_and_marked() -> None:
    # gpt-4o: $2.50/MTok input.
    result = CATALOG.price_call(
        TokenUsage(input=1_000_000), "acme-router-v7", "gpt-4o", provider="openai", at=AT
    )
    assert (result.status, result.total) == ("estimated", Decimal("2.5"))
    assert (result.model, result.priced_model) == ("acme-router-v7", "gpt-4o")
    assert result.price_id == "genai-prices:openai/gpt-4o"
    assert "acme-router-v7" in (result.reason or "")
    assert result.to_dict()["priced_model"] == "gpt-4o"


def test_a_known_served_model_without_a_rate_is_not_priced_as_another() -> None:
    # gpt-4o-audio-preview is known but has no audio rate: the requested gpt-4o-realtime
    # price would be a guess, so the call stays unpriced.
    usage = TokenUsage(input=10, input_audio=100)
    result = CATALOG.price_call(
        usage, "gpt-4o-audio-preview", "gpt-4o-realtime-preview", provider="openai", at=AT
    )
    assert (result.status, result.total, result.priced_model) == ("unpriced", None, None)
    # Both unknown: unpriced, named by the served model.
    result = CATALOG.price_call(usage, "acme-a", "acme-b", provider="acme", at=AT)
    assert (result.status, result.model, result.priced_model) == ("unpriced", "acme-a", None)
