"""The ledgers write a batch in a few statements, not a few per point (issue 15), and
still bill each point once: a batch partly written before (a retry) writes the rest."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from _points import BASE_ATTRS
from otel_tokens import semconv as sc
from otel_tokens.ledger import Ledger, SQLiteLedger, open_ledger
from otel_tokens.metering import LedgerPricer, TokenPoint
from otel_tokens.records import stream_id

T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
MIN = 60 * 10**9


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    opened = open_ledger(ledger_url)
    yield opened
    opened.close()


def _points(streams: int, exports: int, *, first: int = 1) -> list[TokenPoint]:
    """``exports`` cumulative points of each of ``streams`` series (value 100 per minute)."""
    out = []
    for s in range(streams):
        attributes = {
            **BASE_ATTRS,
            sc.BILLING_TOKEN_BUCKET: ("input", "output")[s % 2],
            sc.BILLING_TENANT_ID: f"tenant-{s}",
        }
        sid = stream_id({"attributes": attributes, "metric": sc.METRIC_BILLING_TOKENS})
        for e in range(first, first + exports):
            out.append(TokenPoint(sid, attributes, {}, T0, T0 + e * MIN, 100 * e, True))
    return out


def _quantity(ledger: Ledger) -> int:
    return sum(r.quantity for r in ledger.records())


def test_a_batch_is_a_few_statements_in_sqlite(tmp_path: object) -> None:
    ledger = SQLiteLedger(f"{tmp_path}/ledger.db")
    pricer = LedgerPricer(ledger)
    pricer.ingest(_points(1000, 1))
    statements: list[str] = []
    # The real connection, observed: how many statements one batch costs.
    ledger._conn.set_trace_callback(statements.append)
    result = pricer.ingest(_points(1000, 2, first=2))
    ledger._conn.set_trace_callback(None)
    assert len(result.records) == 2000
    # Before: a SELECT and an upsert per point and an INSERT per record (6,000).
    # executemany is traced once per row, so count the distinct statement kinds' calls
    # that are not those rows: reads of marks.
    reads = [s for s in statements if s.startswith("SELECT")]
    assert len(reads) <= 4, len(reads)
    assert _quantity(ledger) == 1000 * 300
    ledger.close()


def test_the_sqlite_page_cache_can_hold_the_indexes_working_set(tmp_path: object) -> None:
    """Inserts into a large ledger land on random pages of the id and usage-key indexes:
    the connection's page cache is 64 MiB, not SQLite's default 2 MB."""
    ledger = SQLiteLedger(f"{tmp_path}/ledger.db")
    assert ledger._conn.execute("PRAGMA cache_size").fetchone()[0] == -65_536
    ledger.close()


def test_a_retried_batch_writes_only_what_is_missing(ledger: Ledger) -> None:
    pricer = LedgerPricer(ledger)
    points = _points(50, 3)
    # The first part of the batch committed before a crash; then the whole batch again.
    first = pricer.ingest(points[:70])
    again = pricer.ingest(points)
    assert len(first.records) + len(again.records) == 150
    assert again.unchanged == 70
    assert _quantity(ledger) == 50 * 300
    assert pricer.ingest(points).records == []
    assert _quantity(ledger) == 50 * 300


def test_stream_ids_of_otlp_points_are_those_of_the_record_spec() -> None:
    """from_otlp encodes a resource's part of the stream identity once per resource: the
    ids must stay those `stream_id` gives (they are in every ledger already)."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    from otel_tokens.metering import from_otlp

    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.extend(
        [
            KeyValue(key="service.name", value=AnyValue(string_value="caisse-é")),
            KeyValue(key="host.cpus", value=AnyValue(int_value=2)),
        ]
    )
    sm = rm.scope_metrics.add()
    sm.scope.name = "otel_tokens"
    metric = sm.metrics.add()
    metric.name = sc.METRIC_BILLING_TOKENS
    metric.sum.aggregation_temporality = 2
    metric.sum.is_monotonic = True
    extras = [
        AnyValue(string_value="données"),
        AnyValue(bool_value=True),
        AnyValue(double_value=1.5),
        AnyValue(int_value=-3),
    ]
    for i, extra in enumerate(extras):
        p = metric.sum.data_points.add()
        p.attributes.extend(
            KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in BASE_ATTRS.items()
        )
        p.attributes.append(KeyValue(key="zz.extra", value=extra))
        p.attributes.append(
            KeyValue(key=sc.BILLING_TOKEN_BUCKET, value=AnyValue(string_value="input"))
        )
        p.time_unix_nano = T0 + (i + 1) * MIN
        p.as_int = 10
    points = [p for p in from_otlp(request) if isinstance(p, TokenPoint)]
    assert len(points) == 4
    for point in points:
        expected = stream_id(
            {
                "resource": dict(point.resource),
                "scope": "otel_tokens",
                "metric": sc.METRIC_BILLING_TOKENS,
                "attributes": dict(point.attributes),
            }
        )
        assert point.stream_id == expected
    assert len({p.stream_id for p in points}) == 4


def test_a_row_holds_each_field_in_its_column() -> None:
    """record_row builds its tuple by hand, for speed: read back, every field is in place."""
    from datetime import UTC, datetime
    from decimal import Decimal

    from otel_tokens.ledger._base import record_row, row_record
    from otel_tokens.records import CostRecord

    at = datetime(2026, 1, 1, tzinfo=UTC)
    record = CostRecord(
        stream_id="stream", period_start=at, period_end=datetime(2026, 1, 2, tzinfo=UTC),
        provider="openai", model="gpt-4o", bucket="input", quantity=7, currency="USD",
        catalog_version="v1", pricing_status="estimated", usage_source="estimated",
        processing="batch", context_tier="above_200k", price_id="p1", priced_model="gpt-4",
        billed_cost=Decimal("0.5"), list_cost=Decimal("0.75"), tenant="t", feature="f",
        user_id="u", operation="chat", service_name="svc", tags={"team": "a"},
    )  # fmt: skip
    row = record_row(record, datetime(2026, 1, 3, tzinfo=UTC))
    assert row[-1] == "2026-01-03T00:00:00.000000Z"
    assert row_record(row[:-1]) == record
    assert row[0] == row[-2] == record.usage_key
