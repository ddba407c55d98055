"""Pre-flight through the real client libraries: the providers' count-tokens endpoints
(opt-in, `preflight(client=...)`) against the local servers speaking their wire formats, and
the context-window guard on the instrumented ``openai`` client (a request that cannot fit is
never sent in raise mode; it carries an event in observe mode; off, nothing changes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import boto3
import openai
import pytest
from botocore.config import Config
from google import genai
from opentelemetry.trace import StatusCode

from otel_tokens import semconv as sc
from otel_tokens.instrumentation import OpenAIInstrumentor
from otel_tokens.pricing import Catalog
from otel_tokens.window import (
    ENV_CONTEXT_GUARD,
    EVENT_CONTEXT_WINDOW_EXCEEDED,
    ContextWindowExceeded,
    preflight,
)
from otel_tokens_fakes import BedrockServer, GeminiServer, ProviderServer

from .conftest import Telemetry

MESSAGES = [
    {"role": "system", "content": "You answer in one word."},
    {"role": "user", "content": "What colour is the sky on a clear day?"},
]


# --- the providers' count-tokens endpoints -----------------------------------------------------
def test_anthropic_messages_count_tokens(server: ProviderServer) -> None:
    client = anthropic.Anthropic(api_key="test", base_url=server.anthropic_base_url)
    direct = client.messages.count_tokens(
        model="claude-sonnet-4-20250514",
        system="You answer in one word.",
        messages=[{"role": "user", "content": "What colour is the sky on a clear day?"}],
    )
    result = preflight("claude-sonnet-4-20250514", MESSAGES, client=client, max_output_tokens=100)
    assert result.input_tokens == direct.input_tokens
    assert result.method == "provider"
    assert result.counted_by == "anthropic:messages.count_tokens"
    assert result.provider == "anthropic"
    assert result.context_window == 200_000
    sent = server.last_request
    assert sent.path.endswith("/messages/count_tokens")
    assert sent.body["system"] == "You answer in one word."  # split out, as Anthropic takes it
    assert [m["role"] for m in sent.body["messages"]] == ["user"]
    assert result.worst_case is not None and result.worst_case.status == "priced"


def test_openai_responses_input_tokens(server: ProviderServer) -> None:
    client = openai.OpenAI(api_key="test", base_url=server.openai_base_url, max_retries=0)
    result = preflight("gpt-4o-mini", input="What colour is the sky?", client=client)
    direct = client.responses.input_tokens.count(
        model="gpt-4o-mini", input="What colour is the sky?"
    )
    assert result.input_tokens == direct.input_tokens
    assert result.method == "provider"
    assert result.counted_by == "openai:responses/input_tokens"
    assert server.last_request.path.endswith("/responses/input_tokens")


def test_count_endpoints_are_not_metered(
    guarded: Callable[..., OpenAIInstrumentor], server: ProviderServer, telemetry: Telemetry
) -> None:
    """They are free: an instrumented client records no call (and no tokens) for them."""
    guarded()
    client = openai.OpenAI(api_key="test", base_url=server.openai_base_url, max_retries=0)
    assert preflight("gpt-4o-mini", input="hello", client=client).method == "provider"
    assert telemetry.our_spans() == []
    assert telemetry.bucket_tokens() == {}


def test_gemini_models_count_tokens() -> None:
    with GeminiServer() as srv:
        client = genai.Client(api_key="test", http_options={"base_url": srv.base_url})
        result = preflight("gemini-2.5-flash", MESSAGES, client=client)
        assert result.input_tokens == 10  # what the server answered
        assert result.method == "provider"
        assert result.counted_by == "gcp.gemini:models.count_tokens"
        assert result.context_window == 1_048_576
        seen = srv.seen[-1]
        assert seen.path.endswith("gemini-2.5-flash:countTokens")
        assert seen.body["contents"] == [
            {"role": "user", "parts": [{"text": "What colour is the sky on a clear day?"}]}
        ]


def test_bedrock_count_tokens() -> None:
    with BedrockServer() as srv:
        client = boto3.client(
            "bedrock-runtime",
            endpoint_url=srv.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(retries={"max_attempts": 1}),
        )
        model = "anthropic.claude-3-5-haiku-20241022-v1:0"
        result = preflight(model, MESSAGES, client=client)
        expected = (len("What colour is the sky on a clear day?") + 3) // 4 + (
            len("You answer in one word.") + 3
        ) // 4
        assert result.input_tokens == expected
        assert result.method == "provider"
        assert result.counted_by == "aws.bedrock:CountTokens"
        assert result.context_window == 200_000
        seen = srv.seen[-1]
        assert seen.path.endswith("/count-tokens")
        assert seen.body["input"]["converse"]["system"] == [{"text": "You answer in one word."}]


def test_a_failing_count_endpoint_raises_the_clients_error(server: ProviderServer) -> None:
    client = anthropic.Anthropic(
        api_key="test",
        base_url=server.anthropic_base_url,
        max_retries=0,
        default_headers={"x-test-scenario": "internal_error"},
    )
    with pytest.raises(anthropic.APIStatusError):
        preflight("claude-sonnet-4-20250514", MESSAGES, client=client)


# --- the context-window guard -----------------------------------------------------------------
@pytest.fixture
def guarded(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., OpenAIInstrumentor]]:
    monkeypatch.delenv(ENV_CONTEXT_GUARD, raising=False)
    inst = OpenAIInstrumentor()

    def do(**kwargs: Any) -> OpenAIInstrumentor:
        inst.instrument(
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
            catalog=Catalog(),
            **kwargs,
        )
        return inst

    yield do
    if inst.is_instrumented_by_opentelemetry:
        inst.uninstrument()


def _client(server: ProviderServer) -> openai.OpenAI:
    return openai.OpenAI(api_key="test", base_url=server.openai_base_url, max_retries=0)


TOO_LONG = [{"role": "user", "content": "word " * 9000}]  # over gpt-4's 8192 alone


def test_raise_mode_refuses_a_request_that_cannot_fit_before_sending(
    guarded: Callable[..., OpenAIInstrumentor], server: ProviderServer, telemetry: Telemetry
) -> None:
    guarded(context_guard="raise")
    client = _client(server)
    before = len(server.requests)
    with pytest.raises(ContextWindowExceeded) as info:
        client.chat.completions.create(model="gpt-4", messages=TOO_LONG, max_tokens=10)  # type: ignore[arg-type]
    assert len(server.requests) == before  # nothing sent, nothing billed
    error = info.value
    assert error.context_window == 8192
    assert error.max_output_tokens == 10
    assert error.input_tokens == preflight("gpt-4", TOO_LONG, cache=None).input_tokens
    span = telemetry.only_span()
    assert span.status.status_code == StatusCode.ERROR
    # A request that fits goes through as before.
    response = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=10,
    )
    assert response.choices


def test_the_guard_counts_tools_as_preflight_does(
    guarded: Callable[..., OpenAIInstrumentor], server: ProviderServer
) -> None:
    """The guard (and a budget reservation) count an OpenAI request as pre-flight does,
    tools included by OpenAI's own formula, not as plain text."""
    guarded(context_guard="raise")
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
                    "required": ["city"],
                },
            },
        }
    ]
    with pytest.raises(ContextWindowExceeded) as info:
        _client(server).chat.completions.create(
            model="gpt-4",
            messages=TOO_LONG,
            tools=tools,
            max_tokens=10,  # type: ignore[arg-type]
        )
    counted = preflight("gpt-4", TOO_LONG, tools=tools, cache=None).input_tokens
    assert info.value.input_tokens == counted


def test_raise_mode_on_the_async_client(
    guarded: Callable[..., OpenAIInstrumentor], server: ProviderServer
) -> None:
    import asyncio

    guarded(context_guard="raise")

    async def call() -> None:
        async with openai.AsyncOpenAI(
            api_key="test", base_url=server.openai_base_url, max_retries=0
        ) as client:
            await client.chat.completions.create(model="gpt-4", messages=TOO_LONG)  # type: ignore[arg-type]

    before = len(server.requests)
    with pytest.raises(ContextWindowExceeded):
        asyncio.run(call())
    assert len(server.requests) == before


def test_max_output_counts_against_the_window(
    guarded: Callable[..., OpenAIInstrumentor], server: ProviderServer
) -> None:
    guarded(context_guard="raise")
    with pytest.raises(ContextWindowExceeded):
        _client(server).chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=128_000,  # the input's few tokens more than the window
        )


def test_observe_mode_sends_and_marks_the_span(
    guarded: Callable[..., OpenAIInstrumentor], server: ProviderServer, telemetry: Telemetry
) -> None:
    guarded(context_guard="observe")
    response = _client(server).chat.completions.create(
        model="gpt-4", messages=TOO_LONG, max_tokens=10
    )  # type: ignore[arg-type]
    assert response.choices  # sent (the fake does not enforce windows)
    span = telemetry.only_span()
    events = [e for e in span.events if e.name == EVENT_CONTEXT_WINDOW_EXCEEDED]
    assert len(events) == 1
    attrs = events[0].attributes or {}
    assert attrs[sc.BILLING_CONTEXT_WINDOW] == 8192
    assert attrs[sc.BILLING_CONTEXT_WINDOW_MAX_OUTPUT_TOKENS] == 10
    assert int(attrs[sc.BILLING_CONTEXT_WINDOW_INPUT_TOKENS]) > 8192  # type: ignore[arg-type]


def test_the_guard_is_off_by_default(
    guarded: Callable[..., OpenAIInstrumentor], server: ProviderServer, telemetry: Telemetry
) -> None:
    guarded()
    _client(server).chat.completions.create(model="gpt-4", messages=TOO_LONG, max_tokens=10)  # type: ignore[arg-type]
    assert not [e for e in telemetry.only_span().events if e.name == EVENT_CONTEXT_WINDOW_EXCEEDED]


def test_the_guard_from_the_environment(
    guarded: Callable[..., OpenAIInstrumentor],
    server: ProviderServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_CONTEXT_GUARD, "raise")
    guarded()
    with pytest.raises(ContextWindowExceeded):
        _client(server).chat.completions.create(model="gpt-4", messages=TOO_LONG)  # type: ignore[arg-type]


def test_a_bad_guard_option_is_a_clear_error(
    guarded: Callable[..., OpenAIInstrumentor],
) -> None:
    with pytest.raises(ValueError, match="context_guard"):
        guarded(context_guard="sometimes")


def test_a_bad_guard_in_the_environment_never_breaks_the_application(
    guarded: Callable[..., OpenAIInstrumentor],
    server: ProviderServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_CONTEXT_GUARD, "sometimes")
    guarded()
    response = _client(server).chat.completions.create(model="gpt-4", messages=TOO_LONG)  # type: ignore[arg-type]
    assert response.choices
