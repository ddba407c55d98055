"""The in-process pricing exporter (OTEL_METRICS_EXPORTER=otel_tokens).

It wraps a real metric exporter under a real SDK ``MeterProvider`` and
``PeriodicExportingMetricReader`` (flushed by hand), and runs once under the real
``opentelemetry-instrument`` against the bundled provider server.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ConsoleMetricExporter,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource

from _points import BASE_ATTRS
from _processes import OPENAI_APP, run_instrumented
from otel_tokens import semconv as sc
from otel_tokens._safety import reset_log_once
from otel_tokens.exporter import PricingMetricExporter, _entry_point_exporter
from otel_tokens.ledger import Ledger, LedgerTransaction, SQLiteLedger, open_ledger
from otel_tokens.pricing import Catalog
from otel_tokens.records import CostRecord
from otel_tokens.usage import TokenUsage
from otel_tokens_fakes import ProviderServer

CATALOG = Catalog()
ATTRS = {
    **BASE_ATTRS,
    sc.BILLING_TENANT_ID: "tenant-42",
    sc.BILLING_FEATURE: "search-summary",
}


class Collecting(MetricExporter):
    """A wrapped exporter that keeps what it receives."""

    def __init__(
        self,
        temporality: AggregationTemporality = AggregationTemporality.CUMULATIVE,
        result: MetricExportResult = MetricExportResult.SUCCESS,
    ) -> None:
        from opentelemetry.sdk.metrics import Counter, Histogram

        super().__init__(preferred_temporality={Counter: temporality, Histogram: temporality})
        self.received: list[MetricsData] = []
        self.result = result
        self.flushed = 0
        self.shut_down = 0

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.received.append(metrics_data)
        return self.result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        self.flushed += 1
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.shut_down += 1

    def metrics(self, index: int = -1) -> dict[str, Any]:
        return {
            m.name: m
            for rm in self.received[index].resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
        }


class App:
    """An application's SDK: our exporter behind a periodic reader, flushed by hand."""

    def __init__(self, exporter: MetricExporter) -> None:
        self.reader = PeriodicExportingMetricReader(exporter, export_interval_millis=math.inf)
        self.provider = MeterProvider(
            metric_readers=[self.reader],
            resource=Resource.create({"service.name": "checkout"}),
        )
        meter = self.provider.get_meter("otel_tokens", "0.1.0")
        self.tokens = meter.create_counter(sc.METRIC_BILLING_TOKENS, unit="{token}")
        self.duration = meter.create_histogram(sc.METRIC_CLIENT_OPERATION_DURATION, unit="s")

    def call(self, attrs: dict[str, Any] | None = None, **buckets: int) -> None:
        attrs = ATTRS if attrs is None else attrs
        for bucket, count in buckets.items():
            self.tokens.add(count, {**attrs, sc.BILLING_TOKEN_BUCKET: bucket})
        self.duration.record(0.42, {sc.GEN_AI_PROVIDER_NAME: "openai"})

    def flush(self) -> None:
        assert self.provider.force_flush()


def _cost(bucket: str, quantity: int, at: datetime, model: str = "gpt-4o-2024-08-06") -> Decimal:
    counts: dict[str, Any] = {bucket: quantity}
    priced = CATALOG.price(TokenUsage(**counts), model, provider="openai", at=at)
    assert priced.total is not None
    return priced.total


def _totals(ledger: Ledger) -> dict[str, int]:
    totals: dict[str, int] = {}
    for r in ledger.records():
        totals[r.bucket] = totals.get(r.bucket, 0) + r.quantity
    return totals


@pytest.fixture(autouse=True)
def _log_every_error() -> Iterator[None]:
    reset_log_once()
    yield
    reset_log_once()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SQLiteLedger]:
    opened = SQLiteLedger(str(tmp_path / "ledger.db"))
    yield opened
    opened.close()


@pytest.mark.parametrize(
    "temporality", [AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA]
)
def test_ledger_written_and_cost_metric_appended(
    ledger: SQLiteLedger, temporality: AggregationTemporality
) -> None:
    wrapped = Collecting(temporality)
    exporter = PricingMetricExporter(wrapped, ledger=ledger, catalog=CATALOG)
    assert exporter._preferred_temporality == wrapped._preferred_temporality
    app = App(exporter)
    app.call(input=1200, output=300)
    app.call(input=800)
    app.flush()

    assert _totals(ledger) == {"input": 2000, "output": 300}
    records = list(ledger.records())
    assert all(r.tenant == "tenant-42" and r.feature == "search-summary" for r in records)
    assert all(r.service_name == "checkout" for r in records)
    billed = {r.bucket: r.billed_cost for r in records}
    assert billed["input"] == _cost("input", 2000, records[0].period_end)

    # The wrapped exporter gets the application's metrics unchanged, plus the ledger cost.
    metrics = wrapped.metrics()
    assert set(metrics) == {
        sc.METRIC_BILLING_TOKENS,
        sc.METRIC_CLIENT_OPERATION_DURATION,
        sc.METRIC_BILLING_LEDGER_COST,
    }
    tokens = {
        p.attributes[sc.BILLING_TOKEN_BUCKET]: p.value
        for p in metrics[sc.METRIC_BILLING_TOKENS].data.data_points
    }
    assert tokens == {"input": 2000, "output": 300}
    assert metrics[sc.METRIC_BILLING_TOKENS].data.aggregation_temporality == temporality
    scopes = [
        sm.scope.name for rm in wrapped.received[-1].resource_metrics for sm in rm.scope_metrics
    ]
    assert scopes == ["otel_tokens", "otel_tokens.exporter"]
    cost = metrics[sc.METRIC_BILLING_LEDGER_COST]
    assert cost.unit == "{currency}"
    assert cost.data.is_monotonic
    assert cost.data.aggregation_temporality == AggregationTemporality.CUMULATIVE
    points = {p.attributes[sc.BILLING_TOKEN_BUCKET]: p for p in cost.data.data_points}
    assert set(points) == {"input", "output"}
    assert dict(points["input"].attributes) == {
        sc.GEN_AI_PROVIDER_NAME: "openai",
        sc.GEN_AI_RESPONSE_MODEL: "gpt-4o-2024-08-06",
        sc.BILLING_TOKEN_BUCKET: "input",
        sc.BILLING_TENANT_ID: "tenant-42",
        sc.BILLING_FEATURE: "search-summary",
        sc.GEN_AI_USAGE_COST_CURRENCY: "USD",
        sc.BILLING_PRICING_STATUS: "priced",
    }
    assert points["input"].value == pytest.approx(float(billed["input"] or 0))
    assert points["output"].value == pytest.approx(float(billed["output"] or 0))
    start = points["input"].start_time_unix_nano
    # Counting since the exporter started, not since this export.
    assert 0 < start < points["input"].time_unix_nano

    # More usage: only the new tokens are billed; the cost metric keeps counting.
    app.call(input=500)
    app.flush()
    assert _totals(ledger) == {"input": 2500, "output": 300}
    again = {
        p.attributes[sc.BILLING_TOKEN_BUCKET]: p
        for p in wrapped.metrics()[sc.METRIC_BILLING_LEDGER_COST].data.data_points
    }
    total_input = sum(r.billed_cost or 0 for r in ledger.records() if r.bucket == "input")
    assert again["input"].value == pytest.approx(float(total_input))
    assert again["input"].start_time_unix_nano == start
    assert again["input"].time_unix_nano > points["input"].time_unix_nano
    assert again["output"].value == points["output"].value

    # Nothing new: nothing written, the same cumulative cost.
    count = ledger.count()
    app.flush()
    assert ledger.count() == count
    app.provider.shutdown()
    assert wrapped.shut_down == 1


def test_cost_metric_sums_exactly(ledger: SQLiteLedger) -> None:
    """Three records of $0.10 make a cost of 0.3, not the 0.30000000000000004 of a float
    running sum: the totals are Decimal, a float only in the data point."""
    wrapped = Collecting()
    app = App(PricingMetricExporter(wrapped, ledger=ledger, catalog=CATALOG))
    for _ in range(3):
        app.call(input=40_000)  # 40,000 tokens at $2.50 per million: $0.10
        app.flush()
    assert [r.billed_cost for r in ledger.records()] == [Decimal("0.1")] * 3
    assert 0.1 + 0.1 + 0.1 != 0.3
    (point,) = wrapped.metrics()[sc.METRIC_BILLING_LEDGER_COST].data.data_points
    assert point.value == 0.3
    app.provider.shutdown()


def test_cost_metric_without_tenant_or_unpriced_usage(ledger: SQLiteLedger) -> None:
    wrapped = Collecting()
    app = App(PricingMetricExporter(wrapped, ledger=ledger, catalog=CATALOG))
    bare = {k: v for k, v in ATTRS.items() if k not in (sc.BILLING_TENANT_ID, sc.BILLING_FEATURE)}
    unknown = {**bare, sc.GEN_AI_REQUEST_MODEL: "acme-9", sc.GEN_AI_RESPONSE_MODEL: "acme-9"}
    app.call(bare, input=100)
    app.call(unknown, input=50)
    app.flush()
    records = sorted(ledger.records(), key=lambda r: r.model)
    assert [(r.model, r.pricing_status, r.billed_cost is None) for r in records] == [
        ("acme-9", "unpriced", True),
        ("gpt-4o-2024-08-06", "priced", False),
    ]
    (point,) = wrapped.metrics()[sc.METRIC_BILLING_LEDGER_COST].data.data_points
    assert sc.BILLING_TENANT_ID not in point.attributes
    assert sc.BILLING_FEATURE not in point.attributes
    assert point.attributes[sc.GEN_AI_RESPONSE_MODEL] == "gpt-4o-2024-08-06"


def test_heuristic_estimates_are_billed_as_estimated(ledger: SQLiteLedger) -> None:
    """Points of usage counted at 4 characters per token are written and priced (status
    estimated), not rejected: rejecting them would lose billable tokens."""
    wrapped = Collecting()
    app = App(PricingMetricExporter(wrapped, ledger=ledger, catalog=CATALOG))
    app.call({**ATTRS, sc.BILLING_USAGE_SOURCE: "estimated_heuristic"}, input=1200, output=300)
    app.flush()
    records = sorted(ledger.records(), key=lambda r: r.bucket)
    assert [(r.bucket, r.quantity, r.usage_source, r.pricing_status) for r in records] == [
        ("input", 1200, "estimated_heuristic", "estimated"),
        ("output", 300, "estimated_heuristic", "estimated"),
    ]
    for r in records:
        assert r.billed_cost == _cost(r.bucket, r.quantity, r.period_end)
    points = wrapped.metrics()[sc.METRIC_BILLING_LEDGER_COST].data.data_points
    assert {p.attributes[sc.BILLING_PRICING_STATUS] for p in points} == {"estimated"}
    app.provider.shutdown()


def test_no_priced_records_no_cost_metric(ledger: SQLiteLedger) -> None:
    wrapped = Collecting()
    app = App(PricingMetricExporter(wrapped, ledger=ledger, catalog=CATALOG))
    app.duration.record(1.0)
    app.flush()
    assert sc.METRIC_BILLING_LEDGER_COST not in wrapped.metrics()
    assert ledger.count() == 0


def test_wrapped_exporter_receives_the_original_metrics(ledger: SQLiteLedger) -> None:
    wrapped = Collecting(result=MetricExportResult.FAILURE)
    exporter = PricingMetricExporter(wrapped, ledger=ledger, catalog=CATALOG)
    app = App(Collecting())  # only to produce real MetricsData
    app.call(input=10)
    app.flush()
    original = app.reader._exporter.received[-1]  # type: ignore[attr-defined]
    assert exporter.export(original) == MetricExportResult.FAILURE  # the wrapped result
    (received,) = wrapped.received
    sent = [m for rm in received.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
    for metric in (
        m for rm in original.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    ):
        assert any(m is metric for m in sent)  # the very same objects
    assert received.resource_metrics[0].resource is original.resource_metrics[0].resource
    assert exporter.export(MetricsData(resource_metrics=[])) == MetricExportResult.FAILURE
    assert wrapped.received[-1].resource_metrics == []


class BrokenLedger:
    url = "broken://"

    def transaction(self) -> AbstractContextManager[LedgerTransaction]:
        raise OSError("disk full")

    def records(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[CostRecord]:
        return iter(())

    def count(self) -> int:
        return 0

    def close(self) -> None:
        pass


def _export_passes_through(exporter: PricingMetricExporter, wrapped: Collecting) -> None:
    app = App(exporter)
    app.call(input=10, output=3)
    app.flush()
    assert set(wrapped.metrics()) == {sc.METRIC_BILLING_TOKENS, sc.METRIC_CLIENT_OPERATION_DURATION}


def test_closed_ledger_never_breaks_export(
    ledger: SQLiteLedger, caplog: pytest.LogCaptureFixture
) -> None:
    wrapped = Collecting()
    exporter = PricingMetricExporter(wrapped, ledger=ledger, catalog=CATALOG)
    ledger.close()
    _export_passes_through(exporter, wrapped)
    assert "exporter.ledger" in caplog.text


def test_failing_ledger_never_breaks_export() -> None:
    wrapped = Collecting()
    exporter = PricingMetricExporter(wrapped, ledger=BrokenLedger(), catalog=CATALOG)
    _export_passes_through(exporter, wrapped)


def test_unopenable_ledger_never_breaks_export_and_is_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the ledger's directory should be")
    url = f"sqlite:///{blocker}/ledger.db"
    wrapped = Collecting()
    exporter = PricingMetricExporter(wrapped, ledger=url, catalog=CATALOG)  # does not raise
    assert exporter.ledger is None
    assert "exporter.ledger.open" in caplog.text
    app = App(exporter)
    app.call(input=1000)
    app.flush()
    assert sc.METRIC_BILLING_TOKENS in wrapped.metrics()
    # The directory becomes available: the next export opens the ledger; with cumulative
    # temporality the running total is billed whole, so nothing was lost.
    blocker.unlink()
    app.call(input=24)
    app.flush()
    assert exporter.ledger is not None
    assert _totals(exporter.ledger) == {"input": 1024}
    app.provider.shutdown()
    # After shutdown the ledger is closed and not reopened.
    assert exporter.export(wrapped.received[-1]) == MetricExportResult.SUCCESS
    reopened = open_ledger(url)
    assert _totals(reopened) == {"input": 1024}
    reopened.close()


def test_rejected_points_are_logged_not_raised(
    ledger: SQLiteLedger, caplog: pytest.LogCaptureFixture
) -> None:
    wrapped = Collecting()
    app = App(PricingMetricExporter(wrapped, ledger=ledger, catalog=CATALOG))
    app.call(input=5)
    app.tokens.add(7, {**ATTRS, sc.BILLING_TOKEN_BUCKET: "telepathy"})
    app.flush()
    assert _totals(ledger) == {"input": 5}
    assert "telepathy" in caplog.text
    assert sc.METRIC_BILLING_LEDGER_COST in wrapped.metrics()


def test_shutdown_and_flush_delegate(ledger: SQLiteLedger) -> None:
    wrapped = Collecting()
    exporter = PricingMetricExporter(wrapped, ledger=ledger, catalog=CATALOG)
    assert exporter.force_flush()
    assert wrapped.flushed == 1
    exporter.shutdown()
    assert wrapped.shut_down == 1
    with pytest.raises(Exception, match="closed"):
        ledger.count()


def test_wrapped_exporter_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    assert _entry_point_exporter("none") is None and _entry_point_exporter("") is None
    assert isinstance(_entry_point_exporter("console"), ConsoleMetricExporter)
    with pytest.raises(ValueError, match="no_such_exporter"):
        _entry_point_exporter("no_such_exporter")
    monkeypatch.setenv("OTEL_TOKENS_METRICS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_TOKENS_LEDGER", url)
    exporter = PricingMetricExporter(catalog=CATALOG)
    assert exporter.wrapped is None
    assert exporter.ledger is not None and exporter.ledger.url == url
    app = App(exporter)
    app.call(output=9)
    app.flush()
    assert _totals(exporter.ledger) == {"output": 9}
    exporter.shutdown()
    monkeypatch.setenv("OTEL_TOKENS_METRICS_EXPORTER", "console")
    console = PricingMetricExporter(ledger=url, catalog=CATALOG)
    assert isinstance(console.wrapped, ConsoleMetricExporter)
    console.shutdown()
    bare = PricingMetricExporter(wrap_from_env=False, ledger=url)
    assert bare.wrapped is None
    bare.shutdown()


def test_otlp_follows_the_otlp_protocol_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """No package registers an entry point named "otlp": like the SDK, it means the gRPC or
    the HTTP exporter by OTEL_EXPORTER_OTLP_(METRICS_)PROTOCOL, gRPC by default."""
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
        OTLPMetricExporter as GrpcExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpExporter,
    )

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", raising=False)
    expected: list[tuple[dict[str, str], type[Any]]] = [
        ({}, GrpcExporter),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, HttpExporter),
        ({"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc"}, GrpcExporter),
    ]
    for env, cls in expected:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        exporter = _entry_point_exporter("otlp")
        assert type(exporter) is cls, env
        exporter.shutdown()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/json")
    with pytest.raises(ValueError, match="unsupported OTLP protocol 'http/json'"):
        _entry_point_exporter("otlp")


def test_an_exporter_that_cannot_be_wrapped_never_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Under opentelemetry-instrument an exception here would stop all telemetry; instead
    the error is logged and the ledger still gets every point."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    monkeypatch.setenv("OTEL_TOKENS_METRICS_EXPORTER", "no_such_exporter")
    exporter = PricingMetricExporter(ledger=url, catalog=CATALOG)
    assert exporter.wrapped is None
    assert "no_such_exporter" in caplog.text and "cannot be created" in caplog.text
    app = App(exporter)
    app.call(output=7)
    app.flush()
    assert exporter.ledger is not None and _totals(exporter.ledger) == {"output": 7}
    exporter.shutdown()


# --- under opentelemetry-instrument -------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as srv:
        yield srv


def test_opentelemetry_instrument_writes_the_ledger(server: ProviderServer, tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(OPENAI_APP)
    ledger_path = tmp_path / "ledger.db"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPENAI_", "ANTHROPIC_"))
    }
    env.update(
        OPENAI_API_KEY="test",
        OPENAI_BASE_URL=server.openai_base_url,
        OTEL_SERVICE_NAME="exporter-test",
        OTEL_TRACES_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_METRICS_EXPORTER="otel_tokens",
        OTEL_TOKENS_METRICS_EXPORTER="console",
        OTEL_TOKENS_LEDGER=f"sqlite:///{ledger_path}",
        OTEL_METRIC_EXPORT_INTERVAL="60000",
    )
    done = run_instrumented(app, env)
    assert done.returncode == 0, done.stderr
    first_line, _, console = done.stdout.partition("\n")
    usages: Sequence[dict[str, Any]] = json.loads(first_line)
    assert len(usages) == 2
    # The console exporter got the app's metrics and our ledger cost metric.
    assert sc.METRIC_BILLING_TOKENS in console and sc.METRIC_BILLING_LEDGER_COST in console

    ledger = open_ledger(f"sqlite:///{ledger_path}")
    try:
        records = list(ledger.records())
    finally:
        ledger.close()
    totals: dict[str, int] = {}
    for r in records:
        totals[r.bucket] = totals.get(r.bucket, 0) + r.quantity
    prompt = sum(u["prompt_tokens"] for u in usages)
    completion = sum(u["completion_tokens"] for u in usages)
    cached = sum((u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0 for u in usages)
    assert totals.get("input", 0) + totals.get("cache_read", 0) == prompt
    assert totals.get("cache_read", 0) == cached
    assert totals.get("output", 0) + totals.get("reasoning", 0) == completion
    assert sum(totals.values()) == sum(u["total_tokens"] for u in usages)
    assert {(r.provider, r.model, r.service_name, r.pricing_status) for r in records} == {
        ("openai", "gpt-4o-mini-2024-07-18", "exporter-test", "priced")
    }
    for r in records:
        assert r.billed_cost == _cost(r.bucket, r.quantity, r.period_end, r.model)
