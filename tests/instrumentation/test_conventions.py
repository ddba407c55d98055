"""Conventional spans: started when the call starts, current while it runs, finished (with
usage and cost) when the call or its stream ends, on the thread that ends it.

The real ``openai`` and ``anthropic`` clients against the bundled server, with the real SDK
behind a ``SimpleSpanProcessor`` into an ``InMemorySpanExporter``: the test a user writes
first. Nothing is flushed: ``get_finished_spans()`` right after the call must have the span.
A transport of the test's own makes a span inside the call, as an HTTP instrumentation
would, and notes which span was current there.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan

from _processes import run
from otel_tokens import semconv as sc
from otel_tokens.instrumentation import AnthropicInstrumentor, OpenAIInstrumentor
from otel_tokens.pricing import Catalog
from otel_tokens_fakes import ProviderServer

from .conftest import Telemetry

MESSAGES: list[Any] = [{"role": "user", "content": "Hello there"}]
OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-haiku-4-5"
SDK_SCOPE = "com.anthropic.sdk.python"


class Seen:
    """What the transport saw inside the call: the current span, and the span it made."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.tracer = telemetry.tracer_provider.get_tracer("http-client")
        self.current: list[trace.SpanContext] = []

    def enter(self) -> Any:
        self.current.append(trace.get_current_span().get_span_context())
        return self.tracer.start_as_current_span("HTTP POST", kind=trace.SpanKind.CLIENT)


class SyncTransport(httpx2.HTTPTransport):
    def __init__(self, seen: Seen) -> None:
        super().__init__()
        self.seen = seen

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        with self.seen.enter():
            return super().handle_request(request)


class AsyncTransport(httpx2.AsyncHTTPTransport):
    def __init__(self, seen: Seen) -> None:
        super().__init__()
        self.seen = seen

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        with self.seen.enter():
            return await super().handle_async_request(request)


@pytest.fixture
def instrumented(telemetry: Telemetry) -> Iterator[None]:
    insts = (OpenAIInstrumentor(), AnthropicInstrumentor())
    for inst in insts:
        inst.instrument(
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
            catalog=Catalog(),
        )
    yield
    for inst in insts:
        inst.uninstrument()


# (provider, anthropic's own SDK span on or off)
CASES = [("openai", False), ("anthropic", True), ("anthropic", False)]
IDS = ["openai", "anthropic-sdk-span", "anthropic-own-span"]


def client_for(
    server: ProviderServer, telemetry: Telemetry, provider: str, sdk_span: bool, seen: Seen
) -> Any:
    http = openai.DefaultHttpxClient(transport=SyncTransport(seen))
    if provider == "openai":
        return openai.OpenAI(
            api_key="t", base_url=server.openai_base_url, max_retries=0, http_client=http
        )
    return anthropic.Anthropic(
        api_key="t",
        base_url=server.anthropic_base_url,
        max_retries=0,
        http_client=anthropic.DefaultHttpxClient(transport=SyncTransport(seen)),
        open_telemetry={"tracer_provider": telemetry.tracer_provider} if sdk_span else False,
    )


def aclient_for(
    server: ProviderServer, telemetry: Telemetry, provider: str, sdk_span: bool, seen: Seen
) -> Any:
    if provider == "openai":
        return openai.AsyncOpenAI(
            api_key="t",
            base_url=server.openai_base_url,
            max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(transport=AsyncTransport(seen)),
        )
    return anthropic.AsyncAnthropic(
        api_key="t",
        base_url=server.anthropic_base_url,
        max_retries=0,
        http_client=anthropic.DefaultAsyncHttpxClient(transport=AsyncTransport(seen)),
        open_telemetry={"tracer_provider": telemetry.tracer_provider} if sdk_span else False,
    )


def create(client: Any, provider: str, **extra: Any) -> Any:
    if provider == "openai":
        return client.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES, **extra)
    return client.messages.create(model=ANTHROPIC_MODEL, max_tokens=100, messages=MESSAGES, **extra)


def usage_span(telemetry: Telemetry) -> ReadableSpan:
    """The one finished span carrying the call's usage, read without any flush."""
    spans = [
        s
        for s in telemetry.spans.get_finished_spans()
        if (s.attributes or {}).get(sc.BILLING_PRICING_STATUS) is not None
    ]
    assert len(spans) == 1, [s.name for s in telemetry.spans.get_finished_spans()]
    return spans[0]


def assert_metered(span: ReadableSpan, provider: str, sdk_span: bool) -> None:
    attrs = span.attributes or {}
    assert attrs[sc.GEN_AI_PROVIDER_NAME] == provider
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] > 0
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] > 0
    # Priced; counted locally (estimated) where the server reported no usage: a local
    # OpenAI-compatible server's stream is not asked for its usage chunk.
    assert attrs[sc.BILLING_PRICING_STATUS] in (sc.STATUS_PRICED, sc.STATUS_ESTIMATED)
    assert span.instrumentation_scope is not None
    assert (span.instrumentation_scope.name == SDK_SCOPE) is sdk_span


def assert_child(seen: Seen, telemetry: Telemetry, span: ReadableSpan) -> None:
    """The span made inside the call is a child of the usage span, which was current there."""
    assert span.context is not None
    assert [c.span_id for c in seen.current] == [span.context.span_id]
    (http,) = [s for s in telemetry.spans.get_finished_spans() if s.name == "HTTP POST"]
    assert http.parent is not None and http.parent.span_id == span.context.span_id
    assert http.context is not None and http.context.trace_id == span.context.trace_id


@pytest.mark.parametrize(("provider", "sdk_span"), CASES, ids=IDS)
def test_sync_call_span_is_current_inside_and_finished_at_return(
    instrumented: None,
    server: ProviderServer,
    telemetry: Telemetry,
    provider: str,
    sdk_span: bool,
) -> None:
    seen = Seen(telemetry)
    with client_for(server, telemetry, provider, sdk_span, seen) as client:
        create(client, provider)
        span = usage_span(telemetry)  # no flush: exported when the call returned
    assert_metered(span, provider, sdk_span)
    assert_child(seen, telemetry, span)


@pytest.mark.parametrize(("provider", "sdk_span"), CASES, ids=IDS)
def test_async_call_span_is_current_inside_and_finished_at_return(
    instrumented: None,
    server: ProviderServer,
    telemetry: Telemetry,
    provider: str,
    sdk_span: bool,
) -> None:
    seen = Seen(telemetry)

    async def run() -> ReadableSpan:
        async with aclient_for(server, telemetry, provider, sdk_span, seen) as client:
            await create(client, provider)
            return usage_span(telemetry)

    span = asyncio.run(run())
    assert_metered(span, provider, sdk_span)
    assert_child(seen, telemetry, span)


@pytest.mark.parametrize(("provider", "sdk_span"), CASES, ids=IDS)
def test_sync_stream_span_is_finished_after_the_last_chunk(
    instrumented: None,
    server: ProviderServer,
    telemetry: Telemetry,
    provider: str,
    sdk_span: bool,
) -> None:
    seen = Seen(telemetry)
    with client_for(server, telemetry, provider, sdk_span, seen) as client:
        stream = create(client, provider, stream=True)
        assert telemetry.spans.get_finished_spans() == () or all(
            s.name == "HTTP POST" for s in telemetry.spans.get_finished_spans()
        )  # open while the stream is
        for _ in stream:
            pass
        span = usage_span(telemetry)
    assert_metered(span, provider, sdk_span)
    assert_child(seen, telemetry, span)


@pytest.mark.parametrize(("provider", "sdk_span"), CASES, ids=IDS)
def test_sync_stream_span_is_finished_at_close(
    instrumented: None,
    server: ProviderServer,
    telemetry: Telemetry,
    provider: str,
    sdk_span: bool,
) -> None:
    seen = Seen(telemetry)
    with client_for(server, telemetry, provider, sdk_span, seen) as client:
        stream = create(client, provider, stream=True)
        next(iter(stream))
        stream.close()
        span = usage_span(telemetry)
    attrs = span.attributes or {}
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] > 0  # what it had, once


@pytest.mark.parametrize(("provider", "sdk_span"), CASES, ids=IDS)
def test_async_stream_span_is_finished_after_the_last_chunk_and_at_close(
    instrumented: None,
    server: ProviderServer,
    telemetry: Telemetry,
    provider: str,
    sdk_span: bool,
) -> None:
    seen = Seen(telemetry)

    async def run() -> tuple[ReadableSpan, ReadableSpan]:
        async with aclient_for(server, telemetry, provider, sdk_span, seen) as client:
            stream = await create(client, provider, stream=True)
            async for _ in stream:
                pass
            whole = usage_span(telemetry)
            telemetry.spans.clear()
            stream = await create(client, provider, stream=True)
            await stream.__anext__()
            await stream.close()
            return whole, usage_span(telemetry)

    whole, closed = asyncio.run(run())
    assert_metered(whole, provider, sdk_span)
    assert (closed.attributes or {})[sc.GEN_AI_USAGE_INPUT_TOKENS] > 0


def test_span_of_a_failed_call_is_finished_when_the_error_reaches_the_caller(
    instrumented: None, server: ProviderServer, telemetry: Telemetry
) -> None:
    with openai.OpenAI(api_key="t", base_url=server.openai_base_url, max_retries=0) as client:
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(
                model=OPENAI_MODEL,
                messages=MESSAGES,
                extra_headers={"x-test-scenario": "server_error"},
            )
        (span,) = telemetry.spans.get_finished_spans()
    assert span.status.status_code is trace.StatusCode.ERROR
    assert (span.attributes or {})[sc.ERROR_TYPE] == "InternalServerError"


# --- lazy start-up ------------------------------------------------------------------------
def _python(code: str, *, stderr: bool = False) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = run([sys.executable, "-c", code], env=env)
    assert done.returncode == 0, done.stderr
    return (done.stderr if stderr else done.stdout).strip()


def test_the_budgets_variable_is_the_one_budgets_reads() -> None:
    from otel_tokens.budgets import ENV_BUDGETS
    from otel_tokens.instrumentation._instrumentor import ENV_BUDGETS as named_here

    assert named_here == ENV_BUDGETS


def test_instrumenting_imports_no_client_library_and_no_price_catalog() -> None:
    out = _python(
        "import sys, wrapt\n"
        "from otel_tokens.instrumentation import AnthropicInstrumentor, OpenAIInstrumentor\n"
        "OpenAIInstrumentor().instrument(); AnthropicInstrumentor().instrument()\n"
        "heavy = [m for m in ('openai', 'anthropic', 'genai_prices', 'tiktoken') "
        "if m in sys.modules]\n"
        "import openai\n"
        "request = openai._base_client.SyncAPIClient.__dict__['request']\n"
        "patched = isinstance(request, wrapt.FunctionWrapper)\n"
        "print(heavy, patched, 'anthropic' in sys.modules, 'genai_prices' in sys.modules)\n"
    )
    # Nothing heavy at start; openai patched when imported; anthropic never imported; the
    # catalog waits for the first call.
    assert out == "[] True False False"


def test_uninstrument_before_the_import_leaves_the_library_untouched() -> None:
    out = _python(
        "import wrapt\n"
        "from otel_tokens.instrumentation import OpenAIInstrumentor\n"
        "inst = OpenAIInstrumentor(); inst.instrument(); inst.uninstrument()\n"
        "import openai\n"
        "request = openai._base_client.SyncAPIClient.__dict__['request']\n"
        "print(isinstance(request, wrapt.FunctionWrapper))\n"
    )
    assert out == "False"


# --- the usage chunk, asked for where the endpoint is known to send it ---------------------
def test_azure_stream_asks_for_usage_by_default_and_hides_it(
    instrumented: None, server: ProviderServer, telemetry: Telemetry
) -> None:
    """A reasoning model's stream: its reasoning tokens are in no text we could count, so
    the usage chunk is asked for (and hidden from the application)."""
    with openai.AzureOpenAI(
        api_key="t", azure_endpoint=server.azure_endpoint, api_version="2024-10-21", max_retries=0
    ) as azure:
        chunks = list(
            azure.chat.completions.create(
                model="prod-reasoner",
                messages=MESSAGES,
                stream=True,
                extra_headers={"x-test-served-model": "o4-mini", "x-test-reasoning-tokens": "105"},
            )
        )
    assert server.last_request.body["stream_options"] == {"include_usage": True}
    assert all(c.usage is None for c in chunks)  # the usage chunk is not the application's
    attrs = usage_span(telemetry).attributes or {}
    assert attrs[sc.BILLING_USAGE_SOURCE] == "provider"
    assert attrs[f"{sc.BILLING_USAGE_PREFIX}reasoning"] == 105


def test_unknown_openai_compatible_server_is_not_asked_for_usage(
    instrumented: None, server: ProviderServer, telemetry: Telemetry
) -> None:
    with openai.OpenAI(api_key="t", base_url=server.openai_base_url, max_retries=0) as client:
        list(create(client, "openai", stream=True))
    assert "stream_options" not in server.last_request.body
    assert (usage_span(telemetry).attributes or {})[sc.BILLING_USAGE_SOURCE] == "estimated"


def test_usage_chunk_switched_off(
    server: ProviderServer, telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TOKENS_OPENAI_INCLUDE_USAGE", "false")
    inst = OpenAIInstrumentor()
    inst.instrument(tracer_provider=telemetry.tracer_provider, catalog=Catalog())
    try:
        with openai.AzureOpenAI(
            api_key="t",
            azure_endpoint=server.azure_endpoint,
            api_version="2024-10-21",
            max_retries=0,
        ) as azure:
            list(azure.chat.completions.create(model="d", messages=MESSAGES, stream=True))
    finally:
        inst.uninstrument()
    assert "stream_options" not in server.last_request.body


def test_another_instrumentation_of_the_same_method_is_warned_of() -> None:
    """A GenAI instrumentation that wrapped ``Completions.create`` first would put usage on
    a span of its own too: instrumenting says so (the wrapped method is looked up unbound)."""
    out = _python(
        "import logging, wrapt\n"
        "logging.basicConfig(level=logging.WARNING, format='%(message)s')\n"
        "import openai.resources.chat.completions as m\n"
        "wrapt.wrap_function_wrapper(m, 'Completions.create', lambda w, i, a, k: w(*a, **k))\n"
        "from otel_tokens.instrumentation import OpenAIInstrumentor\n"
        "OpenAIInstrumentor().instrument()\n",
        stderr=True,
    )
    assert "Completions.create is already instrumented by another library" in out
