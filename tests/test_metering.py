"""The metering core: token points in, exactly-once priced cost records out.

Points are built three ways: directly as `TokenPoint`s (exact times, for hand-computed
intervals and prices), from a real SDK ``MeterProvider`` read by an ``InMemoryMetricReader``
(cumulative and delta temporality, what the in-process exporter sees), and as real OTLP
protobuf requests encoded from that SDK data (what a collector receives).

Prices are genai-prices 0.2.3 list prices in force at ``AT`` (as in tests/test_pricing.py):
gpt-4o $2.50/MTok input, $1.25 cached input, $10 output (batch: half); gpt-4o-mini $0.15
input; gemini-2.5-pro $1.25 input, $0.125 cached, $10 output up to 200k input tokens and
$2.50, $0.25, $15 above; claude-sonnet-4-5 web search $10 per 1000 requests.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    MetricsData,
)
from opentelemetry.sdk.resources import Resource

from _points import chat_point_attrs
from otel_tokens import semconv as sc
from otel_tokens.ledger import SQLiteLedger
from otel_tokens.metering import (
    IngestResult,
    InvalidPointError,
    LedgerPricer,
    TokenPoint,
    from_otlp,
    from_sdk,
)
from otel_tokens.metering.points import MAX_ATTRIBUTE_LENGTH, MAX_POINT_VALUE, check_value
from otel_tokens.pricing import Catalog, parse_user_prices
from otel_tokens.records import CostRecord, stream_id
from otel_tokens.usage import TokenUsage

PRICES = Path(__file__).parent / "data" / "prices"

AT = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
T0 = int(AT.timestamp()) * 10**9
SEC = 10**9
MIN = 60 * SEC
RESOURCE: dict[str, Any] = {
    "service.name": "checkout",
    "telemetry.sdk.language": "python",
    "telemetry.sdk.name": "opentelemetry",
}
CATALOG = Catalog()  # genai-prices only, whatever OTEL_TOKENS_PRICES says


def attrs(
    bucket: str = "input",
    model: str | None = "gpt-4o",
    provider: str | None = "openai",
    **extra: Any,
) -> dict[str, Any]:
    """Attributes of a gen_ai.billing.tokens point, as our instrumentation records them."""
    return chat_point_attrs(provider, model, bucket, **extra)


def point(
    value: int,
    *,
    time: int,
    start: int = 0,
    cumulative: bool = False,
    attributes: Mapping[str, Any] | None = None,
    resource: Mapping[str, Any] = RESOURCE,
) -> TokenPoint:
    attributes = dict(attrs() if attributes is None else attributes)
    sid = stream_id(
        {
            "resource": dict(resource),
            "scope": "otel_tokens",
            "metric": sc.METRIC_BILLING_TOKENS,
            "attributes": attributes,
        }
    )
    return TokenPoint(sid, attributes, dict(resource), start, time, value, cumulative)


def cum(value: int, time: int, start: int = T0, **kw: Any) -> TokenPoint:
    return point(value, time=time, start=start, cumulative=True, **kw)


def ts(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


@pytest.fixture
def meter() -> Iterator[LedgerPricer]:
    ledger = SQLiteLedger(":memory:")
    yield LedgerPricer(ledger, CATALOG)
    ledger.close()


def total(meter: LedgerPricer, bucket: str | None = None) -> int:
    return sum(r.quantity for r in meter.ledger.records() if bucket in (None, r.bucket))


def intervals(meter: LedgerPricer) -> list[tuple[datetime, datetime, int]]:
    return [(r.period_start, r.period_end, r.quantity) for r in meter.ledger.records()]


def only(result: IngestResult) -> CostRecord:
    assert len(result.records) == 1, result
    return result.records[0]


# --- delta --------------------------------------------------------------------------------
def test_delta_points_become_exact_records(meter: LedgerPricer) -> None:
    batch = [
        point(1000, start=T0, time=T0 + MIN, attributes=attrs("input")),
        point(1920, start=T0, time=T0 + MIN, attributes=attrs("cache_read")),
        point(500, start=T0, time=T0 + MIN, attributes=attrs("output")),
    ]
    result = meter.ingest(batch)
    assert (result.points, result.unchanged, result.rejected) == (3, 0, [])
    by_bucket = {r.bucket: r for r in result.records}
    assert set(by_bucket) == {"input", "cache_read", "output"}
    # 1000 x 2.50 = 2500; 1920 x 1.25 = 2400; 500 x 10 = 5000 micro-dollars.
    assert by_bucket["input"].billed_cost == Decimal("0.0025")
    assert by_bucket["cache_read"].billed_cost == Decimal("0.0024")
    assert by_bucket["output"].billed_cost == Decimal("0.005")
    for r in result.records:
        assert (r.period_start, r.period_end) == (AT, AT + timedelta(minutes=1))
        assert r.pricing_status == "priced"
        assert r.price_id == "genai-prices:openai/gpt-4o"
        assert r.list_cost == r.billed_cost  # no price file: billed at list price
        assert r.currency == "USD"
        assert r.catalog_version == CATALOG.version
        assert isinstance(r.billed_cost, Decimal)
    assert sorted(meter.ledger.records(), key=lambda r: r.id) == sorted(
        result.records, key=lambda r: r.id
    )


def test_delta_replay_changes_nothing(meter: LedgerPricer) -> None:
    batch = [
        point(100 * i, start=T0 + i * MIN, time=T0 + (i + 1) * MIN, attributes=attrs(b))
        for i in range(1, 4)
        for b in ("input", "output")
    ]
    first = meter.ingest(batch)
    assert len(first.records) == 6
    before = list(meter.ledger.records())
    for _ in range(2):
        again = meter.ingest(batch)
        assert again.records == [] and again.unchanged == 6 and again.rejected == []
    # The same point twice in one batch is billed once.
    doubled = meter.ingest([batch[0], batch[0], batch[1]])
    assert doubled.records == [] and doubled.unchanged == 3
    assert list(meter.ledger.records()) == before
    assert total(meter) == 2 * (100 + 200 + 300)


def test_delta_out_of_order_is_fine(meter: LedgerPricer) -> None:
    periods = [(T0 + i * MIN, T0 + (i + 1) * MIN, 10 + i) for i in range(5)]
    for start, end, value in reversed(periods):
        assert len(meter.ingest([point(value, start=start, time=end)]).records) == 1
    assert intervals(meter) == [(ts(s), ts(e), v) for s, e, v in periods]
    shuffled = [point(v, start=s, time=e) for s, e, v in periods]
    random.Random(7).shuffle(shuffled)
    assert meter.ingest(shuffled).unchanged == 5
    assert total(meter) == sum(v for _, _, v in periods)


def test_delta_without_start_time_bills_at_its_time(meter: LedgerPricer) -> None:
    record = only(meter.ingest([point(42, start=0, time=T0)]))
    assert (record.period_start, record.period_end, record.quantity) == (AT, AT, 42)


# --- cumulative ---------------------------------------------------------------------------
def test_cumulative_bills_differences(meter: LedgerPricer) -> None:
    t1, t2, t3 = T0 + MIN, T0 + 2 * MIN, T0 + 3 * MIN
    assert only(meter.ingest([cum(100, t1)])).quantity == 100
    assert only(meter.ingest([cum(250, t2)])).quantity == 150
    assert only(meter.ingest([cum(400, t3)])).quantity == 150
    assert intervals(meter) == [
        (ts(T0), ts(t1), 100),
        (ts(t1), ts(t2), 150),
        (ts(t2), ts(t3), 150),
    ]
    # 400 x 2.50 / 1e6 in three pieces, exactly.
    assert sum(r.billed_cost or 0 for r in meter.ledger.records()) == Decimal("0.001")


def test_cumulative_duplicates_and_older_points_change_nothing(meter: LedgerPricer) -> None:
    t1, t2, t3 = T0 + MIN, T0 + 2 * MIN, T0 + 3 * MIN
    meter.ingest([cum(100, t1), cum(250, t2), cum(400, t3)])
    before = list(meter.ledger.records())
    for late in ([cum(400, t3)], [cum(250, t2)], [cum(100, t1)], [cum(180, t1 + 30 * SEC)]):
        result = meter.ingest(late)
        assert result.records == [] and result.unchanged == 1
    assert list(meter.ledger.records()) == before
    assert total(meter) == 400


def test_cumulative_points_of_one_batch_in_any_order(meter: LedgerPricer) -> None:
    t1, t2, t3 = T0 + MIN, T0 + 2 * MIN, T0 + 3 * MIN
    result = meter.ingest([cum(400, t3), cum(100, t1), cum(250, t2), cum(250, t2)])
    assert sorted(r.quantity for r in result.records) == [100, 150, 150]
    assert result.unchanged == 1
    assert total(meter) == 400


def test_cumulative_restart_bills_from_zero(meter: LedgerPricer) -> None:
    t1, t2 = T0 + MIN, T0 + 2 * MIN
    meter.ingest([cum(100, t1), cum(250, t2)])
    restart = t2 + 30 * SEC  # the process restarted: a new start time, counting from 0
    record = only(meter.ingest([cum(40, restart + MIN, start=restart)]))
    assert (record.period_start, record.period_end, record.quantity) == (
        ts(restart),
        ts(restart + MIN),
        40,
    )
    assert only(meter.ingest([cum(90, restart + 2 * MIN, start=restart)])).quantity == 50
    # A late point of the previous run still bills what that run counted after the mark.
    assert only(meter.ingest([cum(260, t2 + 10 * SEC)])).quantity == 10
    assert total(meter) == 260 + 90


def test_cumulative_reset_under_same_start_bills_new_value(meter: LedgerPricer) -> None:
    t1, t2, t3 = T0 + MIN, T0 + 2 * MIN, T0 + 3 * MIN
    meter.ingest([cum(100, t1)])
    record = only(meter.ingest([cum(30, t2)]))  # the value dropped: a reset
    assert (record.period_start, record.period_end, record.quantity) == (ts(t1), ts(t2), 30)
    assert only(meter.ingest([cum(45, t3)])).quantity == 15
    assert total(meter) == 145


def test_cumulative_unknown_start_first_point_billed_whole(meter: LedgerPricer) -> None:
    t1, t2 = T0 + MIN, T0 + 2 * MIN
    record = only(meter.ingest([cum(500, t1, start=0)]))
    assert (record.period_start, record.period_end, record.quantity) == (ts(t1), ts(t1), 500)
    record = only(meter.ingest([cum(700, t2, start=0)]))
    assert (record.period_start, record.period_end, record.quantity) == (ts(t1), ts(t2), 200)
    assert meter.ingest([cum(500, t1, start=0)]).unchanged == 1
    assert total(meter) == 700


def test_zero_quantity_intervals_write_nothing(meter: LedgerPricer) -> None:
    t1, t2, t3 = T0 + MIN, T0 + 2 * MIN, T0 + 3 * MIN
    assert meter.ingest([cum(0, t1)]).records == []  # a first point at 0: mark only
    assert meter.ingest([point(0, start=T0, time=t1, attributes=attrs("output"))]).records == []
    assert only(meter.ingest([cum(70, t2)])).quantity == 70
    assert meter.ingest([cum(70, t3)]).records == []  # unchanged counter
    assert intervals(meter) == [(ts(t1), ts(t2), 70)]


def test_delta_and_cumulative_streams_in_one_batch(meter: LedgerPricer) -> None:
    t1 = T0 + MIN
    result = meter.ingest(
        [
            cum(300, t1, attributes=attrs("input")),
            point(80, start=T0, time=t1, attributes=attrs("output")),
        ]
    )
    assert {(r.bucket, r.quantity) for r in result.records} == {("input", 300), ("output", 80)}


# One run of a process: its start, then one increment per export and stream.
_increments = st.lists(st.integers(0, 5000), min_size=1, max_size=6)
_runs = st.lists(
    st.tuples(_increments, _increments),  # (input, output) increments per export
    min_size=1,
    max_size=3,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs=_runs, unknown_first_start=st.booleans(), data=st.data())
def test_property_cumulative_totals_are_exact(
    runs: list[tuple[list[int], list[int]]], unknown_first_start: bool, data: st.DataObject
) -> None:
    """Any order, any duplicates, any batching, any restarts: billed total == true total."""
    exported: list[TokenPoint] = []
    truth: Tally[str] = Tally()
    now = T0
    for run, (inputs, outputs) in enumerate(runs):
        start = 0 if (run == 0 and unknown_first_start) else now
        for bucket, increments in (("input", inputs), ("output", outputs)):
            value, t = 0, start or now
            for inc in increments:
                value += inc
                t += MIN
                exported.append(cum(value, t, start=start, attributes=attrs(bucket)))
            truth[bucket] += value
        now += (max(len(inputs), len(outputs)) + 1) * MIN  # the next run starts later
    duplicates = data.draw(st.lists(st.sampled_from(exported), max_size=len(exported)))
    delivered = data.draw(st.permutations(exported + duplicates))
    cuts = sorted(data.draw(st.sets(st.integers(1, len(delivered)), max_size=8)))
    ledger = SQLiteLedger(":memory:")
    meter = LedgerPricer(ledger, CATALOG)
    try:
        for lo, hi in zip([0, *cuts], [*cuts, len(delivered)], strict=True):
            result = meter.ingest(delivered[lo:hi])
            assert result.rejected == []
        for bucket in ("input", "output"):
            assert total(meter, bucket) == truth[bucket]
        # Billed intervals of a stream never overlap (nothing billed twice).
        for bucket in ("input", "output"):
            spans = sorted(
                (r.period_start, r.period_end) for r in ledger.records() if r.bucket == bucket
            )
            for (_, end), (begin, _) in itertools.pairwise(spans):
                assert end <= begin
        # Replaying everything afterwards changes nothing.
        count = ledger.count()
        assert meter.ingest(delivered).records == []
        assert ledger.count() == count
    finally:
        ledger.close()


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.integers(0, 10**6), min_size=1, max_size=12),
    data=st.data(),
)
def test_property_delta_totals_are_exact(values: list[int], data: st.DataObject) -> None:
    exported = [point(v, start=T0 + i * MIN, time=T0 + (i + 1) * MIN) for i, v in enumerate(values)]
    duplicates = data.draw(st.lists(st.sampled_from(exported), max_size=10))
    delivered = data.draw(st.permutations(exported + duplicates))
    ledger = SQLiteLedger(":memory:")
    meter = LedgerPricer(ledger, CATALOG)
    try:
        for p in delivered:
            meter.ingest([p])
        assert total(meter) == sum(values)
    finally:
        ledger.close()


# --- real SDK points ----------------------------------------------------------------------
SDK_ATTRS = {
    sc.GEN_AI_PROVIDER_NAME: "openai",
    sc.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
    sc.GEN_AI_RESPONSE_MODEL: "gpt-4o-mini-2024-07-18",
    sc.GEN_AI_OPERATION_NAME: "chat",
    sc.BILLING_PROCESSING: "standard",
    sc.BILLING_CONTEXT_TIER: "base",
    sc.BILLING_USAGE_SOURCE: "provider",
    sc.BILLING_TENANT_ID: "tenant-42",
}


class App:
    """A process with the SDK: a meter provider, our counter and an in-memory reader."""

    def __init__(self, temporality: AggregationTemporality) -> None:
        self.reader = InMemoryMetricReader(
            preferred_temporality={Counter: temporality, Histogram: temporality}
        )
        self.provider = MeterProvider(
            metric_readers=[self.reader],
            resource=Resource.create({"service.name": "checkout", "service.version": "1.4"}),
        )
        meter = self.provider.get_meter("otel_tokens", "0.1.0")
        self.tokens = meter.create_counter(sc.METRIC_BILLING_TOKENS, unit="{token}")
        self.usage = meter.create_histogram(sc.METRIC_CLIENT_TOKEN_USAGE, unit="{token}")

    def call(self, **buckets: int) -> None:
        for bucket, count in buckets.items():
            self.tokens.add(count, {**SDK_ATTRS, sc.BILLING_TOKEN_BUCKET: bucket})
        self.usage.record(sum(buckets.values()), {**SDK_ATTRS, sc.GEN_AI_TOKEN_TYPE: "input"})

    def collect(self) -> Any:
        data = self.reader.get_metrics_data()  # None when a delta collection is empty
        return data if data is not None else MetricsData(resource_metrics=[])

    def shutdown(self) -> None:
        self.provider.shutdown()


def otlp_request(metrics_data: Any) -> ExportMetricsServiceRequest:
    """The OTLP/protobuf request an OTLP exporter would send for ``metrics_data``, as received."""
    body = encode_metrics(metrics_data).SerializeToString()
    request = ExportMetricsServiceRequest()
    request.ParseFromString(body)
    return request


def _expected_cost(records: Iterable[CostRecord]) -> Decimal:
    total = Decimal(0)
    for r in records:
        counts: dict[str, Any] = {r.bucket: r.quantity}
        usage = TokenUsage(**counts)
        priced = CATALOG.price(usage, "gpt-4o-mini-2024-07-18", provider="openai", at=r.period_end)
        assert priced.total is not None
        total += priced.total
    return total


@pytest.mark.parametrize(
    "temporality", [AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA]
)
def test_sdk_points_are_billed_exactly_once(
    meter: LedgerPricer, temporality: AggregationTemporality
) -> None:
    app = App(temporality)
    collections = []
    app.call(input=1200, output=300, cache_read=64)
    collections.append(app.collect())
    app.call(input=800)
    collections.append(app.collect())
    collections.append(app.collect())  # nothing new
    app.call(input=10, output=5)
    app.call(output=7)
    collections.append(app.collect())
    app.shutdown()

    points = [p for data in collections for p in from_sdk(data)]
    assert all(isinstance(p, TokenPoint) for p in points)
    assert {p.cumulative for p in points if isinstance(p, TokenPoint)} == {
        temporality == AggregationTemporality.CUMULATIVE
    }
    for data in collections:
        result = meter.ingest(from_sdk(data))
        assert result.rejected == []
    assert (total(meter, "input"), total(meter, "output"), total(meter, "cache_read")) == (
        2010,
        312,
        64,
    )
    records = list(meter.ledger.records())
    assert all(r.tenant == "tenant-42" and r.service_name == "checkout" for r in records)
    assert all(r.model == "gpt-4o-mini-2024-07-18" for r in records)
    assert sum(r.billed_cost or 0 for r in records) == _expected_cost(records)
    # Every export again, in reverse: nothing new.
    for data in reversed(collections):
        assert meter.ingest(from_sdk(data)).records == []
    assert len(list(meter.ledger.records())) == len(records)


def test_sdk_restart_is_a_new_start_time_billed_from_zero(meter: LedgerPricer) -> None:
    first = App(AggregationTemporality.CUMULATIVE)
    first.call(input=1000)
    meter.ingest(from_sdk(first.collect()))
    first.call(input=500)
    last_of_first = first.collect()
    first.shutdown()

    second = App(AggregationTemporality.CUMULATIVE)  # same resource and attributes
    second.call(input=30)
    data = second.collect()
    second.shutdown()
    (old,) = list(from_sdk(last_of_first))
    (new,) = list(from_sdk(data))
    assert isinstance(old, TokenPoint) and isinstance(new, TokenPoint)
    assert new.stream_id == old.stream_id and new.start_ns > old.start_ns
    assert only(meter.ingest([new])).quantity == 30
    assert only(meter.ingest([old])).quantity == 500  # late, but from the previous run
    assert total(meter) == 1530


@pytest.mark.parametrize("instrument", ["create_up_down_counter", "create_histogram"])
def test_sdk_token_metric_that_is_not_a_monotonic_sum_is_rejected(
    meter: LedgerPricer, instrument: str
) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    wrong = getattr(provider.get_meter("elsewhere"), instrument)(sc.METRIC_BILLING_TOKENS)
    (wrong.add if instrument == "create_up_down_counter" else wrong.record)(100, attrs("input"))
    data = reader.get_metrics_data()
    provider.shutdown()
    result = meter.ingest(from_sdk(data))
    assert result.records == [] and len(result.rejected) == 1
    assert ("monotonic" if instrument == "create_up_down_counter" else "must be a Sum") in (
        result.rejected[0]
    )
    # The same data over OTLP is rejected the same way.
    assert meter.ingest(from_otlp(otlp_request(data))).rejected == result.rejected


@pytest.mark.parametrize(
    "temporality", [AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA]
)
def test_otlp_points_equal_sdk_points(temporality: AggregationTemporality) -> None:
    app = App(temporality)
    app.call(input=1200, output=300, reasoning=64)
    data = app.collect()
    app.shutdown()
    request = otlp_request(data)
    assert any(  # the histogram travels too, and is not a token point
        m.name == sc.METRIC_CLIENT_TOKEN_USAGE
        for rm in request.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    )
    sdk = sorted(from_sdk(data), key=lambda p: getattr(p, "stream_id", ""))
    otlp = sorted(from_otlp(request), key=lambda p: getattr(p, "stream_id", ""))
    assert len(sdk) == 3
    assert sdk == otlp  # same stream ids, times, values, attributes, resource, temporality


@pytest.mark.parametrize(
    "temporality", [AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA]
)
def test_exporter_and_collector_paths_share_one_ledger_exactly_once(
    meter: LedgerPricer, temporality: AggregationTemporality
) -> None:
    """The same SDK data through from_sdk (exporter) and OTLP (collector): billed once."""
    app = App(temporality)
    app.call(input=100, output=20)
    one = app.collect()
    app.call(input=50)
    two = app.collect()
    app.shutdown()
    assert len(meter.ingest(from_sdk(one)).records) == 2
    assert meter.ingest(from_otlp(otlp_request(one))).records == []
    assert len(meter.ingest(from_otlp(otlp_request(two))).records) == 1
    assert meter.ingest(from_sdk(two)).records == []
    assert (total(meter, "input"), total(meter, "output")) == (150, 20)


# --- pricing points -----------------------------------------------------------------------
def price_one(
    meter: LedgerPricer, value: int, attributes: Mapping[str, Any], time: int = T0 + MIN
) -> CostRecord:
    result = meter.ingest([point(value, start=T0, time=time, attributes=attributes)])
    assert result.rejected == []
    return only(result)


@pytest.mark.parametrize(
    ("bucket", "tier", "value", "cost"),
    [
        # Above 200k input tokens every token of the call pays the higher rate.
        ("input", "above_200k", 150_000, "0.375"),  # x 2.50
        ("cache_read", "above_200k", 100_000, "0.025"),  # x 0.25
        ("output", "above_200k", 1000, "0.015"),  # x 15
        ("reasoning", "above_200k", 3000, "0.045"),  # x 15 (thinking billed as output)
        ("input", "base", 200_000, "0.25"),  # x 1.25: the tier is the call's, not the sum's
        ("output", "base", 1000, "0.01"),  # x 10
    ],
)
def test_gemini_context_tier_prices_at_the_tier(
    meter: LedgerPricer, bucket: str, tier: str, value: int, cost: str
) -> None:
    a = attrs(
        bucket, model="gemini-2.5-pro", provider="gcp.gemini", **{sc.BILLING_CONTEXT_TIER: tier}
    )
    record = price_one(meter, value, a)
    assert record.billed_cost == Decimal(cost)
    assert record.context_tier == tier
    assert record.price_id == "genai-prices:google/gemini-2.5-pro"
    assert record.to_focus()["SkuPriceId"] == (
        f"genai-prices:google/gemini-2.5-pro/{bucket}" + ("" if tier == "base" else f"/{tier}")
    )


def test_processing_variant_prices_and_unavailable_variant(meter: LedgerPricer) -> None:
    batch = price_one(meter, 1_000_000, attrs(**{sc.BILLING_PROCESSING: "batch"}))
    assert batch.billed_cost == Decimal("1.25")  # half of 2.50
    assert batch.price_id == "genai-prices:openai/gpt-4o#batch"
    assert batch.processing == "batch"
    flex = price_one(meter, 1000, attrs("output", **{sc.BILLING_PROCESSING: "flex"}))
    assert flex.pricing_status == "variant_unavailable"
    assert flex.billed_cost is None and flex.list_cost is None


def test_web_search_requests_priced_per_thousand(meter: LedgerPricer) -> None:
    record = price_one(
        meter, 3, attrs("web_search", model="claude-sonnet-4-5", provider="anthropic")
    )
    assert record.billed_cost == Decimal("0.03")  # 3 x $10 / 1000
    focus = record.to_focus()
    assert (focus["ConsumedUnit"], focus["PricingUnit"]) == ("Requests", "1000 Requests")
    assert (focus["ConsumedQuantity"], focus["PricingQuantity"]) == ("3", "0.003")


def test_rerank_search_units_reach_the_ledger_unpriced_without_a_rate(meter: LedgerPricer) -> None:
    # A request bucket like web_search: accepted as a point, never dropped as unknown, and
    # unpriced (null cost) since the catalog has no search rate for it.
    record = price_one(meter, 2, attrs("search_units", model="rerank-v3.5", provider="cohere"))
    assert (record.bucket, record.quantity) == ("search_units", 2)
    assert record.billed_cost is None and record.pricing_status == "unpriced"


def test_response_model_first_then_request_model(meter: LedgerPricer) -> None:
    # The served snapshot has its own price; it wins over the requested alias.
    snap = attrs(**{sc.GEN_AI_RESPONSE_MODEL: "gpt-4o-mini-2024-07-18"})
    record = price_one(meter, 1_000_000, snap)
    assert (record.model, record.billed_cost) == ("gpt-4o-mini-2024-07-18", Decimal("0.15"))
    # A response model the catalog does not know is priced at the request model, and says
    # so: status estimated, the served model kept, the model that priced it named.
    unknown = attrs(**{sc.GEN_AI_RESPONSE_MODEL: "acme-router-v7"})
    record = price_one(meter, 1_000_000, unknown, time=T0 + 2 * MIN)
    assert (record.model, record.billed_cost) == ("acme-router-v7", Decimal("2.5"))
    assert (record.pricing_status, record.priced_model) == ("estimated", "gpt-4o")
    assert record.price_id == "genai-prices:openai/gpt-4o"
    focus = record.to_focus()
    assert (focus["x_PricingStatus"], focus["x_PricedModel"]) == ("estimated", "gpt-4o")
    assert next(r for r in meter.ledger.records() if r.model == "acme-router-v7") == record
    # No response model at all: the request model.
    only_request = attrs()
    del only_request[sc.GEN_AI_RESPONSE_MODEL]
    record = price_one(meter, 1_000_000, only_request, time=T0 + 3 * MIN)
    assert (record.model, record.billed_cost) == ("gpt-4o", Decimal("2.5"))
    assert (record.pricing_status, record.priced_model) == ("priced", None)


def test_unknown_model_is_unpriced_with_null_cost_never_zero(meter: LedgerPricer) -> None:
    record = price_one(meter, 5000, attrs(model="acme-llm-9000", provider="acme"))
    assert record.pricing_status == "unpriced"
    assert record.billed_cost is None and record.list_cost is None
    assert record.price_id is None
    assert (record.model, record.quantity) == ("acme-llm-9000", 5000)
    focus = record.to_focus()
    assert focus["BilledCost"] is None and focus["ListCost"] is None
    stored = next(iter(meter.ledger.records()))
    assert stored.billed_cost is None and stored == record


@pytest.mark.parametrize("source", ["estimated", "estimated_heuristic"])
def test_estimated_usage_is_priced_as_estimated(meter: LedgerPricer, source: str) -> None:
    record = price_one(meter, 1000, attrs(**{sc.BILLING_USAGE_SOURCE: source}))
    assert (record.pricing_status, record.usage_source) == ("estimated", source)
    assert record.billed_cost == Decimal("0.0025")
    assert record.to_focus()["x_UsageSource"] == source
    assert next(iter(meter.ledger.records())) == record


def test_price_file_discount_bills_below_list() -> None:
    catalog = Catalog(
        parse_user_prices(b"discounts:\n  - provider: openai\n    percent: 10\n", "d.yaml")
    )
    meter = LedgerPricer(SQLiteLedger(":memory:"), catalog)
    record = price_one(meter, 1_000_000, attrs())
    assert record.billed_cost == Decimal("2.25")
    assert record.list_cost == Decimal("2.5")
    assert record.price_id == "genai-prices:openai/gpt-4o~discount0:10%"
    assert record.catalog_version == catalog.version and "+user.sha256:" in catalog.version
    focus = record.to_focus()
    assert (focus["BilledCost"], focus["ListCost"], focus["ListUnitPrice"]) == (
        "2.25",
        "2.5",
        "2.5",
    )


def test_price_file_contract_price_and_custom_model() -> None:
    meter = LedgerPricer(SQLiteLedger(":memory:"), Catalog.load(PRICES / "contract.yaml"))
    # contract.yaml models[0]: gpt-4o at $2.00 input, list $2.50.
    contract = price_one(meter, 1000, attrs())
    assert (contract.billed_cost, contract.list_cost) == (Decimal("0.002"), Decimal("0.0025"))
    # models[5]: a self-hosted model with no list price: ListCost null, BilledCost set.
    custom = price_one(meter, 1000, attrs(model="acme-llm", provider="acme"), time=T0 + 2 * MIN)
    assert (custom.billed_cost, custom.list_cost) == (Decimal("0.0005"), None)


def test_list_cost_is_in_the_billing_currency() -> None:
    # eur_reporting.yaml reports in EUR (1 USD = 0.92 EUR) with no discount: list == billed.
    catalog = Catalog.load(PRICES / "eur_reporting.yaml")
    meter = LedgerPricer(SQLiteLedger(":memory:"), catalog)
    record = price_one(meter, 1_000_000, attrs())
    assert record.currency == "EUR"
    assert record.billed_cost == Decimal("2.3")  # 2.50 x 0.92
    assert record.list_cost == Decimal("2.3")
    # With a 10% discount on top, list stays the converted list price.
    discounted = Catalog(
        parse_user_prices(
            b"currency: EUR\nfx: {USD: '0.92'}\n"
            b"discounts:\n  - provider: openai\n    percent: 10\n",
            "eur-discount.yaml",
        )
    )
    meter = LedgerPricer(SQLiteLedger(":memory:"), discounted)
    record = price_one(meter, 1_000_000, attrs())
    assert (record.billed_cost, record.list_cost) == (Decimal("2.07"), Decimal("2.3"))


def test_attribution_is_mapped(meter: LedgerPricer) -> None:
    a = attrs(
        **{
            sc.BILLING_TENANT_ID: "tenant-42",
            sc.BILLING_FEATURE: "search-summary",
            sc.BILLING_USER_ID: "u-7",
            f"{sc.BILLING_TAG_PREFIX}cost-center": "cc-7",
            f"{sc.BILLING_TAG_PREFIX}env": "prod",
        }
    )
    record = price_one(meter, 10, a)
    assert (record.tenant, record.feature, record.user_id) == ("tenant-42", "search-summary", "u-7")
    assert record.tags == {"cost-center": "cc-7", "env": "prod"}
    assert (record.operation, record.service_name, record.provider) == (
        "chat",
        "checkout",
        "openai",
    )
    focus = record.to_focus()
    assert focus["SubAccountId"] == "tenant-42"
    assert focus["Tags"] == {"cost-center": "cc-7", "env": "prod"}
    assert (focus["x_Feature"], focus["x_UserId"]) == ("search-summary", "u-7")
    assert record.to_cloudevent()["subject"] == "tenant-42"
    bare = price_one(meter, 10, attrs(), time=T0 + 2 * MIN)
    assert (bare.tenant, bare.feature, bare.user_id, dict(bare.tags)) == (None, None, None, {})
    assert "subject" not in bare.to_cloudevent()


# --- invalid points -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0), (1, 1), (12.0, 12), (MAX_POINT_VALUE, MAX_POINT_VALUE), (float(2**40), 2**40)],
)
def test_check_value_accepts_whole_counts(value: Any, expected: int) -> None:
    assert check_value(value) == expected
    assert type(check_value(value)) is int


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "negative"),
        (-0.5, "whole"),
        (1.5, "whole"),
        (math.nan, "finite"),
        (math.inf, "finite"),
        (-math.inf, "finite"),
        (MAX_POINT_VALUE + 1, "beyond"),
        (1e300, "beyond"),
        (True, "number"),
        ("12", "number"),
        (None, "number"),
        (Decimal(3), "number"),
    ],
)
def test_check_value_rejects(value: Any, message: str) -> None:
    with pytest.raises(InvalidPointError, match=message):
        check_value(value)


def _kv(key: str, value: Any) -> common_pb2.KeyValue:
    if isinstance(value, dict):
        any_value = common_pb2.AnyValue(
            kvlist_value=common_pb2.KeyValueList(values=[_kv(k, v) for k, v in value.items()])
        )
    elif isinstance(value, int):
        any_value = common_pb2.AnyValue(int_value=value)
    else:
        any_value = common_pb2.AnyValue(string_value=value)
    return common_pb2.KeyValue(key=key, value=any_value)


def _otlp_point(value: int | float, attributes: Mapping[str, Any], time: int) -> Any:
    p = metrics_pb2.NumberDataPoint(
        attributes=[_kv(k, v) for k, v in attributes.items()],
        start_time_unix_nano=T0,
        time_unix_nano=time,
    )
    if isinstance(value, float):
        p.as_double = value
    else:
        p.as_int = value
    return p


def _otlp_request(*metrics: Any) -> ExportMetricsServiceRequest:
    return ExportMetricsServiceRequest(
        resource_metrics=[
            metrics_pb2.ResourceMetrics(
                resource=resource_pb2.Resource(attributes=[_kv(k, v) for k, v in RESOURCE.items()]),
                scope_metrics=[
                    metrics_pb2.ScopeMetrics(
                        scope=common_pb2.InstrumentationScope(name="otel_tokens"),
                        metrics=list(metrics),
                    )
                ],
            )
        ]
    )


def _sum(points: list[Any], *, temporality: Any = 1, monotonic: bool = True) -> Any:
    return metrics_pb2.Metric(
        name=sc.METRIC_BILLING_TOKENS,
        unit="{token}",
        sum=metrics_pb2.Sum(
            data_points=points, aggregation_temporality=temporality, is_monotonic=monotonic
        ),
    )


def test_invalid_otlp_points_rejected_valid_ones_written(meter: LedgerPricer) -> None:
    t = T0 + MIN
    good_in, good_out = attrs("input"), attrs("output")
    no_model = attrs("input", model=None)
    invalid = [
        (_otlp_point(-5, attrs("cache_read"), t), "negative"),
        (_otlp_point(math.nan, attrs("reasoning"), t), "finite"),
        (_otlp_point(2.5, attrs("input_audio"), t), "whole number"),
        (_otlp_point(10**16, attrs("output_audio"), t), "beyond any real usage"),
        (_otlp_point(7, attrs("no_such_bucket"), t), "unknown or missing"),
        (_otlp_point(7, no_model, t), "without gen_ai.response.model"),
        (_otlp_point(7, attrs("input_image", provider=None), t), "gen_ai.provider.name"),
        (_otlp_point(7, attrs(**{sc.BILLING_PROCESSING: "turbo"}), t), "processing"),
        (_otlp_point(7, attrs(**{sc.BILLING_USAGE_SOURCE: "guess"}), t), "usage_source"),
        (_otlp_point(7, attrs(**{sc.BILLING_CONTEXT_TIER: "huge"}), t), "context_tier"),
        (_otlp_point(7, {**attrs(), sc.BILLING_TOKEN_BUCKET: {"a": "b"}}, t), "bucket"),
        (_otlp_point(7, attrs("output_image"), 0), "time_unix_nano"),
    ]
    valid = [_otlp_point(1000, good_in, t), _otlp_point(250.0, good_out, t)]
    points = [p for p, _ in invalid[:6]] + valid + [p for p, _ in invalid[6:]]
    gauge = metrics_pb2.Metric(
        name=sc.METRIC_BILLING_TOKENS,
        gauge=metrics_pb2.Gauge(data_points=[_otlp_point(3, good_in, t)]),
    )
    request = _otlp_request(
        _sum(points),
        gauge,
        _sum([_otlp_point(3, good_in, t)], monotonic=False),
        _sum([_otlp_point(3, good_in, t)], temporality=0),
    )
    result = meter.ingest(from_otlp(request))
    assert result.points == len(points) + 3
    assert {(r.bucket, r.quantity) for r in result.records} == {("input", 1000), ("output", 250)}
    assert len(result.rejected) == len(invalid) + 3
    for _, reason in invalid:
        assert any(reason in message for message in result.rejected), (reason, result.rejected)
    for reason in ("must be a Sum", "must be monotonic", "unspecified aggregation temporality"):
        assert any(reason in message for message in result.rejected), reason
    assert meter.ledger.count() == 2


def test_invalid_token_points_rejected_valid_ones_written(meter: LedgerPricer) -> None:
    t = T0 + MIN
    batch: list[TokenPoint | InvalidPointError] = [
        InvalidPointError("token count must not be negative, got -3"),
        cum(100, t, attributes=attrs("input")),
        point(5, start=T0, time=2**63 + 5, attributes=attrs("output")),  # beyond int64
        cum(5, 2**63 + 5, attributes=attrs("cache_read")),
        point(5, start=t + SEC, time=t, attributes=attrs("reasoning")),  # starts after its end
        point(5, start=T0, time=t, attributes=attrs(model="")),
        point(9, start=T0, time=t, attributes=attrs("output")),
    ]
    result = meter.ingest(batch)
    assert {(r.bucket, r.quantity) for r in result.records} == {("input", 100), ("output", 9)}
    assert len(result.rejected) == 5
    assert sum("time_unix_nano out of range" in m for m in result.rejected) == 2
    assert any("start_time_unix_nano" in m for m in result.rejected)
    assert meter.ledger.count() == 2


def test_one_check_of_a_point_for_every_source(meter: LedgerPricer) -> None:
    """The meter itself holds points to what the ledger can take (the collector no longer
    checks them apart): an attribute it reads as a string that is not one, or a start after
    the end, is rejected here, whatever the points came from."""
    t = T0 + MIN
    batch: list[TokenPoint | InvalidPointError] = [
        point(5, start=T0, time=t, attributes=attrs(**{sc.BILLING_FEATURE: 3})),
        point(5, start=T0, time=t, attributes=attrs(**{sc.BILLING_TENANT_ID: ("a", "b")})),
        point(9, start=T0, time=t, attributes=attrs("output")),
    ]
    result = meter.ingest(batch)
    assert [(r.bucket, r.quantity) for r in result.records] == [("output", 9)]
    assert result.rejected == [
        f"attribute {sc.BILLING_FEATURE} must be a string",
        f"attribute {sc.BILLING_TENANT_ID} must be a string",
    ]


def test_a_batch_of_rejected_points_opens_no_transaction(tmp_path: Path) -> None:
    ledger = SQLiteLedger(str(tmp_path / "ledger.db"))
    ledger.close()  # any transaction would fail now
    result = LedgerPricer(ledger, CATALOG).ingest([point(5, time=T0, attributes=attrs("bogus"))])
    assert (result.points, len(result.rejected), result.records) == (1, 1, [])


def test_buckets_are_priced_one_by_one_and_fail_closed(meter: LedgerPricer) -> None:
    # genai-prices has only text rates for gpt-4o-audio-preview: its text bucket is billed,
    # its audio bucket is recorded unpriced (null cost), never at the text rate.
    model = "gpt-4o-audio-preview"
    text = price_one(meter, 1_000_000, attrs("input", model=model))
    assert (text.pricing_status, text.billed_cost) == ("priced", Decimal("2.5"))
    audio = price_one(meter, 1_000_000, attrs("input_audio", model=model), time=T0 + 2 * MIN)
    assert (audio.pricing_status, audio.billed_cost, audio.list_cost) == ("unpriced", None, None)
    assert audio.quantity == 1_000_000  # the tokens are kept, only the price is missing


def test_a_contract_for_a_model_bills_its_served_snapshot() -> None:
    # The README's price-file example: a gpt-4o contract ($2.00 input). Calls are metered by
    # the served snapshot gpt-4o-2024-08-06, which the contract covers.
    catalog = Catalog(
        parse_user_prices(
            b"models:\n  - provider: openai\n    model: gpt-4o\n"
            b"    prices: {input_mtok: '2.00', output_mtok: '8.00'}\n",
            "contract.yaml",
        )
    )
    meter = LedgerPricer(SQLiteLedger(":memory:"), catalog)
    served = attrs(**{sc.GEN_AI_RESPONSE_MODEL: "gpt-4o-2024-08-06"})
    record = price_one(meter, 1_000_000, served)
    assert (record.model, record.price_id) == ("gpt-4o-2024-08-06", "user:openai/gpt-4o")
    assert (record.billed_cost, record.list_cost) == (Decimal("2"), Decimal("2.5"))


def test_otlp_repeated_or_overlong_attributes_are_rejected(meter: LedgerPricer) -> None:
    """A repeated key (which value counts would depend on the reader) and keys or values
    beyond MAX_ATTRIBUTE_LENGTH are rejected points; the limit itself is accepted."""
    t = T0 + MIN
    repeated = _otlp_point(7, attrs("input", **{sc.BILLING_TENANT_ID: "acme"}), t)
    repeated.attributes.append(_kv(sc.BILLING_TENANT_ID, "globex"))
    limit = MAX_ATTRIBUTE_LENGTH
    invalid = [
        (repeated, f"attribute '{sc.BILLING_TENANT_ID}' is repeated"),
        (_otlp_point(7, attrs(**{sc.BILLING_TENANT_ID: "t" * (limit + 1)}), t), "beyond"),
        (_otlp_point(7, attrs(**{"k" * (limit + 1): "v"}), t), "attribute key"),
        (_otlp_point(7, attrs(**{sc.BILLING_TAG_PREFIX + "x": {"a": "b" * limit}}), t), "beyond"),
    ]
    fits = _otlp_point(11, attrs("output", **{sc.BILLING_TENANT_ID: "t" * limit}), t)
    result = meter.ingest(from_otlp(_otlp_request(_sum([p for p, _ in invalid] + [fits]))))
    assert [(r.bucket, r.quantity, r.tenant) for r in result.records] == [
        ("output", 11, "t" * limit)
    ]
    assert len(result.rejected) == len(invalid)
    for (_, reason), message in zip(invalid, result.rejected, strict=True):
        assert reason in message
        assert len(message) < 200  # an over-long value is not echoed back


def test_otlp_resource_with_repeated_key_or_overlong_service_name_is_rejected() -> None:
    t = T0 + MIN
    request = _otlp_request(_sum([_otlp_point(7, attrs(), t), _otlp_point(8, attrs(), t)]))
    resource = request.resource_metrics[0].resource
    resource.attributes.append(_kv("service.name", "other"))
    assert [str(p) for p in from_otlp(request)] == [
        "resource: attribute 'service.name' is repeated"
    ] * 2
    del resource.attributes[:]
    resource.attributes.append(_kv("service.name", "s" * (MAX_ATTRIBUTE_LENGTH + 1)))
    resource.attributes.append(_kv("process.command_line", "x" * 10_000))  # not kept: fine
    assert all("service.name" in str(p) for p in from_otlp(request))
    resource.attributes[0].value.string_value = "s"
    assert all(isinstance(p, TokenPoint) for p in from_otlp(request))
