"""Attribution: ``attribute()`` in OpenTelemetry baggage, the cardinality guard, the ASGI and
WSGI middleware, and what cost records keep of it.

Calls are metered here through the instrumentation's own recording path (`Recorder` /
`Call`) without a provider server; tests/instrumentation/test_attribution_e2e.py drives the
real ``openai`` client.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus
from wsgiref.util import setup_testing_defaults

import pytest
from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagate import inject

import otel_tokens
from _telemetry import SdkProviders
from otel_tokens import semconv as sc
from otel_tokens.attribution import (
    ENV_CARDINALITY_LIMIT,
    ENV_METRIC_ATTRIBUTES,
    OTHER,
    CardinalityGuard,
    attribute,
    current,
)
from otel_tokens.instrumentation._recording import Recorder
from otel_tokens.ledger import SQLiteLedger
from otel_tokens.metering import LedgerPricer, TokenPoint, from_sdk
from otel_tokens.middleware import AttributionMiddleware, WSGIAttributionMiddleware
from otel_tokens.pricing import Catalog
from otel_tokens.records import stream_id
from otel_tokens.usage import TokenUsage

TENANT, USER, FEATURE = sc.BILLING_TENANT_ID, sc.BILLING_USER_ID, sc.BILLING_FEATURE
TAG = sc.BILLING_TAG_PREFIX
ACME = {TENANT: "acme", USER: "u-42", FEATURE: "support-bot", TAG + "plan": "pro"}


@pytest.fixture(autouse=True)
def _clean_context() -> Iterator[None]:
    """Every test starts and must end with no attribution in the current context."""
    assert current() == {}
    yield
    assert current() == {}, "attribution leaked out of a test"


# --- the context manager and decorator -----------------------------------------------------------
def test_context_manager_puts_every_key_in_baggage_and_restores_on_exit() -> None:
    with attribute(tenant="acme", user="u-42", feature="support-bot", plan="pro") as a:
        assert isinstance(a, attribute)
        assert current() == ACME
        assert baggage.get_baggage(TENANT) == "acme"
        assert baggage.get_baggage(USER) == "u-42"
        assert baggage.get_baggage(FEATURE) == "support-bot"
        assert baggage.get_baggage(TAG + "plan") == "pro"
    assert current() == {}
    assert baggage.get_all() == {}


def test_exported_at_the_package_top_level() -> None:
    assert otel_tokens.attribute is attribute
    assert otel_tokens.AttributionMiddleware is AttributionMiddleware
    assert otel_tokens.WSGIAttributionMiddleware is WSGIAttributionMiddleware


def test_none_values_are_left_out_and_other_values_are_strings() -> None:
    with attribute(tenant="acme", user=None, feature=None, shard=7, region=None):
        assert current() == {TENANT: "acme", TAG + "shard": "7"}


def test_values_are_capped_in_length() -> None:
    with attribute(tenant="t" * 1000):
        assert current()[TENANT] == "t" * 256


def test_current_ignores_unrelated_baggage() -> None:
    token = otel_context.attach(baggage.set_baggage("session", "s-1"))
    try:
        with attribute(tenant="acme"):
            assert current() == {TENANT: "acme"}
            assert baggage.get_baggage("session") == "s-1"  # other baggage is kept
    finally:
        otel_context.detach(token)


def test_context_restored_when_the_body_raises() -> None:
    with pytest.raises(RuntimeError), attribute(tenant="acme"):
        raise RuntimeError("boom")
    assert current() == {}


def test_nested_attribute_overrides_inner_values_and_restores_outer() -> None:
    with attribute(tenant="acme", user="u-1", feature="chat", plan="pro"):
        with attribute(user="u-2", feature="search", region="eu"):
            assert current() == {
                TENANT: "acme",  # inherited
                USER: "u-2",  # overridden
                FEATURE: "search",
                TAG + "plan": "pro",
                TAG + "region": "eu",  # added
            }
        assert current() == {TENANT: "acme", USER: "u-1", FEATURE: "chat", TAG + "plan": "pro"}
    assert current() == {}


def test_one_instance_can_be_entered_again_and_nested() -> None:
    acme = attribute(tenant="acme")
    with acme:
        with attribute(tenant="globex"), acme:
            assert current() == {TENANT: "acme"}
        assert current() == {TENANT: "acme"}
    with acme:
        assert current() == {TENANT: "acme"}


def test_decorator_sync() -> None:
    @attribute(tenant="acme", feature="summarise", plan="pro")
    def summarise(text: str) -> tuple[str, dict[str, str]]:
        return text.upper(), current()

    assert summarise.__name__ == "summarise"  # functools.wraps
    result, seen = summarise("hi")
    assert result == "HI"
    assert seen == {TENANT: "acme", FEATURE: "summarise", TAG + "plan": "pro"}
    assert current() == {}
    # The decorator is reusable and re-entrant (recursion, several calls).
    assert summarise("again")[1] == seen


def test_decorator_sync_restores_context_when_raising() -> None:
    @attribute(tenant="acme")
    def fails() -> None:
        assert current() == {TENANT: "acme"}
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        fails()
    assert current() == {}


def test_decorator_async() -> None:
    @attribute(tenant="acme", feature="summarise")
    async def summarise() -> dict[str, str]:
        await asyncio.sleep(0)
        return current()

    assert asyncio.iscoroutinefunction(summarise)

    async def main() -> tuple[dict[str, str], dict[str, str]]:
        seen = await summarise()
        return seen, current()

    seen, after = asyncio.run(main())
    assert seen == {TENANT: "acme", FEATURE: "summarise"}
    assert after == {}


def test_async_context_manager() -> None:
    async def main() -> tuple[dict[str, str], dict[str, str]]:
        async with attribute(tenant="acme", user="u-1"):
            await asyncio.sleep(0)
            inside = current()
        return inside, current()

    inside, after = asyncio.run(main())
    assert inside == {TENANT: "acme", USER: "u-1"}
    assert after == {}


# --- crossing asyncio tasks and threads ----------------------------------------------------------
def test_crosses_asyncio_tasks_with_gather() -> None:
    async def worker(i: int) -> dict[str, str]:
        await asyncio.sleep(0.001 * (3 - i))
        return current()

    async def main() -> list[dict[str, str]]:
        with attribute(tenant="acme", feature="batch"):
            return list(await asyncio.gather(*(worker(i) for i in range(3))))

    assert asyncio.run(main()) == [{TENANT: "acme", FEATURE: "batch"}] * 3


def test_concurrent_tasks_keep_their_own_attribution() -> None:
    async def request(tenant: str) -> list[dict[str, str]]:
        seen = []
        with attribute(tenant=tenant):
            for _ in range(5):
                await asyncio.sleep(0)
                seen.append(current())
        return seen

    async def main() -> list[list[dict[str, str]]]:
        return list(await asyncio.gather(*(request(t) for t in ("a", "b", "c", "d"))))

    for tenant, seen in zip("abcd", asyncio.run(main()), strict=True):
        assert seen == [{TENANT: tenant}] * 5


def test_one_instance_shared_by_concurrent_tasks() -> None:
    """A module-level ``attribute(...)`` entered by overlapping tasks: each task restores
    its own context (the tokens must not be mixed up between tasks)."""
    shared = attribute(tenant="acme")
    after: list[dict[str, str]] = []

    async def request(delay: float) -> None:
        async with shared:
            await asyncio.sleep(delay)
        after.append(current())

    async def main() -> None:
        with attribute(feature="outer"):
            await asyncio.gather(request(0.0), request(0.01), request(0.02))

    asyncio.run(main())
    assert after == [{FEATURE: "outer"}] * 3


def test_crosses_threads_started_with_copy_context_run() -> None:
    seen: list[dict[str, str]] = []
    with attribute(tenant="acme", user="u-1"):
        ctx = contextvars.copy_context()
    thread = threading.Thread(target=lambda: ctx.run(lambda: seen.append(current())))
    thread.start()
    thread.join()
    assert seen == [{TENANT: "acme", USER: "u-1"}]


def test_a_thread_started_without_the_context_has_no_attribution() -> None:
    seen: list[dict[str, str]] = []
    with attribute(tenant="acme"):
        thread = threading.Thread(target=lambda: seen.append(current()))
        thread.start()
        thread.join()
    assert seen == [{}]


def test_crosses_a_thread_pool_with_copy_context() -> None:
    def work(i: int) -> tuple[int, dict[str, str]]:
        return i, current()

    with ThreadPoolExecutor(max_workers=4) as pool:
        with attribute(tenant="acme", feature="fanout"):
            futures = [pool.submit(contextvars.copy_context().run, work, i) for i in range(8)]
        results = [f.result() for f in futures]
        # The pool's threads do not keep it: a plain submit sees nothing.
        assert pool.submit(current).result() == {}
    assert results == [(i, {TENANT: "acme", FEATURE: "fanout"}) for i in range(8)]


# --- W3C baggage propagation to other services ---------------------------------------------------
def _baggage_header(carrier: dict[str, str]) -> dict[str, str]:
    pairs = (item.split(";")[0].split("=", 1) for item in carrier["baggage"].split(","))
    return {unquote_plus(k.strip()): unquote_plus(v.strip()) for k, v in pairs}


def test_propagates_to_an_outgoing_request_with_the_w3c_baggage_propagator() -> None:
    carrier: dict[str, str] = {}
    with attribute(tenant="acme", user="u-42", feature="support-bot", plan="pro"):
        W3CBaggagePropagator().inject(carrier)
    assert set(carrier) == {"baggage"}
    assert _baggage_header(carrier) == ACME
    # The receiving service extracts it and sees the same attribution.
    ctx = W3CBaggagePropagator().extract(carrier)
    token = otel_context.attach(ctx)
    try:
        assert current() == ACME
    finally:
        otel_context.detach(token)


def test_propagated_values_are_percent_encoded_and_round_trip() -> None:
    carrier: dict[str, str] = {}
    with attribute(tenant="Acme, Inc.; EU=1", feature="café bot"):
        W3CBaggagePropagator().inject(carrier)
    header = carrier["baggage"]
    # The comma and the semicolon would break the header: they are percent-encoded.
    assert header.count(",") == 1
    assert ";" not in header
    assert _baggage_header(carrier) == {TENANT: "Acme, Inc.; EU=1", FEATURE: "café bot"}
    ctx = W3CBaggagePropagator().extract(carrier)
    assert baggage.get_all(ctx) == {TENANT: "Acme, Inc.; EU=1", FEATURE: "café bot"}


def test_global_propagators_carry_baggage_by_default() -> None:
    carrier: dict[str, str] = {}
    with attribute(tenant="acme"):
        inject(carrier)  # the globally configured propagators (tracecontext, baggage)
    assert _baggage_header(carrier) == {TENANT: "acme"}


def test_nothing_propagated_outside_attribute() -> None:
    carrier: dict[str, str] = {}
    W3CBaggagePropagator().inject(carrier)
    assert "baggage" not in carrier


# --- the cardinality guard -----------------------------------------------------------------------
def test_guard_default_allow_list_is_tenant_and_feature(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_METRIC_ATTRIBUTES, raising=False)
    monkeypatch.delenv(ENV_CARDINALITY_LIMIT, raising=False)
    guard = CardinalityGuard()
    assert guard.allowed == (TENANT, FEATURE)
    assert guard.limit == 100
    assert guard.metric_attributes(ACME) == {TENANT: "acme", FEATURE: "support-bot"}
    assert guard.metric_attributes({USER: "u-1"}) == {}


def test_guard_allow_list_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_METRIC_ATTRIBUTES, " tenant , plan,,")
    monkeypatch.setenv(ENV_CARDINALITY_LIMIT, "3")
    guard = CardinalityGuard()
    assert guard.allowed == (TENANT, TAG + "plan")
    assert guard.limit == 3
    assert guard.metric_attributes(ACME) == {TENANT: "acme", TAG + "plan": "pro"}


def test_guard_folds_values_beyond_the_cap_into_other() -> None:
    guard = CardinalityGuard(allowed=(TENANT, FEATURE), limit=2)
    assert guard.metric_attributes({TENANT: "a", FEATURE: "x"}) == {TENANT: "a", FEATURE: "x"}
    assert guard.metric_attributes({TENANT: "b", FEATURE: "x"}) == {TENANT: "b", FEATURE: "x"}
    # A third tenant is folded; the feature key has its own cap.
    assert guard.metric_attributes({TENANT: "c", FEATURE: "y"}) == {TENANT: OTHER, FEATURE: "y"}
    assert guard.metric_attributes({TENANT: "d", FEATURE: "z"}) == {
        TENANT: OTHER,
        FEATURE: OTHER,
    }
    # Values seen before the cap keep their own series.
    assert guard.metric_attributes({TENANT: "a", FEATURE: "y"}) == {TENANT: "a", FEATURE: "y"}
    assert guard.metric_attributes({TENANT: "b"}) == {TENANT: "b"}


def test_guard_cap_holds_under_concurrency() -> None:
    guard = CardinalityGuard(allowed=(TENANT,), limit=10)
    barrier = threading.Barrier(16)
    results: list[str] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        barrier.wait()
        for j in range(20):
            value = guard.metric_attributes({TENANT: f"t{i}-{j}"})[TENANT]
            with lock:
                results.append(value)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kept = {v for v in results if v != OTHER}
    assert len(kept) == 10
    assert results.count(OTHER) == 16 * 20 - 10


# --- header attribution --------------------------------------------------------------------------
def _http_scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/answer",
        "raw_path": b"/v1/answer",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


class _ASGIRecorder:
    """A minimal raw ASGI app: records the attribution seen while handling the request."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            self.seen.append(current())
            return
        message = await receive()
        assert message["type"] == "http.request"
        await asyncio.sleep(0)
        self.seen.append(current())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _drive_asgi(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def main() -> None:
        await app(scope, receive, send)
        assert current() == {}  # restored after the request

    asyncio.run(main())
    return sent


def test_asgi_middleware_attributes_the_request_from_its_headers() -> None:
    inner = _ASGIRecorder()
    app = AttributionMiddleware(inner)
    sent = _drive_asgi(
        app,
        _http_scope(
            [
                (b"host", b"api.example.com"),
                (b"X-Tenant-Id", b"acme"),
                (b"x-user-id", b"u-42"),
                (b"x-feature", b"support-bot"),
                (b"x-other", b"ignored"),
            ]
        ),
    )
    assert inner.seen == [{TENANT: "acme", USER: "u-42", FEATURE: "support-bot"}]
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]


def test_asgi_middleware_without_headers_attributes_nothing() -> None:
    inner = _ASGIRecorder()
    _drive_asgi(AttributionMiddleware(inner), _http_scope([(b"host", b"x")]))
    assert inner.seen == [{}]


def test_asgi_middleware_maps_other_headers_to_keys_and_tags() -> None:
    inner = _ASGIRecorder()
    app = AttributionMiddleware(inner, headers={"X-Org": "tenant", "x-plan": "plan"})
    _drive_asgi(
        app,
        _http_scope([(b"x-org", b"globex"), (b"x-plan", b"enterprise"), (b"x-tenant-id", b"no")]),
    )
    assert inner.seen == [{TENANT: "globex", TAG + "plan": "enterprise"}]


def test_asgi_middleware_passes_lifespan_through() -> None:
    inner = _ASGIRecorder()
    app = AttributionMiddleware(inner)

    async def main() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "lifespan.startup"}

        async def send(message: dict[str, Any]) -> None:
            return None

        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)

    asyncio.run(main())
    assert inner.seen == [{}]


def test_asgi_middleware_keeps_concurrent_requests_apart() -> None:
    inner = _ASGIRecorder()
    app = AttributionMiddleware(inner)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(
            *(
                app(_http_scope([(b"x-tenant-id", t.encode())]), receive, send)
                for t in ("a", "b", "c")
            )
        )

    asyncio.run(main())
    assert sorted(s[TENANT] for s in inner.seen) == ["a", "b", "c"]
    assert all(len(s) == 1 for s in inner.seen)


def _wsgi_environ(**headers: str) -> dict[str, Any]:
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ.update(headers)
    return environ


class _Body:
    """A WSGI body that looks at the attribution while it is iterated, and must be closed."""

    def __init__(self, seen: list[dict[str, str]]) -> None:
        self.seen = seen
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        self.seen.append(current())
        yield b"part 1 "
        self.seen.append(current())
        yield b"part 2"

    def close(self) -> None:
        self.closed = True


def test_wsgi_middleware_attributes_the_request_and_its_streamed_body() -> None:
    seen: list[dict[str, str]] = []
    bodies: list[_Body] = []
    statuses: list[str] = []

    def app(environ: Any, start_response: Any) -> Iterable[bytes]:
        seen.append(current())
        start_response("200 OK", [("Content-Type", "text/plain")])
        bodies.append(_Body(seen))
        return bodies[-1]

    wrapped = WSGIAttributionMiddleware(app)
    environ = _wsgi_environ(
        HTTP_X_TENANT_ID="acme", HTTP_X_USER_ID="u-42", HTTP_X_FEATURE="support-bot"
    )
    body = wrapped(environ, lambda status, headers: statuses.append(status))
    assert b"".join(body) == b"part 1 part 2"
    assert statuses == ["200 OK"]
    assert seen == [{TENANT: "acme", USER: "u-42", FEATURE: "support-bot"}] * 3
    # PEP 3333: the application's iterable is closed once the body has been produced.
    assert bodies[0].closed


def test_wsgi_middleware_closes_the_body_when_iteration_fails() -> None:
    closed: list[bool] = []

    class Failing:
        def __iter__(self) -> Iterator[bytes]:
            yield b"x"
            raise OSError("client went away")

        def close(self) -> None:
            closed.append(True)

    def app(environ: Any, start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [])
        return Failing()

    with pytest.raises(OSError, match="went away"):
        WSGIAttributionMiddleware(app)(_wsgi_environ(HTTP_X_TENANT_ID="a"), lambda *a: None)
    assert closed == [True]


def test_wsgi_middleware_custom_headers_and_no_headers() -> None:
    seen: list[dict[str, str]] = []

    def app(environ: Any, start_response: Any) -> Iterable[bytes]:
        seen.append(current())
        start_response("204 No Content", [])
        return []

    plain = WSGIAttributionMiddleware(app)
    assert plain(_wsgi_environ(), lambda *a: None) == []
    custom = WSGIAttributionMiddleware(app, headers={"X-Org": "tenant", "X-Plan": "plan"})
    custom(_wsgi_environ(HTTP_X_ORG="globex", HTTP_X_PLAN="pro"), lambda *a: None)
    assert seen == [{}, {TENANT: "globex", TAG + "plan": "pro"}]


# --- metered calls: spans get every key, metric points the allow-listed ones ---------------------
class _Providers(SdkProviders):
    def recorder(self) -> Recorder:
        return Recorder(
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            catalog=Catalog(),
        )


def _call(recorder: Recorder, usage: TokenUsage, model: str = "gpt-4o-mini") -> None:
    call = recorder.start(operation="chat", provider="openai", request_model=model)
    call.end(usage)


def test_recorded_call_span_gets_every_key_and_points_only_allow_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV_METRIC_ATTRIBUTES, raising=False)
    monkeypatch.delenv(ENV_CARDINALITY_LIMIT, raising=False)
    providers = _Providers()
    recorder = providers.recorder()
    with attribute(tenant="acme", user="u-42", feature="support-bot", plan="pro"):
        _call(recorder, TokenUsage(input=100, output=20))
    (span,) = providers.exporter.get_finished_spans()
    assert ACME.items() <= dict(span.attributes or {}).items()
    for name in (sc.METRIC_BILLING_TOKENS, sc.METRIC_BILLING_COST):
        points = providers.points(name)
        assert points
        for p in points:
            assert p.attributes[TENANT] == "acme"
            assert p.attributes[FEATURE] == "support-bot"
            assert USER not in p.attributes
            assert TAG + "plan" not in p.attributes


def test_cost_records_keep_the_tenant_as_sub_account_and_tags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """From real SDK points (allow-listing tenant, feature, user and a tag) to the ledger."""
    monkeypatch.setenv(ENV_METRIC_ATTRIBUTES, "tenant,feature,user,plan")
    providers = _Providers()
    recorder = providers.recorder()
    with attribute(tenant="acme", user="u-42", feature="support-bot", plan="pro", team=None):
        _call(recorder, TokenUsage(input=1000, output=200))
    with attribute(tenant="globex", feature="search"):
        _call(recorder, TokenUsage(input=10))
    ledger = SQLiteLedger(":memory:")
    try:
        result = LedgerPricer(ledger, Catalog()).ingest(
            from_sdk(providers.reader.get_metrics_data())
        )
        assert not result.rejected
        records = sorted(result.records, key=lambda r: (r.tenant or "", r.bucket))
        assert [(r.tenant, r.bucket, r.quantity) for r in records] == [
            ("acme", "input", 1000),
            ("acme", "output", 200),
            ("globex", "input", 10),
        ]
        acme = records[0]
        assert acme.tenant == "acme"
        assert acme.feature == "support-bot"
        assert acme.user_id == "u-42"
        assert dict(acme.tags) == {"plan": "pro"}
        focus = acme.to_focus()
        assert focus["SubAccountId"] == "acme"
        assert focus["Tags"] == {"plan": "pro"}
        assert focus["x_Feature"] == "support-bot"
        assert focus["x_UserId"] == "u-42"
        globex = records[2].to_focus()
        assert globex["SubAccountId"] == "globex"
        assert globex["Tags"] == {}
        assert globex["x_UserId"] is None
        # What the ledger gives back keeps them too.
        stored = {(r.tenant, r.bucket): r for r in ledger.records()}
        assert dict(stored["acme", "input"].tags) == {"plan": "pro"}
        assert stored["acme", "input"].to_focus()["SubAccountId"] == "acme"
    finally:
        ledger.close()


def test_cost_record_from_a_hand_made_point() -> None:
    attrs = {
        sc.GEN_AI_PROVIDER_NAME: "openai",
        sc.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
        sc.GEN_AI_RESPONSE_MODEL: "gpt-4o-mini",
        sc.GEN_AI_OPERATION_NAME: "chat",
        sc.BILLING_TOKEN_BUCKET: "input",
        TENANT: "acme",
        FEATURE: "support-bot",
        TAG + "plan": "pro",
        TAG + "region": "eu",
    }
    at = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp()) * 10**9
    sid = stream_id({"attributes": attrs})
    point = TokenPoint(sid, attrs, {"service.name": "api"}, at - 60 * 10**9, at, 5000, False)
    ledger = SQLiteLedger(":memory:")
    try:
        (record,) = LedgerPricer(ledger, Catalog()).ingest([point]).records
    finally:
        ledger.close()
    assert (record.tenant, record.feature, record.user_id) == ("acme", "support-bot", None)
    assert dict(record.tags) == {"plan": "pro", "region": "eu"}
    focus = record.to_focus()
    assert focus["SubAccountId"] == "acme"
    assert focus["Tags"] == {"plan": "pro", "region": "eu"}
    assert focus["x_ServiceName"] == "api"
    assert record.to_cloudevent()["subject"] == "acme"
