"""``otel-tokens report`` and ``otel-tokens export``: read a ledger, print or write its records.

``report`` prints cost grouped by chosen keys: quantities, billed and list cost summed as exact
Decimals (full precision, never float), one total per currency, unpriced usage apart (it has
no cost, never cost 0).

``export`` writes the records for other systems (nothing is sent):

* ``focus``: FOCUS 1.2 CSV (Parquet when the output ends in ``.parquet``), one row per priced
  record; unpriced records are left out and counted on stderr (SPEC section 7);
* ``cloudevents``: CloudEvents 1.0 JSON lines (structured mode) as OpenMeter ingests them,
  deterministic ids, unpriced records with null costs;
* ``stripe``: Stripe Billing meter event payloads (``POST /v1/billing/meter_events``), JSON
  lines, the record id as the idempotency ``identifier``.

Both select records by charge period end, ``since < ChargePeriodEnd <= until``, as the ledger
does; the ``day``, ``hour`` and ``month`` keys (UTC) follow the same rule, so a record ending
exactly at midnight counts in the day before, and ``--until 2026-03-31`` takes the whole day.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import string
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from pathlib import Path
from typing import IO, Any, Literal, get_args
from urllib.parse import urlsplit, urlunsplit

from .. import semconv as sc
from ..ledger import DEFAULT_LEDGER_URL, ENV_LEDGER, Ledger, LedgerError, open_ledger
from ..pricing import decimal_str
from ..records import CostRecord

__all__ = [
    "DEFAULT_BY",
    "GROUP_KEYS",
    "ExportError",
    "ExportResult",
    "Report",
    "ReportLine",
    "add_parsers",
    "build_report",
    "cloudevent",
    "cmd_export",
    "cmd_report",
    "focus_cells",
    "focus_columns",
    "format_table",
    "load_customer_map",
    "parse_instant",
    "report_csv",
    "report_json",
    "stripe_events",
    "write_cloudevents",
    "write_focus_csv",
    "write_focus_parquet",
    "write_stripe",
]

EXIT_USAGE = 2  # as argparse: a bad option or value
EXIT_BAD_INPUT = 4  # as cli.py: a ledger, file or export that cannot be read or written

# Sums of ledger amounts are exact: any rounding raises instead of changing money.
_EXACT = Context(prec=1000, traps=[Inexact, InvalidOperation, Overflow])
_MICROS = Decimal(1_000_000)


class ExportError(ValueError):
    """The records cannot be exported as asked (the message says why and what to do)."""


# --------------------------------------------------------------------------- time


def parse_instant(text: str, *, end_of_day: bool = False) -> datetime:
    """An ISO 8601 instant with a UTC offset, or a date (a UTC day).

    A date is the start of that day, or with ``end_of_day`` (for ``--until``) its end, i.e.
    the next midnight, so that ``--until 2026-03-31`` includes all of March 31.
    """
    text = text.strip()
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return start + timedelta(days=1) if end_of_day else start
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"not an ISO 8601 instant or date: {text!r} (e.g. 2026-03-01 or 2026-03-01T12:00:00Z)"
        ) from None
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset; add Z or +HH:MM, or give a date")
    return value


def _period_label(end: datetime, unit: str) -> str:
    # ChargePeriodEnd is exclusive: the usage of a record ending at 00:00 happened before.
    t = end.astimezone(UTC) - timedelta(microseconds=1)
    if unit == "hour":
        return t.strftime("%Y-%m-%dT%H:00Z")
    if unit == "day":
        return t.strftime("%Y-%m-%d")
    return t.strftime("%Y-%m")


def _utc(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _window(since: datetime | None, until: datetime | None) -> str:
    if since is None and until is None:
        return ""
    lo = "-inf" if since is None else _utc(since)
    hi = "+inf" if until is None else _utc(until)
    return f" with ChargePeriodEnd in ({lo}, {hi}]"


# --------------------------------------------------------------------------- report

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
        with localcontext(_EXACT):
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
            billed_cost=_money(self.billed_cost),
            list_cost=_money(self.list_cost),
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
        "ledger": None if ledger is None else _display_url(ledger),
        "by": list(report.by),
        "since": None if report.since is None else _utc(report.since),
        "until": None if report.until is None else _utc(report.until),
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


def _money(value: Decimal | None) -> str | None:
    return None if value is None else decimal_str(value)


@dataclass(frozen=True, slots=True)
class _Column:
    header: str
    numeric: bool
    cell: Callable[[ReportLine], str]


def _table_columns(report: Report) -> list[_Column]:
    def key_cell(i: int) -> Callable[[ReportLine], str]:
        return lambda line: line.key[i] or "-"

    columns: list[_Column] = []
    for i, key in enumerate(report.by):
        if key == "currency":
            columns.append(_Column(key, False, lambda line: line.currency))
        else:
            columns.append(_Column(key, False, key_cell(i)))
    if "currency" not in report.by:
        columns.append(_Column("currency", False, lambda line: line.currency))
    columns.append(_Column("records", True, lambda line: f"{line.records:,}"))
    columns.append(_Column("tokens", True, lambda line: f"{line.tokens:,}"))
    if any(t.requests for t in report.totals):
        columns.append(_Column("requests", True, lambda line: f"{line.requests:,}"))
    columns.append(_Column("billed cost", True, lambda line: _money(line.billed_cost) or "-"))

    def list_cell(line: ReportLine) -> str:
        if line.list_cost is None:
            return "-"
        return decimal_str(line.list_cost) + ("*" if line.no_list_price else "")

    columns.append(_Column("list cost", True, list_cell))
    if any(t.unpriced_tokens for t in report.totals):
        columns.append(_Column("unpriced tokens", True, lambda line: f"{line.unpriced_tokens:,}"))
    if any(t.unpriced_requests for t in report.totals):
        columns.append(
            _Column("unpriced requests", True, lambda line: f"{line.unpriced_requests:,}")
        )
    return columns


def _table_notes(report: Report) -> list[str]:
    notes = []
    if any(t.no_list_price and t.list_cost is not None for t in [*report.lines, *report.totals]):
        notes.append("* list cost of the records that have a list price only")
    if report.unpriced_records:
        tokens = sum(t.unpriced_tokens for t in report.totals)
        requests = sum(t.unpriced_requests for t in report.totals)
        what = f"{tokens:,} tokens" + (f", {requests:,} requests" if requests else "")
        notes.append(
            f"{report.unpriced_records:,} unpriced record(s) ({what}): no price, so no cost; "
            "their usage is in the 'unpriced' columns and not in the cost totals"
        )
    return notes


def _total_cells(columns: list[_Column], total: ReportLine) -> list[str]:
    cells = [c.cell(total) if c.numeric or c.header == "currency" else "" for c in columns]
    first_key = next(
        (i for i, c in enumerate(columns) if not c.numeric and c.header != "currency"), None
    )
    if first_key is not None:
        cells[first_key] = "total"
    return cells


def format_table(report: Report, ledger: str | None = None, *, plain: bool = False) -> str:
    """The report as a readable table: rich when importable (and not ``plain``), else text."""
    title = f"Cost by {', '.join(report.by)}"
    caption = ("ledger " + _display_url(ledger) if ledger else "") + _window(
        report.since, report.until
    )
    columns = _table_columns(report)
    body = [[c.cell(line) for c in columns] for line in report.lines]
    totals = [_total_cells(columns, t) for t in report.totals]
    notes = _table_notes(report)
    if not plain:
        try:
            return _rich_table(title, caption.strip(), columns, body, totals, notes)
        except ImportError:
            pass
    return _plain_table(title, caption.strip(), columns, body, totals, notes)


def _rich_table(
    title: str,
    caption: str,
    columns: list[_Column],
    body: list[list[str]],
    totals: list[list[str]],
    notes: list[str],
) -> str:
    import io

    from rich import box
    from rich.console import Console
    from rich.table import Table

    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    table = Table(
        title=title,
        box=box.SIMPLE_HEAD if encoding.startswith("utf") else box.ASCII2,
        title_justify="left",
    )
    for c in columns:
        # Never ellipsize or wrap a number: every digit of an amount is shown.
        table.add_column(
            c.header, justify="right" if c.numeric else "left", no_wrap=c.numeric, overflow="fold"
        )
    for i, row in enumerate(body):
        table.add_row(*row, end_section=i == len(body) - 1)
    for row in totals:
        table.add_row(*row, style="bold")
    buffer = io.StringIO()
    probe = Console(file=io.StringIO(), width=1000, color_system=None)
    width = probe.measure(table).maximum
    console = Console(
        file=buffer, width=width, color_system=None, highlight=False, emoji=False, markup=False
    )
    console.print(table)
    for note in [caption, *notes] if caption else notes:
        console.print(note, soft_wrap=True)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()).strip("\n")


def _plain_table(
    title: str,
    caption: str,
    columns: list[_Column],
    body: list[list[str]],
    totals: list[list[str]],
    notes: list[str],
) -> str:
    rows = [[c.header for c in columns], *body, *totals]
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]

    def fmt(row: list[str]) -> str:
        return "  ".join(
            cell.rjust(w) if c.numeric else cell.ljust(w)
            for cell, w, c in zip(row, widths, columns, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [title]
    out.append(fmt(rows[0]))
    out.append(rule)
    out.extend(fmt(r) for r in body)
    if totals:
        out.append(rule)
        out.extend(fmt(r) for r in totals)
    if caption:
        out.append(caption)
    out.extend(notes)
    return "\n".join(out)


# --------------------------------------------------------------------------- FOCUS


def focus_columns() -> list[str]:
    """The FOCUS columns of a cost record, in ``CostRecord.to_focus`` order."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    probe = CostRecord("", epoch, epoch, "p", "m", sc.BUCKET_INPUT, 0, "USD", "v", "priced")
    return list(probe.to_focus())


def _tags_json(tags: Mapping[str, str]) -> str:
    return json.dumps(dict(tags), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def focus_cells(record: CostRecord) -> dict[str, str | None]:
    """A record's FOCUS columns as text: exact decimal strings, Tags as JSON, None for null."""
    cells: dict[str, str | None] = {}
    for column, value in record.to_focus().items():
        if value is None or isinstance(value, str):
            cells[column] = value
        elif isinstance(value, Mapping):
            cells[column] = _tags_json(value)
        else:  # not produced today; never write a float or an exponent
            cells[column] = decimal_str(value) if isinstance(value, Decimal) else str(value)
    return cells


@dataclass(slots=True)
class ExportResult:
    written: int = 0
    left_out: dict[str, int] = field(default_factory=dict)  # why -> how many records
    notes: list[str] = field(default_factory=list)

    def leave_out(self, why: str) -> None:
        self.left_out[why] = self.left_out.get(why, 0) + 1


def _focus_split(records: Iterable[CostRecord], result: ExportResult) -> Iterator[CostRecord]:
    for record in records:
        if record.is_priced:
            yield record
        else:
            # FOCUS requires a cost on every row: never written with cost 0 (SPEC section 7).
            result.leave_out(f"{record.pricing_status} (no cost; FOCUS requires one)")


def write_focus_csv(records: Iterable[CostRecord], out: IO[str]) -> ExportResult:
    """FOCUS CSV: header of ``focus_columns()``; an empty cell is null; Tags are JSON."""
    result = ExportResult()
    columns = focus_columns()
    writer = csv.writer(out)
    writer.writerow(columns)
    for record in _focus_split(records, result):
        cells = focus_cells(record)
        writer.writerow(["" if cells[c] is None else cells[c] for c in columns])
        result.written += 1
    return result


def _require_pyarrow() -> tuple[Any, Any]:
    """(pyarrow, pyarrow.parquet), imported by name: an optional dependency without stubs."""
    import importlib

    try:
        return importlib.import_module("pyarrow"), importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise ExportError(
            "writing Parquet needs pyarrow, which is not installed: pip install pyarrow "
            "(or write CSV: an --output not ending in .parquet)"
        ) from None


def write_focus_parquet(records: Iterable[CostRecord], path: str | Path) -> ExportResult:
    """FOCUS as Parquet: the CSV's columns and text, every column a nullable string.

    Money stays exact decimal text (a Parquet decimal needs one fixed scale per column).
    """
    pa, pq = _require_pyarrow()
    result = ExportResult()
    columns = focus_columns()
    data: dict[str, list[str | None]] = {c: [] for c in columns}
    for record in _focus_split(records, result):
        cells = focus_cells(record)
        for c in columns:
            data[c].append(cells[c])
        result.written += 1
    schema = pa.schema([pa.field(c, pa.string(), nullable=True) for c in columns])
    table = pa.Table.from_pydict(data, schema=schema)
    with _atomic(path) as tmp:
        pq.write_table(table, tmp)
    return result


# --------------------------------------------------------------------------- CloudEvents


def cloudevent(record: CostRecord, default_subject: str | None = None) -> dict[str, Any]:
    """The record's CloudEvent; ``default_subject`` when it has no tenant (OpenMeter needs one)."""
    event = record.to_cloudevent()
    if "subject" not in event and default_subject:
        event["subject"] = default_subject
    return event


def write_cloudevents(
    records: Iterable[CostRecord], out: IO[str], default_subject: str | None = None
) -> ExportResult:
    """CloudEvents JSON lines (structured mode): one event per line, all records."""
    result = ExportResult()
    no_subject = unpriced = 0
    for record in records:
        event = cloudevent(record, default_subject)
        no_subject += "subject" not in event
        unpriced += not record.is_priced
        out.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")
        result.written += 1
    if unpriced:
        result.notes.append(f"{unpriced} event(s) of unpriced records carry null costs")
    if no_subject:
        result.notes.append(
            f"{no_subject} event(s) have no subject (no tenant); OpenMeter requires one: "
            "use --default-subject"
        )
    return result


# --------------------------------------------------------------------------- Stripe

StripeValue = Literal["tokens", "cost-micros"]
STRIPE_VALUES: tuple[str, ...] = get_args(StripeValue)
DEFAULT_EVENT_NAMES: dict[str, str] = {"tokens": "llm_tokens", "cost-micros": "llm_cost_micros"}
EVENT_NAME_FIELDS = ("provider", "model", "bucket", "processing", "currency", "unit")
_STRIPE_MAX_AGE = timedelta(days=35)
_STRIPE_MAX_AHEAD = timedelta(minutes=5)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def event_name_fields(template: str) -> set[str]:
    """The ``{field}`` names in an event-name template (ValueError when malformed/unknown)."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    except ValueError as exc:
        raise ValueError(f"bad event name {template!r}: {exc}") from None
    unknown = names - set(EVENT_NAME_FIELDS)
    if unknown:
        raise ValueError(
            f"unknown field(s) in event name {template!r}: {', '.join(sorted(unknown))}; "
            f"use {', '.join('{' + f + '}' for f in EVENT_NAME_FIELDS)}"
        )
    return names


def _stripe_timestamp(end: datetime) -> int:
    """The last whole second inside the charge period (its end is exclusive).

    A record ending at 2026-04-01T00:00:00Z is stamped 2026-03-31T23:59:59Z, so it falls in the
    same Stripe billing period as the export window ``(since, until]`` it was selected by.
    """
    micros = (end - _EPOCH) // timedelta(microseconds=1)
    return -(-micros // 1_000_000) - 1


def stripe_events(
    records: Iterable[CostRecord],
    *,
    value: str = "tokens",
    customers: Mapping[str, str] | None = None,
    event_name: str | None = None,
    now: datetime | None = None,
) -> tuple[list[dict[str, Any]], ExportResult]:
    """Stripe meter event payloads (v1 ``billing/meter_events``), one per exported record.

    ``identifier`` is the record id (stable across exports; Stripe deduplicates on it);
    ``payload`` holds ``stripe_customer_id`` (the tenant, or ``customers[tenant]``) and
    ``value`` as a whole-number string, as Stripe's payload is a map of strings:

    * ``tokens``: the record's token count; every record whose tokens are known, priced or
      not. Request buckets (web_search) are left out unless the event name has ``{unit}``
      or ``{bucket}``, so requests never add to a token meter;
    * ``cost-micros``: the billed cost in millionths of the currency unit, priced records
      only. A record's cost is rarely a whole number of micros, so values are apportioned
      by cumulative rounding per customer and event name, in ledger order: the values of an
      export add up to its exact cost rounded half-even to a whole micro, never drifting.
      Several currencies need ``{currency}`` in the event name (one meter per currency).

    Records without a tenant are left out; with ``customers`` given, a tenant missing from it
    is an error (nothing is billed to a guessed customer).
    """
    if value not in STRIPE_VALUES:
        raise ExportError(f"unknown Stripe value {value!r}; use {' or '.join(STRIPE_VALUES)}")
    template = event_name or DEFAULT_EVENT_NAMES[value]
    try:
        fields = event_name_fields(template)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    now = now or datetime.now(UTC)
    result = ExportResult()
    events: list[dict[str, Any]] = []
    unmapped: set[str] = set()
    currencies: set[str] = set()
    exact: dict[tuple[str, str], Decimal] = {}
    sent: dict[tuple[str, str], int] = {}
    too_old = too_new = 0
    for record in records:
        requests = record.bucket in sc.REQUEST_BUCKETS
        if record.tenant is None:
            result.leave_out("no tenant, so no Stripe customer")
            continue
        if value == "tokens" and requests and not fields & {"unit", "bucket"}:
            result.leave_out(
                f"{record.bucket} requests, not tokens (put {{unit}} or {{bucket}} in "
                "--event-name to export them to their own meter)"
            )
            continue
        if value == "cost-micros" and record.billed_cost is None:
            result.leave_out(f"{record.pricing_status} (no cost)")
            continue
        if customers is not None:
            customer = customers.get(record.tenant)
            if customer is None:
                unmapped.add(record.tenant)
                continue
        else:
            customer = record.tenant
        name = template.format(
            provider=record.provider,
            model=record.model,
            bucket=record.bucket,
            processing=record.processing,
            currency=record.currency,
            unit="requests" if requests else "tokens",
        )
        if not name or len(name) > 100:
            raise ExportError(f"Stripe event name {name!r} must have 1 to 100 characters")
        if value == "tokens":
            amount = record.quantity
        else:
            assert record.billed_cost is not None
            currencies.add(record.currency)
            key = (customer, name)
            with localcontext(_EXACT):
                total = exact.get(key, Decimal(0)) + record.billed_cost * _MICROS
            exact[key] = total
            target = int(total.to_integral_value(rounding=ROUND_HALF_EVEN))
            amount = target - sent.get(key, 0)
            sent[key] = target
        timestamp = _stripe_timestamp(record.period_end)
        when = _EPOCH + timedelta(seconds=timestamp)
        too_old += when < now - _STRIPE_MAX_AGE
        too_new += when > now + _STRIPE_MAX_AHEAD
        events.append(
            {
                "event_name": name,
                "identifier": record.id,
                "payload": {"stripe_customer_id": customer, "value": str(amount)},
                "timestamp": timestamp,
            }
        )
    if unmapped:
        shown = ", ".join(sorted(unmapped)[:10]) + (" ..." if len(unmapped) > 10 else "")
        raise ExportError(
            f"{len(unmapped)} tenant(s) have no Stripe customer in --customer-map: {shown}"
        )
    if len(currencies) > 1 and "currency" not in fields:
        raise ExportError(
            f"costs are in several currencies ({', '.join(sorted(currencies))}): put "
            "{currency} in --event-name so that each currency has its own meter"
        )
    if any(exact[k] != sent[k] for k in exact):
        result.notes.append(
            "cost-micros: each customer's and meter's values add up to the exact cost "
            "rounded half-even to a whole micro"
        )
    if too_old:
        result.notes.append(
            f"{too_old} event(s) are more than 35 days old: Stripe rejects meter events "
            "older than 35 days"
        )
    if too_new:
        result.notes.append(f"{too_new} event(s) are more than 5 minutes in the future")
    result.written = len(events)
    return events, result


def write_stripe(events: Iterable[Mapping[str, Any]], out: IO[str]) -> None:
    for event in events:
        out.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")


def load_customer_map(specs: Sequence[str]) -> dict[str, str]:
    """``--customer-map`` values: ``TENANT=cus_...`` pairs, or files of such lines (``#``
    comments and blank lines allowed) or of one JSON object ``{"tenant": "cus_..."}``."""
    mapping: dict[str, str] = {}

    def put(tenant: str, customer: str, where: str) -> None:
        tenant, customer = tenant.strip(), customer.strip()
        if not tenant or not customer:
            raise ExportError(f"{where}: expected TENANT=CUSTOMER_ID")
        if mapping.get(tenant, customer) != customer:
            raise ExportError(
                f"{where}: tenant {tenant!r} is mapped to both {mapping[tenant]!r} and {customer!r}"
            )
        mapping[tenant] = customer

    for spec in specs:
        path = Path(spec)
        if path.is_file():
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ExportError(f"cannot read customer map {spec}: {exc}") from None
            if text.lstrip().startswith("{"):
                try:
                    data = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ExportError(f"customer map {spec}: not valid JSON: {exc}") from None
                if not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
                    raise ExportError(f"customer map {spec}: values must be strings")
                for tenant, customer in data.items():
                    put(tenant, customer, spec)
                continue
            for n, raw in enumerate(text.splitlines(), start=1):
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                if "=" not in line:
                    raise ExportError(f"{spec}:{n}: expected TENANT=CUSTOMER_ID, got {line!r}")
                tenant, customer = line.rsplit("=", 1)
                put(tenant, customer, f"{spec}:{n}")
        elif "=" in spec:
            tenant, customer = spec.rsplit("=", 1)
            put(tenant, customer, f"--customer-map {spec!r}")
        else:
            raise ExportError(
                f"--customer-map {spec!r}: neither TENANT=CUSTOMER_ID nor an existing file"
            )
    return mapping


# --------------------------------------------------------------------------- CLI


def _display_url(url: str) -> str:
    """The URL without its password."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
        if parts.port is not None:
            netloc += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return url


def _open(url: str | None) -> tuple[Ledger, str]:
    url = url or os.environ.get(ENV_LEDGER) or DEFAULT_LEDGER_URL
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :] or "otel-tokens-ledger.db"
        # Reading must not create an empty ledger where none was written.
        if path != ":memory:" and not Path(path).is_file():
            raise LedgerError(f"no ledger at {path} ({url}); give --ledger URL or set {ENV_LEDGER}")
    return open_ledger(url), url


def _by_keys(text: str) -> tuple[str, ...]:
    keys = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    if not keys:
        raise argparse.ArgumentTypeError(f"no keys given; use some of {', '.join(GROUP_KEYS)}")
    unknown = [k for k in keys if k not in GROUP_KEYS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown key(s) {', '.join(unknown)}; use {', '.join(GROUP_KEYS)}"
        )
    return keys


def _since(text: str) -> datetime:
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _until(text: str) -> datetime:
    try:
        return parse_instant(text, end_of_day=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _event_name(text: str) -> str:
    try:
        event_name_fields(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ledger",
        metavar="URL",
        help=f"sqlite:///path.db or postgresql://user@host/db "
        f"(default: ${ENV_LEDGER}, else {DEFAULT_LEDGER_URL})",
    )
    p.add_argument(
        "--since",
        type=_since,
        metavar="WHEN",
        help="records whose charge period ends after WHEN: an ISO 8601 instant with offset "
        "(2026-03-01T12:00:00Z) or a UTC date (from its start)",
    )
    p.add_argument(
        "--until",
        type=_until,
        metavar="WHEN",
        help="records whose charge period ends at or before WHEN: an instant, or a UTC date "
        "(through its end)",
    )


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``report`` and ``export`` on the ``otel-tokens`` sub-command parser."""
    r = subparsers.add_parser(
        "report",
        help="cost by tenant, model, day, ... from a ledger",
        description=(
            "Print cost records grouped by --by: quantities, billed and list cost, exact to "
            "the last decimal place, one total per currency. Unpriced usage is shown apart, "
            "with no cost. Records are selected by charge period end: since < end <= until."
        ),
    )
    _add_common(r)
    r.add_argument(
        "--by",
        type=_by_keys,
        default=DEFAULT_BY,
        metavar="KEYS",
        help=f"comma-separated, of: {', '.join(GROUP_KEYS)} (default: model); day, hour and "
        "month are UTC",
    )
    r.add_argument("--format", choices=("table", "json", "csv"), default="table")
    r.set_defaults(func=cmd_report)

    e = subparsers.add_parser(
        "export",
        help="write ledger records as FOCUS, CloudEvents or Stripe meter events",
        description=(
            "focus: FOCUS 1.2 CSV, or Parquet when --output ends in .parquet (needs "
            "pyarrow); unpriced records are left out and counted on stderr. cloudevents: "
            "CloudEvents JSON lines for OpenMeter, deterministic ids, unpriced records with "
            "null costs. stripe: Stripe meter event payloads as JSON lines, the record id as "
            "identifier; nothing is sent."
        ),
    )
    _add_common(e)
    e.add_argument("--format", choices=("focus", "cloudevents", "stripe"), required=True)
    e.add_argument("--output", metavar="FILE", help="write here (default: standard output)")
    e.add_argument(
        "--stripe-value",
        choices=STRIPE_VALUES,
        default="tokens",
        help="stripe: the meter value: token count (default) or billed cost in millionths "
        "of the currency unit",
    )
    e.add_argument(
        "--customer-map",
        action="append",
        metavar="TENANT=ID|FILE",
        help="stripe: tenant to Stripe customer id (repeatable; or a file of TENANT=ID lines "
        "or a JSON object); default: the tenant is the customer id",
    )
    e.add_argument(
        "--event-name",
        type=_event_name,
        metavar="NAME",
        help="stripe: the meter's event_name (default: llm_tokens, or llm_cost_micros); may "
        f"use {', '.join('{' + f + '}' for f in EVENT_NAME_FIELDS)}",
    )
    e.add_argument(
        "--default-subject",
        metavar="SUBJECT",
        help="cloudevents: subject of events whose record has no tenant",
    )
    e.set_defaults(func=cmd_export)


def _fail(command: str, message: str, code: int) -> int:
    print(f"otel-tokens {command}: error: {message}", file=sys.stderr)
    return code


def _check_window(args: argparse.Namespace) -> str | None:
    if args.since is not None and args.until is not None and args.since >= args.until:
        return f"--since ({_utc(args.since)}) must be before --until ({_utc(args.until)})"
    return None


def cmd_report(args: argparse.Namespace) -> int:
    problem = _check_window(args)
    if problem:
        return _fail("report", problem, EXIT_USAGE)
    try:
        ledger, url = _open(args.ledger)
    except LedgerError as exc:
        return _fail("report", str(exc), EXIT_BAD_INPUT)
    try:
        report = build_report(
            ledger.records(args.since, args.until), args.by, since=args.since, until=args.until
        )
    except LedgerError as exc:
        return _fail("report", str(exc), EXIT_BAD_INPUT)
    finally:
        ledger.close()
    if not report.records:
        print(
            f"otel-tokens: no cost records in ledger {_display_url(url)}"
            f"{_window(args.since, args.until)}",
            file=sys.stderr,
        )
    if args.format == "json":
        print(json.dumps(report_json(report, url), indent=2, ensure_ascii=False))
    elif args.format == "csv":
        report_csv(report, sys.stdout)
    elif report.records:
        print(format_table(report, url))
    return 0


@contextmanager
def _atomic(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it only when the block succeeds."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def _text_output(path: str | None) -> Iterator[IO[str]]:
    if path is None or path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    with _atomic(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as out:
        yield out


def cmd_export(args: argparse.Namespace) -> int:
    problem = _check_window(args)
    parquet = bool(args.output) and args.output.lower().endswith(".parquet")
    if not problem and parquet and args.format != "focus":
        problem = "Parquet output is for --format focus only"
    if not problem and args.format != "stripe":
        given = [
            opt
            for opt, value in (
                ("--customer-map", args.customer_map),
                ("--event-name", args.event_name),
                ("--stripe-value", None if args.stripe_value == "tokens" else 1),
            )
            if value
        ]
        if given:
            problem = f"{', '.join(given)} apply to --format stripe only"
    if not problem and args.default_subject is not None and args.format != "cloudevents":
        problem = "--default-subject applies to --format cloudevents only"
    if problem:
        return _fail("export", problem, EXIT_USAGE)
    try:
        customers = load_customer_map(args.customer_map) if args.customer_map is not None else None
        if parquet:
            _require_pyarrow()
        ledger, url = _open(args.ledger)
    except (ExportError, LedgerError) as exc:
        return _fail("export", str(exc), EXIT_BAD_INPUT)
    try:
        records = list(ledger.records(args.since, args.until))
        where = args.output or "standard output"
        if args.format == "focus" and parquet:
            result = write_focus_parquet(records, args.output)
            what = "FOCUS rows"
        elif args.format == "focus":
            with _text_output(args.output) as out:
                result = write_focus_csv(records, out)
            what = "FOCUS rows"
        elif args.format == "cloudevents":
            with _text_output(args.output) as out:
                result = write_cloudevents(records, out, args.default_subject)
            what = "CloudEvents"
        else:
            events, result = stripe_events(
                records,
                value=args.stripe_value,
                customers=customers,
                event_name=args.event_name,
            )
            with _text_output(args.output) as out:
                write_stripe(events, out)
            what = "Stripe meter events"
    except (ExportError, LedgerError) as exc:
        return _fail("export", str(exc), EXIT_BAD_INPUT)
    except OSError as exc:
        return _fail("export", f"cannot write {args.output}: {exc}", EXIT_BAD_INPUT)
    finally:
        ledger.close()
    if not records:
        print(
            f"otel-tokens: no cost records in ledger {_display_url(url)}"
            f"{_window(args.since, args.until)}",
            file=sys.stderr,
        )
    print(f"otel-tokens: wrote {result.written} {what} to {where}", file=sys.stderr)
    for why, count in sorted(result.left_out.items()):
        print(f"otel-tokens: left out {count} record(s): {why}", file=sys.stderr)
    for note in result.notes:
        print(f"otel-tokens: note: {note}", file=sys.stderr)
    return 0
