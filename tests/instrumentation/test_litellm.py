"""LiteLLM, driven for real against the bundled provider server (OpenAI and Anthropic wire
formats): one usage-carrying span per provider call, with or without our OpenAI client
instrumentation underneath, exact costs worked by hand, LiteLLM's own cost beside ours."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

# LiteLLM must not fetch its cost map over the network (set before it is imported).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

litellm = pytest.importorskip("litellm")

from otel_tokens import semconv as sc  # noqa: E402
from otel_tokens.instrumentation import LiteLLMInstrumentor, OpenAIInstrumentor  # noqa: E402
from otel_tokens.pricing import Catalog  # noqa: E402
from otel_tokens.usage import InvalidUsageError, TokenUsage, from_litellm  # noqa: E402
from otel_tokens.workflow import workflow  # noqa: E402
from otel_tokens_fakes import GeminiServer  # noqa: E402

from ._frameworks import instrumenting, only_usage_span, usage_spans  # noqa: E402

CLAUDE = "claude-3-5-haiku-20241022"
GPT = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "hello there"}]
MTOK = Decimal(1_000_000)
# claude-3-5-haiku, USD per million tokens: input, 5m cache write, 1h cache write, read, output
HAIKU = (Decimal("0.8"), Decimal("1"), Decimal("1.6"), Decimal("0.08"), Decimal("4"))
# gpt-4o-mini: input, cached input, output
MINI = (Decimal("0.15"), Decimal("0.075"), Decimal("0.6"))


def instrumented(
    telemetry: Any, *, openai_too: bool = False, catalog: Catalog | None = None
) -> Any:
    extra = (OpenAIInstrumentor(),) if openai_too else ()
    return instrumenting(telemetry, LiteLLMInstrumentor(), *extra, catalog=catalog)


def anthropic(server: Any, **kwargs: Any) -> Any:
    return litellm.completion(
        model=f"anthropic/{CLAUDE}",
        messages=MESSAGES,
        api_base=server.anthropic_base_url,
        api_key="test",
        **kwargs,
    )


def openai(server: Any, **kwargs: Any) -> Any:
    return litellm.completion(
        model=f"openai/{GPT}",
        messages=MESSAGES,
        api_base=server.openai_base_url,
        api_key="test",
        **kwargs,
    )


# --- providers LiteLLM reaches over its own HTTP code: metered from its usage ----------------
def test_anthropic_is_metered_from_litellm_usage_with_cache_reads_and_writes(
    server: Any, telemetry: Any
) -> None:
    with instrumented(telemetry):
        response = anthropic(
            server, extra_headers={"x-test-cached-tokens": "3", "x-test-cache-write-tokens": "2"}
        )
    assert response.usage.prompt_tokens == 13  # LiteLLM's inclusive count: 8 + 3 + 2
    span = only_usage_span(telemetry)
    attrs = span.attributes or {}
    assert attrs[sc.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert attrs[sc.GEN_AI_REQUEST_MODEL] == CLAUDE
    assert attrs[sc.GEN_AI_RESPONSE_MODEL] == CLAUDE
    assert attrs[sc.GEN_AI_OPERATION_NAME] == "chat"
    assert telemetry.bucket_tokens() == {
        "input": 8,
        "cache_read": 3,
        "cache_write_5m": 2,
        "output": 11,
    }
    i, w5, _, r, o = HAIKU
    cost = (8 * i + 2 * w5 + 3 * r + 11 * o) / MTOK
    assert attrs[sc.BILLING_COST_DECIMAL] == str(cost) == "0.00005264"
    assert span.parent is None  # no client span beneath: LiteLLM's own HTTP


def test_anthropic_one_hour_cache_writes_are_priced_at_their_rate(
    server: Any, telemetry: Any
) -> None:
    with instrumented(telemetry):
        anthropic(
            server, extra_headers={"x-test-cache-write-tokens": "6", "x-test-cache-write-1h": "4"}
        )
    assert telemetry.bucket_tokens() == {
        "input": 7,
        "cache_write_5m": 2,
        "cache_write_1h": 4,
        "output": 11,
    }
    i, w5, w1h, _, o = HAIKU
    cost = (7 * i + 2 * w5 + 4 * w1h + 11 * o) / MTOK
    assert only_usage_span(telemetry).attributes[sc.BILLING_COST_DECIMAL] == str(cost)


def test_anthropic_stream_is_metered_when_it_ends(server: Any, telemetry: Any) -> None:
    with instrumented(telemetry):
        stream = anthropic(server, stream=True, extra_headers={"x-test-cached-tokens": "3"})
        assert usage_spans(telemetry) == []  # nothing recorded before the stream ends
        chunks = list(stream)
    assert chunks
    assert all(getattr(c, "usage", None) is None for c in chunks)  # the user did not ask
    span = only_usage_span(telemetry)
    assert span.attributes[sc.GEN_AI_REQUEST_STREAM] is True
    assert sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK in span.attributes
    assert telemetry.bucket_tokens() == {"input": 10, "cache_read": 3, "output": 11}


def test_async_completion_and_async_stream(server: Any, telemetry: Any) -> None:
    async def run() -> None:
        await litellm.acompletion(
            model=f"anthropic/{CLAUDE}",
            messages=MESSAGES,
            api_base=server.anthropic_base_url,
            api_key="test",
        )
        stream = await litellm.acompletion(
            model=f"anthropic/{CLAUDE}",
            messages=MESSAGES,
            api_base=server.anthropic_base_url,
            api_key="test",
            stream=True,
        )
        async for _ in stream:
            pass

    with instrumented(telemetry):
        asyncio.run(run())
    assert len(usage_spans(telemetry)) == 2
    assert telemetry.bucket_tokens() == {"input": 26, "output": 22}


def test_a_failed_call_raises_as_without_us_and_records_no_usage(
    server: Any, telemetry: Any
) -> None:
    with instrumented(telemetry), pytest.raises(litellm.InternalServerError):
        anthropic(server, extra_headers={"x-test-scenario": "server_error"}, num_retries=0)
    assert usage_spans(telemetry) == []
    (span,) = [s for s in telemetry.our_spans() if s.name == f"chat {CLAUDE}"]
    assert span.attributes[sc.ERROR_TYPE] == "InternalServerError"
    assert not span.status.is_ok


@pytest.fixture(scope="module")
def gemini() -> Iterator[GeminiServer]:
    with GeminiServer() as srv:
        yield srv


def test_gemini_over_litellms_own_http_with_thoughts_and_cache(
    gemini: GeminiServer, telemetry: Any
) -> None:
    usage = {
        "promptTokenCount": 100,
        "cachedContentTokenCount": 40,
        "candidatesTokenCount": 20,
        "thoughtsTokenCount": 30,
        "totalTokenCount": 150,
    }
    with instrumented(telemetry):
        litellm.completion(
            model="gemini/gemini-2.0-flash",
            messages=MESSAGES,
            api_base=gemini.base_url,
            api_key="test",
            extra_headers={"x-test-usage": json.dumps(usage)},
        )
    span = only_usage_span(telemetry)
    assert span.attributes[sc.GEN_AI_PROVIDER_NAME] == "gcp.gemini"
    assert telemetry.bucket_tokens() == {
        "input": 60,
        "cache_read": 40,
        "output": 20,
        "reasoning": 30,
    }
    # gemini-2.0-flash: $0.10 input, $0.025 cached, $0.40 output (thoughts too) per million
    cost = (60 * Decimal("0.10") + 40 * Decimal("0.025") + 50 * Decimal("0.40")) / MTOK
    assert span.attributes[sc.BILLING_COST_DECIMAL] == str(cost) == "0.000027"


# --- OpenAI: LiteLLM calls the openai SDK; counted once whether or not we meter it ------------
def test_openai_without_the_client_instrumentation_is_metered_by_litellm(
    server: Any, telemetry: Any
) -> None:
    with instrumented(telemetry):
        response = openai(server, extra_headers={"x-test-cached-tokens": "3"})
    span = only_usage_span(telemetry)
    assert telemetry.bucket_tokens() == {"input": 7, "cache_read": 3, "output": 11}
    i, c, o = MINI
    cost = (7 * i + 3 * c + 11 * o) / MTOK
    attrs = span.attributes or {}
    assert attrs[sc.BILLING_COST_DECIMAL] == str(cost) == "0.000007875"
    assert attrs[sc.GEN_AI_USAGE_COST_SOURCE] == sc.COST_SOURCE_LOCAL
    # LiteLLM's own estimate, beside ours, never in the same total.
    reported = response._hidden_params["response_cost"]
    assert attrs[sc.BILLING_PROVIDER_COST_DECIMAL] == str(Decimal(repr(reported)))
    assert attrs[sc.BILLING_PROVIDER_COST_CURRENCY] == "USD"
    (point,) = telemetry.points(sc.METRIC_BILLING_COST_DIFFERENCE)
    assert point.count == 1
    assert point.sum == pytest.approx(float(Decimal(repr(reported)) - cost))
    assert telemetry.sum_of(sc.METRIC_BILLING_COST) == pytest.approx(float(cost))


def test_openai_with_the_client_instrumentation_is_counted_once(
    server: Any, telemetry: Any
) -> None:
    with instrumented(telemetry, openai_too=True):
        openai(server, extra_headers={"x-test-cached-tokens": "3"})
    usage_span = only_usage_span(telemetry)
    framing = [s for s in telemetry.our_spans() if s is not usage_span]
    assert len(framing) == 1
    (litellm_span,) = framing
    # The client's span (with the usage) is a child of LiteLLM's, which adds no usage.
    assert usage_span.parent is not None
    assert usage_span.parent.span_id == litellm_span.context.span_id
    assert sc.BILLING_COST_DECIMAL not in (litellm_span.attributes or {})
    assert sc.BILLING_PROVIDER_COST_DECIMAL in (litellm_span.attributes or {})
    assert telemetry.bucket_tokens() == {"input": 7, "cache_read": 3, "output": 11}
    (point,) = telemetry.points(sc.METRIC_CLIENT_OPERATION_DURATION)
    assert point.count == 1  # one call, one duration


class _BrokenCatalog(Catalog):
    def price(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("catalog is broken")


def test_a_broken_catalog_costs_the_call_neither_its_response_nor_its_tokens(
    server: Any, telemetry: Any
) -> None:
    with instrumented(telemetry, catalog=_BrokenCatalog()):
        response = openai(server)
    assert response._hidden_params["response_cost"] is not None  # the reconciliation ran
    span = only_usage_span(telemetry)
    assert sc.BILLING_COST_DECIMAL not in (span.attributes or {})
    assert telemetry.bucket_tokens() == {"input": 10, "output": 11}
    assert telemetry.points(sc.METRIC_BILLING_COST_DIFFERENCE) == []


@pytest.mark.parametrize("openai_too", [False, True])
def test_openai_stream_is_counted_once(server: Any, telemetry: Any, openai_too: bool) -> None:
    with instrumented(telemetry, openai_too=openai_too):
        list(openai(server, stream=True, stream_options={"include_usage": True}))
    only_usage_span(telemetry)
    assert telemetry.bucket_tokens() == {"input": 10, "output": 11}


def test_openai_stream_without_usage_is_estimated_not_lost(server: Any, telemetry: Any) -> None:
    with instrumented(telemetry):
        list(openai(server, stream=True))
    span = only_usage_span(telemetry)
    assert span.attributes[sc.BILLING_USAGE_SOURCE] == "estimated"
    tokens = telemetry.bucket_tokens()
    assert tokens["input"] > 0
    assert tokens["output"] > 0


@pytest.mark.parametrize("openai_too", [False, True])
def test_embedding_is_counted_once(server: Any, telemetry: Any, openai_too: bool) -> None:
    with instrumented(telemetry, openai_too=openai_too):
        response = litellm.embedding(
            model="openai/text-embedding-3-small",
            input=["hi there"],
            api_base=server.openai_base_url,
            api_key="test",
        )
    span = only_usage_span(telemetry)
    assert span.attributes[sc.GEN_AI_OPERATION_NAME] == "embeddings"
    assert telemetry.bucket_tokens() == {"input": response.usage.prompt_tokens}


@pytest.mark.parametrize("openai_too", [False, True])
def test_a_workflow_rolls_up_litellm_calls_once(
    server: Any, telemetry: Any, openai_too: bool
) -> None:
    with instrumented(telemetry, openai_too=openai_too):
        run = workflow("triage", tracer_provider=telemetry.tracer_provider)
        with run:
            openai(server)
            anthropic(server)
    rollup = run.rollup
    assert rollup.calls == 2
    i, _, o = MINI
    hi, _, _, _, ho = HAIKU
    assert rollup.costs == {"USD": (10 * i + 11 * o + 13 * hi + 11 * ho) / MTOK}


def test_uninstrument_restores_litellm(server: Any, telemetry: Any) -> None:
    with instrumented(telemetry):
        pass
    anthropic(server)
    assert telemetry.our_spans() == []


# --- the usage converter --------------------------------------------------------------------
def test_from_litellm_reads_top_level_cache_counts_and_reasoning() -> None:
    usage = from_litellm(
        {
            "prompt_tokens": 100,
            "completion_tokens": 50,
            "cache_read_input_tokens": 30,
            "cache_creation_input_tokens": 20,
            "completion_tokens_details": {"reasoning_tokens": 40},
        }
    )
    assert usage == TokenUsage(input=50, cache_read=30, cache_write_5m=20, output=10, reasoning=40)


def test_from_litellm_refuses_counts_that_contradict_each_other() -> None:
    with pytest.raises(InvalidUsageError, match="exceed prompt_tokens"):
        from_litellm({"prompt_tokens": 10, "completion_tokens": 1, "cache_read_input_tokens": 11})
    with pytest.raises(InvalidUsageError, match="1-hour"):
        from_litellm(
            {
                "prompt_tokens": 10,
                "completion_tokens": 1,
                "prompt_tokens_details": {
                    "cache_write_tokens": 2,
                    "cache_creation_token_details": {"ephemeral_1h_input_tokens": 3},
                },
            }
        )
