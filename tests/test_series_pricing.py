"""A pricer keeps each series' reading and its unit prices (`SeriesPricing`, issue 15): every
record is still priced exactly as `Catalog.price_call` prices its count, across price
changes, time-of-day prices and price files, and a stream id never lends its attributes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _points import chat_point_attrs
from otel_tokens import semconv as sc
from otel_tokens.ledger import SQLiteLedger
from otel_tokens.metering import LedgerPricer, TokenPoint
from otel_tokens.pricing import Catalog, decimal_str, parse_user_prices
from otel_tokens.usage import TokenUsage

HOUR = 3600 * 10**9


def _ns(at: datetime) -> int:
    return int(at.timestamp()) * 10**9


def _point(attrs: dict[str, Any], at: datetime, value: int, stream: str = "s") -> TokenPoint:
    return TokenPoint(stream, attrs, {"service.name": "svc"}, 0, _ns(at), value, False)


def _expected(catalog: Catalog, attrs: dict[str, Any], at: datetime, count: int) -> Any:
    field = {"web_search": "web_search_requests"}.get(attrs[sc.BILLING_TOKEN_BUCKET])
    usage = TokenUsage(
        **{field or attrs[sc.BILLING_TOKEN_BUCKET]: count},
        source=attrs.get(sc.BILLING_USAGE_SOURCE, "provider"),
    )
    return catalog.price_call(
        usage,
        attrs.get(sc.GEN_AI_RESPONSE_MODEL),
        attrs.get(sc.GEN_AI_REQUEST_MODEL),
        provider=attrs.get(sc.GEN_AI_PROVIDER_NAME),
        at=at,
        processing=attrs.get(sc.BILLING_PROCESSING, "standard"),
        context_tier=attrs.get(sc.BILLING_CONTEXT_TIER, "base"),
    )


def _same(record: Any, result: Any) -> None:
    assert (record.pricing_status, record.price_id, record.model, record.priced_model) == (
        result.status,
        result.price_id,
        result.model,
        result.priced_model,
    )
    assert (record.currency, record.catalog_version) == (result.currency, result.catalog_version)
    if result.total is None:
        assert record.billed_cost is None
    else:  # the same amount, written the same way
        assert record.billed_cost is not None
        assert decimal_str(record.billed_cost) == decimal_str(result.total)
        assert str(record.billed_cost) == str(result.total)


SERIES = [
    chat_point_attrs("openai", "gpt-4o", "input"),
    chat_point_attrs("openai", "gpt-4o", "cache_read"),
    chat_point_attrs("openai", "o3", "output"),
    chat_point_attrs("anthropic", "claude-sonnet-4-20250514", "cache_write_1h"),
    chat_point_attrs(
        "gcp.gemini", "gemini-2.5-pro", "input", **{sc.BILLING_CONTEXT_TIER: "above_200k"}
    ),
    chat_point_attrs("gcp.gemini", "gemini-2.5-flash", "web_search"),
    chat_point_attrs("deepseek", "deepseek-v4-pro", "output"),  # time-of-day prices
    chat_point_attrs("openai", "gpt-4o", "input", **{sc.BILLING_USAGE_SOURCE: "estimated"}),
    chat_point_attrs("openai", "no-such-model", "input"),  # unpriced
    {  # served model unknown: priced at the requested one, estimated
        **chat_point_attrs("openai", "gpt-4o", "output"),
        sc.GEN_AI_RESPONSE_MODEL: "router-xyz",
    },
    chat_point_attrs("openai", "gpt-4o", "input", **{sc.BILLING_PROCESSING: "batch"}),
]
INSTANTS = [
    datetime(2025, 6, 9, 23, tzinfo=UTC),  # o3 before its price cut
    datetime(2025, 6, 10, 1, tzinfo=UTC),
    datetime(2026, 11, 1, 0, tzinfo=UTC),  # deepseek off-peak window 01:00-04:00
    datetime(2026, 11, 1, 1, tzinfo=UTC),
    datetime(2026, 11, 1, 3, 59, tzinfo=UTC),
    datetime(2026, 11, 1, 4, tzinfo=UTC),
]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10), st.integers(0, 5), st.integers(1, 10**9))))
def test_records_are_priced_as_price_call_prices_their_count(
    draws: list[tuple[int, int, int]],
) -> None:
    catalog = Catalog()
    pricer = LedgerPricer(SQLiteLedger(":memory:"), catalog)
    for series, instant, count in draws:
        attrs = SERIES[series]
        at = INSTANTS[instant]
        record = pricer.record(_point(attrs, at, count, f"s{series}"), _ns(at), count)
        _same(record, _expected(catalog, attrs, at, count))


@pytest.mark.parametrize("order", [INSTANTS, INSTANTS[::-1]])
def test_a_series_follows_price_changes_in_either_order(order: list[datetime]) -> None:
    catalog = Catalog()
    pricer = LedgerPricer(SQLiteLedger(":memory:"), catalog)
    for attrs in (SERIES[2], SERIES[6]):
        ids = set()
        for at in order:
            record = pricer.record(_point(attrs, at, 1_000_000), _ns(at), 1_000_000)
            _same(record, _expected(catalog, attrs, at, 1_000_000))
            ids.add(record.price_id)
        assert len(ids) > 1  # the prices did change over these instants


def test_a_price_file_change_applies_from_its_instant() -> None:
    catalog = Catalog(
        parse_user_prices(
            b"models:\n"
            b"  - model: acme-llm\n    provider: acme\n    prices: {input_mtok: 1}\n"
            b"  - model: acme-llm\n    provider: acme\n"
            b"    effective_from: '2026-03-01T12:00:00Z'\n    prices: {input_mtok: 3}\n",
            "acme.yaml",
        )
    )
    pricer = LedgerPricer(SQLiteLedger(":memory:"), catalog)
    attrs = chat_point_attrs("acme", "acme-llm", "input")
    costs = []
    for at in (
        datetime(2026, 3, 1, 11, 59, tzinfo=UTC),
        datetime(2026, 3, 1, 12, tzinfo=UTC),
        datetime(2026, 3, 1, 11, 0, tzinfo=UTC),
    ):
        record = pricer.record(_point(attrs, at, 1_000_000), _ns(at), 1_000_000)
        costs.append(decimal_str(record.billed_cost))  # type: ignore[arg-type]
    assert costs == ["1", "3", "1"]


def test_a_stream_id_does_not_lend_its_attributes() -> None:
    pricer = LedgerPricer(SQLiteLedger(":memory:"))
    at = datetime(2026, 11, 2, tzinfo=UTC)
    first = pricer.record(_point(SERIES[0], at, 10, "same"), _ns(at), 10)
    other = {**SERIES[2], sc.BILLING_TENANT_ID: "t2"}
    second = pricer.record(_point(other, at, 10, "same"), _ns(at), 10)
    assert (first.model, first.bucket, first.tenant) == ("gpt-4o", "input", None)
    assert (second.model, second.bucket, second.tenant) == ("o3", "output", "t2")
    renamed = TokenPoint("same", other, {"service.name": "svc-2"}, 0, _ns(at), 10, False)
    assert pricer.record(renamed, _ns(at), 10).service_name == "svc-2"
