"""The one ledger schema, as versioned migrations for each SQL dialect.

Money and quantities are exact: TEXT decimal strings in SQLite, NUMERIC in PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from ..records import usage_id

# Runs one SQL statement (``?`` placeholders) in the migration's transaction; returns rows.
Execute = Callable[[str, Sequence[Any]], list[Any]]
# A migration step: a SQL statement, or a function of the data that SQL alone cannot do.
Step = str | Callable[[Execute], None]

# Columns of cost_records, in order, shared by both backends and by the row mapping.
RECORD_COLUMNS = (
    "id",
    "stream_id",
    "period_start",
    "period_end",
    "provider",
    "model",
    "bucket",
    "quantity",
    "currency",
    "catalog_version",
    "pricing_status",
    "usage_source",
    "processing",
    "context_tier",
    "price_id",
    "priced_model",
    "billed_cost",
    "list_cost",
    "tenant",
    "feature",
    "user_id",
    "operation",
    "service_name",
    "tags",
    "charge_category",
    "adjusts",
    "adjusted_from",
    "usage_key",
)


def _records_table(money: str, text: str, bigint: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS cost_records (
    id {text} PRIMARY KEY,
    stream_id {text} NOT NULL,
    period_start {text} NOT NULL,
    period_end {text} NOT NULL,
    provider {text} NOT NULL,
    model {text} NOT NULL,
    bucket {text} NOT NULL,
    quantity {bigint} NOT NULL,
    currency {text} NOT NULL,
    catalog_version {text} NOT NULL,
    pricing_status {text} NOT NULL,
    usage_source {text} NOT NULL,
    processing {text} NOT NULL,
    context_tier {text} NOT NULL,
    price_id {text},
    billed_cost {money},
    list_cost {money},
    tenant {text},
    feature {text},
    user_id {text},
    operation {text},
    service_name {text},
    tags {text} NOT NULL DEFAULT '{{}}',
    ingested_at {text} NOT NULL
)"""


def _backfill_usage_keys(execute: Execute) -> None:
    """Give every stored usage record its usage key (the id without the price id).

    Records stored before migration 3 keep their ids (exports already sent them), but their
    usage is now known by its key: a point delivered again after a price change is the same
    record. If the old ids already let one usage in twice (an unpriced record, then a priced
    one), only the first stored keeps the key; ``otel-tokens reprice`` reports the others.
    """
    rows = execute(
        "SELECT id, stream_id, period_start, period_end, bucket FROM cost_records "
        "ORDER BY ingested_at, id",
        (),
    )
    seen: set[str] = set()
    for record_id, stream, start, end, bucket in rows:
        key = usage_id(stream, _stored_time(start), _stored_time(end), bucket)
        if key in seen:
            continue
        seen.add(key)
        execute("UPDATE cost_records SET usage_key = ? WHERE id = ?", (key, record_id))


def _stored_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _identity(money: str, if_not_exists: str) -> list[Step]:
    """Migration 3: record ids name the usage, not its price; adjustment records."""
    return [
        f"ALTER TABLE cost_records ADD COLUMN {if_not_exists}charge_category TEXT "
        "NOT NULL DEFAULT 'Usage'",
        f"ALTER TABLE cost_records ADD COLUMN {if_not_exists}adjusts TEXT",
        f"ALTER TABLE cost_records ADD COLUMN {if_not_exists}adjusted_from {money}",
        f"ALTER TABLE cost_records ADD COLUMN {if_not_exists}usage_key TEXT",
        _backfill_usage_keys,
        "CREATE UNIQUE INDEX IF NOT EXISTS cost_records_usage_key ON cost_records (usage_key)",
        "CREATE INDEX IF NOT EXISTS cost_records_adjusts ON cost_records (adjusts)",
    ]


# Migration 4: a usage record's id *is* its usage key (since migration 3), so the primary key
# already makes those unique; a second unique index holding the same 64-hex value cost every
# insert one more random-page index entry. Only rows stored before migration 3 can have
# another usage key than their id: the unique index now holds those alone. A new usage
# record whose id is such a row's usage key is refused by the insert itself (its ``WHERE
# NOT EXISTS``, `ledger.sqlite` and `ledger.postgres`), which this index serves.
# Also: the index of adjustments by the record they adjust holds adjustments only. Every
# usage record has ``adjusts`` NULL, and both engines index NULLs: one more index entry per
# record for nothing. ``WHERE adjusts = ?`` still uses the partial index (it implies IS NOT
# NULL, in SQLite as in PostgreSQL).
LEGACY_USAGE_KEY_INDEX = "cost_records_legacy_usage_key"
_LEGACY_KEYS: list[Step] = [
    f"CREATE UNIQUE INDEX IF NOT EXISTS {LEGACY_USAGE_KEY_INDEX} ON cost_records (usage_key) "
    "WHERE usage_key <> id",
    "DROP INDEX IF EXISTS cost_records_usage_key",
    "DROP INDEX IF EXISTS cost_records_adjusts",
    "CREATE INDEX IF NOT EXISTS cost_records_adjusts ON cost_records (adjusts) "
    "WHERE adjusts IS NOT NULL",
]


# Migration 5: a mark keeps the one it replaced (``prev_*``), set by the statement that
# moves it, so that PostgreSQL can lock, move and read a batch's marks in one statement
# (`ledger.postgres`, ``advance``) instead of a lock and a write. NULL: the statement
# created the mark. (SQLite has one writer and does not need them; one schema for both.)
def _previous_mark(integer: str, value: str, if_not_exists: str) -> list[Step]:
    return [
        f"ALTER TABLE stream_marks ADD COLUMN {if_not_exists}prev_time_ns {integer}",
        f"ALTER TABLE stream_marks ADD COLUMN {if_not_exists}prev_value {value}",
    ]


# Each migration is a list of steps; its index + 1 is its version.
MIGRATIONS: dict[str, list[list[Step]]] = {
    "sqlite": [
        [
            _records_table("TEXT", "TEXT", "INTEGER"),
            "CREATE INDEX IF NOT EXISTS cost_records_period ON cost_records (period_end)",
            "CREATE INDEX IF NOT EXISTS cost_records_tenant ON cost_records (tenant)",
            """CREATE TABLE IF NOT EXISTS stream_marks (
                stream_id TEXT NOT NULL,
                start_ns INTEGER NOT NULL,
                time_ns INTEGER NOT NULL,
                value INTEGER NOT NULL,
                PRIMARY KEY (stream_id, start_ns)
            )""",
        ],
        # 2: the model whose price was used when the served model had none.
        ["ALTER TABLE cost_records ADD COLUMN priced_model TEXT"],
        _identity("TEXT", ""),
        _LEGACY_KEYS,
        _previous_mark("INTEGER", "INTEGER", ""),
    ],
    "postgresql": [
        [
            _records_table("NUMERIC", "TEXT", "BIGINT"),
            "CREATE INDEX IF NOT EXISTS cost_records_period ON cost_records (period_end)",
            "CREATE INDEX IF NOT EXISTS cost_records_tenant ON cost_records (tenant)",
            """CREATE TABLE IF NOT EXISTS stream_marks (
                stream_id TEXT NOT NULL,
                start_ns BIGINT NOT NULL,
                time_ns BIGINT NOT NULL,
                value NUMERIC NOT NULL,
                PRIMARY KEY (stream_id, start_ns)
            )""",
        ],
        ["ALTER TABLE cost_records ADD COLUMN IF NOT EXISTS priced_model TEXT"],
        _identity("NUMERIC", "IF NOT EXISTS "),
        _LEGACY_KEYS,
        _previous_mark("BIGINT", "NUMERIC", "IF NOT EXISTS "),
    ],
}
