"""The one ledger schema, as versioned migrations for each SQL dialect.

Money and quantities are exact: TEXT decimal strings in SQLite, NUMERIC in PostgreSQL.
"""

from __future__ import annotations

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


# Each migration is a list of statements; its index + 1 is its version.
MIGRATIONS: dict[str, list[list[str]]] = {
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
    ],
}
