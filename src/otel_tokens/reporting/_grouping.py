"""``report``'s grouping: cost records to exact sums per group and currency; JSON and CSV."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from typing import IO, Any

from .. import semconv as sc
from ..records import CostRecord
from ._common import EXACT, display_url, money, utc


def _period_label(end: datetime, unit: str) -> str:
    # ChargePeriodEnd is exclusive: the usage of a record ending at 00:00 happened before.
    t = end.astimezone(UTC) - timedelta(microseconds=1)
    if unit == "hour":
        return t.strftime("%Y-%m-%dT%H:00Z")
    if unit == "day":
        return t.strftime("%Y-%m-%d")
    return t.strftime("%Y-%m")


GROUP_KEYS: dict[str, Callable[[CostRecord], str | None]] = {
    "tenant": lambda r: r.tenant,
    "feature": lambda r: r.feature,
    "user": lambda r: r.user_id,
    "model": lambda r: r.model,
    "provider": lambda r: r.provider,
    "bucket": lambda r: r.bucket,
    "processing": lambda r: r.processing,
    "currency": lambda r: r.currency,
    "status": lambda r: r.pricing_status,
    "service": lambda r: r.service_name,
    "day": lambda r: _period_label(r.period_end, "day"),
    "hour": lambda r: _period_label(r.period_end, "hour"),
    "month": lambda r: _period_label(r.period_end, "month"),
}
DEFAULT_BY: tuple[str, ...] = ("model",)


@dataclass(slots=True)
class ReportLine:
    """Usage and exact cost of one group (one currency); ``key`` follows ``Report.by``."""

    key: tuple[str | None, ...]
    currency: str
    records: int = 0
    tokens: int = 0  # priced
    requests: int = 0  # priced (web_search)
    billed_cost: Decimal | None = None  # None: no priced record (never shown as 0)
    list_cost: Decimal | None = None  # None: no priced record with a list price
    no_list_price: int = 0  # priced records without a list price (custom models)
    unpriced_records: int = 0
    unpriced_tokens: int = 0
    unpriced_requests: int = 0

    def add(self, record: CostRecord) -> None:
        self.records += 1
        requests = record.bucket in sc.REQUEST_BUCKETS
        if record.billed_cost is None:
            self.unpriced_records += 1
            if requests:
                self.unpriced_requests += record.quantity
            else:
                self.unpriced_tokens += record.quantity
            return
        if requests:
            self.requests += record.quantity
        else:
            self.tokens += record.quantity
        with localcontext(EXACT):
            self.billed_cost = (
                record.billed_cost
                if self.billed_cost is None
                else self.billed_cost + record.billed_cost
            )
            if record.list_cost is None:
                self.no_list_price += 1
            else:
                self.list_cost = (
                    record.list_cost
                    if self.list_cost is None
                    else self.list_cost + record.list_cost
                )

    def to_dict(self, by: Sequence[str]) -> dict[str, Any]:
        row: dict[str, Any] = dict(zip(by, self.key, strict=True))
        row.update(
            currency=self.currency,
            records=self.records,
            tokens=self.tokens,
            requests=self.requests,
            billed_cost=money(self.billed_cost),
            list_cost=money(self.list_cost),
            no_list_price_records=self.no_list_price,
            unpriced_records=self.unpriced_records,
            unpriced_tokens=self.unpriced_tokens,
            unpriced_requests=self.unpriced_requests,
        )
        return row


_LINE_FIELDS = (
    "records",
    "tokens",
    "requests",
    "billed_cost",
    "list_cost",
    "no_list_price_records",
    "unpriced_records",
    "unpriced_tokens",
    "unpriced_requests",
)


@dataclass(slots=True)
class Report:
    by: tuple[str, ...]
    lines: list[ReportLine]
    totals: list[ReportLine]  # one per currency, empty key
    since: datetime | None = None
    until: datetime | None = None

    @property
    def records(self) -> int:
        return sum(t.records for t in self.totals)

    @property
    def unpriced_records(self) -> int:
        return sum(t.unpriced_records for t in self.totals)

    def total(self, currency: str) -> ReportLine | None:
        return next((t for t in self.totals if t.currency == currency), None)


def _sort_key(line: ReportLine) -> tuple[Any, ...]:
    return (tuple((v is None, v or "") for v in line.key), line.currency)


def build_report(
    records: Iterable[CostRecord],
    by: Sequence[str] = DEFAULT_BY,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Report:
    """Group records by ``by`` (keys of ``GROUP_KEYS``) and currency, summing exactly."""
    by = tuple(dict.fromkeys(by))
    unknown = [k for k in by if k not in GROUP_KEYS]
    if unknown:
        raise ValueError(f"unknown report key(s) {', '.join(unknown)}; use {', '.join(GROUP_KEYS)}")
    getters = [GROUP_KEYS[k] for k in by]
    lines: dict[tuple[tuple[str | None, ...], str], ReportLine] = {}
    totals: dict[str, ReportLine] = {}
    for record in records:
        key = tuple(get(record) for get in getters)
        line = lines.get((key, record.currency))
        if line is None:
            line = lines[key, record.currency] = ReportLine(key, record.currency)
        line.add(record)
        total = totals.get(record.currency)
        if total is None:
            total = totals[record.currency] = ReportLine((), record.currency)
        total.add(record)
    return Report(
        by=by,
        lines=sorted(lines.values(), key=_sort_key),
        totals=[totals[c] for c in sorted(totals)],
        since=since,
        until=until,
    )


def report_json(report: Report, ledger: str | None = None) -> dict[str, Any]:
    return {
        "ledger": None if ledger is None else display_url(ledger),
        "by": list(report.by),
        "since": None if report.since is None else utc(report.since),
        "until": None if report.until is None else utc(report.until),
        "rows": [line.to_dict(report.by) for line in report.lines],
        "totals": [t.to_dict(()) for t in report.totals],
    }


def report_csv(report: Report, out: IO[str]) -> None:
    """One CSV row per group (no total rows); empty cells are null; money is exact text."""
    keys = list(report.by) + ([] if "currency" in report.by else ["currency"])
    writer = csv.writer(out)
    writer.writerow([*keys, *_LINE_FIELDS])
    for line in report.lines:
        row = line.to_dict(report.by)
        writer.writerow(["" if row[c] is None else row[c] for c in (*keys, *_LINE_FIELDS)])
