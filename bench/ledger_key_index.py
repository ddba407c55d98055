"""What ledger migration 4 (the usage-key index over old records only) saves per insert.

A SQLite file ledger pre-filled with ``--records`` usage records (random 64-hex ids, as real
ones are), then ``--tx`` transactions of ``--batch`` new records through the ledger's own
``transaction()`` / ``insert``: wall and process CPU per transaction, and, with checkpoints
off, the WAL's growth per commit (frames of one page each). Run it once with the code before
the migration on ``PYTHONPATH`` and once with the code after; both start from a copy of the
same pre-filled file (built by whichever code runs first with ``--base``; the code after
migrates its copy to 4 when it opens it, as an upgrade does)::

    git archive d84b783 src | tar -x -C /tmp/before
    PYTHONPATH=/tmp/before/src python bench/ledger_key_index.py --base /tmp/base.db
    python bench/ledger_key_index.py --base /tmp/base.db

With ``--pg URL`` (its ``search_path`` a schema of its own), the same against PostgreSQL:
the first run pre-fills the schema (``--base`` is then only a marker file), each later run
opens it (the code after migrates it) and reports wall, client CPU and the server's WAL
bytes per transaction. Use two schemas pre-filled by the code before, one per side.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sqlite3
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from otel_tokens.ledger import SQLiteLedger
from otel_tokens.ledger._base import record_row
from otel_tokens.ledger._schema import RECORD_COLUMNS
from otel_tokens.records import CostRecord

AT = datetime(2026, 1, 1, tzinfo=UTC)
TEMPLATE = CostRecord(
    stream_id="0" * 32,
    period_start=AT,
    period_end=AT + timedelta(minutes=1),
    provider="openai",
    model="gpt-4o-2024-08-06",
    bucket="input",
    quantity=1920,
    currency="USD",
    catalog_version="genai-prices@0.2.3",
    pricing_status="priced",
    price_id="genai-prices:openai/gpt-4o",
    billed_cost=Decimal("0.0048"),
    list_cost=Decimal("0.0048"),
    service_name="checkout",
)


def _records(n: int, minute: int) -> list[CostRecord]:
    """``n`` usage records of distinct random streams (so random ids), 100 tenants."""
    end = AT + timedelta(minutes=minute)
    return [
        replace(
            TEMPLATE,
            stream_id=secrets.token_hex(16),
            period_start=end - timedelta(minutes=1),
            period_end=end,
            tenant=f"tenant-{i % 100}",
        )
        for i in range(n)
    ]


def _prefill(path: Path, records: int) -> None:
    SQLiteLedger(str(path)).close()  # created and migrated by the code being run
    conn = sqlite3.connect(path, isolation_level=None)
    insert = (
        f"INSERT INTO cost_records ({', '.join(RECORD_COLUMNS)}, ingested_at) "
        f"VALUES ({', '.join('?' for _ in range(len(RECORD_COLUMNS) + 1))})"
    )
    now = datetime.now(UTC)
    for start in range(0, records, 50_000):
        rows = [record_row(r, now) for r in _records(min(50_000, records - start), start)]
        conn.execute("BEGIN")
        conn.executemany(insert, rows)
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _run(path: Path, transactions: int, batch: int, checkpoints: bool) -> dict[str, float]:
    ledger = SQLiteLedger(str(path))
    if not checkpoints:
        assert ledger._checkpointer is not None
        ledger._checkpointer.close()
        ledger._checkpointer = None
        ledger._conn.execute("PRAGMA wal_autocheckpoint=0")
    ledger._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    wal = Path(f"{path}-wal")
    batches = [_records(batch, 10_000_000 + t) for t in range(transactions)]
    walls, cpus = [], []
    for records in batches:
        wall, cpu = time.perf_counter(), time.process_time()
        with ledger.transaction() as tx:
            assert len(tx.insert(records)) == batch
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    wal_bytes = wal.stat().st_size if wal.exists() else 0
    ledger.close()
    figures = {
        "wall_ms": 1000 * sum(walls) / transactions,
        "cpu_ms": 1000 * sum(cpus) / transactions,
    }
    if not checkpoints:  # the WAL only grows: frames of a 24-byte header and a 4 KiB page
        figures["wal_pages_per_commit"] = wal_bytes / (4096 + 24) / transactions
    return figures


def _pg_prefill(url: str, records: int) -> None:
    """A PostgreSQL ledger of ``records`` usage records, filled by the server (fast)."""
    import psycopg

    from otel_tokens.ledger.postgres import PostgresLedger

    PostgresLedger(url).close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO cost_records (id, usage_key, stream_id, period_start, period_end, "
            "provider, model, bucket, quantity, currency, catalog_version, pricing_status, "
            "usage_source, processing, context_tier, price_id, billed_cost, list_cost, tenant, "
            "service_name, tags, charge_category, ingested_at) "
            "SELECT k, k, left(k, 32), '2026-01-01T00:00:00.000000Z', "
            "'2026-01-01T00:01:00.000000Z', 'openai', 'gpt-4o-2024-08-06', 'input', 1920, "
            "'USD', 'genai-prices@0.2.3', 'priced', 'provider', 'standard', 'base', "
            "'genai-prices:openai/gpt-4o', 0.0048, 0.0048, 'tenant-' || (g %% 100), 'checkout', "
            "'{}', 'Usage', '2026-01-01T00:00:00.000000Z' FROM (SELECT g, "
            "md5(random()::text) || md5(random()::text) AS k "
            "FROM generate_series(1, %s) g) s",
            (records,),
        )
        conn.execute("VACUUM ANALYZE cost_records")


def _pg_run(url: str, transactions: int, batch: int) -> dict[str, float]:
    from otel_tokens.ledger.postgres import PostgresLedger

    ledger = PostgresLedger(url)
    batches = [_records(batch, 10_000_000 + t) for t in range(transactions)]
    # Each side starts just after a checkpoint: the same share of full-page images.
    ledger._conn.execute("CHECKPOINT")
    backend = ledger._conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    walls, cpus, wal = [], [], []
    server = _proc_cpu(backend)
    for records in batches:
        lsn = ledger._conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        wall, cpu = time.perf_counter(), time.process_time()
        with ledger.transaction() as tx:
            assert len(tx.insert(records)) == batch
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        wal.append(
            ledger._conn.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn,)
            ).fetchone()[0]
        )
    server = _proc_cpu(backend) - server
    ledger.close()
    return {
        "wall_ms": 1000 * sum(walls) / transactions,
        "client_cpu_ms": 1000 * sum(cpus) / transactions,
        # The server process serving the ledger's connection, when it runs on this machine
        # (/proc); it includes the few queries of the WAL position.
        "server_cpu_ms": 1000 * server / transactions,
        # Everyone's WAL, not only this transaction's: the server is shared.
        "wal_kib_per_tx": float(sum(wal)) / 1024 / transactions,
    }


def _proc_cpu(pid: int) -> float:
    """User and system CPU seconds of a process of this machine (0 if not here)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the pre-filled ledger file")
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--tx", type=int, default=10)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument(
        "--pg", help="a PostgreSQL URL instead (its search_path a schema of the run's own)"
    )
    args = parser.parse_args()
    if args.pg:
        if args.base.exists():  # a marker file: this schema is pre-filled
            opened = time.perf_counter()
            from otel_tokens.ledger.postgres import PostgresLedger

            PostgresLedger(args.pg).close()  # migrates, if this code has more migrations
            print(f"opening (migrating): {time.perf_counter() - opened:.1f} s")
        else:
            started = time.perf_counter()
            _pg_prefill(args.pg, args.records)
            args.base.touch()
            print(f"pre-filled in {time.perf_counter() - started:.0f} s")
            return
        figures = _pg_run(args.pg, args.tx, args.batch)
        print(
            "PostgreSQL: "
            + ", ".join(f"{k} {v:.1f}" for k, v in figures.items())
            + f"; load average {os.getloadavg()[0]:.2f}"
        )
        return
    if not args.base.exists():
        started = time.perf_counter()
        _prefill(args.base, args.records)
        print(f"pre-filled {args.base} in {time.perf_counter() - started:.0f} s")
    run = args.base.with_name(f"{args.base.stem}-run{os.getpid()}.db")
    indexes = None
    for checkpoints in (True, False):
        shutil.copyfile(args.base, run)
        opened = time.perf_counter()
        SQLiteLedger(str(run)).close()  # migrates the copy, if this code has more migrations
        migrate_s = time.perf_counter() - opened
        if indexes is None:
            conn = sqlite3.connect(run)
            indexes = [
                r[0] for r in conn.execute("SELECT name FROM pragma_index_list('cost_records')")
            ]
            conn.close()
            print(f"indexes: {', '.join(sorted(indexes))}; opening (migrating): {migrate_s:.1f} s")
        figures = _run(run, args.tx, args.batch, checkpoints)
        print(
            f"checkpoints {'on ' if checkpoints else 'off'}: "
            + ", ".join(f"{k} {v:.1f}" for k, v in figures.items())
            + f"; load average {os.getloadavg()[0]:.2f}"
        )
        for suffix in ("", "-wal", "-shm"):
            Path(f"{run}{suffix}").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
