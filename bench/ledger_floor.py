"""The database's own cost per priced point: the floor under the pricing collector.

Whatever the collector does in Python, each cumulative point it bills is one cost record
inserted (with its indexes) and one stream mark locked and written, in one transaction per
batch. This measures only that, with the ledger's real schema (its migrations, as
``open_ledger`` creates it) and a ledger that already holds ``--existing`` records and as
many streams, in transactions of ``--batch`` records of 64-hex ids (usage ids, as the ledger's are),
each of a known stream (its mark updated), as in the steady state; from an empty ledger,
new streams:

* SQLite: ``executemany`` of the rows and of the marks' upsert, then the commit, in this
  process: the CPU is SQLite's own (plus binding the parameters);
* PostgreSQL: the ledger's own transaction (the marks locked, the records inserted, the
  marks written, the commit); the CPU is the server backend's (read from /proc: the server
  must be on this machine), the client's is not counted.

The figure to read is CPU per point: a core does 1e6 / (µs per point) points per second at
most, whatever the collector's own cost on top. The rows are synthetic but shaped as the
collector writes them (``period_end`` the export's time, 50 tenants).

    python bench/ledger_floor.py --existing 200000 --ledgers sqlite postgresql
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from ingest import PG_BASE, pg_available

from otel_tokens.ledger import open_ledger
from otel_tokens.ledger import sqlite as ledger_sqlite
from otel_tokens.ledger._base import row_record
from otel_tokens.ledger._schema import RECORD_COLUMNS
from otel_tokens.ledger.postgres import PostgresLedger
from otel_tokens.records import usage_id

COLUMNS = (*RECORD_COLUMNS, "ingested_at")
_TIME = "2026-01-01T00:%02d:%02d.000000Z"
_START = datetime(2026, 1, 1, tzinfo=UTC)


def rows(n: int, export: int, streams: list[str] | None = None) -> list[tuple[Any, ...]]:
    """``n`` usage records of one export (one period end), each of its own stream: new
    streams, or ``n`` of ``streams`` (known ones, whose marks exist: the steady state)."""
    minute, second = divmod(export % 3600, 60)
    end = _TIME % (minute, second)
    ended = datetime(2026, 1, 1, 0, minute, second, tzinfo=UTC)
    ids = random.sample(streams, n) if streams else [secrets.token_hex(16) for _ in range(n)]
    out = []
    for stream in ids:
        key = usage_id(stream, _START, ended, "input")  # as the ledger's ids are
        values = {
            "id": key,
            "stream_id": stream,
            "period_start": "2026-01-01T00:00:00.000000Z",
            "period_end": end,
            "provider": "openai",
            "model": "gpt-4o-mini",
            "bucket": "input",
            "quantity": 1234,
            "currency": "USD",
            "catalog_version": "0.0.40",
            "pricing_status": "priced",
            "usage_source": "provider",
            "processing": "standard",
            "context_tier": "default",
            "price_id": "genai-prices:openai:gpt-4o-mini",
            "priced_model": None,
            "billed_cost": "0.0001851",
            "list_cost": "0.0001851",
            "tenant": f"tenant-{secrets.randbelow(50)}",
            "feature": "chat",
            "user_id": None,
            "operation": "chat",
            "service_name": "checkout",
            "tags": "{}",
            "charge_category": "Usage",
            "adjusts": None,
            "adjusted_from": None,
            "usage_key": key,
            "ingested_at": end,
        }
        out.append(tuple(values[c] for c in COLUMNS))
    return out


def marks(batch: list[tuple[Any, ...]], export: int) -> list[tuple[str, int, int, int]]:
    return [(row[1], 0, export, 1234 * export) for row in batch]


def sqlite_run(path: str, existing: int, batch: int, batches: int) -> tuple[float, float]:
    """(wall, CPU) seconds per point for records, marks and commit."""
    open_ledger(f"sqlite:///{path}").close()
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "cache_size=-65536"):
        conn.execute(f"PRAGMA {pragma}")
    # The ledger's own statements (ledger/sqlite.py): the insert it uses for a ledger that
    # holds no record from before migration 3 (releases before that one had only `_INSERT`).
    insert = getattr(ledger_sqlite, "_INSERT_NEW", ledger_sqlite._INSERT)
    upsert = ledger_sqlite._UPSERT_MARK
    conn.execute("BEGIN")
    streams: list[str] = []
    for i in range(0, existing, 50_000):
        part = rows(min(50_000, existing - i), 1)
        conn.executemany(insert, part)
        conn.executemany(upsert, marks(part, 1))
        streams += [row[1] for row in part]
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def one(export: int) -> Callable[[], None]:
        part = rows(batch, export, streams)
        mk = sorted(marks(part, export))

        def go() -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(insert, part)
            conn.executemany(upsert, mk)
            conn.execute("COMMIT")

        return go

    wall = cpu = 0.0
    for export in range(2, batches + 2):
        go = one(export)
        t0, c0 = time.perf_counter(), time.process_time()
        go()
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        # As the ledger's checkpointer does, off the measured commit.
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    conn.close()
    n = batch * batches
    return wall / n, cpu / n


def _backend_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_run(existing: int, batch: int, batches: int) -> tuple[float, float]:
    """(wall, server CPU) seconds per point for records, marks and commit."""
    import psycopg

    schema = f"bench_floor_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_BASE, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    url = f"{PG_BASE}{'&' if '?' in PG_BASE else '?'}options=-csearch_path%3D{schema}"
    try:
        open_ledger(url).close()
        conn = psycopg.connect(url, autocommit=True)
        copy_sql = f"COPY cost_records ({', '.join(COLUMNS)}) FROM STDIN"
        streams: list[str] = []
        with conn.transaction(), conn.cursor() as cur:
            for i in range(0, existing, 50_000):
                part = rows(min(50_000, existing - i), 1)
                streams += [row[1] for row in part]
                with cur.copy(copy_sql) as copy:
                    for row in part:
                        copy.write_row(row)
                m = marks(part, 1)
                cur.execute(
                    "INSERT INTO stream_marks SELECT * FROM unnest(%b::text[], %b::bigint[], "
                    "%b::bigint[], %b::numeric[])",
                    tuple(list(c) for c in zip(*m, strict=True)),
                )
        conn.execute("VACUUM ANALYZE")
        conn.close()
        # The ledger's own transaction (ledger/postgres.py): the marks locked (created) at
        # once, the records inserted (copied straight in when all are new), the marks
        # written, the commit. Records from the rows: their values are the same.
        ledger = PostgresLedger(url)
        with ledger.transaction() as tx:
            tx.cur.execute("SELECT pg_backend_pid()")
            pid = int(tx.cur.fetchone()[0])
        wall = cpu = 0.0
        for export in range(2, batches + 2):
            part = rows(batch, export, streams)
            records = [row_record(row) for row in part]
            mk = sorted(marks(part, export))
            t0, c0 = time.perf_counter(), _backend_cpu(pid)
            with ledger.transaction() as tx:
                # As the pricer does: marks moved in one statement where the ledger can.
                if hasattr(tx, "advance"):
                    tx.advance(mk)
                else:
                    tx.prefetch([(stream, start) for stream, start, _, _ in mk])
                for stream, start, at, value in mk:
                    tx.mark(stream, start)
                    tx.set_mark(stream, start, at, value)
                assert len(tx.insert(records)) == batch
            wall += time.perf_counter() - t0
            cpu += _backend_cpu(pid) - c0
        ledger.close()
        n = batch * batches
        return wall / n, cpu / n
    finally:
        with psycopg.connect(PG_BASE, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--existing", type=int, nargs="+", default=[0, 200_000])
    parser.add_argument("--batch", type=int, default=1000, help="records per transaction")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument(
        "--ledgers", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"]
    )
    args = parser.parse_args()
    ledgers = list(args.ledgers)
    if "postgresql" in ledgers and (reason := pg_available()):
        print(f"PostgreSQL not measured: {reason}", file=sys.stderr)
        ledgers.remove("postgresql")
    print(
        f"# {os.cpu_count()} CPU, SQLite {sqlite3.sqlite_version}, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.batches} transactions of "
        f"{args.batch} records and marks each"
    )
    print(f"{'ledger':<10} {'existing':>9} {'wall µs/pt':>10} {'CPU µs/pt':>9} {'pts/CPU-s':>9}")
    for existing in args.existing:
        for backend in ledgers:
            if backend == "sqlite":
                with tempfile.TemporaryDirectory() as tmp:
                    wall, cpu = sqlite_run(
                        str(Path(tmp) / "l.db"), existing, args.batch, args.batches
                    )
            else:
                wall, cpu = postgres_run(existing, args.batch, args.batches)
            print(
                f"{backend:<10} {existing:>9} {wall * 1e6:>10.1f} {cpu * 1e6:>9.1f} "
                f"{1 / cpu if cpu else 0:>9.0f}",
                flush=True,
            )
    print(f"# load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
