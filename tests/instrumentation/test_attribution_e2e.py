"""Attribution and workflow roll-up through the real ``openai`` client and the bundled server.

Each test instruments with fresh telemetry providers and a fresh catalog, so that it gets its
own recorder (recorders are cached per providers), whose cardinality guard reads
``OTEL_TOKENS_METRIC_ATTRIBUTES`` / ``OTEL_TOKENS_CARDINALITY_LIMIT`` when it is made: the
environment is set before instrumenting.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, cast
from urllib.parse import unquote_plus
from wsgiref.util import setup_testing_defaults

import openai
import pytest
from opentelemetry.propagate import inject
from opentelemetry.sdk.trace import ReadableSpan

import otel_tokens
from otel_tokens import semconv as sc
from otel_tokens.attribution import ENV_CARDINALITY_LIMIT, ENV_METRIC_ATTRIBUTES, OTHER, attribute
from otel_tokens.instrumentation import OpenAIInstrumentor
from otel_tokens.ledger import SQLiteLedger
from otel_tokens.metering import LedgerPricer, from_sdk
from otel_tokens.middleware import AttributionMiddleware, WSGIAttributionMiddleware
from otel_tokens.pricing import Catalog
from otel_tokens.workflow import workflow
from otel_tokens_fakes import ProviderServer

from ._asserts import instrumenter
from .conftest import Telemetry

D = Decimal
MODEL = "gpt-4o-mini"
MESSAGES: list[Any] = [{"role": "user", "content": "Hello there, how are you today?"}]
TENANT, USER, FEATURE = sc.BILLING_TENANT_ID, sc.BILLING_USER_ID, sc.BILLING_FEATURE
TAG = sc.BILLING_TAG_PREFIX
ACME = {TENANT: "acme", USER: "u-42", FEATURE: "support-bot", TAG + "plan": "pro"}


@pytest.fixture
def instrument(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., OpenAIInstrumentor]]:
    """instrument(**env): set the guard's environment, then instrument with our providers."""
    monkeypatch.delenv(ENV_METRIC_ATTRIBUTES, raising=False)
    monkeypatch.delenv(ENV_CARDINALITY_LIMIT, raising=False)
    monkeypatch.delenv("OTEL_TOKENS_BUDGETS", raising=False)
    with instrumenter(OpenAIInstrumentor(), telemetry) as instrument:

        def do(**env: str) -> OpenAIInstrumentor:
            for key, value in env.items():
                monkeypatch.setenv(key, value)
            return cast(OpenAIInstrumentor, instrument())

        yield do


@pytest.fixture
def client(server: ProviderServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="test", base_url=server.openai_base_url, max_retries=0) as c:
        yield c


def async_client(server: ProviderServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="test", base_url=server.openai_base_url, max_retries=0)


def chat(client: openai.OpenAI, **kw: Any) -> Any:
    return client.chat.completions.create(model=MODEL, messages=MESSAGES, **kw)


def our_spans(t: Telemetry) -> list[ReadableSpan]:
    return [s for s in t.finished() if s.instrumentation_scope.name == "otel_tokens"]


def call_spans(t: Telemetry) -> list[ReadableSpan]:
    return [s for s in our_spans(t) if sc.GEN_AI_WORKFLOW_NAME not in (s.attributes or {})]


def attribution_of(span: ReadableSpan) -> dict[str, Any]:
    return {
        k: v
        for k, v in (span.attributes or {}).items()
        if k in (TENANT, USER, FEATURE) or k.startswith(TAG)
    }


ALL_METRICS = (
    sc.METRIC_BILLING_TOKENS,
    sc.METRIC_BILLING_COST,
    sc.METRIC_BILLING_UNPRICED,
    sc.METRIC_CLIENT_TOKEN_USAGE,
    sc.METRIC_CLIENT_OPERATION_DURATION,
)


# --- spans get every key -------------------------------------------------------------------------
def test_every_span_of_every_kind_of_call_gets_all_keys(
    instrument: Callable[..., OpenAIInstrumentor],
    client: openai.OpenAI,
    server: ProviderServer,
    telemetry: Telemetry,
) -> None:
    instrument()
    with attribute(tenant="acme", user="u-42", feature="support-bot", plan="pro"):
        chat(client)
        for _ in chat(client, stream=True, stream_options={"include_usage": True}):
            pass
        client.responses.create(model=MODEL, input="Hello there")
        client.embeddings.create(model="text-embedding-3-small", input="Hello there")
        client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)

        async def main() -> None:
            async with async_client(server) as c:
                await c.chat.completions.create(model=MODEL, messages=MESSAGES)

        asyncio.run(main())
    chat(client)  # outside: not attributed
    spans = our_spans(telemetry)
    assert len(spans) == 7
    for span in spans[:-1]:
        assert attribution_of(span) == ACME, span.name
    assert attribution_of(spans[-1]) == {}


def test_a_failed_call_is_attributed_too(
    instrument: Callable[..., OpenAIInstrumentor], client: openai.OpenAI, telemetry: Telemetry
) -> None:
    instrument()
    with attribute(tenant="acme", feature="chat"), pytest.raises(openai.BadRequestError):
        chat(client, extra_headers={"x-test-scenario": "bad_request"})
    (span,) = our_spans(telemetry)
    assert attribution_of(span) == {TENANT: "acme", FEATURE: "chat"}


# --- metric points get the allow-listed keys only ------------------------------------------------
def test_metric_points_get_only_tenant_and_feature_by_default(
    instrument: Callable[..., OpenAIInstrumentor], client: openai.OpenAI, telemetry: Telemetry
) -> None:
    instrument()
    with attribute(tenant="acme", user="u-42", feature="support-bot", plan="pro"):
        chat(client)
    with attribute(tenant="acme", user="u-43"):
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    for name in (sc.METRIC_BILLING_TOKENS, sc.METRIC_BILLING_COST):
        points = telemetry.points(name)
        assert points, name
        for p in points:
            assert p.attributes[TENANT] == "acme"
            assert USER not in p.attributes
            assert TAG + "plan" not in p.attributes
        assert {p.attributes.get(FEATURE) for p in points} <= {"support-bot", None}
    (unpriced,) = telemetry.points(sc.METRIC_BILLING_UNPRICED)
    assert unpriced.attributes[TENANT] == "acme"
    # The user id is on no metric point at all.
    for name in ALL_METRICS:
        for p in telemetry.points(name):
            assert USER not in p.attributes, name


def test_allow_list_from_the_environment(
    instrument: Callable[..., OpenAIInstrumentor], client: openai.OpenAI, telemetry: Telemetry
) -> None:
    instrument(**{ENV_METRIC_ATTRIBUTES: "tenant,plan"})
    with attribute(tenant="acme", user="u-42", feature="support-bot", plan="pro"):
        chat(client)
    for p in telemetry.points(sc.METRIC_BILLING_TOKENS):
        assert p.attributes[TENANT] == "acme"
        assert p.attributes[TAG + "plan"] == "pro"
        assert FEATURE not in p.attributes
        assert USER not in p.attributes


def test_cardinality_cap_folds_overflow_into_other(
    instrument: Callable[..., OpenAIInstrumentor], client: openai.OpenAI, telemetry: Telemetry
) -> None:
    instrument(**{ENV_CARDINALITY_LIMIT: "2"})
    for tenant in ("t1", "t2", "t3", "t4", "t1", "t5"):
        with attribute(tenant=tenant, feature=f"f-{tenant}"):
            chat(client)
    points = telemetry.points(sc.METRIC_BILLING_TOKENS)
    tenants = {p.attributes[TENANT] for p in points}
    assert tenants == {"t1", "t2", OTHER}
    features = {p.attributes[FEATURE] for p in points}
    assert features == {"f-t1", "f-t2", OTHER}
    one_call = sum(p.value for p in points if p.attributes[TENANT] == "t2")
    assert one_call > 0
    by_tenant = {
        t: sum(p.value for p in points if p.attributes[TENANT] == t) for t in ("t1", "t2", OTHER)
    }
    assert by_tenant == {"t1": 2 * one_call, "t2": one_call, OTHER: 3 * one_call}
    cost_tenants = {p.attributes[TENANT] for p in telemetry.points(sc.METRIC_BILLING_COST)}
    assert cost_tenants == {"t1", "t2", OTHER}
    # Spans keep the real values.
    assert [s.attributes[TENANT] for s in our_spans(telemetry)] == [  # type: ignore[index]
        "t1",
        "t2",
        "t3",
        "t4",
        "t1",
        "t5",
    ]


# --- crossing tasks and threads, with real calls -------------------------------------------------
def test_calls_in_tasks_and_threads_are_attributed(
    instrument: Callable[..., OpenAIInstrumentor],
    client: openai.OpenAI,
    server: ProviderServer,
    telemetry: Telemetry,
) -> None:
    instrument()

    async def fan_out() -> None:
        async with async_client(server) as c:
            await asyncio.gather(
                *(c.chat.completions.create(model=MODEL, messages=MESSAGES) for _ in range(3))
            )

    with attribute(tenant="acme", feature="fanout"):
        asyncio.run(fan_out())
        with ThreadPoolExecutor(max_workers=3) as pool:
            for f in [pool.submit(contextvars.copy_context().run, chat, client) for _ in range(3)]:
                f.result()
    spans = our_spans(telemetry)
    assert len(spans) == 6
    assert all(attribution_of(s) == {TENANT: "acme", FEATURE: "fanout"} for s in spans)


def test_baggage_reaches_an_outgoing_http_request(server: ProviderServer) -> None:
    """With the standard propagators, a service called inside attribute() receives it."""
    headers: dict[str, str] = {}
    with attribute(tenant="acme", user="u-42", feature="support-bot", plan="pro"):
        inject(headers)
    request = urllib.request.Request(f"{server.url}/health", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    received = server.requests[-1].headers["baggage"]
    pairs = dict(item.split(";")[0].split("=", 1) for item in received.split(","))
    assert {unquote_plus(k): unquote_plus(v) for k, v in pairs.items()} == ACME


# --- middleware around a real app ----------------------------------------------------------------
def test_asgi_middleware_attributes_calls_made_by_the_app(
    instrument: Callable[..., OpenAIInstrumentor], server: ProviderServer, telemetry: Telemetry
) -> None:
    instrument()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        async with async_client(server) as c:
            await c.chat.completions.create(model=MODEL, messages=MESSAGES)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    wrapped = AttributionMiddleware(app)
    sent: list[dict[str, Any]] = []

    async def request(tenant: bytes) -> None:
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/answer",
            "headers": [(b"x-tenant-id", tenant), (b"x-user-id", b"u-1"), (b"x-feature", b"qa")],
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await wrapped(scope, receive, send)

    async def main() -> None:
        await asyncio.gather(request(b"acme"), request(b"globex"))

    asyncio.run(main())
    assert len(sent) == 4
    seen = sorted((attribution_of(s) for s in our_spans(telemetry)), key=lambda a: a[TENANT])
    assert seen == [
        {TENANT: "acme", USER: "u-1", FEATURE: "qa"},
        {TENANT: "globex", USER: "u-1", FEATURE: "qa"},
    ]
    tenants = {p.attributes.get(TENANT) for p in telemetry.points(sc.METRIC_BILLING_TOKENS)}
    assert tenants == {"acme", "globex"}


def test_wsgi_middleware_attributes_calls_made_by_the_app(
    instrument: Callable[..., OpenAIInstrumentor], client: openai.OpenAI, telemetry: Telemetry
) -> None:
    instrument()

    def app(environ: Any, start_response: Any) -> Iterable[bytes]:
        chat(client)
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body() -> Iterator[bytes]:
            chat(client)  # a streamed body calling the model while it is produced
            yield b"done"

        return body()

    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ.update(HTTP_X_TENANT_ID="acme", HTTP_X_USER_ID="u-42", HTTP_X_FEATURE="support-bot")
    body = WSGIAttributionMiddleware(app)(environ, lambda *a: None)
    assert list(body) == [b"done"]
    spans = our_spans(telemetry)
    assert len(spans) == 2
    assert all(
        attribution_of(s) == {TENANT: "acme", USER: "u-42", FEATURE: "support-bot"} for s in spans
    )


# --- cost records --------------------------------------------------------------------------------
def test_cost_records_of_real_calls_keep_tenant_and_tags(
    instrument: Callable[..., OpenAIInstrumentor], client: openai.OpenAI, telemetry: Telemetry
) -> None:
    instrument(**{ENV_METRIC_ATTRIBUTES: "tenant,feature,plan"})
    with attribute(tenant="acme", user="u-42", feature="support-bot", plan="pro"):
        response = chat(client)
    ledger = SQLiteLedger(":memory:")
    try:
        otel_tokens.flush()  # calls are recorded on a background thread
        result = LedgerPricer(ledger, Catalog()).ingest(
            from_sdk(telemetry.reader.get_metrics_data())
        )
    finally:
        ledger.close()
    assert not result.rejected
    records = {r.bucket: r for r in result.records}
    assert set(records) == {"input", "output"}
    assert records["input"].quantity == response.usage.prompt_tokens
    assert records["output"].quantity == response.usage.completion_tokens
    for r in records.values():
        assert r.tenant == "acme"
        assert r.feature == "support-bot"
        assert r.user_id is None  # never on metric points, so never in the ledger
        assert dict(r.tags) == {"plan": "pro"}
        focus = r.to_focus()
        assert focus["SubAccountId"] == "acme"
        assert focus["Tags"] == {"plan": "pro"}
        assert focus["x_Feature"] == "support-bot"
    total = sum((r.billed_cost for r in records.values() if r.billed_cost is not None), D(0))
    (span,) = our_spans(telemetry)
    assert total == D((span.attributes or {})[sc.BILLING_COST_DECIMAL])  # type: ignore[arg-type]


# --- workflow roll-up of real calls --------------------------------------------------------------
def test_workflow_rolls_up_real_calls_from_tasks_and_threads(
    instrument: Callable[..., OpenAIInstrumentor],
    client: openai.OpenAI,
    server: ProviderServer,
    telemetry: Telemetry,
) -> None:
    instrument()
    tp, mp = telemetry.tracer_provider, telemetry.meter_provider

    async def research() -> None:
        async with (
            workflow("research", tracer_provider=tp, meter_provider=mp),
            async_client(server) as c,
        ):
            await asyncio.gather(
                c.chat.completions.create(model=MODEL, messages=MESSAGES),
                c.responses.create(model=MODEL, input="Find out"),
            )

    with attribute(tenant="acme"), workflow("triage", tracer_provider=tp, meter_provider=mp):
        chat(client)
        asyncio.run(research())
        ctx = contextvars.copy_context()
        thread = threading.Thread(
            target=ctx.run,
            args=(chat, client),
            kwargs={"extra_headers": {"x-test-scenario": "cache"}},
        )
        thread.start()
        thread.join()
        for _ in chat(client, stream=True, stream_options={"include_usage": True}):
            pass
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)  # unpriced

    calls = call_spans(telemetry)
    assert len(calls) == 6
    flows = {
        (s.attributes or {})[sc.GEN_AI_WORKFLOW_NAME]: dict(s.attributes or {})
        for s in our_spans(telemetry)
        if sc.GEN_AI_WORKFLOW_NAME in (s.attributes or {})
    }
    assert set(flows) == {"triage", "research"}
    triage, inner = flows["triage"], flows["research"]
    assert triage[sc.BILLING_WORKFLOW_CALLS] == 6
    assert triage[sc.BILLING_WORKFLOW_UNPRICED_CALLS] == 1
    assert inner[sc.BILLING_WORKFLOW_CALLS] == 2
    assert inner[sc.BILLING_WORKFLOW_UNPRICED_CALLS] == 0

    def cost(spans: list[ReadableSpan]) -> Decimal:
        return sum(
            (
                D(str((s.attributes or {})[sc.BILLING_COST_DECIMAL]))
                for s in spans
                if sc.BILLING_COST_DECIMAL in (s.attributes or {})
            ),
            D(0),
        )

    def usage(spans: list[ReadableSpan]) -> dict[str, int]:
        totals: dict[str, int] = {}
        for s in spans:
            for k, v in (s.attributes or {}).items():
                if k.startswith(sc.BILLING_USAGE_PREFIX):
                    bucket = k[len(sc.BILLING_USAGE_PREFIX) :]
                    totals[bucket] = totals.get(bucket, 0) + int(v)  # type: ignore[call-overload]
        return totals

    def rolled(attrs: dict[str, Any]) -> dict[str, int]:
        prefix = sc.BILLING_WORKFLOW_USAGE_PREFIX
        return {k[len(prefix) :]: v for k, v in attrs.items() if k.startswith(prefix)}

    assert D(triage[sc.BILLING_WORKFLOW_COST_DECIMAL]) == cost(calls)
    assert rolled(triage) == usage(calls)
    assert "cache_read" in rolled(triage)
    research_calls = [
        s for s in calls if s.parent is not None and s.parent.span_id in _span_ids(telemetry)
    ]
    assert len(research_calls) == 2
    assert D(inner[sc.BILLING_WORKFLOW_COST_DECIMAL]) == cost(research_calls)
    assert rolled(inner) == usage(research_calls)
    # No double counting: summing gen_ai.usage.* over every span counts each call once.
    spans = our_spans(telemetry)
    summed = sum(
        int((s.attributes or {}).get(sc.GEN_AI_USAGE_INPUT_TOKENS, 0))  # type: ignore[arg-type]
        for s in spans
    )
    assert summed == sum(
        int((s.attributes or {})[sc.GEN_AI_USAGE_INPUT_TOKENS])  # type: ignore[arg-type]
        for s in calls
    )
    for attrs in flows.values():
        assert not any(k.startswith(("gen_ai.usage.", sc.BILLING_USAGE_PREFIX)) for k in attrs)
    # The histogram records each run by name.
    hist = {
        p.attributes[sc.GEN_AI_WORKFLOW_NAME]: p
        for p in telemetry.points(sc.METRIC_BILLING_WORKFLOW_COST)
    }
    assert set(hist) == {"triage", "research"}
    assert hist["triage"].count == 1
    assert hist["triage"].sum == pytest.approx(float(cost(calls)))


def _span_ids(t: Telemetry) -> set[int]:
    return {
        s.context.span_id
        for s in our_spans(t)
        if (s.attributes or {}).get(sc.GEN_AI_WORKFLOW_NAME) == "research"
    }
