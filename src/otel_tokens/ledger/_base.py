"""The ledger protocol: what the metering core needs of any storage backend."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from ..pricing import decimal_str
from ..records import CostRecord
from ._schema import RECORD_COLUMNS


class LedgerError(RuntimeError):
    """The ledger cannot be opened, read or written (its driver's error is the cause).

    Every backend raises its storage failures as this, never as its driver's own errors,
    so that callers (the collector answering 503, the exporter carrying on) need not know
    the drivers. A `Ledger` of your own should do the same."""


@contextmanager
def driver_errors(
    errors: type[BaseException] | tuple[type[BaseException], ...], url: str
) -> Iterator[None]:
    """The driver's ``errors`` raised inside, as a `LedgerError` naming the ledger."""
    try:
        yield
    except errors as exc:
        raise LedgerError(f"ledger {url}: {type(exc).__name__}: {exc}") from exc


class LedgerTransaction(Protocol):
    def mark(self, stream_id: str, start_ns: int) -> tuple[int, int] | None:
        """(time_ns, value) last billed for this cumulative stream, locked for this transaction."""

    def set_mark(self, stream_id: str, start_ns: int, time_ns: int, value: int) -> None: ...

    def insert(self, records: Sequence[CostRecord]) -> list[CostRecord]:
        """Insert records; existing ids are left alone. Returns the records that were new."""


class Ledger(Protocol):
    url: str

    def transaction(self) -> AbstractContextManager[LedgerTransaction]: ...

    def records(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[CostRecord]: ...

    def count(self) -> int: ...

    def close(self) -> None: ...


def records_query(
    placeholder: str, since: datetime | None, until: datetime | None
) -> tuple[str, list[str]]:
    """The SELECT of records whose period ends in ``(since, until]``, for either dialect."""
    sql = f"SELECT {', '.join(RECORD_COLUMNS)} FROM cost_records WHERE 1=1"
    params: list[str] = []
    if since is not None:
        sql += f" AND period_end > {placeholder}"
        params.append(_iso(since))
    if until is not None:
        sql += f" AND period_end <= {placeholder}"
        params.append(_iso(until))
    return sql + " ORDER BY period_end, id", params


def record_row(record: CostRecord, ingested_at: datetime) -> tuple[Any, ...]:
    """The record's column values, in `RECORD_COLUMNS` order, then ``ingested_at``."""
    # A usage record's id is its usage key: hash it once, not twice. One tuple, built
    # directly: this runs for every record a collector writes.
    usage_key = record.usage_key
    billed, listed, adjusted = record.billed_cost, record.list_cost, record.adjusted_from
    tags = record.tags
    return (
        usage_key if usage_key is not None and record.stored_id is None else record.id,
        record.stream_id,
        _iso(record.period_start),
        _iso(record.period_end),
        record.provider,
        record.model,
        record.bucket,
        record.quantity,
        record.currency,
        record.catalog_version,
        record.pricing_status,
        record.usage_source,
        record.processing,
        record.context_tier,
        record.price_id,
        record.priced_model,
        None if billed is None else decimal_str(billed),
        None if listed is None else decimal_str(listed),
        record.tenant,
        record.feature,
        record.user_id,
        record.operation,
        record.service_name,
        json.dumps(dict(tags), sort_keys=True) if tags else "{}",
        record.charge_category,
        record.adjusts,
        None if adjusted is None else decimal_str(adjusted),
        usage_key,
        _iso(ingested_at),
    )


# Where a `record_row` holds the usage key (the id is first).
USAGE_KEY = RECORD_COLUMNS.index("usage_key")


def has_old_style(rows: Sequence[Sequence[Any]]) -> bool:
    """Whether some of ``rows`` are records stored before migration 3 (a usage key other
    than the id), inserted again: only those need the insert's checks against each other's
    keys (ledger migration 4)."""
    return any(row[USAGE_KEY] is not None and row[USAGE_KEY] != row[0] for row in rows)


def row_record(row: Sequence[Any]) -> CostRecord:
    v = dict(zip(RECORD_COLUMNS, row, strict=False))
    record = CostRecord(
        stream_id=v["stream_id"],
        period_start=_parse(v["period_start"]),
        period_end=_parse(v["period_end"]),
        provider=v["provider"],
        model=v["model"],
        bucket=v["bucket"],
        quantity=int(v["quantity"]),
        currency=v["currency"],
        catalog_version=v["catalog_version"],
        pricing_status=v["pricing_status"],
        usage_source=v["usage_source"],
        processing=v["processing"],
        context_tier=v["context_tier"],
        price_id=v["price_id"],
        priced_model=v["priced_model"],
        billed_cost=None if v["billed_cost"] is None else Decimal(str(v["billed_cost"])),
        list_cost=None if v["list_cost"] is None else Decimal(str(v["list_cost"])),
        tenant=v["tenant"],
        feature=v["feature"],
        user_id=v["user_id"],
        operation=v["operation"],
        service_name=v["service_name"],
        tags=json.loads(v["tags"] or "{}"),
        charge_category=v["charge_category"],
        adjusts=v["adjusts"],
        adjusted_from=None if v["adjusted_from"] is None else Decimal(str(v["adjusted_from"])),
    )
    # A record stored before ids stopped naming the price keeps the id it was stored under.
    return record if record.id == v["id"] else replace(record, stored_id=v["id"])


@functools.lru_cache(maxsize=4096)
def _iso(value: datetime) -> str:
    # Cached: a batch's points share a few export times, and strftime is slow.
    # Fixed-width UTC text sorts chronologically, so period filters can compare strings.
    # A naive datetime is UTC, as in CostRecord.id (not the local time astimezone assumes).
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
