"""The real ``ollama`` library (``Client``, ``AsyncClient``, the module-level functions)
against a local server speaking Ollama's native wire format (``ollama_server.py``: JSON and
NDJSON streams), instrumented.

Local models have no catalog price: these tests price ``llama3.2`` with a user price file
(`PRICES`), so every cost below is worked out by hand from the counts the server reports
and those rates; ``qwen3:8b`` has no price anywhere and must be reported unpriced, never $0.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import ollama
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from otel_tokens import semconv as sc
from otel_tokens.counting import count_messages, count_text
from otel_tokens.instrumentation import OllamaInstrumentor
from otel_tokens.pricing import Catalog
from otel_tokens.usage import InvalidUsageError, TokenUsage, from_ollama
from otel_tokens_fakes import OLLAMA_PIECES as PIECES
from otel_tokens_fakes import OllamaServer

from ._asserts import ServerHarness, attrs_of, instrumenting

MODEL = "llama3.2"
UNPRICED_MODEL = "qwen3:8b"
MTOK = Decimal(1_000_000)
INPUT, CACHED, OUTPUT = Decimal("0.10"), Decimal("0.01"), Decimal("0.40")
PRICES = f"""
models:
  - provider: ollama
    model: {MODEL}
    prices: {{input_mtok: "{INPUT}", cache_read_mtok: "{CACHED}", output_mtok: "{OUTPUT}"}}
"""
# The server's default counts: prompt_eval_count 26, eval_count 3.
DEFAULT = TokenUsage(input=26, output=3)
DEFAULT_COST = (26 * INPUT + 3 * OUTPUT) / MTOK
assert Decimal("0.0000038") == DEFAULT_COST
MESSAGES = [{"role": "user", "content": "Why is the sky blue?"}]


# --- the converter -----------------------------------------------------------------------------
def test_prompt_eval_count_includes_the_cached_prompt_tokens() -> None:
    usage = from_ollama(
        {"prompt_eval_count": 1000, "prompt_eval_cached_count": 800, "eval_count": 50}
    )
    assert usage == TokenUsage(input=200, cache_read=800, output=50)


def test_a_missing_prompt_count_is_not_zero_and_nonsense_is_refused() -> None:
    with pytest.raises(InvalidUsageError, match="unknown, not 0"):
        from_ollama({"eval_count": 5})
    with pytest.raises(InvalidUsageError, match="exceeds"):
        from_ollama({"prompt_eval_count": 5, "prompt_eval_cached_count": 6, "eval_count": 1})
    with pytest.raises(InvalidUsageError):
        from_ollama({"prompt_eval_count": -1, "eval_count": 1})


# --- fixtures ----------------------------------------------------------------------------------
class Harness(ServerHarness):
    def client(self, **headers: str) -> ollama.Client:
        return ollama.Client(host=self.server.host, headers=headers)

    def aclient(self, **headers: str) -> ollama.AsyncClient:
        return ollama.AsyncClient(host=self.server.host, headers=headers)


@contextmanager
def instrumented(server: OllamaServer, telemetry: Any, prices: Path) -> Iterator[Harness]:
    with instrumenting(OllamaInstrumentor(), telemetry, Catalog.load(prices, use_env=False)):
        yield Harness(server, telemetry)


@pytest.fixture
def prices(tmp_path: Path) -> Path:
    path = tmp_path / "prices.yaml"
    path.write_text(PRICES)
    return path


@pytest.fixture
def h(ollama_server: OllamaServer, telemetry: Any, prices: Path) -> Iterator[Harness]:
    with instrumented(ollama_server, telemetry, prices) as harness:
        yield harness


def usage_header(**counts: int) -> dict[str, str]:
    return {"x-test-usage": json.dumps(counts)}


def assert_usage(h: Harness, span: ReadableSpan, usage: TokenUsage, cost: Decimal | None) -> None:
    attrs = attrs_of(span)
    on_span = {
        k[len(sc.BILLING_USAGE_PREFIX) :]: v
        for k, v in attrs.items()
        if k.startswith(sc.BILLING_USAGE_PREFIX)
    }
    assert on_span == dict(usage.buckets()), attrs
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == usage.input_total
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == usage.output_total
    assert attrs[sc.GEN_AI_PROVIDER_NAME] == "ollama"
    if cost is not None:
        assert Decimal(str(attrs[sc.BILLING_COST_DECIMAL])) == cost
        assert h.telemetry.sum_of(sc.METRIC_BILLING_COST) == pytest.approx(float(cost))
    assert h.telemetry.bucket_tokens() == dict(usage.buckets())


def o200k_messages(messages: Any) -> int:
    # A model name no tokenizer is registered for: o200k_base, as the adapter's stand-in.
    return count_messages(messages, "no-such-model")


# --- non-streamed calls ------------------------------------------------------------------------
def test_chat_is_metered_from_its_counts_and_priced_by_the_price_file(h: Harness) -> None:
    reply = h.client().chat(model=MODEL, messages=MESSAGES, options={"num_predict": 64})
    assert reply.message.content == "Hello from Ollama"
    span = h.span()
    assert_usage(h, span, DEFAULT, DEFAULT_COST)
    attrs = attrs_of(span)
    assert span.name == f"chat {MODEL}"
    assert attrs[sc.GEN_AI_OPERATION_NAME] == "chat"
    assert attrs[sc.GEN_AI_REQUEST_MAX_TOKENS] == 64
    assert attrs[sc.GEN_AI_RESPONSE_MODEL] == MODEL
    assert attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert attrs[sc.SERVER_ADDRESS] == "127.0.0.1"
    assert attrs[sc.BILLING_USAGE_SOURCE] == "provider"
    assert attrs[sc.BILLING_PRICING_STATUS] == sc.STATUS_PRICED


def test_cached_prompt_tokens_are_billed_as_cache_reads(h: Harness) -> None:
    counts = {"prompt_eval_count": 1000, "prompt_eval_cached_count": 800, "eval_count": 50}
    h.client(**usage_header(**counts)).generate(model=MODEL, prompt="Why is the sky blue?")
    # 200 x 0.10 + 800 x 0.01 + 50 x 0.40 = 20 + 8 + 20 micro-dollars.
    cost = Decimal("0.000048")
    assert cost == (200 * INPUT + 800 * CACHED + 50 * OUTPUT) / MTOK
    span = h.span()
    assert attrs_of(span)[sc.GEN_AI_OPERATION_NAME] == "text_completion"
    assert_usage(h, span, TokenUsage(input=200, cache_read=800, output=50), cost)


def test_a_local_model_without_a_price_is_unpriced_not_free(h: Harness) -> None:
    h.client().chat(model=UNPRICED_MODEL, messages=MESSAGES)
    span = h.span()
    assert_usage(h, span, DEFAULT, None)
    attrs = attrs_of(span)
    assert attrs[sc.BILLING_PRICING_STATUS] == sc.STATUS_UNPRICED
    assert sc.BILLING_COST_DECIMAL not in attrs
    assert h.telemetry.points(sc.METRIC_BILLING_COST) == []


def test_embed_bills_its_prompt_tokens(h: Harness) -> None:
    reply = h.client(**usage_header(prompt_eval_count=12)).embed(model=MODEL, input=["a", "b"])
    assert len(reply.embeddings) == 2
    span = h.span()
    assert attrs_of(span)[sc.GEN_AI_OPERATION_NAME] == "embeddings"
    assert_usage(h, span, TokenUsage(input=12), 12 * INPUT / MTOK)


def test_deprecated_embeddings_report_no_counts_so_the_prompt_is_counted(h: Harness) -> None:
    h.client().embeddings(model=MODEL, prompt="the sky is blue")
    attrs = attrs_of(h.span())
    assert attrs[sc.BILLING_USAGE_SOURCE] == sc.USAGE_SOURCE_ESTIMATED
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == count_text("the sky is blue", "x") == 4
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 0


def test_an_old_server_omitting_the_cached_prompt_count_gets_it_counted(h: Harness) -> None:
    """Old Ollama servers leave ``prompt_eval_count`` out for a cached prompt: the prompt is
    counted (never 0), the output is as reported, and the usage is marked estimated."""
    h.client(**usage_header(eval_count=7)).chat(model=MODEL, messages=MESSAGES)
    attrs = attrs_of(h.span())
    assert attrs[sc.BILLING_USAGE_SOURCE] == sc.USAGE_SOURCE_ESTIMATED
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == o200k_messages(MESSAGES) > 0
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 7
    assert attrs[sc.BILLING_PRICING_STATUS] == sc.STATUS_ESTIMATED


def test_an_http_error_ends_the_span_with_it_and_bills_nothing(h: Harness) -> None:
    with pytest.raises(ollama.ResponseError) as raised:
        h.client(**{"x-test-status": "404"}).chat(model=MODEL, messages=MESSAGES)
    assert raised.value.status_code == 404
    span = h.span()
    assert span.status.status_code == StatusCode.ERROR
    assert attrs_of(span)[sc.ERROR_TYPE] == "ResponseError"
    assert h.telemetry.bucket_tokens() == {}


def test_management_calls_are_not_metered(h: Harness) -> None:
    with pytest.raises(ollama.ResponseError):
        h.client().show(MODEL)  # POST /api/show: this server answers 404
    assert h.telemetry.our_spans() == []


# --- streams -----------------------------------------------------------------------------------
def test_a_stream_is_metered_from_its_final_chunk_once(h: Harness) -> None:
    parts = list(h.client().chat(model=MODEL, messages=MESSAGES, stream=True))
    assert [p.message.content for p in parts] == [*PIECES[:3], ""]
    assert parts[-1].done
    span = h.span()
    assert_usage(h, span, DEFAULT, DEFAULT_COST)
    assert attrs_of(span)[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)


def test_a_generate_stream_carries_its_span_while_it_is_pulled(h: Harness) -> None:
    stream = h.client().generate(model=MODEL, prompt="hi", stream=True)
    assert h.telemetry.our_spans() == []  # the request goes when the stream is first pulled
    text = "".join(p.response or "" for p in stream)
    assert text == "".join(PIECES[:3])
    assert_usage(h, h.span(), DEFAULT, DEFAULT_COST)


def test_a_stream_cut_short_is_counted_with_o200k_and_marked_estimated(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    stream = h.client().chat(model=MODEL, messages=MESSAGES, stream=True)
    first = next(stream)
    stream.close()
    attrs = attrs_of(h.span())
    assert attrs[sc.BILLING_USAGE_SOURCE] == sc.USAGE_SOURCE_ESTIMATED
    assert attrs[sc.BILLING_PRICING_STATUS] == sc.STATUS_ESTIMATED
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == o200k_messages(MESSAGES)
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == count_text(first.message.content, "x") == 1
    assert "o200k_base as a stand-in" in caplog.text
    assert "OTEL_TOKENS_OLLAMA_TOKENIZER" in caplog.text


def test_a_stream_cut_short_is_counted_with_the_named_tokenizer(
    ollama_server: OllamaServer,
    telemetry: Any,
    prices: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A word-level tokenizer.json (one token per word): its counts are the words."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[UNK]", "why", "is", "the", "sky", "blue", "?", "hello"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, "[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    monkeypatch.setenv("OTEL_TOKENS_OLLAMA_TOKENIZER", f"llama3*={path}")
    with instrumented(ollama_server, telemetry, prices) as h:
        stream = h.client().generate(model=MODEL, prompt="Why is the sky blue?", stream=True)
        next(stream)  # "Hello"
        next(stream)  # " from"
        stream.close()
        attrs = attrs_of(h.span())
    assert attrs[sc.BILLING_USAGE_SOURCE] == sc.USAGE_SOURCE_ESTIMATED
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == 6  # why is the sky blue ?
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 2  # Hello from
    # Priced at the file's rates, as an estimate: 6 x 0.10 + 2 x 0.40.
    assert Decimal(str(attrs[sc.BILLING_COST_DECIMAL])) == (6 * INPUT + 2 * OUTPUT) / MTOK


def test_a_stream_that_fails_midway_ends_with_the_error_and_its_text_counted(
    h: Harness,
) -> None:
    seen = []
    with pytest.raises(ollama.ResponseError):
        for part in h.client(**{"x-test-stream-error": "2"}).chat(
            model=MODEL, messages=MESSAGES, stream=True
        ):
            seen.append(part.message.content)
    assert seen == ["Hello", " from"]
    span = h.span()
    assert span.status.status_code == StatusCode.ERROR
    attrs = attrs_of(span)
    assert attrs[sc.BILLING_USAGE_SOURCE] == sc.USAGE_SOURCE_ESTIMATED
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == count_text("Hello from", "x") == 2


def test_a_stream_refused_with_an_http_error_bills_nothing(h: Harness) -> None:
    with pytest.raises(ollama.ResponseError):
        list(h.client(**{"x-test-status": "500"}).chat(model=MODEL, messages=MESSAGES, stream=True))
    span = h.span()
    assert span.status.status_code == StatusCode.ERROR
    assert h.telemetry.bucket_tokens() == {}


# --- async -------------------------------------------------------------------------------------
def test_async_calls_and_streams_are_metered(h: Harness) -> None:
    async def main() -> list[str]:
        client = h.aclient()
        reply = await client.chat(model=MODEL, messages=MESSAGES)
        assert reply.message.content == "Hello from Ollama"
        stream = await client.generate(model=MODEL, prompt="hi", stream=True)
        return [p.response or "" async for p in stream]

    assert asyncio.run(main()) == [*PIECES[:3], ""]
    spans = h.telemetry.our_spans()
    assert len(spans) == 2
    for span in spans:
        attrs = attrs_of(span)
        assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == 26
        assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 3
        assert Decimal(str(attrs[sc.BILLING_COST_DECIMAL])) == DEFAULT_COST
    assert h.telemetry.bucket_tokens() == dict((DEFAULT + DEFAULT).buckets())


def test_an_async_stream_cut_short_is_estimated(h: Harness) -> None:
    async def main() -> str:
        stream = await h.aclient().chat(model=MODEL, messages=MESSAGES, stream=True)
        first = await stream.__anext__()
        await stream.aclose()
        return str(first.message.content)

    first = asyncio.run(main())
    attrs = attrs_of(h.span())
    assert attrs[sc.BILLING_USAGE_SOURCE] == sc.USAGE_SOURCE_ESTIMATED
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == count_text(first, "x")


# --- the module-level functions ----------------------------------------------------------------
def test_the_module_level_functions_are_metered(ollama_server: OllamaServer, prices: Path) -> None:
    """``ollama.chat`` is a bound method of a default client made at import from OLLAMA_HOST:
    run in a fresh interpreter that imports ollama after instrumenting."""
    script = textwrap.dedent(
        f"""
        import json
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from otel_tokens.instrumentation import OllamaInstrumentor
        from otel_tokens.pricing import Catalog

        spans = InMemorySpanExporter()
        tp = TracerProvider()
        tp.add_span_processor(SimpleSpanProcessor(spans))
        OllamaInstrumentor().instrument(tracer_provider=tp, catalog=Catalog.load({str(prices)!r}))
        import ollama

        ollama.chat(model={MODEL!r}, messages=[{{"role": "user", "content": "hi"}}])
        list(ollama.generate(model={MODEL!r}, prompt="hi", stream=True))
        ollama.embed(model={MODEL!r}, input="hi")
        print(json.dumps([dict(s.attributes) for s in spans.get_finished_spans()]))
        """
    )
    env = {**os.environ, "OLLAMA_HOST": ollama_server.host}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    spans = json.loads(out.stdout.strip().splitlines()[-1])
    assert [s[sc.GEN_AI_OPERATION_NAME] for s in spans] == ["chat", "text_completion", "embeddings"]
    assert [s[sc.GEN_AI_USAGE_INPUT_TOKENS] for s in spans] == [26, 26, 26]
    assert Decimal(str(spans[0][sc.BILLING_COST_DECIMAL])) == DEFAULT_COST


def test_content_is_captured_only_when_asked(
    ollama_server: OllamaServer,
    telemetry: Any,
    prices: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    with instrumented(ollama_server, telemetry, prices) as h:
        h.client().chat(model=MODEL, messages=MESSAGES)
        list(h.client().generate(model=MODEL, prompt="hi", stream=True))
    chat, generate = (attrs_of(s) for s in telemetry.our_spans())
    assert json.loads(str(chat[sc.GEN_AI_INPUT_MESSAGES])) == MESSAGES
    assert json.loads(str(chat[sc.GEN_AI_OUTPUT_MESSAGES])) == "Hello from Ollama"
    assert json.loads(str(generate[sc.GEN_AI_INPUT_MESSAGES])) == "hi"
    assert json.loads(str(generate[sc.GEN_AI_OUTPUT_MESSAGES])) == "".join(PIECES[:3])


def test_no_content_is_captured_by_default(h: Harness) -> None:
    h.client().chat(model=MODEL, messages=MESSAGES)
    attrs = attrs_of(h.span())
    assert sc.GEN_AI_INPUT_MESSAGES not in attrs
    assert sc.GEN_AI_OUTPUT_MESSAGES not in attrs


def test_a_token_budget_refuses_a_call_before_it_is_sent(
    ollama_server: OllamaServer, telemetry: Any, prices: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pre-flight: the prompt counted locally plus ``options.num_predict`` (the most output
    the call can be billed for) against an enforced token budget."""
    from otel_tokens.attribution import attribute
    from otel_tokens.budgets import Budget, BudgetExceeded, BudgetManager, MemoryStore

    monkeypatch.delenv("OTEL_TOKENS_BUDGETS", raising=False)
    budget = Budget(
        "local", limit=Decimal(100), unit="tokens", mode="enforce", scope={"tenant": "acme"}
    )
    catalog = Catalog.load(prices, use_env=False)
    manager = BudgetManager(
        [budget], MemoryStore(), catalog=catalog, meter_provider=telemetry.meter_provider
    )
    inst = OllamaInstrumentor()
    inst.instrument(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        catalog=catalog,
        budgets=manager,
    )
    try:
        client = ollama.Client(host=ollama_server.host)
        assert o200k_messages(MESSAGES) + 50 <= 100
        with attribute(tenant="acme"):
            client.chat(model=MODEL, messages=MESSAGES, options={"num_predict": 50})
            sent = len(ollama_server.seen)
            with pytest.raises(BudgetExceeded):
                client.chat(model=MODEL, messages=MESSAGES, options={"num_predict": 500})
        assert len(ollama_server.seen) == sent  # refused before it was sent
    finally:
        inst.uninstrument()
    first, refused = telemetry.our_spans()
    assert attrs_of(first)[sc.GEN_AI_USAGE_INPUT_TOKENS] == 26
    assert refused.status.status_code == StatusCode.ERROR
